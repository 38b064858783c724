"""Accounts, certificates and locks in a directory tree.

Layout under the root (every directory certsmith creates is 0700, keys are 0600)::

    accounts/<host[_port]>/<sha256(directory_url)[:16]>/
        account.json            url, contact, status, created_at, directory_url
        account.key             the account key (0600)
        account.key.<UTC time>  keys replaced by a key rollover (0600)
        account.key.pending     the new key while a rollover is under way (0600)
    certificates/<name>/
        archive/<version>/      cert.pem chain.pem fullchain.pem privkey.pem meta.json
        current -> archive/<version>
        cert.pem -> current/cert.pem       (likewise chain.pem, fullchain.pem,
                                            privkey.pem and meta.json)
        renewal.json            what was learnt since (ARI answers, revocation)
        deploy.json             what the deploy targets remember (e.g. uploaded certificate IDs)
    cache/directory-<host[_port]>-<sha256(directory_url)[:16]>.json
                                the CA's directory document and when it was fetched
                                (a cache: a stale or damaged one is ignored)
    journal/<id>.json           a challenge artefact being presented (0600; see certsmith.leftovers)
    locks/<name>.lock           flock(2) target; holds the holder's pid
    locks/.account-<host[_port]>-<sha256(directory_url)[:16]>.lock    the account's lock

Crash safety of a certificate save: each version is written completely into a
staging directory (``certificates/<name>/.staging-<pid>-<random>``, every file via
:func:`atomic_write`), fsynced, and renamed to ``archive/<version>``; nothing a
reader looks at has changed yet. Then a new ``current`` symlink is created beside
the old one and renamed over it -- the single atomic commit point. The stable paths
(``cert.pem`` ...) are symlinks through ``current``, so at every moment they show
the complete old set or the complete new set, and the old set stays in
``archive/`` untouched. A reader that needs the key and the certificate of the
same version even during a concurrent renewal reads from
``archive/<version>`` (what :meth:`FileStore.load_files` does), which never changes. Staging
directories of processes that died are removed by the next save; an
``archive/<n>`` that never became current is skipped by the version numbering.

Every other file is written with :func:`atomic_write` (temporary file in the same
directory, created with its final mode, fsync, rename, fsync of the directory).
All paths are built by :class:`FileStore`'s ``*_dir``/``*_path`` methods.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from certsmith._atomic import replace_file, sync_directory
from certsmith._constants import CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE, LINEAGE_FILES
from certsmith._time import format_time, utc_now
from certsmith.errors import ConfigError, LockedError, StorageError
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
    rate_refusal,
    state_damage,
    validate_challenge_token,
    validate_journal_key,
    validate_lineage_name,
)

__all__ = ["DIRECTORY_CACHE_MAX_AGE", "FileDirectoryCache", "FileStore", "atomic_write"]

#: Seconds a cached directory document is used before it is fetched again.
DIRECTORY_CACHE_MAX_AGE = 3600.0

_META_FILE = "meta.json"
_STATE_FILE = "renewal.json"
_DEPLOY_FILE = "deploy.json"
_LINEAGE_FILES = (*LINEAGE_FILES, _META_FILE)
log = logging.getLogger("certsmith.storage")
_STAGING_PREFIX = ".staging-"
_DELETED_PREFIX = ".deleted-"
_LOCK_POLL = 0.05
_WRITE_HINT = "check that the directory exists, is writable by this user and the disk is not full"


def _rmtree(path: str | Path, *, ignore_errors: bool = False) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content.

    The temporary file is created in the same directory with ``mode`` from the
    start (a key is never readable by others, not even briefly), fsynced, renamed
    over ``path`` and the directory fsynced, so the new content survives a power
    loss. On any failure the temporary file is removed, ``path`` keeps its old
    content and :class:`StorageError` is raised.
    """
    path = Path(path)
    try:
        replace_file(path, data, mode)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {_strerror(exc)}; {_WRITE_HINT}") from exc
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (ignored where unsupported)."""
    try:
        sync_directory(directory)
    except OSError as exc:
        raise StorageError(f"cannot sync directory {directory}: {_strerror(exc)}; {_WRITE_HINT}") from exc


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (new link beside it, then rename)."""
    tmp = link.parent / f"{_STAGING_PREFIX}{os.getpid()}-{os.urandom(6).hex()}.link"
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot update symlink {link}: {_strerror(exc)}; {_WRITE_HINT}") from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _account_label(directory_url: str) -> tuple[str, str]:
    """A readable, path-safe label for the CA's host and a digest of the whole URL."""
    parts = check_directory_url(directory_url)
    port = parts.port
    label = re.sub(r"[^a-z0-9.-]", "_", (parts.hostname or "").lower())
    if label.startswith("."):
        label = "_" + label  # never '.' or '..' as a path component
    if port is not None:
        label += f"_{port}"
    import hashlib  # on use, like shutil in _rmtree: list and show need neither

    return label, hashlib.sha256(directory_url.encode()).hexdigest()[:16]


#: How long a token of a bucket whose window was never recorded counts (the longest default window).
_RATE_WINDOW_UNKNOWN = 7 * 86400.0


class FileStore:
    """The on-disk :class:`~certsmith.storage.base.Store` (layout in the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._trusted: set[Path] = set()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    @staticmethod
    def default_root() -> Path:
        """``/var/lib/certsmith`` for root, else ``$XDG_DATA_HOME/certsmith`` or
        ``~/.local/share/certsmith``. ``$CERTSMITH_STATE_DIR`` is the CLI's business."""
        if os.geteuid() == 0:
            return Path("/var/lib/certsmith")
        xdg = os.environ.get("XDG_DATA_HOME", "")
        # The XDG spec says relative values are invalid and must be ignored.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
        return base / "certsmith"

    # -- paths: the only place that builds them ----------------------------------

    def account_dir(self, directory_url: str) -> Path:
        """``accounts/<host[_port]>/<first 16 hex of sha256(directory_url)>``."""
        label, digest = _account_label(directory_url)
        return self.root / "accounts" / label / digest

    def account_lock_path(self, directory_url: str) -> Path:
        """``locks/.account-<host[_port]>-<digest>.lock`` (no lineage name starts with a dot)."""
        label, digest = _account_label(directory_url)
        return self.root / "locks" / f".account-{label}-{digest}.lock"

    def lineage_dir(self, name: str) -> Path:
        """``certificates/<name>``; raises :class:`ConfigError` for an unsafe name."""
        return self.root / "certificates" / validate_lineage_name(name)

    def lock_path(self, name: str) -> Path:
        """``locks/<name>.lock``; raises :class:`ConfigError` for an unsafe name."""
        return self.root / "locks" / f"{validate_lineage_name(name)}.lock"

    def directory_cache_path(self, directory_url: str) -> Path:
        """``cache/directory-<host[_port]>-<digest>.json``."""
        label, digest = _account_label(directory_url)
        return self.root / "cache" / f"directory-{label}-{digest}.json"

    def directory_cache(self, max_age: float = DIRECTORY_CACHE_MAX_AGE) -> FileDirectoryCache:
        """A cache of each CA's directory document, so a new process need not GET it again."""
        return FileDirectoryCache(self, max_age)

    def location(self, name: str) -> str:
        """The lineage's directory, where ``cert.pem``, ``fullchain.pem`` ... always show the current version."""
        return str(self.lineage_dir(name))

    def _ensure_dir(self, path: Path) -> None:
        """Create ``path`` (0700 for it and every missing directory below the root)."""
        if path.is_dir():
            self._check_dir(path)
            return
        try:
            if path != self.root and self.root in path.parents:
                self._ensure_dir(path.parent)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                if not path.is_dir():
                    raise
            else:
                os.chmod(path, 0o700)  # exact mode regardless of the umask
        except OSError as exc:
            raise StorageError(
                f"cannot create directory {path}: {_strerror(exc)}; check that {self.root} "
                "is writable by this user, or choose another state directory"
            ) from exc

    def _check_dir(self, path: Path) -> None:
        """Refuse a directory of the state that another user could change; tighten our own.

        Below the root no directory may be a symlink (a planted link would let another user
        swap the certificates a server reads); every directory must be ours, and one that
        group or others may write is made 0700 with a warning. The root itself may be a
        link the administrator made, but what it points to must pass the same checks.
        """
        if path in self._trusted:
            return
        chain = [path, *(parent for parent in path.parents if self.root in parent.parents)]
        for directory in [self.root, *reversed(chain)] if path != self.root else [path]:
            if directory in self._trusted:
                continue
            try:
                info = os.lstat(directory) if directory != self.root else os.stat(directory)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StorageError(f"cannot inspect {directory}: {_strerror(exc)}") from exc
            if stat.S_ISLNK(info.st_mode):
                raise StorageError(
                    f"{directory} is a symbolic link, which certsmith never creates there; another user may "
                    f"have planted it: remove it and check {self.root}"
                )
            if info.st_uid != os.geteuid():
                raise StorageError(
                    f"{directory} belongs to another user (uid {info.st_uid}); certsmith only uses a state "
                    "directory that this user owns"
                )
            if info.st_mode & 0o022 and info.st_mode & stat.S_ISVTX:
                raise StorageError(
                    f"{directory} is a shared directory (like /tmp) that anyone may write to; give certsmith a "
                    "state directory of its own"
                )
            if info.st_mode & 0o022:
                try:
                    os.chmod(directory, stat.S_IMODE(info.st_mode) & ~0o022)
                except OSError as exc:
                    raise StorageError(f"{directory} is writable by others and cannot be tightened: "
                                       f"{_strerror(exc)}") from exc
                log.warning("%s was writable by group or others; removed their write permission", directory)
            self._trusted.add(directory)

    # -- reading helpers ---------------------------------------------------------

    def _read(self, path: Path, what: str) -> bytes | None:
        """The bytes of ``path``, ``None`` if it does not exist, else StorageError."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"cannot read {what} {path}: {_strerror(exc)}; check the permissions of {self.root} "
                "or run certsmith as the user that owns it"
            ) from exc

    @staticmethod
    def _parse_json(path: Path, raw: bytes, what: str, remedy: str) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise StorageError(f"{what} {path} is not valid JSON ({exc}); {remedy}") from exc
        if not isinstance(data, dict):
            raise StorageError(f"{what} {path} is not a JSON object; {remedy}")
        return data

    # -- accounts ----------------------------------------------------------------

    def load_account(self, directory_url: str) -> StoredAccount | None:
        """The account stored for ``directory_url``, or ``None`` if there is none."""
        directory = self.account_dir(directory_url)
        json_path = directory / "account.json"
        raw = self._read(json_path, "account file")
        if raw is None:
            return None
        remedy = f"restore it from a backup, or remove {directory} to register a new account"
        data = self._parse_json(json_path, raw, "account file", remedy)
        key_path = directory / "account.key"
        key_pem = self._read(key_path, "account key")
        if key_pem is None:
            raise StorageError(f"account key {key_path} is missing although {json_path} exists; {remedy}")
        try:
            return StoredAccount.from_json(data, key_pem)
        except ValueError as exc:
            raise StorageError(f"account file {json_path} is invalid: {exc}; {remedy}") from exc

    def save_account(self, account: StoredAccount) -> None:
        """Store ``account``; the key is written first so the JSON never lacks a key."""
        directory = self.account_dir(account.directory_url)
        self._ensure_dir(directory)
        atomic_write(directory / "account.key", account.key_pem, 0o600)
        data = json.dumps(account.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write(directory / "account.json", data.encode(), 0o600)

    def archive_account_key(self, directory_url: str) -> None:
        """Copy the current account key to ``account.key.<UTC time>`` (0600).

        Call before a key rollover saves the new key, so the old one is never lost.
        Does nothing when no key is stored.
        """
        directory = self.account_dir(directory_url)
        key_pem = self._read(directory / "account.key", "account key")
        if key_pem is None:
            return
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        target = directory / f"account.key.{stamp}"
        counter = 1
        while os.path.lexists(target):
            target = directory / f"account.key.{stamp}-{counter}"
            counter += 1
        atomic_write(target, key_pem, 0o600)

    def save_pending_account_key(self, directory_url: str, key_pem: bytes | None) -> None:
        path = self.account_dir(directory_url) / "account.key.pending"
        if key_pem is None:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot remove {path}: {_strerror(exc)}; {_WRITE_HINT}") from exc
            return
        self._ensure_dir(path.parent)
        atomic_write(path, key_pem, 0o600)

    def load_pending_account_key(self, directory_url: str) -> bytes | None:
        return self._read(self.account_dir(directory_url) / "account.key.pending", "staged account key")

    def account_lock(self, directory_url: str, *, wait: float = 0.0) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the account of ``directory_url`` across processes (see :meth:`alock`)."""
        return _Flock(self, self.account_lock_path(directory_url), f"the account for {directory_url}", wait)

    # -- certificates ------------------------------------------------------------

    def lineage_names(self) -> list[str]:
        """Names of all certificates that have a ``meta.json``, sorted."""
        base = self.root / "certificates"
        try:
            entries = sorted(entry.name for entry in os.scandir(base) if entry.is_dir())
            names = []
            for name in entries:
                try:
                    validate_lineage_name(name)
                except ConfigError:
                    continue
                if (base / name / "meta.json").is_file():
                    names.append(name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(
                f"cannot list {base}: {_strerror(exc)}; check the permissions of {self.root} "
                "or run certsmith as the user that owns it"
            ) from exc
        return names

    def load_meta(self, name: str) -> LineageMeta | None:
        """The metadata of the current version of certificate ``name``, or ``None`` if not stored."""
        directory = self.lineage_dir(name)
        self._check_dir(directory.parent)
        self._check_dir(directory)
        meta_path = directory / _META_FILE
        raw = self._read(meta_path, "certificate metadata")
        if raw is None:
            return None
        remedy = (
            f"restore it from an earlier version under {directory / 'archive'}, "
            f"or remove {directory} and issue the certificate again"
        )
        data = self._parse_json(meta_path, raw, "certificate metadata", remedy)
        try:
            return LineageMeta.from_json(data)
        except ValueError as exc:
            raise StorageError(f"certificate metadata {meta_path} is invalid: {exc}; {remedy}") from exc

    def load_files(self, name: str, version: int) -> CertificateFiles | None:
        """The files of ``archive/<version>``, which never change once written."""
        version_dir = self.lineage_dir(name) / "archive" / str(version)
        cert = self._read(version_dir / CERT_FILE, "certificate")
        if cert is None:
            return None
        chain = self._read(version_dir / CHAIN_FILE, "certificate chain")
        fullchain = self._read(version_dir / FULLCHAIN_FILE, "certificate chain")
        if chain is None or fullchain is None:
            raise StorageError(f"{version_dir} is incomplete; remove {self.lineage_dir(name)} and issue it again")
        return CertificateFiles(
            cert_pem=cert, chain_pem=chain, fullchain_pem=fullchain, key_pem=self._read(version_dir / KEY_FILE, "key")
        )

    def save_certificate(self, meta: LineageMeta, files: CertificateFiles) -> LineageMeta:
        """Store a new version of certificate ``meta.name`` all-or-nothing.

        The store assigns ``version`` (one more than any existing version), keeps the
        lineage's first ``created_at`` and sets ``updated_at`` to now. The previous
        version stays in ``archive/``. ``files.key_pem=None`` (a certificate for the
        user's own CSR) stores no private key. See the module docstring for the crash safety.
        """
        directory = self.lineage_dir(meta.name)
        archive = directory / "archive"
        self._ensure_dir(archive)
        self._remove_stale_staging(directory)

        try:
            old = self.load_meta(meta.name)
        except StorageError:
            old = None  # a damaged current version must not prevent issuing a new one
        version = max([old.version if old else 0, *self._archived_versions(archive)]) + 1
        now = format_time(utc_now())
        created_at = (old.created_at if old else "") or meta.created_at or now
        new_meta = replace(meta, version=version, created_at=created_at, updated_at=now)

        target = archive / str(version)
        self._write_version(
            directory, target, new_meta, files,
            exists=f"{target} appeared while saving certificate {meta.name!r}; another process is saving it "
            "without holding the certificate's lock -- run one certsmith at a time",
            failure=f"cannot save certificate {meta.name!r} in {directory}",
        )
        committed = False
        try:
            _make_current(directory, version, has_key=files.key_pem is not None)
            committed = True
            # what was learnt about the previous version no longer applies (as in Redis, which drops it)
            with contextlib.suppress(OSError):
                (directory / _STATE_FILE).unlink()
            _fsync_dir(directory)
        finally:
            if not committed:
                _rmtree(target, ignore_errors=True)
        return new_meta

    def load_state(self, name: str) -> RenewalState | None:
        """``renewal.json`` when it describes the current version; a damaged one counts as none."""
        path = self.lineage_dir(name) / _STATE_FILE
        raw = self._read(path, "renewal state")
        meta = self.load_meta(name)
        if raw is None or meta is None:
            return None
        state = parse_renewal_state(raw)
        return state if state is not None and state.version == meta.version else None

    def save_state(self, name: str, state: RenewalState) -> None:
        directory = self.lineage_dir(name)
        data = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        try:
            atomic_write(directory / _STATE_FILE, data.encode(), 0o600)
        except OSError as exc:
            raise StorageError(f"cannot save the renewal state of {name!r}: {_strerror(exc)}; {_WRITE_HINT}") from exc

    def load_deploy_state(self, name: str) -> dict[str, Any]:
        """``deploy.json``; a damaged one counts as empty (with a warning): targets then start afresh."""
        path = self.lineage_dir(name) / _DEPLOY_FILE
        return parse_deploy_state(self._read(path, "deploy state"), str(path))

    def save_deploy_state(self, name: str, state: Mapping[str, Any]) -> None:
        directory = self.lineage_dir(name)
        data = json.dumps(dict(state), indent=2, sort_keys=True) + "\n"
        try:
            atomic_write(directory / _DEPLOY_FILE, data.encode(), 0o600)
        except OSError as exc:
            raise StorageError(f"cannot save the deploy state of {name!r}: {_strerror(exc)}; {_WRITE_HINT}") from exc

    def journal_add(self, key: str, record: Mapping[str, Any]) -> None:
        directory = self.root / "journal"
        self._ensure_dir(directory)
        data = json.dumps(dict(record), sort_keys=True).encode()
        atomic_write(directory / f"{validate_journal_key(key)}.json", data, 0o600)

    def journal_remove(self, key: str) -> None:
        path = self.root / "journal" / f"{validate_journal_key(key)}.json"
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {path}: {_strerror(exc)}; {_WRITE_HINT}") from exc

    def journal_entries(self) -> list[tuple[str, dict[str, Any]]]:
        directory = self.root / "journal"
        if not directory.is_dir():
            return []
        self._check_dir(directory)
        entries: list[tuple[float, str, dict[str, Any]]] = []
        for path in directory.glob("*.json"):
            try:
                record = json.loads(path.read_bytes())
                entries.append((path.stat().st_mtime, path.stem, record))
            except (OSError, ValueError):
                log.warning("skipping the unreadable journal entry %s", path)
                continue
        return [(key, record) for _, key, record in sorted(entries, key=lambda e: e[0]) if isinstance(record, dict)]

    def delete_lineage(self, name: str) -> None:
        """Move the lineage out of sight in one rename, then remove it (a crash leaves only a hidden leftover)."""
        directory = self.lineage_dir(name)
        if not directory.is_dir():
            return
        doomed = directory.parent / f"{_DELETED_PREFIX}{name}-{os.urandom(6).hex()}"
        try:
            os.rename(directory, doomed)
            _fsync_dir(directory.parent)
        except OSError as exc:
            raise StorageError(f"cannot delete {directory}: {_strerror(exc)}; {_WRITE_HINT}") from exc
        _rmtree(doomed, ignore_errors=True)

    @staticmethod
    def _archived_versions(archive: Path) -> list[int]:
        try:
            return [int(entry.name) for entry in os.scandir(archive) if entry.name.isdigit()]
        except OSError as exc:
            raise StorageError(f"cannot list {archive}: {_strerror(exc)}; {_WRITE_HINT}") from exc

    @staticmethod
    def _remove_stale_staging(directory: Path) -> None:
        """Remove staging leftovers of processes that no longer run."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if not entry.name.startswith(_STAGING_PREFIX):
                    continue
                pid_text = entry.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
                if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    # -- locks -------------------------------------------------------------------

    def lock(self, name: str, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Hold certificate ``name`` exclusively across processes.

        Retries for up to ``wait`` seconds, then raises :class:`LockedError` naming
        the holder's pid. The kernel releases the lock if the holder dies, so a lock
        is never stale. The lock file is kept (deleting it would let two processes
        lock different inodes of the same name).
        """
        return _Flock(self, self.lock_path(name), f"certificate {name!r}", wait)

    def alock(self, name: str, *, wait: float = 0.0) -> contextlib.AbstractAsyncContextManager[None]:
        """:meth:`lock` for ``async with``: waits with ``asyncio.sleep``, never blocks."""
        return _Flock(self, self.lock_path(name), f"certificate {name!r}", wait)

    def _open_lock(self, path: Path) -> int:
        self._ensure_dir(path.parent)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot open lock file {path}: {_strerror(exc)}; check the permissions of {path.parent} "
                "or run certsmith as the user that owns it"
            ) from exc

    # -- the shared rate limiter and shared http-01 answers (issue 11, items 3 and 4) ------
    #
    #   ratelimits.json              {bucket key: {"window": seconds, "times": [token times]}} (0600)
    #   locks/.ratelimits.lock       flock(2) around every read-modify-write of it
    #   challenges/<token>.json      {"key_authorization": ..., "expires": epoch seconds} (0600)

    def rate_path(self) -> Path:
        return self.root / "ratelimits.json"

    def challenge_path(self, token: str) -> Path:
        return self.root / "challenges" / f"{validate_challenge_token(token)}.json"

    def rate_take(self, buckets: Sequence[RateBucket], now: float) -> RateRefusal | None:
        path = self.rate_path()
        lock = self.root / "locks" / ".ratelimits.lock"
        with _Flock(self, lock, "the rate limiter", 30.0):
            return self._rate_take_locked(path, buckets, now)

    def _rate_take_locked(self, path: Path, buckets: Sequence[RateBucket], now: float) -> RateRefusal | None:
        raw = self._read(path, "the rate limiter's state")
        taken: dict[str, list[float]] = {}
        windows: dict[str, float] = {}
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if isinstance(data, dict):
                for key, entry in data.items():
                    times, window = _rate_entry(entry)
                    if times is not None:
                        taken[key], windows[key] = times, window
            else:  # a damaged file forgets what it counted; say so, never crash the renewal
                log.warning("the rate limiter's state %s is damaged; starting it afresh", path)
        windows.update({b.key: b.window for b in buckets})
        for key in list(taken):  # drop what has left its bucket's window (as last asked for)
            taken[key] = [t for t in taken[key] if t > now - windows[key]]
            if not taken[key]:
                del taken[key]
        refusal = rate_refusal(buckets, taken, now)
        if refusal is not None:
            return refusal  # nothing taken, nothing to write
        for bucket in buckets:
            if bucket.take:
                taken.setdefault(bucket.key, []).append(now)
        state = {key: {"window": windows[key], "times": times} for key, times in taken.items()}
        self._ensure_dir(self.root)
        try:
            atomic_write(path, json.dumps(state, sort_keys=True).encode(), 0o600)
        except OSError as exc:
            raise StorageError(f"cannot save the rate limiter's state {path}: {_strerror(exc)}; {_WRITE_HINT}") from exc
        return None

    def challenge_publish(self, token: str, key_authorization: str, ttl: float) -> None:
        path = self.challenge_path(token)
        self._ensure_dir(path.parent)
        data = json.dumps({"key_authorization": key_authorization, "expires": time.time() + ttl}).encode()
        try:
            atomic_write(path, data, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot publish the http-01 answer {path}: {_strerror(exc)}; {_WRITE_HINT}") from exc

    def challenge_lookup(self, token: str) -> str | None:
        path = self.challenge_path(token)
        raw = self._read(path, "a published http-01 answer")
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("key_authorization"), str):
            return None
        expires = data.get("expires")
        if not isinstance(expires, int | float) or expires <= time.time():
            return None
        value: str = data["key_authorization"]
        return value

    def challenge_withdraw(self, token: str) -> None:
        path = self.challenge_path(token)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {path}: {_strerror(exc)}; {_WRITE_HINT}") from exc

    # -- inventory and migration (certsmith store migrate / check) ---------------------

    def account_urls(self) -> list[str]:
        """Directory URLs of the accounts whose ``account.json`` names them (damaged ones: see :meth:`audit`)."""
        urls = []
        for directory in self._account_dirs():
            url = self._account_url_of(directory)
            if url is not None:
                urls.append(url)
        return sorted(urls)

    def _account_dirs(self) -> list[Path]:
        base = self.root / "accounts"
        try:
            return sorted(Path(d.path) / e.name for d in os.scandir(base) if d.is_dir(follow_symlinks=False)
                          for e in os.scandir(d.path) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {base}: {_strerror(exc)}; check the permissions of {self.root}") from exc

    def _account_url_of(self, directory: Path) -> str | None:
        """The directory URL in ``directory/account.json`` when it is readable and belongs there."""
        raw = self._read(directory / "account.json", "account file")
        try:
            data = json.loads(raw) if raw is not None else None
            url = data.get("directory_url") if isinstance(data, dict) else None
            return url if isinstance(url, str) and self.account_dir(url) == directory else None
        except (ValueError, ConfigError):
            return None

    def archived_account_keys(self, directory_url: str) -> list[tuple[str, bytes]]:
        """``account.key.<UTC time>`` files, oldest first."""
        directory = self.account_dir(directory_url)
        try:
            stamps = sorted(entry.name[len("account.key."):] for entry in os.scandir(directory)
                            if entry.name.startswith("account.key.") and entry.name != "account.key.pending")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {directory}: {_strerror(exc)}") from exc
        out = []
        for stamp in stamps:
            key_pem = self._read(directory / f"account.key.{stamp}", "archived account key")
            if key_pem is not None:
                out.append((stamp, key_pem))
        return out

    def import_account(self, account: StoredAccount, archived_keys: list[tuple[str, bytes]]) -> None:
        """Write the archived keys as ``account.key.<stamp>`` (others removed), then the account."""
        directory = self.account_dir(account.directory_url)
        for stamp, _ in archived_keys:
            _archive_stamp(stamp)
        self._ensure_dir(directory)
        wanted = {stamp for stamp, _ in archived_keys}
        for stamp, _old in self.archived_account_keys(account.directory_url):
            if stamp not in wanted:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(directory / f"account.key.{stamp}")
        for stamp, key_pem in archived_keys:
            atomic_write(directory / f"account.key.{stamp}", key_pem, 0o600)
        self.save_account(account)

    def lineage_versions(self, name: str) -> list[int]:
        archive = self.lineage_dir(name) / "archive"
        if not archive.is_dir():
            return []
        return sorted(self._archived_versions(archive))

    def load_version(self, name: str, version: int) -> tuple[LineageMeta, CertificateFiles] | None:
        """``archive/<version>``: its ``meta.json`` and files."""
        version_dir = self.lineage_dir(name) / "archive" / str(version)
        files = self.load_files(name, version)
        meta_path = version_dir / _META_FILE
        raw = self._read(meta_path, "certificate metadata")
        if files is None:
            if raw is not None or (version_dir / KEY_FILE).exists():
                raise StorageError(f"{version_dir} has no certificate; restore it or remove {version_dir}")
            return None
        remedy = f"restore it from a backup, or remove {version_dir}"
        if raw is None:
            raise StorageError(f"{version_dir} has no {_META_FILE}; {remedy}")
        data = self._parse_json(meta_path, raw, "certificate metadata", remedy)
        try:
            meta = LineageMeta.from_json(data)
        except ValueError as exc:
            raise StorageError(f"certificate metadata {meta_path} is invalid: {exc}; {remedy}") from exc
        if meta.name != name or meta.version != version:
            raise StorageError(f"{meta_path} describes {meta.name!r} version {meta.version}; {remedy}")
        return meta, files

    def import_version(self, meta: LineageMeta, files: CertificateFiles, *, current: bool) -> None:
        """Write ``archive/<meta.version>`` as given (staged, then renamed), and with ``current`` commit it.

        The rename and the commit are two steps: a copy that stopped between them is finished by
        importing the same version again (see the protocol).
        """
        directory = self.lineage_dir(meta.name)
        archive = directory / "archive"
        self._ensure_dir(archive)
        target = archive / str(meta.version)
        if meta.version < 1:
            raise StorageError(f"cannot import version {meta.version} of {meta.name!r}: versions start at 1")
        if os.path.lexists(target):
            if self.load_version(meta.name, meta.version) != (meta, files):
                raise StorageError(f"cannot import version {meta.version} of {meta.name!r}: {target} exists already")
        else:
            self._write_version(
                directory, target, meta, files,
                exists=f"cannot import version {meta.version} of {meta.name!r}: {target} exists already",
                failure=f"cannot import certificate {meta.name!r} into {directory}",
            )
        if current:
            _make_current(directory, meta.version, has_key=files.key_pem is not None)
            _fsync_dir(directory)

    def _write_version(
        self, directory: Path, target: Path, meta: LineageMeta, files: CertificateFiles, *, exists: str, failure: str
    ) -> None:
        """Write one version's files into a staging directory and rename it to ``target`` (all or nothing).

        ``exists`` is the error when ``target`` is already there, ``failure`` what an OSError is reported as.
        """
        staging = directory / f"{_STAGING_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        try:
            staging.mkdir(mode=0o700)
            os.chmod(staging, 0o700)
            if files.key_pem is not None:
                atomic_write(staging / KEY_FILE, files.key_pem, 0o600)
            atomic_write(staging / CERT_FILE, files.cert_pem, 0o644)
            atomic_write(staging / CHAIN_FILE, files.chain_pem, 0o644)
            atomic_write(staging / FULLCHAIN_FILE, files.fullchain_pem, 0o644)
            meta_json = json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n"
            atomic_write(staging / _META_FILE, meta_json.encode(), 0o600)
            if os.path.lexists(target):
                raise StorageError(exists)
            os.rename(staging, target)
            _fsync_dir(target.parent)
            _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"{failure}: {_strerror(exc)}; {_WRITE_HINT}") from exc
        finally:
            _rmtree(staging, ignore_errors=True)

    def audit(self) -> list[StoreProblem]:
        """Damaged or orphaned files and leftovers; flock(2) locks never go stale, so no lease problems."""
        problems: list[StoreProblem] = []
        for directory in self._account_dirs():
            where = str(directory)
            has_json, has_key = (directory / "account.json").exists(), (directory / "account.key").exists()
            if has_json and self._account_url_of(directory) is None:
                problems.append(StoreProblem("damaged", where, "account.json is unreadable or names another CA"))
            elif not has_json and (has_key or (directory / "account.key.pending").exists()):
                problems.append(StoreProblem("orphan", where, "an account key without account.json"))
        base = self.root / "certificates"
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name) if base.is_dir() else []
        except OSError as exc:
            raise StorageError(f"cannot list {base}: {_strerror(exc)}") from exc
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(_DELETED_PREFIX):
                problems.append(StoreProblem("orphan", str(path), "the leftover of an interrupted delete"))
                continue
            try:
                validate_lineage_name(entry.name)
            except ConfigError:
                problems.append(StoreProblem("orphan", str(path), "not a certificate certsmith made"))
                continue
            problems.extend(self._audit_lineage(entry.name, path))
        journal = self.root / "journal"
        for path in sorted(journal.glob("*.json")) if journal.is_dir() else []:
            try:
                if not isinstance(json.loads(path.read_bytes()), dict):
                    raise ValueError
            except (OSError, ValueError):
                problems.append(StoreProblem("damaged", str(path), "an unreadable journal note"))
        return problems

    def _audit_lineage(self, name: str, path: Path) -> list[StoreProblem]:
        problems: list[StoreProblem] = []
        meta_ok = (path / _META_FILE).is_file()
        versions = self.lineage_versions(name)
        if not meta_ok:
            what = "archived versions but no current one" if versions else "no certificate"
            problems.append(StoreProblem("orphan", str(path), f"a certificate directory with {what}"))
        for version in versions:
            version_dir = path / "archive" / str(version)
            try:
                if self.load_version(name, version) is None:
                    problems.append(StoreProblem("orphan", str(version_dir), "a version without its certificate"))
            except StorageError as exc:
                problems.append(StoreProblem("damaged", str(version_dir), str(exc)))
        for entry in os.scandir(path):
            if entry.name.startswith(_STAGING_PREFIX):
                pid_text = entry.name[len(_STAGING_PREFIX):].split("-", 1)[0]
                if not (pid_text.isdigit() and _pid_alive(int(pid_text))):
                    problems.append(StoreProblem("orphan", entry.path, "the leftover of an interrupted save"))
        for filename in (_STATE_FILE, _DEPLOY_FILE):
            raw = self._read(path / filename, filename)
            if raw is None:
                continue
            damage = state_damage(raw, renewal=filename == _STATE_FILE)
            if damage is not None:
                problems.append(StoreProblem("damaged", str(path / filename), damage))
        return problems


def _make_current(directory: Path, version: int, *, has_key: bool) -> None:
    """Point the lineage's files at ``current/`` and ``current`` at ``archive/<version>`` (the commit point)."""
    for filename in _LINEAGE_FILES:
        link = directory / filename
        if filename == KEY_FILE and not has_key:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        elif not (link.is_symlink() and os.readlink(link) == f"current/{filename}"):
            _replace_symlink(link, f"current/{filename}")
    _replace_symlink(directory / "current", f"archive/{version}")


def _rate_entry(entry: object) -> tuple[list[float] | None, float]:
    """One bucket's token times and window from ``ratelimits.json``; a bare list (older files) counts for a week."""
    window = _RATE_WINDOW_UNKNOWN
    if isinstance(entry, dict):
        stored = entry.get("window")
        if isinstance(stored, int | float) and not isinstance(stored, bool) and stored > 0:
            window = float(stored)
        entry = entry.get("times")
    if not isinstance(entry, list):
        return None, window
    return [float(t) for t in entry if isinstance(t, int | float) and not isinstance(t, bool)], window


class _Flock:
    """An flock(2) on a lock file of ``store``, held inside ``with`` or ``async with``.

    Both wait the same way (:func:`_lock_pauses`), sleeping with ``time.sleep`` or
    ``asyncio.sleep``; the lock file is closed however the wait or the hold ends.
    """

    def __init__(self, store: FileStore, path: Path, what: str, wait: float) -> None:
        self._store, self._path, self._what, self._wait = store, path, what, wait
        self._fd: int | None = None

    def _pauses(self) -> Generator[float, None, None]:
        """Open the lock file and yield the pauses until the lock is taken; closed if the wait ends otherwise."""
        fd = self._store._open_lock(self._path)
        try:
            yield from _lock_pauses(fd, self._path, self._what, self._wait)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _release(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> None:
        with contextlib.closing(self._pauses()) as pauses:
            for pause in pauses:
                time.sleep(pause)

    def __exit__(self, *exc_info: object) -> None:
        self._unlock()

    async def __aenter__(self) -> None:
        import asyncio  # here, not at the top: list and show read the store without an event loop

        with contextlib.closing(self._pauses()) as pauses:
            for pause in pauses:
                await asyncio.sleep(pause)

    async def __aexit__(self, *exc_info: object) -> None:
        self._unlock()


def _lock_pauses(fd: int, path: Path, what: str, wait: float) -> Iterator[float]:
    """Try to lock ``fd``, yielding the pauses to sleep between tries (the caller sleeps its own way).

    Marks the lock held once taken; raises :class:`LockedError` once ``wait`` seconds are over.
    """
    deadline = time.monotonic() + max(wait, 0.0)
    while not _try_lock(fd, path):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _locked_error(fd, path, what)
        yield min(_LOCK_POLL, remaining)
    _mark_held(fd)


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise StorageError(
            f"cannot lock {path}: {_strerror(exc)}; "
            "the state directory must be on a local file system that supports flock(2)"
        ) from exc
    return True


def _mark_held(fd: int) -> None:
    """Record our pid in the lock file so a waiting process can name us."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)


def _locked_error(fd: int, path: Path, what: str) -> LockedError:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    holder = f"pid {text}" if text.isdigit() else "pid unknown"
    return LockedError(
        f"{what} is in use by another certsmith process ({holder}); "
        f"wait for it to finish (lock file: {path})"
    )


class FileDirectoryCache:
    """Directory documents under ``cache/``, used for ``max_age`` seconds after they were fetched.

    The ACME client reads it before its first request and writes it after a GET of the
    directory (see :class:`certsmith.acme.client.DirectoryCache`). Being a cache, it
    never fails the caller: a file that cannot be read, is damaged, is for another URL,
    is too old or from the future counts as absent, and a write that fails is skipped.
    """

    def __init__(self, store: FileStore, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.max_age = max_age
        self._clock = clock

    def get(self, url: str) -> Any | None:
        try:
            data = json.loads(self._store.directory_cache_path(url).read_bytes())
            fetched_at = data["fetched_at"]
            age = self._clock() - float(fetched_at)
            if data["url"] != url or not 0 <= age <= self.max_age or not isinstance(data["document"], dict):
                return None
            return data["document"]
        except (OSError, ValueError, TypeError, KeyError, ConfigError):
            return None

    def put(self, url: str, document: Any) -> None:
        try:
            path = self._store.directory_cache_path(url)
            data = json.dumps({"url": url, "fetched_at": self._clock(), "document": document}).encode()
        except (ConfigError, TypeError, ValueError):
            return
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self._store._ensure_dir(path.parent)
            tmp.write_bytes(data)
            os.replace(tmp, path)  # no fsync: losing a cache entry costs one GET
        except (OSError, StorageError):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def drop(self, url: str) -> None:
        with contextlib.suppress(OSError, ConfigError):
            self._store.directory_cache_path(url).unlink(missing_ok=True)


def _archive_stamp(stamp: str) -> str:
    """An archived account key's time stamp, safe as the end of a file name."""
    if not (0 < len(stamp) <= 64 and stamp[0].isalnum() and all(c.isalnum() or c in "-_." for c in stamp)):
        raise StorageError(f"invalid archived account key stamp {stamp[:40]!r}")
    return stamp
