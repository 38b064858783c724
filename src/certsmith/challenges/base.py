"""The contract between the manager and the challenge solvers.

The manager collects every pending authorization of an order, hands all of their
jobs to one solver at once (so dns-01 can publish every record and wait for
propagation a single time), answers the challenges concurrently, and finally calls
``cleanup`` with the same jobs -- also when validation failed or the task was
cancelled. A solver instance may serve several orders at the same time.

Which challenge can validate which identifier is decided here, in
:func:`unsupported_reason`, for the settings check before an order and for the
solvers alike.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

from certsmith.errors import ChallengeError

_T = TypeVar("_T")

#: The challenges proven in DNS: they validate wildcards and never IP addresses.
DNS_CHALLENGES = ("dns-01", "dns-persist-01")


def prefixed_fqdn(prefix: str, identifier: str, *, challenge: str, noun: str = "") -> str:
    """``<prefix>.<identifier>.``: lower case, IDNA (2008, UTS #46) encoded; a leading ``*.`` is dropped.

    A wildcard is validated at its base name. ``noun`` (``"identifier "``) goes before the
    identifier in the :class:`ChallengeError` for a name that is empty or not a domain name.
    """
    import dns.exception  # here: the settings check imports this module and needs no dnspython
    import dns.name

    text = identifier.strip()
    if text.startswith("*."):
        text = text[2:]
    text = text.rstrip(".")
    if not text:
        raise ChallengeError(f"cannot derive a {challenge} record name from {noun}{identifier!r}")
    try:
        name = dns.name.from_unicode(text, idna_codec=dns.name.IDNA_2008_Practical)
        return dns.name.Name((prefix.encode(), *name.canonicalize().labels)).to_text()
    except dns.exception.DNSException as exc:
        raise ChallengeError(f"{noun}{identifier!r} is not a valid domain name: {exc}") from None


def unsupported_reason(challenge_type: str, identifier_type: str, identifier: str, *, wildcard: bool) -> str | None:
    """Why ``challenge_type`` cannot validate this identifier, or ``None`` when it can.

    Wildcards need dns-01 (RFC 8555 §7.1.3) or dns-persist-01 (with ``policy=wildcard``);
    IP addresses cannot use either DNS challenge (RFC 8738 §7); http-01 and tls-alpn-01
    answer DNS names and IP addresses.
    """
    shown = f"*.{identifier}" if wildcard and not identifier.startswith("*.") else identifier
    if wildcard and challenge_type not in DNS_CHALLENGES:
        return f"{shown} is a wildcard: wildcards can only be validated with dns-01 or dns-persist-01"
    if identifier_type == "ip" and challenge_type in DNS_CHALLENGES:
        return f"{shown} is an IP address: use http-01 or tls-alpn-01, not {challenge_type}"
    if identifier_type not in ("dns", "ip"):
        return f"{challenge_type} cannot validate identifiers of type {identifier_type!r}"
    return None


def check_supported(challenge_type: str, jobs: Sequence[ChallengeJob]) -> None:
    """Raise :class:`ChallengeError` for the first job ``challenge_type`` cannot answer."""
    for job in jobs:
        reason = unsupported_reason(challenge_type, job.identifier_type, job.identifier, wildcard=job.wildcard)
        if reason is not None:
            raise ChallengeError(reason)


async def run_to_completion(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` to its end even if the calling task is cancelled meanwhile.

    Cleanup (deleting records, removing files, a filesystem step in a thread that cannot be
    interrupted) must finish before Ctrl-C or SIGTERM unwinds the caller; a cancellation that
    arrives during the wait is re-raised once the work is done, never lost.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn about it
        raise asyncio.CancelledError
    return task.result()


@dataclass(frozen=True)
class ChallengeJob:
    """One challenge to make visible: for ``identifier_type``/``identifier`` answer ``token``."""

    identifier_type: str  # "dns" or "ip"
    identifier: str  # as in the authorization, without a "*." prefix
    token: str
    key_authorization: str
    wildcard: bool = False

    @property
    def dns01_value(self) -> str:
        """The TXT value of dns-01: base64url(SHA-256(key authorization)) (RFC 8555 §8.4)."""
        from certsmith.jose import b64u_encode

        return b64u_encode(hashlib.sha256(self.key_authorization.encode()).digest())

    @property
    def key_authorization_digest(self) -> bytes:
        """SHA-256 of the key authorization, as put into the tls-alpn-01 certificate."""
        return hashlib.sha256(self.key_authorization.encode()).digest()


class ArtefactJournal(Protocol):
    """Where a solver notes what it creates outside this process (a TXT record, a web-root file)
    before creating it, and forgets it once removed: a run killed with SIGKILL leaves the note,
    and the next run cleans up through it."""

    def created(self, artefact: dict[str, str]) -> None:
        """``artefact`` is about to exist (``kind`` plus what identifies it)."""
        ...

    def removed(self, artefact: dict[str, str]) -> None:
        """``artefact`` is gone."""
        ...


class ChallengeSolver(Protocol):
    """Provisions one challenge type."""

    challenge_type: ClassVar[str]

    async def prepare(self) -> None:
        """Check, before any account or order exists, that answering can work.

        Binds the port of a built-in server (and keeps it), checks that a web root can be
        written, that a DNS provider can act; raises :class:`ChallengeError` or
        :class:`DnsError` saying what to change.
        """
        ...

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        """Make every job visible; returns when the CA can validate all of them."""
        ...

    async def cleanup(self, jobs: Sequence[ChallengeJob]) -> None:
        """Undo ``present`` for these jobs; never raises for jobs already gone."""
        ...

    async def aclose(self) -> None:
        """Stop servers and release resources."""
        ...
