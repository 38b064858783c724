"""Accounts, certificates and locks in Redis (or Valkey), shared by several hosts.

Chosen with ``--store redis://[:password@]host:port/db`` (``rediss://`` for TLS); needs
the ``redis`` package (``pip install certsmith[redis]``), imported only when this store
is used. Every key lives under one prefix per installation (``certsmith`` unless the URL
says ``?prefix=NAME``)::

    P:accounts                       set of account ids (sha256 of the directory URL)
    P:account:<id>                   hash: json, key (sealed), pending (sealed key of a rollover)
    P:account:<id>:archive           list of sealed keys replaced by key rollovers
    P:lineages                       set of certificate names
    P:lineage:<name>                 hash: current (version), meta (its JSON), state, deploy
    P:lineage:<name>:<version>       hash: meta, cert, chain, fullchain, key (sealed; absent for a CSR)
    P:journal, P:journal:order       challenge artefacts (hash of JSON notes; zset by time)
    P:lock:<id>, P:fence:<id>        a lease (token, PX ttl) and its fencing counter
    P:keycheck                       proof of which store key sealed the private keys
    P:cache:directory:<id>           a CA's directory document (a cache, expires by itself)
    P:rate:<bucket>                  zset of the times tokens were taken (the shared rate limiter)
    P:challenge:<token>              an http-01 key authorization published for serve-challenges (PX ttl)

A version is written in one MULTI/EXEC, with WATCH on the lineage and its fencing
counter: a reader sees the whole old version or the whole new one, and a write that
raced with another (or with a newer lease holder) is retried or refused, never mixed.

**Locks are leases.** ``SET P:lock:<id> <token> NX PX <ttl>`` together with ``INCR
P:fence:<id>`` (one Lua script) gives the holder a fencing number; a thread renews the
lease every third of its life while it is held, and only the holder's token releases it
(compare-and-delete). A holder that dies loses its lease after ``ttl``. Every write made
while this process holds the lease of that certificate (or account) checks, atomically
with the write, that the fencing counter still is the holder's: a process that stalled
past its lease while another took the lock gets :class:`~certsmith.errors.LeaseLostError`
and the newer work stays.

**Private keys are sealed** with AES-256-GCM under the store key (``CERTSMITH_STORE_KEY``
or ``CERTSMITH_STORE_KEY_FILE``: 32 random bytes in base64, e.g. ``openssl rand -base64
32``), with the key's place in the store as associated data (a sealed key cannot be moved
to another lineage or version unnoticed). Without a store key, private keys are refused
unless the store was opened with ``insecure_keys=True`` (``--store-insecure-keys``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from certsmith._redact import add_secret
from certsmith._time import format_time, utc_now
from certsmith.errors import ConfigError, LeaseLostError, LockedError, StorageError, StoreKeyMissing
from certsmith.storage.base import (
    CertificateFiles,
    LineageMeta,
    RateBucket,
    RateRefusal,
    RenewalState,
    StoredAccount,
    StoreProblem,
    check_directory_url,
    parse_deploy_state,
    parse_renewal_state,
    state_damage,
    validate_challenge_token,
    validate_journal_key,
    validate_lineage_name,
)

if TYPE_CHECKING:
    import redis
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from redis.client import Pipeline
    from redis.typing import EncodableT, FieldT

__all__ = ["DEFAULT_LEASE", "DEFAULT_PREFIX", "RedisStore", "load_store_key"]

log = logging.getLogger("certsmith.storage")

DEFAULT_PREFIX = "certsmith"
#: Seconds a lease lasts without renewal (a crashed holder's lock is free again after this).
DEFAULT_LEASE = 30.0
_LOCK_POLL = 0.05
_WRITE_RETRIES = 20
_SEALED = b"certsmith-aes256gcm-v1:"
_PLAIN = b"certsmith-plain-v1:"
_KEYCHECK_TEXT = b"certsmith store key check"
_PREFIX_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:")
_KEY_HINT = (
    "the store key is 32 random bytes in base64 (44 characters), made with e.g. `openssl rand -base64 32`; "
    "give it in CERTSMITH_STORE_KEY or in a file named by CERTSMITH_STORE_KEY_FILE"
)

# KEYS: lock, fence; ARGV: token, ttl ms. Returns {fence} or {0, holder token, ms left}.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('INCR', KEYS[2])}
end
return {0, redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1])}
"""
# KEYS: lock; ARGV: token, ttl ms. 1 when renewed, 0 when the lease is no longer ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lock; ARGV: token. Deletes only our own lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The shared rate limiter: a sliding window log per bucket, checked and taken in one script.
# KEYS: the buckets; ARGV: now, a unique member, then limit, window, take (1/0) per bucket.
# Returns {0} when every token was taken, else {index of the bucket that frees last, seconds}.
_RATE_TAKE = """
local now = tonumber(ARGV[1])
local worst, wait = 0, -1
for i = 1, #KEYS do
  local limit, window = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    local w = window
    if limit > 0 then
      local oldest = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')
      w = tonumber(oldest[2]) + window - now
    end
    if w > wait then worst, wait = i, w end
  end
end
if worst > 0 then return {worst, tostring(wait)} end
for i = 1, #KEYS do
  if ARGV[3 * i + 2] == '1' then
    redis.call('ZADD', KEYS[i], now, ARGV[2])
    redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[3 * i + 1]) * 1000))
  end
end
return {0}
"""


def load_store_key(env: Mapping[str, str]) -> bytes | None:
    """The store key from ``CERTSMITH_STORE_KEY`` or ``CERTSMITH_STORE_KEY_FILE``; ``None`` when neither is set.

    Raises :class:`ConfigError` when both are set, the file cannot be read, or the value is
    not 32 bytes in base64.
    """
    text, source = env.get("CERTSMITH_STORE_KEY", ""), "CERTSMITH_STORE_KEY"
    path = env.get("CERTSMITH_STORE_KEY_FILE", "")
    if text and path:
        raise ConfigError("set CERTSMITH_STORE_KEY or CERTSMITH_STORE_KEY_FILE, not both")
    if path:
        source = f"CERTSMITH_STORE_KEY_FILE ({path})"
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot read the store key file {path}: {reason}") from None
    text = text.strip()
    if not text:
        return None
    add_secret(text)
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{source} is not a usable store key: {_KEY_HINT}")
    return key


def _bytes(value: object) -> bytes | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return str(value).encode()
    raise StorageError(f"unexpected answer from Redis: {type(value).__name__}")


def _account_id(directory_url: str) -> str:
    check_directory_url(directory_url)
    return hashlib.sha256(directory_url.encode()).hexdigest()[:32]


class _Lease:
    """One held lease: its token, fencing number, and the thread that renews it."""

    def __init__(self, store: RedisStore, lock_key: str, token: str, fence: int) -> None:
        self.store, self.lock_key, self.token, self.fence = store, lock_key, token, fence
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"certsmith-lease {lock_key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        period = self.store.lease_ttl / 3
        while not self._stop.wait(period):
            try:
                renewed = self.store._client.eval(_RENEW, 1, self.lock_key, self.token, self.store._ttl_ms)
            except Exception as exc:  # the next write reports the store's state; keep trying until released
                log.warning("could not renew the lease %s: %s", self.lock_key, exc)
                continue
            if not renewed:
                self.lost = True
                log.warning("the lease %s expired and was taken over; this process's writes to it will be refused",
                            self.lock_key)
                return

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.store._client.eval(_RELEASE, 1, self.lock_key, self.token)
        except Exception as exc:  # never mask the error that ends the block; the lease expires by itself
            log.warning("could not release the lease %s (it expires by itself): %s", self.lock_key, exc)


class RedisStore:
    """The Redis :class:`~certsmith.storage.base.Store` (layout and guarantees in the module docstring).

    ``client`` is a ``redis.Redis``; :meth:`from_url` builds one. ``where`` names the store
    in messages (never with its password).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        where: str = "redis",
        prefix: str = DEFAULT_PREFIX,
        store_key: bytes | None = None,
        insecure_keys: bool = False,
        lease_ttl: float = DEFAULT_LEASE,
    ) -> None:
        if not prefix or not _PREFIX_CHARS.issuperset(prefix):
            raise ConfigError(f"invalid Redis key prefix {prefix!r}: use letters, digits, '.', '-', '_' or ':'")
        if not 1.0 <= lease_ttl <= 3600:
            raise ConfigError(f"the lease time must be between 1 and 3600 seconds, not {lease_ttl}")
        if store_key is not None and len(store_key) != 32:
            raise ConfigError(f"the store key must be 32 bytes: {_KEY_HINT}")
        self._client = client
        self.where = where
        self.prefix = prefix
        self.insecure_keys = insecure_keys
        self.lease_ttl = lease_ttl
        self._ttl_ms = int(lease_ttl * 1000)
        self._store_key = store_key
        self._key_checked = False
        self._leases: dict[str, _Lease] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ca_bundle: str | None = None,
        store_key: bytes | None = None,
        insecure_keys: bool = False,
    ) -> RedisStore:
        """A store for ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS, verified).

        Query options: ``prefix=NAME`` (default ``certsmith``), ``lease=SECONDS`` (default 30).
        Nothing is sent until the store is first used.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"store URL {cls._safe(url)}: use redis://[:password@]host:port/db or rediss://...")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError(f"store URL {cls._safe(url)} has an invalid port") from None
        if not parts.hostname:
            raise ConfigError(f"store URL {cls._safe(url)} names no host")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        prefix = options.pop("prefix", DEFAULT_PREFIX)
        try:
            lease = float(options.pop("lease", DEFAULT_LEASE))
        except ValueError:
            raise ConfigError(f"store URL {cls._safe(url)}: lease= must be a number of seconds") from None
        if options:
            raise ConfigError(f"store URL: unknown option(s) {', '.join(sorted(options))}; known: prefix, lease")
        db_text = parts.path.lstrip("/") or "0"
        if not db_text.isdigit():
            raise ConfigError(f"store URL {cls._safe(url)}: the database must be a number, e.g. redis://host:6379/0")
        if ca_bundle is not None:
            if parts.scheme != "rediss":
                raise ConfigError("a CA bundle for the store is for rediss:// (Redis over TLS) only")
            if not Path(ca_bundle).is_file():
                raise ConfigError(f"the store's CA bundle {ca_bundle} is not a readable file")
        try:
            import redis
        except ImportError:
            raise ConfigError("a redis:// store needs the redis package: pip install 'certsmith[redis]'") from None

        password = unquote(parts.password) if parts.password else None
        if password:
            add_secret(password)
        tls: dict[str, Any] = {}
        if parts.scheme == "rediss":
            tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if ca_bundle is not None:
                tls["ssl_ca_certs"] = ca_bundle
        client = redis.Redis(
            host=parts.hostname,
            port=port,
            db=int(db_text),
            username=unquote(parts.username) if parts.username else None,
            password=password,
            socket_timeout=10,
            socket_connect_timeout=5,
            **tls,
        )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        where = f"{parts.scheme}://{host}:{port}/{db_text}"
        return cls(client, where=where, prefix=prefix, store_key=store_key, insecure_keys=insecure_keys,
                   lease_ttl=lease)

    @staticmethod
    def _safe(url: str) -> str:
        """``url`` without its password, for messages."""
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"***@{netloc}", query=urlencode(parse_qsl(parts.query))))

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        for lease in list(self._leases.values()):
            lease.release()
        self._leases.clear()
        self._client.close()

    # -- keys: the only place that builds them -----------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _lineage_key(self, name: str) -> str:
        return self._k("lineage", validate_lineage_name(name))

    def _version_key(self, name: str, version: int) -> str:
        return self._k("lineage", validate_lineage_name(name), str(version))

    def location(self, name: str) -> str:
        """``redis://host:port/db#<prefix>:lineage:<name>``: where the lineage is, for people and hooks."""
        return f"{self.where}#{self._lineage_key(name)}"

    # -- talking to Redis --------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn redis-py's errors into one :class:`StorageError` line naming the store (never its password)."""
        from redis.exceptions import AuthenticationError, RedisError, ResponseError

        try:
            yield
        except AuthenticationError:
            raise StorageError(f"cannot {what}: the Redis store {self.where} refused the URL's password") from None
        except ResponseError as exc:
            raise StorageError(f"cannot {what}: the Redis store {self.where} answered: {exc}") from None
        except RedisError as exc:
            reason = str(exc).split("\n", 1)[0] or type(exc).__name__
            raise StorageError(
                f"cannot {what}: the Redis store {self.where} is unreachable ({reason}); check that Redis runs, "
                "that the store URL names it, and the network between them; nothing was changed"
            ) from None

    def _write(
        self,
        what: str,
        lock_id: str | None,
        watch: tuple[str, ...],
        build: Callable[[Pipeline], None],
    ) -> None:
        """Run ``build``'s commands in one MULTI/EXEC; under a held lease, only while its fence is ours.

        ``build`` gets the pipeline while the keys in ``watch`` (and the fence) are watched, may
        read through it, then queues its writes after calling ``pipe.multi()``. A concurrent
        change to a watched key retries the whole step.
        """
        from redis.exceptions import WatchError

        lease = self._leases.get(lock_id) if lock_id is not None else None
        fence_key = self._k("fence", lock_id) if lease is not None and lock_id is not None else None
        with self._guard(what), self._client.pipeline() as pipe:
            for _attempt in range(_WRITE_RETRIES):
                try:
                    watched = (*watch, *([fence_key] if fence_key else []))
                    if watched:
                        cast("Callable[..., None]", pipe.watch)(*watched)
                    if lease is not None and fence_key is not None:
                        current = _bytes(pipe.get(fence_key))
                        if current != str(lease.fence).encode():
                            pipe.reset()
                            raise LeaseLostError(
                                f"cannot {what}: this process's lease on it expired (it stalled for longer than "
                                f"{self.lease_ttl:g} s) and another process has taken it since (fencing number "
                                f"{current.decode() if current else '?'} > {lease.fence}); its newer work is kept "
                                "and nothing was written"
                            )
                    build(pipe)
                    pipe.execute()
                    return
                except WatchError:
                    time.sleep(0.01)
                    continue
        raise StorageError(f"cannot {what}: the Redis store {self.where} kept changing under the write; try again")

    # -- private keys at rest ----------------------------------------------------------

    def _aead(self) -> AESGCM:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        assert self._store_key is not None
        return AESGCM(self._store_key)

    def _check_key(self) -> None:
        """Prove once that the store key is the one the stored keys were sealed with (or record it)."""
        if self._key_checked or self._store_key is None:
            return
        from cryptography.exceptions import InvalidTag

        check_key = self._k("keycheck")
        with self._guard("check the store key"):
            stored = _bytes(self._client.get(check_key))
            if stored is None:
                nonce = os.urandom(12)
                sealed = _SEALED + nonce + self._aead().encrypt(nonce, _KEYCHECK_TEXT, b"keycheck")
                self._client.set(check_key, sealed, nx=True)
                stored = _bytes(self._client.get(check_key))
        try:
            if stored is None or not stored.startswith(_SEALED):
                raise InvalidTag
            body = stored[len(_SEALED):]
            self._aead().decrypt(body[:12], body[12:], b"keycheck")
        except (InvalidTag, ValueError):
            raise StorageError(self._wrong_key()) from None
        self._key_checked = True

    def _wrong_key(self) -> str:
        return (f"the store key (CERTSMITH_STORE_KEY or CERTSMITH_STORE_KEY_FILE) is not the one the private keys in "
                f"{self.where} (prefix {self.prefix!r}) were encrypted with; use that key")

    def _seal(self, plaintext: bytes, place: str) -> bytes:
        if self._store_key is None:
            if not self.insecure_keys:
                raise StoreKeyMissing(
                    f"the Redis store {self.where} keeps private keys only encrypted, and no store key is set: "
                    f"{_KEY_HINT}"
                )
            return _PLAIN + plaintext
        self._check_key()
        nonce = os.urandom(12)
        return _SEALED + nonce + self._aead().encrypt(nonce, plaintext, place.encode())

    def _open(self, value: bytes, place: str, what: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        if value.startswith(_PLAIN):
            if self._store_key is not None and not self.insecure_keys:
                # with a store key every key is sealed and bound to its place: a plain one was planted or
                # written before the key existed; only --store-insecure-keys accepts it
                raise StorageError(
                    f"{what} in {self.where} is not encrypted although a store key is set; allow "
                    "unencrypted keys (insecure_keys) to read it, then save it again to seal it, or restore it"
                )
            return value[len(_PLAIN):]
        if not value.startswith(_SEALED):
            raise StorageError(f"{what} in {self.where} is damaged (neither sealed nor plain); restore it")
        if self._store_key is None:
            raise StoreKeyMissing(f"{what} in {self.where} is encrypted and no store key is set: {_KEY_HINT}")
        self._check_key()
        body = value[len(_SEALED):]
        try:
            return self._aead().decrypt(body[:12], body[12:], place.encode())
        except (InvalidTag, ValueError):
            raise StorageError(
                f"{what} in {self.where} cannot be decrypted: it was damaged or moved to another place; restore it"
            ) from None

    # -- accounts ----------------------------------------------------------------------

    def load_account(self, directory_url: str) -> StoredAccount | None:
        aid = _account_id(directory_url)
        key = self._k("account", aid)
        with self._guard(f"read the account for {directory_url}"):
            raw_json, raw_key = (_bytes(v) for v in self._client.hmget(key, ["json", "key"]))
        if raw_json is None:
            return None
        remedy = f"restore it, or delete the Redis key {key} to register a new account"
        if raw_key is None:
            raise StorageError(f"the account key for {directory_url} is missing in {self.where}; {remedy}")
        try:
            data = json.loads(raw_json)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return StoredAccount.from_json(data, self._open(raw_key, f"account:{aid}:key", "the account key"))
        except ValueError as exc:
            raise StorageError(f"the account record for {directory_url} in {self.where} is invalid: {exc}; "
                               f"{remedy}") from None

    def save_account(self, account: StoredAccount) -> None:
        aid = _account_id(account.directory_url)
        key = self._k("account", aid)
        sealed = self._seal(account.key_pem, f"account:{aid}:key")
        data = json.dumps(account.to_json(), sort_keys=True)

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.hset(key, mapping={"json": data, "key": sealed})
            pipe.sadd(self._k("accounts"), aid)

        self._write(f"save the account for {account.directory_url}", f"account:{aid}", (key,), build)

    def archive_account_key(self, directory_url: str) -> None:
        aid = _account_id(directory_url)
        key = self._k("account", aid)
        with self._guard(f"read the account key for {directory_url}"):
            current = _bytes(self._client.hget(key, "key"))
        if current is None:
            return
        sealed = self._seal(self._open(current, f"account:{aid}:key", "the account key"), f"account:{aid}:archive")
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ").encode()

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.rpush(self._k("account", aid, "archive"), stamp + b" " + sealed)

        self._write(f"archive the account key for {directory_url}", f"account:{aid}", (key,), build)

    def archived_account_keys(self, directory_url: str) -> list[tuple[str, bytes]]:
        """The keys replaced by rollovers, oldest first, as (UTC time, PEM)."""
        aid = _account_id(directory_url)
        with self._guard(f"read the archived account keys for {directory_url}"):
            items = self._client.lrange(self._k("account", aid, "archive"), 0, -1)
        out = []
        for item in items if isinstance(items, list) else []:
            raw = _bytes(item) or b""
            stamp, _, sealed = raw.partition(b" ")
            out.append((stamp.decode(), self._open(sealed, f"account:{aid}:archive", "an archived account key")))
        return out

    def save_pending_account_key(self, directory_url: str, key_pem: bytes | None) -> None:
        aid = _account_id(directory_url)
        key = self._k("account", aid)
        sealed = self._seal(key_pem, f"account:{aid}:pending") if key_pem is not None else None

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            if sealed is None:
                pipe.hdel(key, "pending")
            else:
                pipe.hset(key, "pending", sealed)

        self._write(f"stage the new account key for {directory_url}", f"account:{aid}", (key,), build)

    def load_pending_account_key(self, directory_url: str) -> bytes | None:
        aid = _account_id(directory_url)
        with self._guard(f"read the staged account key for {directory_url}"):
            raw = _bytes(self._client.hget(self._k("account", aid), "pending"))
        return None if raw is None else self._open(raw, f"account:{aid}:pending", "the staged account key")

    def account_lock(self, directory_url: str, *, wait: float = 0.0) -> contextlib.AbstractAsyncContextManager[None]:
        return self._alease(f"account:{_account_id(directory_url)}", f"the account for {directory_url}", wait)

    # -- certificates ------------------------------------------------------------------

    def lineage_names(self) -> list[str]:
        with self._guard("list the certificates"):
            members = self._client.smembers(self._k("lineages"))
        names = []
        for member in members if isinstance(members, set) else []:
            name = (_bytes(member) or b"").decode(errors="replace")
            with contextlib.suppress(ConfigError):
                names.append(validate_lineage_name(name))
        return sorted(names)

    def _parse_meta(self, name: str, raw: bytes) -> LineageMeta:
        remedy = f"issue the certificate again, or delete the Redis key {self._lineage_key(name)}"
        try:
            data = json.loads(raw)
            return LineageMeta.from_json(data)
        except ValueError as exc:
            raise StorageError(f"the metadata of certificate {name!r} in {self.where} is invalid: {exc}; "
                               f"{remedy}") from None

    def load_meta(self, name: str) -> LineageMeta | None:
        key = self._lineage_key(name)
        with self._guard(f"read certificate {name!r}"):
            raw = _bytes(self._client.hget(key, "meta"))
        return None if raw is None else self._parse_meta(name, raw)

    def load_files(self, name: str, version: int) -> CertificateFiles | None:
        key = self._version_key(name, version)
        with self._guard(f"read version {version} of certificate {name!r}"):
            fields = self._client.hgetall(key)
        found = {(_bytes(k) or b"").decode(): _bytes(v) or b"" for k, v in fields.items()} if isinstance(
            fields, dict) else {}
        if "cert" not in found:
            return None
        if "chain" not in found or "fullchain" not in found:
            raise StorageError(f"version {version} of certificate {name!r} in {self.where} is incomplete; "
                               "issue it again (certsmith issue --force)")
        sealed = found.get("key")
        key_pem = None if sealed is None else self._open(
            sealed, f"lineage:{name}:{version}:key", f"the private key of certificate {name!r}")
        return CertificateFiles(found["cert"], found["chain"], found["fullchain"], key_pem)

    def save_certificate(self, meta: LineageMeta, files: CertificateFiles) -> LineageMeta:
        name = validate_lineage_name(meta.name)
        lineage_key = self._lineage_key(name)
        stored: list[LineageMeta] = []

        def build(pipe: Pipeline) -> None:
            current_raw, meta_raw = (_bytes(v) for v in pipe.hmget(lineage_key, ["current", "meta"]))
            current = int(current_raw) if current_raw and current_raw.isdigit() else 0
            old_created = ""
            if meta_raw is not None:
                with contextlib.suppress(StorageError):  # a damaged current version must not block a new one
                    old_created = self._parse_meta(name, meta_raw).created_at
            version = current + 1
            while pipe.exists(self._version_key(name, version)):
                version += 1  # never overwrite a version, whatever left it there
            now = format_time(utc_now())
            new_meta = replace(meta, version=version, created_at=old_created or meta.created_at or now, updated_at=now)
            meta_json = json.dumps(new_meta.to_json(), sort_keys=True)
            fields: dict[FieldT, EncodableT] = {
                "meta": meta_json, "cert": files.cert_pem, "chain": files.chain_pem, "fullchain": files.fullchain_pem,
            }
            if files.key_pem is not None:
                fields["key"] = self._seal(files.key_pem, f"lineage:{name}:{version}:key")
            pipe.multi()
            pipe.hset(self._version_key(name, version), mapping=fields)
            pipe.hset(lineage_key, mapping={"current": str(version), "meta": meta_json})
            pipe.sadd(self._k("lineages"), name)
            stored[:] = [new_meta]

        self._write(f"save certificate {name!r}", name, (lineage_key,), build)
        return stored[0]

    def load_state(self, name: str) -> RenewalState | None:
        with self._guard(f"read the renewal state of {name!r}"):
            current, raw = (_bytes(v) for v in self._client.hmget(self._lineage_key(name), ["current", "state"]))
        if raw is None or current is None:
            return None
        state = parse_renewal_state(raw)
        return state if state is not None and str(state.version).encode() == current else None

    def save_state(self, name: str, state: RenewalState) -> None:
        key = self._lineage_key(name)
        data = json.dumps(state.to_json(), sort_keys=True)

        def build(pipe: Pipeline) -> None:
            # Renewal checks (ARI) write state without the lineage's lease: a state computed for a
            # version another host has replaced meanwhile is dropped here, atomically with the
            # check (WATCH), instead of overwriting the newer version's state.
            current = _bytes(pipe.hget(key, "current"))
            pipe.multi()
            if current is not None and current != str(state.version).encode():
                log.debug("dropping the renewal state of %s version %d: version %s is current",
                          name, state.version, current.decode())
                return
            pipe.hset(key, "state", data)

        self._write(f"save the renewal state of {name!r}", name, (key,), build)

    def load_deploy_state(self, name: str) -> dict[str, Any]:
        with self._guard(f"read the deploy state of {name!r}"):
            raw = _bytes(self._client.hget(self._lineage_key(name), "deploy"))
        return parse_deploy_state(raw, f"of {name} in {self.where}")

    def save_deploy_state(self, name: str, state: Mapping[str, Any]) -> None:
        key = self._lineage_key(name)
        data = json.dumps(dict(state), sort_keys=True)

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.hset(key, "deploy", data)

        self._write(f"save the deploy state of {name!r}", name, (key,), build)

    def delete_lineage(self, name: str) -> None:
        key = self._lineage_key(name)

        def build(pipe: Pipeline) -> None:
            versions = [k for k in pipe.scan_iter(match=f"{key}:*", count=500)]
            pipe.multi()
            pipe.delete(key, *versions)
            pipe.srem(self._k("lineages"), name)

        self._write(f"delete certificate {name!r}", name, (key,), build)

    # -- journal -----------------------------------------------------------------------

    def journal_add(self, key: str, record: Mapping[str, Any]) -> None:
        field = validate_journal_key(key)
        data = json.dumps(dict(record), sort_keys=True)

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.hset(self._k("journal"), field, data)
            pipe.zadd(self._k("journal", "order"), {field: time.time()})

        self._write("note a challenge artefact in the journal", None, (), build)

    def journal_remove(self, key: str) -> None:
        field = validate_journal_key(key)

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.hdel(self._k("journal"), field)
            pipe.zrem(self._k("journal", "order"), field)

        self._write("remove a note from the journal", None, (), build)

    def journal_entries(self) -> list[tuple[str, dict[str, Any]]]:
        with self._guard("read the journal"), self._client.pipeline(transaction=True) as pipe:
            pipe.zrange(self._k("journal", "order"), 0, -1)
            pipe.hgetall(self._k("journal"))
            order, notes = pipe.execute()
        by_key = {(_bytes(k) or b"").decode(): _bytes(v) or b"" for k, v in notes.items()}
        out = []
        for member in order:
            key = (_bytes(member) or b"").decode()
            try:
                record = json.loads(by_key[key])
            except (KeyError, ValueError):
                log.warning("skipping the unreadable journal entry %s in %s", key, self.where)
                continue
            if isinstance(record, dict):
                out.append((key, record))
        return out

    # -- leases ------------------------------------------------------------------------

    def _try_acquire(self, lock_id: str) -> tuple[_Lease | None, str, int]:
        lock_key = self._k("lock", lock_id)
        token = f"{socket.gethostname()} pid {os.getpid()} {os.urandom(8).hex()}"
        with self._guard("take a lease"):
            answer = self._client.eval(_ACQUIRE, 2, lock_key, self._k("fence", lock_id), token, self._ttl_ms)
        values = list(answer) if isinstance(answer, list) else []
        fence = int(values[0]) if values else 0
        if fence > 0:
            return _Lease(self, lock_key, token, fence), "", 0
        holder = (_bytes(values[1]) or b"").decode(errors="replace") if len(values) > 1 else ""
        left = int(values[2]) if len(values) > 2 else 0
        return None, holder, left

    def _acquire_steps(self, lock_id: str, what: str, wait: float) -> Iterator[float]:
        """Try to take the lease, yielding pauses to sleep between tries; LockedError after ``wait``."""
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            lease, holder, left = self._try_acquire(lock_id)
            if lease is not None:
                self._leases[lock_id] = lease
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                words = holder.split(" ")
                who = f"pid {words[2]} on {words[0]}" if len(words) >= 3 else "holder unknown"
                raise LockedError(
                    f"{what} is in use by another certsmith process ({who}; its lease in {self.where} runs for "
                    f"{max(left, 0) / 1000:.0f} s more unless renewed); wait for it to finish"
                )
            yield min(_LOCK_POLL, remaining)

    def _release(self, lock_id: str) -> None:
        lease = self._leases.pop(lock_id, None)
        if lease is not None:
            lease.release()

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: float = 0.0) -> Iterator[None]:
        """Hold certificate ``name`` across processes and hosts (a lease, renewed while held)."""
        lock_id = validate_lineage_name(name)
        for pause in self._acquire_steps(lock_id, f"certificate {name!r}", wait):
            time.sleep(pause)
        try:
            yield
        finally:
            self._release(lock_id)

    def alock(self, name: str, *, wait: float = 0.0) -> contextlib.AbstractAsyncContextManager[None]:
        return self._alease(validate_lineage_name(name), f"certificate {name!r}", wait)

    @contextlib.asynccontextmanager
    async def _alease(self, lock_id: str, what: str, wait: float) -> AsyncIterator[None]:
        import asyncio

        for pause in self._acquire_steps(lock_id, what, wait):
            await asyncio.sleep(pause)
        try:
            yield
        finally:
            self._release(lock_id)

    def fence(self, name: str) -> int | None:
        """The fencing number of the lease this process holds on certificate ``name``, or ``None``."""
        lease = self._leases.get(name)
        return None if lease is None else lease.fence

    # -- inventory and migration (certsmith store migrate / check) ---------------------

    def _hash(self, key: str) -> dict[str, bytes]:
        fields = self._client.hgetall(key)
        return {(_bytes(k) or b"").decode(): _bytes(v) or b"" for k, v in fields.items()} if isinstance(
            fields, dict) else {}

    def account_urls(self) -> list[str]:
        """The directory URLs in the account records listed in ``P:accounts`` (damaged ones: see :meth:`audit`)."""
        with self._guard("list the accounts"):
            members = self._client.smembers(self._k("accounts"))
            raws = [_bytes(self._client.hget(self._k("account", (_bytes(m) or b"").decode()), "json"))
                    for m in (members if isinstance(members, set) else [])]
        urls = []
        for raw in raws:
            with contextlib.suppress(ValueError, AttributeError, ConfigError):
                url = json.loads(raw or b"").get("directory_url")
                if isinstance(url, str):
                    _account_id(url)
                    urls.append(url)
        return sorted(urls)

    def import_account(self, account: StoredAccount, archived_keys: list[tuple[str, bytes]]) -> None:
        """The account and its archived keys (sealed again, each under its own stamp) in one MULTI/EXEC."""
        aid = _account_id(account.directory_url)
        key, archive = self._k("account", aid), self._k("account", aid, "archive")
        sealed = self._seal(account.key_pem, f"account:{aid}:key")
        items = []
        for stamp, key_pem in archived_keys:
            if not (0 < len(stamp) <= 64 and stamp[0].isalnum() and all(c.isalnum() or c in "-_." for c in stamp)):
                raise StorageError(f"invalid archived account key stamp {stamp[:40]!r}")
            items.append(stamp.encode() + b" " + self._seal(key_pem, f"account:{aid}:archive"))
        data = json.dumps(account.to_json(), sort_keys=True)

        def build(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.hset(key, mapping={"json": data, "key": sealed})
            pipe.delete(archive)
            if items:
                pipe.rpush(archive, *items)
            pipe.sadd(self._k("accounts"), aid)

        self._write(f"import the account for {account.directory_url}", f"account:{aid}", (key,), build)

    def lineage_versions(self, name: str) -> list[int]:
        prefix = self._lineage_key(name) + ":"
        with self._guard(f"list the versions of certificate {name!r}"):
            keys = list(self._client.scan_iter(match=f"{prefix}*", count=1000))
        versions = [(_bytes(k) or b"").decode()[len(prefix):] for k in keys]
        return sorted(int(v) for v in versions if v.isdigit())

    def load_version(self, name: str, version: int) -> tuple[LineageMeta, CertificateFiles] | None:
        key = self._version_key(name, version)
        with self._guard(f"read version {version} of certificate {name!r}"):
            raw = _bytes(self._client.hget(key, "meta"))
        files = self.load_files(name, version)
        if files is None:
            if raw is not None:
                raise StorageError(f"version {version} of certificate {name!r} in {self.where} has no certificate; "
                                   f"delete the Redis key {key}")
            return None
        if raw is None:
            raise StorageError(f"version {version} of certificate {name!r} in {self.where} has no metadata; "
                               f"delete the Redis key {key}")
        meta = self._parse_meta(name, raw)
        if meta.name != name or meta.version != version:
            raise StorageError(f"the Redis key {key} holds {meta.name!r} version {meta.version}; delete it")
        return meta, files

    def import_version(self, meta: LineageMeta, files: CertificateFiles, *, current: bool) -> None:
        name = validate_lineage_name(meta.name)
        if meta.version < 1:
            raise StorageError(f"cannot import version {meta.version} of {name!r}: versions start at 1")
        lineage_key, version_key = self._lineage_key(name), self._version_key(name, meta.version)
        meta_json = json.dumps(meta.to_json(), sort_keys=True)
        fields: dict[FieldT, EncodableT] = {
            "meta": meta_json, "cert": files.cert_pem, "chain": files.chain_pem, "fullchain": files.fullchain_pem,
        }
        if files.key_pem is not None:
            fields["key"] = self._seal(files.key_pem, f"lineage:{name}:{meta.version}:key")

        def build(pipe: Pipeline) -> None:
            exists = bool(pipe.exists(version_key))
            if exists and self.load_version(name, meta.version) != (meta, files):
                pipe.reset()
                raise StorageError(f"cannot import version {meta.version} of {name!r}: it exists already in "
                                   f"{self.where}")
            pipe.multi()
            if not exists:
                pipe.hset(version_key, mapping=fields)
            if current:
                pipe.hset(lineage_key, mapping={"current": str(meta.version), "meta": meta_json})
                pipe.sadd(self._k("lineages"), name)

        self._write(f"import certificate {name!r}", name, (lineage_key, version_key), build)

    def audit(self) -> list[StoreProblem]:
        """Damaged records, keys no record leads to, and leases that will not free themselves soon."""
        problems: list[StoreProblem] = []
        with self._guard("check the store"):
            keys = sorted((_bytes(k) or b"").decode() for k in self._client.scan_iter(match=self._k("*"), count=1000))
            lineages = {(_bytes(m) or b"").decode() for m in self._client.smembers(self._k("lineages")) or ()}
            accounts = {(_bytes(m) or b"").decode() for m in self._client.smembers(self._k("accounts")) or ()}
            for key in keys:
                parts = key[len(self.prefix) + 1:].split(":")
                if parts[0] == "lineage" and len(parts) == 2:
                    problems.extend(self._audit_lineage(key, parts[1], lineages))
                elif parts[0] == "lineage" and len(parts) == 3:
                    if parts[1] not in lineages:
                        problems.append(StoreProblem("orphan", key, f"a version of certificate {parts[1]!r}, "
                                                     "which is not listed in the store"))
                    elif not parts[2].isdigit():
                        problems.append(StoreProblem("orphan", key, "not a version number"))
                    else:
                        with contextlib.suppress(ConfigError):
                            problems.extend(self._audit_version(key, parts[1], int(parts[2])))
                elif parts[0] == "account" and len(parts) == 2:
                    fields = self._hash(key)
                    if parts[1] not in accounts or "json" not in fields:
                        problems.append(StoreProblem("orphan", key, "an account key without its account record"))
                    elif "key" not in fields:
                        problems.append(StoreProblem("damaged", key, "an account record without its key"))
                    else:
                        try:
                            data = json.loads(fields["json"])
                            if not isinstance(data, dict) or _account_id(data.get("directory_url", "")) != parts[1]:
                                raise ValueError("it names another CA")
                        except (ValueError, ConfigError, TypeError) as exc:
                            problems.append(StoreProblem("damaged", key, f"an unreadable account record ({exc})"))
                elif parts[0] == "account" and len(parts) == 3 and parts[2] == "archive":
                    if parts[1] not in accounts:
                        problems.append(StoreProblem("orphan", key, "archived account keys without their account"))
                elif parts[0] == "lock" and len(parts) >= 2:
                    problems.extend(self._audit_lease(key))
            for name in sorted(lineages):
                if self._lineage_key(name) not in keys:
                    problems.append(StoreProblem("orphan", self._k("lineages"), f"lists {name!r}, which has no record"))
            for aid in sorted(accounts):
                if self._k("account", aid) not in keys:
                    problems.append(StoreProblem("orphan", self._k("accounts"), f"lists {aid}, which has no record"))
            order = {(_bytes(m) or b"").decode() for m in self._client.zrange(self._k("journal", "order"), 0, -1)}
            notes = self._hash(self._k("journal"))
        for note in sorted(set(notes) | order):
            where = f"{self._k('journal')} {note}"
            if note not in notes or note not in order:
                problems.append(StoreProblem("orphan", where, "a journal note without its order entry, or the reverse"))
                continue
            try:
                if not isinstance(json.loads(notes[note]), dict):
                    raise ValueError
            except ValueError:
                problems.append(StoreProblem("damaged", where, "an unreadable journal note"))
        return problems

    def _audit_lineage(self, key: str, name: str, listed: set[str]) -> list[StoreProblem]:
        fields = self._hash(key)
        if name not in listed:
            return [StoreProblem("orphan", key, "a certificate that is not listed in the store")]
        if "meta" not in fields or not fields.get("current", b"").isdigit():
            return [StoreProblem("damaged", key, "a certificate record without its current version")]
        problems = []
        try:
            self._parse_meta(name, fields["meta"])
        except StorageError as exc:
            problems.append(StoreProblem("damaged", key, str(exc)))
        if not self._client.exists(self._version_key(name, int(fields["current"]))):
            missing = f"its current version {fields['current'].decode()} is missing"
            problems.append(StoreProblem("damaged", key, missing))
        for field in ("state", "deploy"):
            damage = state_damage(fields[field], renewal=field == "state") if field in fields else None
            if damage is not None:
                problems.append(StoreProblem("damaged", f"{key} {field}", damage))
        return problems

    def _audit_version(self, key: str, name: str, version: int) -> list[StoreProblem]:
        """A version's fields, its metadata, and its sealed key when the store key is given."""
        fields = self._hash(key)
        if "cert" not in fields:
            return [StoreProblem("orphan", key, "a version without its certificate")]
        missing = [f for f in ("meta", "chain", "fullchain") if f not in fields]
        if missing:
            return [StoreProblem("damaged", key, f"a version without its {', '.join(missing)}")]
        try:
            meta = self._parse_meta(name, fields["meta"])
            if meta.name != name or meta.version != version:
                raise StorageError(f"it holds {meta.name!r} version {meta.version}")
            if "key" in fields and self._store_key is not None:
                self._open(fields["key"], f"lineage:{name}:{version}:key", f"the private key of certificate {name!r}")
        except StorageError as exc:
            return [StoreProblem("damaged", key, str(exc))]
        return []

    def _audit_lease(self, key: str) -> list[StoreProblem]:
        ttl = self._client.pttl(key)
        token = (_bytes(self._client.get(key)) or b"").decode(errors="replace")
        if isinstance(ttl, int) and ttl == -1:
            return [StoreProblem("lease", key, f"a lease without expiry (held by {token or 'nobody'}): it never frees "
                                 "itself; delete it once no certsmith holds it")]
        words = token.split(" ")
        if len(words) >= 3 and words[0] == socket.gethostname() and words[2].isdigit() and words[2] != str(os.getpid()):
            try:
                os.kill(int(words[2]), 0)
            except ProcessLookupError:
                left = max(int(ttl), 0) / 1000 if isinstance(ttl, int) else 0
                return [StoreProblem("lease", key, f"a stale lease: its holder (pid {words[2]} on this host) is gone; "
                                     f"it expires in {left:.0f} s")]
            except PermissionError:
                pass
        return []

    # -- fleet operations: the directory cache ----------------------------------------

    def directory_cache(self, max_age: float | None = None) -> RedisDirectoryCache:
        """A cache of each CA's directory document shared by every host, like ``FileStore.directory_cache``."""
        from certsmith.storage.files import DIRECTORY_CACHE_MAX_AGE

        return RedisDirectoryCache(self, DIRECTORY_CACHE_MAX_AGE if max_age is None else max_age)


    # -- the shared rate limiter and shared http-01 answers (issue 11, items 3 and 4) ------

    def rate_take(self, buckets: Sequence[RateBucket], now: float) -> RateRefusal | None:
        if not buckets:
            return None
        keys = [self._k("rate", bucket.key) for bucket in buckets]
        args: list[str] = [repr(float(now)), f"{now!r}:{os.urandom(8).hex()}"]
        for bucket in buckets:
            args += [str(int(bucket.limit)), repr(float(bucket.window)), "1" if bucket.take else "0"]
        with self._guard("take a token from the rate limiter"):
            answer = self._client.eval(_RATE_TAKE, len(keys), *keys, *args)
        values = list(answer) if isinstance(answer, list) else []
        index = int(values[0]) if values else 0
        if index <= 0:
            return None
        wait = float((_bytes(values[1]) or b"0").decode())
        return RateRefusal(buckets[index - 1], max(wait, 0.0))

    def challenge_publish(self, token: str, key_authorization: str, ttl: float) -> None:
        key = self._k("challenge", validate_challenge_token(token))
        with self._guard("publish an http-01 answer"):
            self._client.set(key, key_authorization.encode(), px=max(int(ttl * 1000), 1))

    def challenge_lookup(self, token: str) -> str | None:
        key = self._k("challenge", validate_challenge_token(token))
        with self._guard("read a published http-01 answer"):
            value = _bytes(self._client.get(key))
        return value.decode(errors="replace") if value is not None else None

    def challenge_withdraw(self, token: str) -> None:
        key = self._k("challenge", validate_challenge_token(token))
        with self._guard("withdraw an http-01 answer"):
            self._client.delete(key)


class RedisDirectoryCache:
    """Directory documents in ``P:cache:directory:<id>``, expiring ``max_age`` seconds after they were fetched.

    Being a cache it never fails the caller: Redis unreachable, a damaged or foreign
    entry all count as absent, and a write that fails is skipped (it costs one GET).
    """

    def __init__(self, store: RedisStore, max_age: float) -> None:
        self._store = store
        self.max_age = max_age

    def _key(self, url: str) -> str:
        return self._store._k("cache", "directory", hashlib.sha256(url.encode()).hexdigest()[:32])

    def get(self, url: str) -> Any | None:
        from redis.exceptions import RedisError

        try:
            raw = _bytes(self._store._client.get(self._key(url)))
            data = json.loads(raw) if raw is not None else None
        except (RedisError, StorageError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("url") != url or not isinstance(data.get("document"), dict):
            return None
        return data["document"]

    def put(self, url: str, document: Any) -> None:
        from redis.exceptions import RedisError

        if self.max_age <= 0:
            return
        try:
            data = json.dumps({"url": url, "document": document})
            self._store._client.set(self._key(url), data, px=int(self.max_age * 1000))
        except (RedisError, TypeError, ValueError):
            return

    def drop(self, url: str) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError):
            self._store._client.delete(self._key(url))
