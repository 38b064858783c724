"""An in-memory :class:`certsmith.storage.Store`: proof that the protocol needs no paths, and a fast test double."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from certsmith._time import format_time, utc_now
from certsmith.errors import LockedError, StorageError
from certsmith.storage.base import (
    CertificateFiles,
    LineageMeta,
    RateBucket,
    RateRefusal,
    RenewalState,
    StoredAccount,
    StoreProblem,
    rate_refusal,
    validate_challenge_token,
    validate_lineage_name,
)


class MemoryStore:
    """Accounts, lineage versions, renewal states and locks in dictionaries.

    ``damaged`` names lineages whose metadata reads as damaged, as a file store's
    would after someone edited ``meta.json`` by hand.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, StoredAccount] = {}
        self.versions: dict[str, list[tuple[LineageMeta, CertificateFiles]]] = {}
        self.states: dict[str, RenewalState] = {}
        self.damaged: set[str] = set()
        self.held: set[str] = set()
        self.journal: dict[str, dict[str, Any]] = {}
        self.pending_keys: dict[str, bytes] = {}
        self.deploy_states: dict[str, dict[str, Any]] = {}
        self.rate_taken: dict[str, list[float]] = {}
        self.challenges: dict[str, tuple[str, float]] = {}

        # inventory and migration
        self.archived_keys: dict[str, list[tuple[str, bytes]]] = {}
        self.current: dict[str, int] = {}  # set by import_version when the current version is not the last

    def location(self, name: str) -> str:
        return f"memory://{validate_lineage_name(name)}"

    def load_account(self, directory_url: str) -> StoredAccount | None:
        return self.accounts.get(directory_url)

    def save_account(self, account: StoredAccount) -> None:
        self.accounts[account.directory_url] = account

    def archive_account_key(self, directory_url: str) -> None:
        account = self.accounts.get(directory_url)
        if account is not None:
            stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
            self.archived_keys.setdefault(directory_url, []).append((stamp, account.key_pem))

    @contextlib.asynccontextmanager
    async def account_lock(self, directory_url: str, *, wait: float = 0.0) -> AsyncIterator[None]:
        async with self._hold("account:" + directory_url, wait):
            yield

    def lineage_names(self) -> list[str]:
        return sorted(self.versions)

    def load_meta(self, name: str) -> LineageMeta | None:
        validate_lineage_name(name)
        if name in self.damaged:
            raise StorageError(f"the metadata of {name!r} is damaged")
        versions = self.versions.get(name)
        if versions and name in self.current:
            return next((meta for meta, _ in versions if meta.version == self.current[name]), None)
        return versions[-1][0] if versions else None

    def load_files(self, name: str, version: int) -> CertificateFiles | None:
        for meta, files in self.versions.get(name, []):
            if meta.version == version:
                return files
        return None

    def save_certificate(self, meta: LineageMeta, files: CertificateFiles) -> LineageMeta:
        versions = self.versions.setdefault(validate_lineage_name(meta.name), [])
        now = format_time(utc_now())
        stored = replace(
            meta,
            version=len(versions) + 1,
            created_at=versions[0][0].created_at if versions else now,
            updated_at=now,
        )
        versions.append((stored, files))
        self.current.pop(meta.name, None)
        self.damaged.discard(meta.name)
        return stored

    def load_state(self, name: str) -> RenewalState | None:
        state, meta = self.states.get(name), self.load_meta(name)
        return state if state is not None and meta is not None and state.version == meta.version else None

    def save_state(self, name: str, state: RenewalState) -> None:
        self.states[name] = state

    def save_pending_account_key(self, directory_url: str, key_pem: bytes | None) -> None:
        if key_pem is None:
            self.pending_keys.pop(directory_url, None)
        else:
            self.pending_keys[directory_url] = key_pem

    def load_pending_account_key(self, directory_url: str) -> bytes | None:
        return self.pending_keys.get(directory_url)

    def load_deploy_state(self, name: str) -> dict[str, Any]:
        return dict(self.deploy_states.get(name, {}))

    def save_deploy_state(self, name: str, state: Mapping[str, Any]) -> None:
        self.deploy_states[name] = dict(state)

    def journal_add(self, key: str, record: Mapping[str, Any]) -> None:
        self.journal[key] = dict(record)

    def journal_remove(self, key: str) -> None:
        self.journal.pop(key, None)

    def journal_entries(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.journal.items())

    def delete_lineage(self, name: str) -> None:
        self.current.pop(name, None)
        self.versions.pop(name, None)
        self.states.pop(name, None)
        self.deploy_states.pop(name, None)

    # -- inventory and migration (certsmith store migrate / check) ---------------------

    def account_urls(self) -> list[str]:
        return sorted(self.accounts)

    def archived_account_keys(self, directory_url: str) -> list[tuple[str, bytes]]:
        return list(self.archived_keys.get(directory_url, []))

    def import_account(self, account: StoredAccount, archived_keys: list[tuple[str, bytes]]) -> None:
        self.archived_keys[account.directory_url] = list(archived_keys)
        self.accounts[account.directory_url] = account

    def lineage_versions(self, name: str) -> list[int]:
        return sorted(meta.version for meta, _ in self.versions.get(validate_lineage_name(name), []))

    def load_version(self, name: str, version: int) -> tuple[LineageMeta, CertificateFiles] | None:
        return next(((m, f) for m, f in self.versions.get(name, []) if m.version == version), None)

    def import_version(self, meta: LineageMeta, files: CertificateFiles, *, current: bool) -> None:
        versions = self.versions.setdefault(validate_lineage_name(meta.name), [])
        there = next(((m, f) for m, f in versions if m.version == meta.version), None)
        if there is not None and there != (meta, files):
            raise StorageError(f"version {meta.version} of {meta.name!r} exists already")
        before = self.load_meta(meta.name) if versions else None
        if there is None:
            versions.append((meta, files))
            versions.sort(key=lambda item: item[0].version)
        chosen = meta.version if current else before.version if before is not None else None
        if chosen is None or chosen == versions[-1][0].version:
            self.current.pop(meta.name, None)
        else:
            self.current[meta.name] = chosen

    def audit(self) -> list[StoreProblem]:
        return [StoreProblem("damaged", f"memory://{name}", "damaged metadata") for name in sorted(self.damaged)]

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: float = 0.0) -> Iterator[None]:
        if name in self.held:
            raise LockedError(f"certificate {name!r} is in use")
        self.held.add(name)
        try:
            yield
        finally:
            self.held.discard(name)

    def alock(self, name: str, *, wait: float = 0.0) -> contextlib.AbstractAsyncContextManager[None]:
        return self._hold(validate_lineage_name(name), wait)

    @contextlib.asynccontextmanager
    async def _hold(self, key: str, wait: float) -> AsyncIterator[None]:
        deadline = asyncio.get_running_loop().time() + wait
        while key in self.held:
            if asyncio.get_running_loop().time() >= deadline:
                raise LockedError(f"{key} is in use")
            await asyncio.sleep(0.01)
        self.held.add(key)
        try:
            yield
        finally:
            self.held.discard(key)

    # -- the shared rate limiter and shared http-01 answers --------------------------------

    def rate_take(self, buckets: Sequence[RateBucket], now: float) -> RateRefusal | None:
        refusal = rate_refusal(buckets, self.rate_taken, now)
        if refusal is None:
            for bucket in buckets:
                if bucket.take:
                    self.rate_taken.setdefault(bucket.key, []).append(now)
        return refusal

    def challenge_publish(self, token: str, key_authorization: str, ttl: float) -> None:
        self.challenges[validate_challenge_token(token)] = (key_authorization, time.time() + ttl)

    def challenge_lookup(self, token: str) -> str | None:
        value, expires = self.challenges.get(validate_challenge_token(token), ("", 0.0))
        return value if expires > time.time() else None

    def challenge_withdraw(self, token: str) -> None:
        self.challenges.pop(validate_challenge_token(token), None)
