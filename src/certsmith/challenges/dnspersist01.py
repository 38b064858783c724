"""dns-persist-01 (draft-ietf-acme-dns-persist): one standing TXT record per name, no record per issuance.

The record lives at ``_validation-persist.<name>`` and reads
``<issuer-domain-name>; accounturi=<account URL>``, plus ``policy=wildcard`` when it must
also cover ``*.<name>`` and an optional ``persistUntil=<unix time>``. It binds the name to
one CA (the issuer domain name, taken from the challenge's ``issuer-domain-names``) and to
one account (its URL, which an account key rollover keeps).

Everything here is pure (building, parsing and judging record values) except the solver,
whose ``present`` and ``cleanup`` touch nothing: the CA validates the standing record, so
issuing and renewing need no DNS provider and no DNS credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from certsmith.challenges.base import ChallengeJob, check_supported, prefixed_fqdn

log = logging.getLogger("certsmith.challenges")

PREFIX = "_validation-persist"


def persist_fqdn(identifier: str) -> str:
    """``_validation-persist.<identifier>.``: lower case, IDNA encoded; a leading ``*.`` is dropped."""
    return prefixed_fqdn(PREFIX, identifier, challenge="dns-persist-01")


def record_value(issuer: str, account_url: str, *, wildcard: bool = False, until: int | None = None) -> str:
    """The TXT value binding a name to ``issuer`` and ``account_url``."""
    parts = [issuer, f"accounturi={account_url}"]
    if wildcard:
        parts.append("policy=wildcard")
    if until is not None:
        parts.append(f"persistUntil={until}")
    return "; ".join(parts)


@dataclass(frozen=True)
class PersistRecord:
    """One record to publish: ``value`` at ``fqdn``, covering ``names`` (a wildcard included when ``wildcard``)."""

    fqdn: str
    value: str
    names: tuple[str, ...]
    wildcard: bool
    issuer: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.fqdn, "type": "TXT", "value": self.value}


def plan_records(
    names: Iterable[str], issuer: str, account_url: str, *, until: int | None = None
) -> list[PersistRecord]:
    """One record per base name, in the order first given; ``example.com`` and ``*.example.com`` share one."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        grouped.setdefault(persist_fqdn(name), []).append(name)
    records = []
    for fqdn, covered in grouped.items():
        wildcard = any(n.strip().startswith("*.") for n in covered)
        value = record_value(issuer, account_url, wildcard=wildcard, until=until)
        records.append(PersistRecord(fqdn, value, tuple(dict.fromkeys(covered)), wildcard, issuer))
    return records


@dataclass(frozen=True)
class ParsedValue:
    """A record value read back: its issuer and parameters (tags in lower case)."""

    issuer: str
    params: dict[str, str]
    error: str | None = None  # why the value is malformed, when it is

    @property
    def account_url(self) -> str | None:
        return self.params.get("accounturi")

    @property
    def wildcard(self) -> bool:
        return self.params.get("policy", "").lower() == "wildcard"

    @property
    def persist_until(self) -> int | None:
        text = self.params.get("persistuntil")
        return int(text) if text is not None and text.lstrip("-").isdigit() else None


def parse_value(text: str) -> ParsedValue:
    """Parse ``issuer; tag=value; ...`` as the draft (RFC 8659 issue-value syntax) reads it.

    Tags are case-insensitive and blanks around ``;`` and ``=`` are allowed. A value that
    breaks the syntax keeps its issuer and says why in ``error``.
    """
    issuer, _, rest = text.partition(";")
    issuer = issuer.strip(" \t")
    params: dict[str, str] = {}
    if not rest and ";" not in text:
        return ParsedValue(issuer, params)
    for raw in rest.split(";"):
        param = raw.strip(" \t")
        if not param:
            return ParsedValue(issuer, params, "an empty parameter (a stray ';')")
        tag, sep, value = param.partition("=")
        tag, value = tag.strip(" \t").lower(), value.strip(" \t")
        if not sep or not tag:
            return ParsedValue(issuer, params, f"{param!r} is not tag=value")
        if tag in params:
            return ParsedValue(issuer, params, f"the parameter {tag!r} appears twice")
        if any(not (0x21 <= ord(c) <= 0x7E) or c == ";" for c in value):
            return ParsedValue(issuer, params, f"the value of {tag!r} has blanks or non-ASCII characters")
        params[tag] = value
    if "persistuntil" in params and not params["persistuntil"].lstrip("-").isdigit():
        return ParsedValue(issuer, params, f"persistUntil {params['persistuntil']!r} is not a Unix time")
    return ParsedValue(issuer, params)


@dataclass(frozen=True)
class RecordCheck:
    """How the TXT values found at a record's name serve it: ``problem`` None means they do."""

    record: PersistRecord
    found: tuple[str, ...]
    problem: str | None
    kind: str  # "ok", "missing", "malformed", "account-mismatch", "no-wildcard-policy", "expired"

    def to_json(self) -> dict[str, object]:
        return {
            **self.record.to_json(),
            "names": list(self.record.names),
            "ok": self.problem is None,
            "status": self.kind,
            "problem": self.problem,
            "found": list(self.found),
        }


def judge(
    record: PersistRecord, found: Iterable[str], account_url: str, issuers: Sequence[str], now: datetime
) -> RecordCheck:
    """Whether one of the ``found`` values lets the CA (any of ``issuers``) validate ``record``'s names now.

    Values for other CAs are ignored, as the CA ignores them. When none serves, the
    problem of the value that came closest is reported.
    """
    values = tuple(sorted(found))
    problems: list[tuple[int, str, str]] = []  # (closeness, kind, message)
    for text in values:
        parsed = parse_value(text)
        if parsed.issuer not in issuers:
            continue
        if parsed.error is not None:
            problems.append((1, "malformed", f"the record {text!r} is malformed: {parsed.error}"))
            continue
        if not parsed.account_url:
            problems.append((1, "malformed", f"the record {text!r} has no accounturi"))
            continue
        if parsed.account_url != account_url:
            problems.append(
                (2, "account-mismatch", f"the record names the account {parsed.account_url}, not this account "
                 f"({account_url})")
            )
            continue
        if record.wildcard and not parsed.wildcard:
            problems.append((3, "no-wildcard-policy", "the record lacks policy=wildcard, which the wildcard "
                             f"*.{record.fqdn.removeprefix(PREFIX + '.').rstrip('.')} needs"))
            continue
        until = parsed.persist_until
        if until is not None and now.timestamp() > until:
            when = datetime.fromtimestamp(until, now.tzinfo).isoformat(timespec="seconds")
            problems.append((4, "expired", f"the record expired at {when} (persistUntil={until})"))
            continue
        return RecordCheck(record, values, None, "ok")
    if not problems:
        return RecordCheck(record, values, f"no record for {' or '.join(issuers)} at {record.fqdn}", "missing")
    _, kind, message = max(problems, key=lambda p: p[0])
    return RecordCheck(record, values, message, kind)


class DnsPersist01Solver:
    """Answers dns-persist-01: the standing record is the answer, so nothing is created or removed."""

    challenge_type: ClassVar[str] = "dns-persist-01"

    async def prepare(self) -> None:
        """Nothing to check: no provider, no credentials."""

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        check_supported(self.challenge_type, jobs)
        for job in jobs:
            log.info("dns-persist-01: the CA reads the standing record at %s", persist_fqdn(job.identifier))

    async def cleanup(self, jobs: Sequence[ChallengeJob]) -> None:
        """The record stays: it serves every later issuance."""

    async def aclose(self) -> None:
        pass
