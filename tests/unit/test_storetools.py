"""store migrate --merge finishes a copy an earlier run left half done, and never mixes two certificates."""

from __future__ import annotations

from pathlib import Path

from certsmith.storage.base import CertificateFiles, LineageMeta
from certsmith.storage.files import FileStore
from certsmith.storetools import migrate_store

NAME = "half.example.com"


def _pem(label: str) -> bytes:
    return f"-----BEGIN CERTIFICATE-----\n{label}\n-----END CERTIFICATE-----\n".encode()


def _version(version: int, label: str = "") -> tuple[LineageMeta, CertificateFiles]:
    meta = LineageMeta(
        name=NAME, names=(NAME,), key_type="ec256", directory_url="https://acme.test/dir", settings={},
        not_before="2026-01-01T00:00:00Z", not_after="2099-01-01T00:00:00Z", serial=f"{version:02x}",
        issuer="Test CA", version=version, created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z",
    )
    body = _pem(f"AA{label}{version}")
    return meta, CertificateFiles(body, body, body * 2, b"key %d" % version)


def _source(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "source")
    with store.lock(NAME):
        for version in (1, 2, 3):
            store.import_version(*_version(version), current=version == 3)
    return store


def test_merge_completes_a_lineage_an_interrupted_copy_left_half_done(tmp_path: Path) -> None:
    source = _source(tmp_path)
    destination = FileStore(tmp_path / "destination")
    with destination.lock(NAME):  # the copy stopped after the first version
        destination.import_version(*_version(1), current=False)

    report = migrate_store(source, destination, merge=True)  # reads everything back: raises if it differs

    assert report.certificates == [NAME] and report.versions == 2 and report.skipped_certificates == []
    assert destination.lineage_versions(NAME) == [1, 2, 3]
    current = destination.load_meta(NAME)
    assert current is not None and current.version == 3
    assert migrate_store(source, destination, merge=True).skipped_certificates == [NAME]  # nothing left to copy


def test_merge_commits_a_lineage_whose_copy_stopped_before_its_current_version_was_made_current(
    tmp_path: Path,
) -> None:
    """Every version copied, none current (a file store writes a version, then commits it): the
    certificate is not listed, and a merge makes the source's current version current."""
    source = _source(tmp_path)
    destination = FileStore(tmp_path / "destination")
    with destination.lock(NAME):
        for version in (1, 2, 3):
            destination.import_version(*_version(version), current=False)
    assert destination.lineage_names() == [] and destination.load_meta(NAME) is None

    report = migrate_store(source, destination, merge=True)

    assert report.certificates == [NAME] and report.skipped_certificates == []
    current = destination.load_meta(NAME)
    assert current is not None and current.version == 3 and destination.lineage_versions(NAME) == [1, 2, 3]
    assert destination.load_files(NAME, 3) == _version(3)[1]
    assert migrate_store(source, destination, merge=True).skipped_certificates == [NAME]


def test_merge_leaves_another_certificate_of_the_same_name_alone(tmp_path: Path) -> None:
    source = _source(tmp_path)
    destination = FileStore(tmp_path / "destination")
    with destination.lock(NAME):
        destination.import_version(*_version(1, label="B"), current=False)  # not the source's version 1

    report = migrate_store(source, destination, merge=True)

    assert report.certificates == [] and report.skipped_certificates == [NAME]
    assert destination.lineage_versions(NAME) == [1]
    loaded = destination.load_version(NAME, 1)
    assert loaded is not None and loaded[1].cert_pem == _pem("AAB1")


def test_a_read_account_keeps_its_archived_and_pending_keys_out_of_repr() -> None:
    """What migrate reads holds private keys: a repr (a log, a failed comparison) must not show them."""
    from certsmith.storage.base import StoredAccount
    from certsmith.storetools import _read_account
    from tests.support.memory_store import MemoryStore

    url = "https://acme.test/dir"
    store = MemoryStore()
    account = StoredAccount(directory_url=url, url=f"{url}/acct/1", key_pem=b"SECRET-CURRENT", contact=(),
                            status="valid", created_at="2026-01-01T00:00:00Z")
    store.import_account(account, [("20260101T000000Z", b"SECRET-ARCHIVED")])
    store.save_pending_account_key(url, b"SECRET-PENDING")
    read = _read_account(store, url)
    assert read.archived and read.pending == b"SECRET-PENDING"
    assert "SECRET" not in repr(read)
