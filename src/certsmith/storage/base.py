"""What certsmith stores, and the contract every store fulfils.

The records are plain frozen dataclasses so that the manager does not care where
they live: :class:`~certsmith.storage.files.FileStore` keeps them on disk, and a
shared store (Redis, a database) can implement :class:`Store` later without the
manager changing. The JSON forms tolerate unknown fields, so a newer certsmith can
add fields without breaking an older one reading the same state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

from certsmith._constants import KEY_TYPES
from certsmith._time import parse_time
from certsmith.errors import ConfigError

__all__ = [
    "CertificateFiles",
    "LineageMeta",
    "RateBucket",
    "RateRefusal",
    "RenewalState",
    "Store",
    "StoreProblem",
    "StoredAccount",
    "check_directory_url",
    "rate_refusal",
    "validate_challenge_token",
    "validate_journal_key",
    "validate_lineage_name",
]

# Every file name the stores build from a lineage name (``.deleted-<name>-<random>`` is the
# longest) must fit in 255 bytes.
MAX_LINEAGE_NAME = 200
_LINEAGE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _is_lineage_name(name: str) -> bool:
    """ASCII letters, digits, ``.``, ``-``, ``_``; not starting with ``.`` or ``-``; at most MAX_LINEAGE_NAME."""
    return 0 < len(name) <= MAX_LINEAGE_NAME and name[0] not in ".-" and _LINEAGE_CHARS.issuperset(name)


def validate_lineage_name(name: str) -> str:
    """Return ``name`` if it is usable as a certificate (lineage) name.

    The name becomes a directory and a lock file name, so only letters, digits,
    ``.``, ``-`` and ``_`` are allowed, starting with a letter, digit or ``_`` (so never
    ``.``, ``..`` or something that reads as an option), at most ``MAX_LINEAGE_NAME``
    characters. A wildcard's ``*.`` must already have been turned into ``_.`` by the
    caller. Raises :class:`ConfigError` otherwise.
    """
    if not isinstance(name, str) or not _is_lineage_name(name):
        raise ConfigError(
            f"invalid certificate name {name!r}: use 1 to {MAX_LINEAGE_NAME} letters, digits, '.', '-' or '_', "
            "starting with a letter, digit or '_' (write a wildcard '*.example.com' as '_.example.com')"
        )
    return name


def _get(data: Mapping[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    """Fetch ``data[key]`` checking its JSON type; ``ValueError`` names the field."""
    if key not in data:
        if default is ...:
            raise ValueError(f"missing field {key!r}")
        return default
    value = data[key]
    # bool is an int subclass; a JSON true is never a valid version number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {key!r} must be a JSON {kind.__name__}, not {type(value).__name__}")
    return value


def _get_str_tuple(data: Mapping[str, Any], key: str, default: Any = ...) -> tuple[str, ...]:
    value = _get(data, key, list, default)
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"field {key!r} must be a list of strings")
    return tuple(value)


def _cached_names(value: Any) -> tuple[str, ...]:
    """A learned list of names; a damaged one is forgotten (it is learned again), never fatal."""
    return tuple(v for v in value if isinstance(v, str) and v) if isinstance(value, list) else ()


def _get_time(data: Mapping[str, Any], key: str) -> str:
    value: str = _get(data, key, str)
    try:
        parse_time(value)
    except ValueError:
        raise ValueError(f"field {key!r} is not an RFC 3339 time: {value[:40]!r}") from None
    return value


@dataclass(frozen=True)
class StoredAccount:
    """An ACME account as certsmith remembers it, one per directory URL.

    ``key_pem`` is the account's private key (PEM); it is kept out of ``repr`` so
    that it never lands in a log or a traceback.
    """

    directory_url: str
    url: str
    key_pem: bytes = field(repr=False)
    contact: tuple[str, ...]
    status: str
    created_at: str
    # The CA's dns-persist-01 issuer domain names, once learned from a challenge.
    issuer_domain_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON form, without the key (which is stored separately)."""
        data: dict[str, Any] = {
            "directory_url": self.directory_url,
            "url": self.url,
            "contact": list(self.contact),
            "status": self.status,
            "created_at": self.created_at,
        }
        if self.issuer_domain_names:
            data["issuer_domain_names"] = list(self.issuer_domain_names)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], key_pem: bytes) -> StoredAccount:
        """Build from :meth:`to_json` output and the key; unknown fields are ignored.

        Raises ``ValueError`` naming the field when a field is missing or mistyped.
        """
        return cls(
            directory_url=_get(data, "directory_url", str),
            url=_get(data, "url", str),
            key_pem=key_pem,
            contact=_get_str_tuple(data, "contact", []),
            status=_get(data, "status", str, "valid"),
            created_at=_get(data, "created_at", str, ""),
            issuer_domain_names=_cached_names(data.get("issuer_domain_names")),
        )


@dataclass(frozen=True)
class LineageMeta:
    """Everything needed to renew one certificate without the original command line.

    ``settings`` holds the challenge and renewal settings (challenge type, ports,
    webroot, DNS provider, resolvers, propagation timeout, preferred chain, profile,
    deploy hook, reuse_key, ...). Storage treats it as opaque JSON. Times are RFC 3339
    UTC, ``serial`` is hex, ``version`` counts the certificates issued to the lineage,
    ``cert_id`` is the certificate's ARI CertID (RFC 9773 §4.1), empty when it has none.
    """

    name: str
    names: tuple[str, ...]
    key_type: str
    directory_url: str
    settings: dict[str, Any] = field(hash=False)
    not_before: str
    not_after: str
    serial: str
    issuer: str
    version: int
    created_at: str
    updated_at: str
    cert_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to ``meta.json``."""
        return {
            "name": self.name,
            "names": list(self.names),
            "key_type": self.key_type,
            "directory_url": self.directory_url,
            "settings": dict(self.settings),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "serial": self.serial,
            "issuer": self.issuer,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "cert_id": self.cert_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LineageMeta:
        """Build from :meth:`to_json` output; unknown fields are ignored.

        ``settings``, ``created_at`` and ``updated_at`` may be absent. Raises
        ``ValueError`` naming the field when a field is missing or mistyped.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, not {type(data).__name__}")
        names = _get_str_tuple(data, "names")
        if not names:
            raise ValueError("field 'names' is empty")
        key_type = _get(data, "key_type", str)
        if key_type not in (*KEY_TYPES, "csr"):
            raise ValueError(f"field 'key_type' is {key_type[:40]!r}, not one of {', '.join(KEY_TYPES)} or csr")
        directory_url = _get(data, "directory_url", str)
        if not directory_url.startswith("https://"):
            raise ValueError("field 'directory_url' is not an https:// URL")
        version = _get(data, "version", int)
        if version < 0:
            raise ValueError(f"field 'version' must not be negative ({version})")
        return cls(
            name=validate_lineage_name(_get(data, "name", str)),
            names=names,
            key_type=key_type,
            directory_url=directory_url,
            settings=dict(_get(data, "settings", dict, {})),
            not_before=_get_time(data, "not_before"),
            not_after=_get_time(data, "not_after"),
            serial=_get(data, "serial", str),
            issuer=_get(data, "issuer", str),
            version=version,
            created_at=_get(data, "created_at", str, ""),
            updated_at=_get(data, "updated_at", str, ""),
            cert_id=_get(data, "cert_id", str, ""),
        )


@dataclass(frozen=True)
class CertificateFiles:
    """The bytes of one version of a lineage: what servers are pointed at.

    ``key_pem`` is ``None`` for a certificate issued for the user's own CSR; it is
    kept out of ``repr`` so that it never lands in a log or a traceback.
    """

    cert_pem: bytes
    chain_pem: bytes
    fullchain_pem: bytes
    key_pem: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RenewalState:
    """What certsmith learnt about one version of a lineage after issuing it.

    It changes between versions (ARI answers, a revocation), so it is kept apart
    from the immutable :class:`LineageMeta` of the version it describes; a state
    whose ``version`` is not the lineage's current one is stale and ignored.
    Times are RFC 3339 UTC strings, empty when unknown.
    """

    version: int
    ari_window_start: str = ""
    ari_window_end: str = ""
    ari_renew_at: str = ""
    ari_next_check: str = ""
    ari_explanation: str = ""
    ari_error: str = ""
    revoked_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RenewalState:
        """Build from :meth:`to_json` output; unknown fields are ignored, ``ValueError`` on bad types."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, not {type(data).__name__}")
        text = {name: _get(data, name, str, "") for name in cls.__dataclass_fields__ if name != "version"}
        return cls(version=_get(data, "version", int), **text)


def parse_renewal_state(raw: bytes | str) -> RenewalState | None:
    """A stored :class:`RenewalState`, or ``None`` when it is damaged: it is only a cache of the CA's
    answers, and asking again repairs it."""
    try:
        return RenewalState.from_json(json.loads(raw))
    except ValueError:
        return None


def state_damage(raw: bytes | str, *, renewal: bool) -> str | None:
    """Why a stored renewal state (``renewal``) or deploy state cannot be read, or ``None`` (``store check``)."""
    try:
        data = json.loads(raw)
        if renewal:
            RenewalState.from_json(data)
        elif not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return f"unreadable ({exc})"
    return None


# -- the shared rate limiter and shared http-01 answers (issue 11, items 3 and 4) ----------


@dataclass(frozen=True)
class RateBucket:
    """One sliding-window limit to check in :meth:`Store.rate_take`: at most ``limit`` tokens per ``window`` s.

    ``key`` names the bucket (who and what is counted, e.g. an account's new orders); ``take``
    false only checks that a token is free without taking it.
    """

    key: str
    limit: int
    window: float
    take: bool = True


@dataclass(frozen=True)
class RateRefusal:
    """Why :meth:`Store.rate_take` took nothing: ``bucket`` is full until ``wait`` more seconds have passed."""

    bucket: RateBucket
    wait: float


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_acme_token(token: str) -> bool:
    """Whether ``token`` is 1 to 256 characters of the base64url alphabet (RFC 8555 §8.3), so safe in paths and keys."""
    return isinstance(token, str) and 0 < len(token) <= 256 and _TOKEN_CHARS.issuperset(token)


def validate_challenge_token(token: str) -> str:
    """Return ``token`` if it is an ACME token (:func:`is_acme_token`), else :class:`ConfigError`.

    Tokens come from the CA and become file names and keys, so the stores check them too.
    """
    if not is_acme_token(token):
        raise ConfigError(f"invalid http-01 token {str(token)[:40]!r}: only base64url characters are allowed")
    return token


def rate_refusal(
    buckets: Sequence[RateBucket], taken: Mapping[str, Sequence[float]], now: float
) -> RateRefusal | None:
    """The refusal :meth:`Store.rate_take` gives for ``buckets`` when ``taken`` holds each bucket's token times.

    Times at or before ``now - window`` no longer count. A full bucket frees a token when the
    oldest of the last ``limit`` tokens leaves the window; the bucket that frees last is named.
    """
    refusal: RateRefusal | None = None
    for bucket in buckets:
        live = sorted(t for t in taken.get(bucket.key, ()) if t > now - bucket.window)
        if len(live) < bucket.limit:
            continue
        wait = bucket.window if bucket.limit <= 0 else live[len(live) - bucket.limit] + bucket.window - now
        if refusal is None or wait > refusal.wait:
            refusal = RateRefusal(bucket, max(wait, 0.0))
    return refusal


def validate_journal_key(key: str) -> str:
    """Return ``key`` if it names a journal entry (1 to 64 ASCII letters and digits), else :class:`ConfigError`."""
    if not (0 < len(key) <= 64 and key.isascii() and key.isalnum()):
        raise ConfigError(f"invalid journal key {key!r}")
    return key


def check_directory_url(directory_url: str) -> SplitResult:
    """The parts of an ACME directory URL, which the stores turn into names; :class:`ConfigError` unless it is an
    absolute http(s) URL with a valid port."""
    parts = urlsplit(directory_url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for an invalid port
    except ValueError as exc:
        raise ConfigError(f"ACME directory URL {directory_url!r} has an invalid port") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"ACME directory URL {directory_url!r} must be an absolute http(s) URL, "
            "e.g. https://acme-v02.api.letsencrypt.org/directory"
        )
    return parts


@dataclass(frozen=True)
class StoreProblem:
    """Something wrong in a store that its records alone do not show (``certsmith store check``).

    ``kind`` is ``damaged`` (a record that cannot be read), ``orphan`` (data no record leads
    to, e.g. a key without its version) or ``lease`` (a lock that will not free itself soon);
    ``where`` names the place in the store, ``detail`` says what is wrong, in one line.
    """

    kind: str
    where: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


@runtime_checkable
class Store(Protocol):
    """Where accounts, certificates and their locks live: records and bytes, never paths.

    Implementations make every save all-or-nothing: a reader sees the old record or
    the new one, never a mix (in particular never a key that does not match its
    certificate). Loading raises :class:`~certsmith.errors.StorageError` for a record
    that exists but is damaged, and returns ``None`` for one that does not exist.
    """

    def location(self, name: str) -> str:
        """Where a person or a hook finds lineage ``name`` (for files: its directory)."""
        ...

    def load_account(self, directory_url: str) -> StoredAccount | None:
        """The account registered at ``directory_url``, or ``None`` if there is none."""
        ...

    def save_account(self, account: StoredAccount) -> None:
        """Create or replace the account of ``account.directory_url``."""
        ...

    def archive_account_key(self, directory_url: str) -> None:
        """Keep a copy of the current account key before a key rollover replaces it."""
        ...

    def account_lock(self, directory_url: str, *, wait: float = 0.0) -> AbstractAsyncContextManager[None]:
        """Hold the account of ``directory_url`` exclusively (registration, rollover, ...)."""
        ...

    def lineage_names(self) -> list[str]:
        """The names of all stored certificates, sorted."""
        ...

    def load_meta(self, name: str) -> LineageMeta | None:
        """The metadata of the current version of certificate ``name``, or ``None``."""
        ...

    def load_files(self, name: str, version: int) -> CertificateFiles | None:
        """The files of version ``version`` of certificate ``name``, or ``None``."""
        ...

    def save_certificate(self, meta: LineageMeta, files: CertificateFiles) -> LineageMeta:
        """Store a new current version of ``meta.name``; returns the meta as stored.

        The store assigns ``version``, keeps the lineage's first ``created_at`` and
        sets ``updated_at``.
        """
        ...

    def load_state(self, name: str) -> RenewalState | None:
        """The renewal state of the current version of ``name``, or ``None`` (none yet, or stale)."""
        ...

    def save_state(self, name: str, state: RenewalState) -> None:
        """Replace the renewal state of ``name``."""
        ...

    def load_deploy_state(self, name: str) -> dict[str, Any]:
        """What the deploy targets of ``name`` remembered between runs, by target; ``{}`` when nothing.

        It outlives certificate versions (a target may need the ID of what it uploaded for
        an earlier version) and goes with the lineage. Values are JSON objects; never secrets.
        """
        ...

    def save_deploy_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Replace the deploy targets' state of ``name``."""
        ...

    def delete_lineage(self, name: str) -> None:
        """Remove certificate ``name`` and every version of it; the caller holds its lock."""
        ...

    def save_pending_account_key(self, directory_url: str, key_pem: bytes | None) -> None:
        """Stage (``key_pem``) or drop (``None``) the new key of a key rollover in progress.

        Staged before the CA hears of it, committed by :meth:`save_account` after: a crash at
        any point leaves one key the CA accepts, the old or the staged one.
        """
        ...

    def load_pending_account_key(self, directory_url: str) -> bytes | None:
        """The staged key of an unfinished rollover, or ``None``."""
        ...

    def journal_add(self, key: str, record: Mapping[str, Any]) -> None:
        """Note a challenge artefact (a DNS record, a web-root file) before it is created.

        ``key`` is a short id of letters and digits; ``record`` a JSON object. A run killed
        before its cleanup leaves the note behind, and the next run removes the artefact.
        """
        ...

    def journal_remove(self, key: str) -> None:
        """Forget the note ``key`` once its artefact is gone (no error when it is unknown)."""
        ...

    def journal_entries(self) -> list[tuple[str, dict[str, Any]]]:
        """Every note, oldest first; unreadable ones are skipped (and left for a person to see)."""
        ...

    def lock(self, name: str, *, wait: float = 0.0) -> AbstractContextManager[None]:
        """Hold certificate ``name`` exclusively; ``LockedError`` after ``wait`` seconds."""
        ...

    def alock(self, name: str, *, wait: float = 0.0) -> AbstractAsyncContextManager[None]:
        """Like :meth:`lock`, but waits with ``asyncio.sleep`` instead of blocking."""
        ...

    # -- the shared rate limiter and shared http-01 answers (issue 11, items 3 and 4) ------

    def rate_take(self, buckets: Sequence[RateBucket], now: float) -> RateRefusal | None:
        """Take one token from every bucket with ``take`` set, all or none, atomically across processes.

        ``now`` is the time in seconds since the epoch. A token taken at ``t`` counts until
        ``t + window``. Returns ``None`` when every bucket had a token free (and those with
        ``take`` now hold one more), otherwise the full bucket that frees last, with how long
        until it has a token again; nothing is taken then.
        """
        ...

    def challenge_publish(self, token: str, key_authorization: str, ttl: float) -> None:
        """Publish an http-01 answer for ``ttl`` seconds, for ``certsmith serve-challenges`` on any host."""
        ...

    def challenge_lookup(self, token: str) -> str | None:
        """The key authorization published for ``token`` and not yet expired, or ``None``."""
        ...

    def challenge_withdraw(self, token: str) -> None:
        """Remove the answer for ``token`` (no error when there is none)."""

    # -- inventory and migration (certsmith store migrate / check) ---------------------
    # Kept apart from the methods above: a store copied to another one must come out the
    # same, so these read and write versions and accounts exactly as given, not re-stamped.

    def account_urls(self) -> list[str]:
        """The directory URLs of every stored account (those whose record can be read), sorted."""
        ...

    def archived_account_keys(self, directory_url: str) -> list[tuple[str, bytes]]:
        """The account keys replaced by key rollovers, oldest first, as (UTC time stamp, PEM)."""
        ...

    def import_account(self, account: StoredAccount, archived_keys: list[tuple[str, bytes]]) -> None:
        """Store ``account`` and, exactly as given, its archived keys (replacing any archived here)."""
        ...

    def lineage_versions(self, name: str) -> list[int]:
        """The version numbers stored for certificate ``name`` (current and archived), ascending."""
        ...

    def load_version(self, name: str, version: int) -> tuple[LineageMeta, CertificateFiles] | None:
        """The metadata and files of one version as stored, ``None`` if it does not exist.

        Raises :class:`~certsmith.errors.StorageError` when it exists but is incomplete or damaged.
        """
        ...

    def import_version(self, meta: LineageMeta, files: CertificateFiles, *, current: bool) -> None:
        """Write version ``meta.version`` of ``meta.name`` exactly as given (no new number, no new times).

        Refuses (``StorageError``) when another version of that number already exists; with
        ``current`` it becomes the version :meth:`load_meta` returns. The same version already
        there (equal metadata and files) is no error: with ``current`` it is made current, which
        finishes an import that stopped between writing a version and committing it. The caller
        holds the certificate's lock.
        """
        ...

    def audit(self) -> list[StoreProblem]:
        """What is wrong below the records: damaged or orphaned data, leases that will not free themselves."""
        ...


def parse_deploy_state(raw: bytes | str | None, where: str) -> dict[str, Any]:
    """A stored deploy state: a JSON object, else (absent or damaged) empty, so targets start afresh.

    A damaged one is logged with ``where`` (a path, or a lineage and store).
    """
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        logging.getLogger("certsmith.storage").warning("ignoring the damaged deploy state %s", where)
        return {}
    return data
