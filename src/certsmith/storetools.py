"""Whole-store operations: copy one store into another with verification, and check a store.

Both work through the :class:`~certsmith.storage.base.Store` protocol only, so they copy a
directory into Redis, Redis into a directory, or any store into any other. A copy is read
completely from the source first (a damaged source fails before anything is written),
then written version by version exactly as stored (numbers, times and archived account
keys unchanged), then read back from the destination and compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from certsmith.errors import StorageError, StoreKeyMissing
from certsmith.storage.base import CertificateFiles, LineageMeta, RenewalState, Store, StoredAccount, StoreProblem

__all__ = ["DestinationNotEmpty", "MigrationReport", "check_store", "migrate_store"]


class DestinationNotEmpty(StorageError):
    """The destination of a migration already holds accounts, certificates or journal notes."""


@dataclass(frozen=True)
class _Account:
    account: StoredAccount
    archived: list[tuple[str, bytes]] = field(repr=False)  # private keys, like StoredAccount.key_pem
    pending: bytes | None = field(repr=False)


@dataclass(frozen=True)
class _Lineage:
    name: str
    versions: list[tuple[LineageMeta, CertificateFiles]]
    current: int
    state: RenewalState | None
    deploy: dict[str, Any]


@dataclass
class MigrationReport:
    """What a migration copied, and what it left because the destination had it already (merge)."""

    accounts: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    versions: int = 0
    journal: int = 0
    skipped_accounts: list[str] = field(default_factory=list)
    skipped_certificates: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts, "certificates": self.certificates, "versions": self.versions,
            "journal": self.journal, "skipped_accounts": self.skipped_accounts,
            "skipped_certificates": self.skipped_certificates,
        }


def _read_account(store: Store, url: str) -> _Account:
    account = store.load_account(url)
    if account is None:
        raise StorageError(f"the account for {url} disappeared from {store!r} while it was read")
    return _Account(account, store.archived_account_keys(url), store.load_pending_account_key(url))


def _read_lineage(store: Store, name: str) -> _Lineage:
    meta = store.load_meta(name)
    if meta is None:
        raise StorageError(f"certificate {name!r} disappeared from {store!r} while it was read")
    versions = []
    for version in store.lineage_versions(name):
        loaded = store.load_version(name, version)
        if loaded is None:
            raise StorageError(f"version {version} of certificate {name!r} in {store!r} has no certificate")
        versions.append(loaded)
    if meta.version not in {m.version for m, _ in versions}:
        raise StorageError(f"the current version {meta.version} of certificate {name!r} in {store!r} is missing")
    return _Lineage(name, versions, meta.version, store.load_state(name), store.load_deploy_state(name))


def migrate_store(source: Store, destination: Store, *, merge: bool = False) -> MigrationReport:
    """Copy everything in ``source`` into ``destination`` and verify it by reading it back.

    ``destination`` must be empty unless ``merge``: then accounts, certificates and journal
    notes it already has are kept as they are (and reported as skipped), never mixed with
    the source's. Raises :class:`DestinationNotEmpty`, or :class:`StorageError` when the
    source has damaged or orphaned data, a write fails or the read-back differs.
    """
    problems = [p for p in source.audit() if p.kind != "lease"]
    if problems:
        first = problems[0]
        raise StorageError(f"the source {source!r} has {len(problems)} problem(s), the first: {first.where}: "
                           f"{first.detail}; repair them (a store check lists them all) before copying it")
    accounts = [_read_account(source, url) for url in source.account_urls()]
    lineages = [_read_lineage(source, name) for name in source.lineage_names()]
    journal = source.journal_entries()

    have_accounts, have_names = set(destination.account_urls()), set(destination.lineage_names())
    have_notes = {key for key, _ in destination.journal_entries()}
    if (have_accounts or have_names or have_notes) and not merge:
        raise DestinationNotEmpty(
            f"the destination {destination!r} is not empty ({len(have_accounts)} account(s), {len(have_names)} "
            f"certificate(s), {len(have_notes)} journal note(s)); nothing was copied"
        )
    report = MigrationReport()
    for item in accounts:
        url = item.account.directory_url
        if url in have_accounts:
            report.skipped_accounts.append(url)
            continue
        destination.import_account(item.account, item.archived)
        if item.pending is not None:
            destination.save_pending_account_key(url, item.pending)
        report.accounts.append(url)
    for lineage in lineages:
        if lineage.name in have_names:  # the destination has a certificate of that name: never mixed
            report.skipped_certificates.append(lineage.name)
            continue
        with destination.lock(lineage.name):
            missing = _missing_versions(destination, lineage)
            if not missing:  # versions of another certificate under that name
                report.skipped_certificates.append(lineage.name)
                continue
            for meta, files in missing:
                destination.import_version(meta, files, current=meta.version == lineage.current)
            if lineage.state is not None:
                destination.save_state(lineage.name, lineage.state)
            if lineage.deploy:
                destination.save_deploy_state(lineage.name, lineage.deploy)
        report.certificates.append(lineage.name)
        report.versions += len(missing)
    copied_notes = [(key, record) for key, record in journal if key not in have_notes]
    for key, record in copied_notes:
        destination.journal_add(key, record)
    report.journal = len(copied_notes)
    _verify(destination, report, accounts, lineages, copied_notes)
    return report


def _missing_versions(destination: Store, lineage: _Lineage) -> list[tuple[LineageMeta, CertificateFiles]]:
    """The versions of ``lineage`` to copy into a destination without a current certificate of that name.

    All of them; or, where a migration stopped part-way, the rest and the current one: when
    every version the destination holds is the source's, unchanged. Versions of another
    certificate under that name give nothing to copy.
    """
    have = destination.lineage_versions(lineage.name)
    source = {meta.version: (meta, files) for meta, files in lineage.versions}
    if any(version not in source or destination.load_version(lineage.name, version) != source[version]
           for version in have):
        return []
    # The current version goes again even when it is there: importing it unchanged commits it, for a
    # copy that stopped after writing it and before making it current.
    return [source[version] for version in sorted(source) if version not in have or version == lineage.current]


def _verify(
    destination: Store, report: MigrationReport, accounts: list[_Account], lineages: list[_Lineage],
    journal: list[tuple[str, dict[str, Any]]],
) -> None:
    """Read back everything copied and compare it with what was read from the source."""
    copied = set(report.accounts)
    for item in accounts:
        if item.account.directory_url in copied and _read_account(destination, item.account.directory_url) != item:
            raise StorageError(f"verification failed: the account for {item.account.directory_url} reads back "
                               f"differently from {destination!r}")
    copied = set(report.certificates)
    for lineage in lineages:
        if lineage.name in copied and _read_lineage(destination, lineage.name) != lineage:
            raise StorageError(f"verification failed: certificate {lineage.name!r} reads back differently from "
                               f"{destination!r}")
    notes = dict(destination.journal_entries())
    for key, record in journal:
        if notes.get(key) != record:
            raise StorageError(f"verification failed: journal note {key} reads back differently from {destination!r}")


def check_store(store: Store) -> list[StoreProblem]:
    """Everything wrong in ``store``: what its :meth:`~Store.audit` finds, and records that cannot be read.

    Private keys sealed with a store key that is not given are not opened (nor reported).
    """
    problems = list(store.audit())
    seen = {p.where for p in problems}
    for url in store.account_urls():
        try:
            _read_account(store, url)
        except StoreKeyMissing:
            continue
        except StorageError as exc:
            problems.append(StoreProblem("damaged", f"account {url}", str(exc)))
    for name in store.lineage_names():
        try:
            store.load_meta(name)
        except StorageError as exc:
            location = store.location(name)
            if not any(where == location or where.startswith((location + "/", location + ":")) for where in seen):
                problems.append(StoreProblem("damaged", f"certificate {name}", str(exc)))
    return problems
