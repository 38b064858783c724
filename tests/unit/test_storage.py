"""Tests of the storage layer: atomic writes, modes, lineages, crash safety, locks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certsmith.errors import ConfigError, LockedError, StorageError
from certsmith.storage import (
    CertificateFiles,
    FileStore,
    LineageMeta,
    RenewalState,
    Store,
    StoredAccount,
    atomic_write,
    validate_lineage_name,
)
from certsmith.storage import files as files_mod
from certsmith.storage.base import MAX_LINEAGE_NAME

DIRECTORY = "https://acme.example.test:14000/dir"


# -- helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A real key and a self-signed certificate for it."""

    key_pem: bytes
    cert_pem: bytes
    serial: str


def make_pair(cn: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pair(key_pem, cert.public_bytes(serialization.Encoding.PEM), format(cert.serial_number, "x"))


@pytest.fixture(scope="module")
def pairs() -> tuple[Pair, Pair]:
    return make_pair("one.example.com"), make_pair("two.example.com")


def meta_for(pair: Pair, name: str = "example.com", **changes: Any) -> LineageMeta:
    values: dict[str, Any] = {
        "name": name,
        "names": (name, f"www.{name}"),
        "key_type": "ec256",
        "directory_url": DIRECTORY,
        "settings": {"challenge": "http-01", "http_port": 80, "reuse_key": False},
        "not_before": "2025-01-01T00:00:00Z",
        "not_after": "2025-04-01T00:00:00Z",
        "serial": pair.serial,
        "issuer": "CN=test",
        "version": 0,
        "created_at": "",
        "updated_at": "",
    }
    values.update(changes)
    return LineageMeta(**values)


@dataclass(frozen=True)
class Lineage:
    """A lineage's current meta and the stable file paths a server is pointed at."""

    meta: LineageMeta
    directory: Path

    @property
    def cert_path(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def chain_path(self) -> Path:
        return self.directory / "chain.pem"

    @property
    def fullchain_path(self) -> Path:
        return self.directory / "fullchain.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "privkey.pem"

    @property
    def meta_path(self) -> Path:
        return self.directory / "meta.json"

    @property
    def version_dir(self) -> Path:
        return self.directory / "archive" / str(self.meta.version)


def load(store: FileStore, name: str) -> Lineage | None:
    meta = store.load_meta(name)
    return None if meta is None else Lineage(meta, store.lineage_dir(name))


def files_of(pair: Pair) -> CertificateFiles:
    chain = b"CHAIN " + pair.serial.encode()
    return CertificateFiles(pair.cert_pem, chain, pair.cert_pem + chain, pair.key_pem)


def save(store: FileStore, pair: Pair, name: str = "example.com", **changes: Any) -> Lineage:
    meta = store.save_certificate(meta_for(pair, name, **changes), files_of(pair))
    return Lineage(meta, store.lineage_dir(name))


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    """Temporary or staging entries anywhere below ``directory``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        for entry in dirnames + filenames:
            if ".tmp-" in entry or entry.startswith(".staging-"):
                found.append(os.path.join(dirpath, entry))
    return found


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "state")


# -- names and roots -------------------------------------------------------------


@pytest.mark.parametrize("name", ["example.com", "_.example.com", "a", "x-y_z.1", "A" * MAX_LINEAGE_NAME])
def test_valid_lineage_names(name: str) -> None:
    assert validate_lineage_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", ".hidden", "*.example.com", "a/b", "../x", "a b", "é.com", "a\n", "A" * (MAX_LINEAGE_NAME + 1),
     "-rf", "-x.example.com"],
)
def test_invalid_lineage_names(store: FileStore, pairs: tuple[Pair, Pair], name: str) -> None:
    with pytest.raises(ConfigError):
        validate_lineage_name(name)
    with pytest.raises(ConfigError):
        load(store, name)
    with pytest.raises(ConfigError), store.lock(name):
        pass
    with pytest.raises(ConfigError):
        save(store, pairs[0], name)
    assert not store.root.exists() or not (store.root / "certificates").exists()


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CERTSMITH_STATE_DIR", "/elsewhere")  # the CLI's business, not ours
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert FileStore.default_root() == Path("/var/lib/certsmith")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert FileStore.default_root() == tmp_path / "xdg" / "certsmith"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")
    assert FileStore.default_root() == tmp_path / "home" / ".local" / "share" / "certsmith"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert FileStore.default_root() == tmp_path / "home" / ".local" / "share" / "certsmith"


def test_file_store_is_a_store(store: FileStore) -> None:
    assert isinstance(store, Store)


# -- atomic_write ----------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_atomic_write_sets_exact_mode(tmp_path: Path, umask: int) -> None:
    old_umask = os.umask(umask)
    try:
        atomic_write(tmp_path / "key.pem", b"secret", 0o600)
        atomic_write(tmp_path / "cert.pem", b"public")
    finally:
        os.umask(old_umask)
    assert mode(tmp_path / "key.pem") == 0o600
    assert mode(tmp_path / "cert.pem") == 0o644
    assert (tmp_path / "key.pem").read_bytes() == b"secret"
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_and_tightens_mode(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    atomic_write(path, b"new", 0o600)
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["key.pem"]


def test_atomic_write_temp_file_is_never_more_open_than_final_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data: Any) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spying_write)
    old_umask = os.umask(0)
    try:
        atomic_write(tmp_path / "key.pem", b"secret", 0o600)
    finally:
        os.umask(old_umask)
    assert seen and all(m == 0o600 for m in seen)


def test_atomic_write_temp_file_is_created_with_final_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not even an empty key file may be opened by others: an fd opened then stays valid."""
    seen: list[int] = []
    real_open = os.open

    def spying_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, *args, **kwargs)
        if ".tmp-" in os.fspath(path):
            seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    monkeypatch.setattr(os, "open", spying_open)
    old_umask = os.umask(0)
    try:
        atomic_write(tmp_path / "key.pem", b"secret", 0o600)
    finally:
        os.umask(old_umask)
    assert seen == [0o600]


def test_atomic_write_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError, match="cannot write"):
        atomic_write(tmp_path / "file" / "key.pem", b"secret", 0o600)
    assert (tmp_path / "file").read_bytes() == b"x"


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    path = tmp_path / "key.pem"
    atomic_write(path, b"old", 0o600)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(StorageError, match="No space left") as info:
        atomic_write(path, b"new secret", 0o600)
    monkeypatch.undo()
    assert "new secret" not in str(info.value)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["key.pem"]


def test_atomic_write_interrupted_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a"
    atomic_write(path, b"old")

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_atomic_write_read_only_directory(tmp_path: Path) -> None:
    path = tmp_path / "a"
    atomic_write(path, b"old")
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(StorageError):
            atomic_write(path, b"new")
    finally:
        os.chmod(tmp_path, 0o700)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a"]


# -- accounts --------------------------------------------------------------------


def account(pair: Pair, **changes: Any) -> StoredAccount:
    values: dict[str, Any] = {
        "directory_url": DIRECTORY,
        "url": "https://acme.example.test:14000/acct/1",
        "key_pem": pair.key_pem,
        "contact": ("mailto:admin@example.com",),
        "status": "valid",
        "created_at": "2025-01-01T00:00:00Z",
    }
    values.update(changes)
    return StoredAccount(**values)


def test_account_round_trip_layout_and_modes(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    acct = account(pairs[0])
    assert store.load_account(DIRECTORY) is None
    store.save_account(acct)
    assert store.load_account(DIRECTORY) == acct

    directory = store.account_dir(DIRECTORY)
    assert directory.parent.name == "acme.example.test_14000"
    assert len(directory.name) == 16 and int(directory.name, 16) >= 0
    assert directory.parent.parent == store.root / "accounts"
    assert mode(directory / "account.key") == 0o600
    for d in (store.root, store.root / "accounts", directory.parent, directory):
        assert mode(d) == 0o700, d
    data = json.loads((directory / "account.json").read_text())
    assert data == {
        "directory_url": DIRECTORY,
        "url": acct.url,
        "contact": ["mailto:admin@example.com"],
        "status": "valid",
        "created_at": "2025-01-01T00:00:00Z",
    }
    assert b"PRIVATE KEY" not in (directory / "account.json").read_bytes()
    assert leftovers(store.root) == []


def test_account_repr_hides_key(pairs: tuple[Pair, Pair]) -> None:
    text = repr(account(pairs[0]))
    assert "PRIVATE" not in text and "key_pem" not in text


def test_accounts_are_separated_by_directory(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    other = "https://acme.example.test:14000/other-dir"
    store.save_account(account(pairs[0]))
    store.save_account(account(pairs[1], directory_url=other, url="https://x/acct/2"))
    first, second = store.load_account(DIRECTORY), store.load_account(other)
    assert first is not None and second is not None
    assert first.key_pem == pairs[0].key_pem and second.key_pem == pairs[1].key_pem
    assert store.account_dir(DIRECTORY).parent == store.account_dir(other).parent
    assert store.account_dir("https://acme.example.test/dir").parent.name == "acme.example.test"


def test_account_deactivation_is_a_status(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    store.save_account(account(pairs[0]))
    store.save_account(account(pairs[0], status="deactivated"))
    loaded = store.load_account(DIRECTORY)
    assert loaded is not None and loaded.status == "deactivated"


@pytest.mark.parametrize("url", ["not a url", "/relative/dir", "ftp://x/dir", "https://host:99999/dir"])
def test_account_bad_directory_url(store: FileStore, url: str) -> None:
    with pytest.raises(ConfigError):
        store.account_dir(url)


def test_account_dir_never_escapes_root(store: FileStore) -> None:
    for url in ("https://../dir", "https://[::1]:14000/dir", "https://./dir"):
        directory = store.account_dir(url)
        assert directory.resolve().is_relative_to((store.root / "accounts").resolve())
        assert ".." not in directory.parts and "." not in directory.relative_to(store.root).parts


def test_archive_account_key(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    store.archive_account_key(DIRECTORY)  # nothing stored yet: no-op
    store.save_account(account(pairs[0]))
    store.archive_account_key(DIRECTORY)
    store.archive_account_key(DIRECTORY)  # twice in the same second keeps both
    store.save_account(account(pairs[1]))
    directory = store.account_dir(DIRECTORY)
    archived = sorted(directory.glob("account.key.*"))
    assert len(archived) == 2
    for path in archived:
        assert path.read_bytes() == pairs[0].key_pem
        assert mode(path) == 0o600
    loaded = store.load_account(DIRECTORY)
    assert loaded is not None and loaded.key_pem == pairs[1].key_pem


def test_account_damage_is_a_storage_error(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    store.save_account(account(pairs[0]))
    directory = store.account_dir(DIRECTORY)
    (directory / "account.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"account\.json"):
        store.load_account(DIRECTORY)
    (directory / "account.json").write_text('{"directory_url": "x"}')
    with pytest.raises(StorageError, match="'url'"):
        store.load_account(DIRECTORY)
    store.save_account(account(pairs[0]))
    (directory / "account.key").unlink()
    with pytest.raises(StorageError, match=r"account\.key") as info:
        store.load_account(DIRECTORY)
    assert "register a new account" in str(info.value)


def test_unreadable_account_key(store: FileStore, pairs: tuple[Pair, Pair], monkeypatch: pytest.MonkeyPatch) -> None:
    store.save_account(account(pairs[0]))
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "account.key":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(StorageError, match="Permission denied") as info:
        store.load_account(DIRECTORY)
    assert "account.key" in str(info.value)
    assert "PRIVATE" not in str(info.value)


# -- certificates ----------------------------------------------------------------


def test_save_twice_archives_first_version(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    one, two = pairs
    first = save(store, one, created_at="2020-01-01T00:00:00Z", version=7)
    assert first.meta.version == 1  # the store numbers versions, not the caller
    assert first.meta.created_at == "2020-01-01T00:00:00Z"
    assert first.meta.updated_at.endswith("Z") and first.meta.updated_at > "2024"
    second = save(store, two, created_at="")
    assert second.meta.version == 2
    assert second.meta.created_at == "2020-01-01T00:00:00Z"  # the lineage's birth is kept

    loaded = load(store, "example.com")
    assert loaded == second
    assert loaded.meta.serial == two.serial
    # Current (stable paths) is version 2, and its key matches its certificate.
    assert loaded.cert_path.read_bytes() == two.cert_pem
    assert loaded.key_path.read_bytes() == two.key_pem
    assert loaded.fullchain_path.read_bytes().startswith(two.cert_pem)
    assert loaded.chain_path.read_bytes() == b"CHAIN " + two.serial.encode()
    assert key_matches_cert(loaded.key_path.read_bytes(), loaded.cert_path.read_bytes())
    assert not key_matches_cert(one.key_pem, two.cert_pem)  # the check can tell them apart
    # The archive keeps version 1 complete, with the same file names.
    archived = store.lineage_dir("example.com") / "archive" / "1"
    assert archived == first.version_dir
    assert archived.joinpath("cert.pem").read_bytes() == one.cert_pem
    assert archived.joinpath("privkey.pem").read_bytes() == one.key_pem
    assert json.loads(archived.joinpath("meta.json").read_text())["version"] == 1
    assert key_matches_cert(archived.joinpath("privkey.pem").read_bytes(), archived.joinpath("cert.pem").read_bytes())
    assert json.loads(loaded.meta_path.read_text())["version"] == 2
    assert leftovers(store.root) == []


def test_certificate_modes(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    lineage = save(store, pairs[0])
    save(store, pairs[1])
    for d in (store.root, store.root / "certificates", lineage.directory, lineage.directory / "archive"):
        assert mode(d) == 0o700, d
    for version in ("1", "2"):
        version_dir = lineage.directory / "archive" / version
        assert mode(version_dir) == 0o700
        assert mode(version_dir / "privkey.pem") == 0o600
        assert mode(version_dir / "cert.pem") == 0o644
    assert mode(lineage.key_path) == 0o600  # through the symlink


def test_meta_round_trip_and_unknown_fields(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    lineage = save(store, pairs[0])
    assert LineageMeta.from_json(lineage.meta.to_json()) == lineage.meta
    data = json.loads(lineage.meta_path.read_text())
    data["from_the_future"] = {"x": 1}
    data["settings"]["dns_provider"] = "cloudflare"
    lineage.meta_path.write_text(json.dumps(data))
    loaded = load(store, "example.com")
    assert loaded is not None
    assert loaded.meta.settings["dns_provider"] == "cloudflare"
    assert loaded.meta.names == ("example.com", "www.example.com")


def test_meta_optional_fields_default() -> None:
    meta = LineageMeta.from_json(
        {
            "name": "a",
            "names": ["a"],
            "key_type": "rsa2048",
            "directory_url": DIRECTORY,
            "not_before": "2026-01-01T00:00:00Z",
            "not_after": "2026-04-01T00:00:00Z",
            "serial": "01",
            "issuer": "x",
            "version": 3,
        }
    )
    assert meta.settings == {} and meta.created_at == "" and meta.version == 3


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{broken", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"name": "example.com"}', "missing field 'names'"),
        (b'{"name": "e", "names": "e.com"}', "'names' must be"),
    ],
)
def test_corrupt_meta_is_a_storage_error(
    store: FileStore, pairs: tuple[Pair, Pair], content: bytes, match: str
) -> None:
    lineage = save(store, pairs[0])
    lineage.meta_path.write_bytes(content)
    with pytest.raises(StorageError, match=match) as info:
        load(store, "example.com")
    assert "meta.json" in str(info.value) and "issue the certificate again" in str(info.value)


def test_corrupt_meta_does_not_block_a_new_version(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    lineage = save(store, pairs[0])
    lineage.meta_path.write_bytes(b"{broken")
    assert save(store, pairs[1]).meta.version == 2
    loaded = load(store, "example.com")
    assert loaded is not None and loaded.meta.serial == pairs[1].serial


def test_unreadable_meta(store: FileStore, pairs: tuple[Pair, Pair], monkeypatch: pytest.MonkeyPatch) -> None:
    save(store, pairs[0])

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(StorageError, match=r"Permission denied.*run certsmith as the user"):
        load(store, "example.com")


def test_lineage_names(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    assert store.lineage_names() == []
    for name in ("b.example.com", "_.example.com", "a.example.com"):
        save(store, pairs[0], name)
    (store.root / "certificates" / "no-meta").mkdir()
    (store.root / "certificates" / ".staging-1-x").mkdir()
    (store.root / "certificates" / "stray-file").write_text("x")
    assert store.lineage_names() == ["_.example.com", "a.example.com", "b.example.com"]
    assert load(store, "no-meta") is None
    assert load(store, "missing") is None


def test_failed_write_mid_save_keeps_old_set(
    store: FileStore, pairs: tuple[Pair, Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = pairs
    save(store, one)
    directory = store.lineage_dir("example.com")
    before = {name: (directory / name).read_bytes() for name in files_mod._LINEAGE_FILES}
    real = files_mod.atomic_write

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "fullchain.pem":
            raise StorageError(f"cannot write {path}: disk full")
        real(path, data, mode)

    monkeypatch.setattr(files_mod, "atomic_write", failing)
    with pytest.raises(StorageError, match="disk full"):
        save(store, two)
    monkeypatch.undo()

    assert {name: (directory / name).read_bytes() for name in files_mod._LINEAGE_FILES} == before
    loaded = load(store, "example.com")
    assert loaded is not None and loaded.meta.version == 1
    assert key_matches_cert(loaded.key_path.read_bytes(), loaded.cert_path.read_bytes())
    assert sorted(os.listdir(directory / "archive")) == ["1"]
    assert leftovers(store.root) == []
    assert save(store, two).meta.version == 2  # and the next attempt works


def test_failed_commit_keeps_old_set(
    store: FileStore, pairs: tuple[Pair, Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = pairs
    save(store, one)
    real = files_mod._replace_symlink

    def failing(link: Path, target: str) -> None:
        if link.name == "current":
            raise StorageError("cannot update symlink")
        real(link, target)

    monkeypatch.setattr(files_mod, "_replace_symlink", failing)
    with pytest.raises(StorageError):
        save(store, two)
    monkeypatch.undo()
    loaded = load(store, "example.com")
    assert loaded is not None and loaded.meta.version == 1
    assert loaded.key_path.read_bytes() == one.key_pem and loaded.cert_path.read_bytes() == one.cert_pem
    assert sorted(os.listdir(loaded.directory / "archive")) == ["1"]


def test_failed_first_save_leaves_no_lineage(
    store: FileStore, pairs: tuple[Pair, Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = files_mod.atomic_write

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "meta.json":
            raise StorageError("disk full")
        real(path, data, mode)

    monkeypatch.setattr(files_mod, "atomic_write", failing)
    with pytest.raises(StorageError):
        save(store, pairs[0])
    monkeypatch.undo()
    assert load(store, "example.com") is None
    assert store.lineage_names() == []


def test_stale_staging_of_dead_process_is_removed(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    save(store, pairs[0])
    directory = store.lineage_dir("example.com")
    dead = directory / ".staging-999999999-abc"  # above the kernel's pid limit
    dead.mkdir()
    (dead / "privkey.pem").write_bytes(b"half")
    alive = directory / f".staging-{os.getppid()}-abc"
    alive.mkdir()
    # An orphan version that never became current (crash before the commit).
    orphan = directory / "archive" / "2"
    orphan.mkdir()
    save(store, pairs[1])
    assert not dead.exists()
    assert alive.exists()
    loaded = load(store, "example.com")
    assert loaded is not None and loaded.meta.version == 3
    assert loaded.version_dir.joinpath("cert.pem").read_bytes() == pairs[1].cert_pem


CRASH_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from certsmith.storage import CertificateFiles, FileStore, LineageMeta

    store = FileStore(Path(sys.argv[1]))
    pairs = json.loads(Path(sys.argv[2]).read_text())
    meta = json.loads(Path(sys.argv[3]).read_text())
    i = 0
    while True:
        pair = pairs[i % 2]
        m = LineageMeta.from_json({**meta, "serial": pair["serial"]})
        files = CertificateFiles(
            cert_pem=pair["cert"].encode(),
            chain_pem=pair["serial"].encode(),
            fullchain_pem=(pair["cert"] + pair["serial"]).encode(),
            key_pem=pair["key"].encode(),
        )
        store.save_certificate(m, files)
        if i == 0:
            print("saved", flush=True)
        i += 1
    """
)


def test_killed_mid_save_never_leaves_a_mixed_set(store: FileStore, pairs: tuple[Pair, Pair], tmp_path: Path) -> None:
    """SIGKILL a process that saves in a loop; the lineage must always be one whole version."""
    pair_file = tmp_path / "pairs.json"
    pair_file.write_text(
        json.dumps([{"key": p.key_pem.decode(), "cert": p.cert_pem.decode(), "serial": p.serial} for p in pairs])
    )
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(json.dumps(meta_for(pairs[0]).to_json()))
    by_serial = {p.serial: p for p in pairs}
    rng = random.Random(8555)

    def check_consistent(lineage: Lineage, directory: Path) -> None:
        pair = by_serial[lineage.meta.serial]
        assert directory.joinpath("privkey.pem").read_bytes() == pair.key_pem
        assert directory.joinpath("cert.pem").read_bytes() == pair.cert_pem
        assert directory.joinpath("chain.pem").read_bytes() == pair.serial.encode()
        assert directory.joinpath("fullchain.pem").read_bytes() == pair.cert_pem + pair.serial.encode()

    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(store.root), str(pair_file), str(meta_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "saved\n"
            deadline = time.monotonic() + rng.uniform(0.05, 0.25)
            while time.monotonic() < deadline:  # concurrent readers see whole versions
                lineage = load(store, "example.com")
                assert lineage is not None
                check_consistent(lineage, lineage.version_dir)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        lineage = load(store, "example.com")
        assert lineage is not None
        check_consistent(lineage, lineage.directory)  # the stable paths, after the crash
        assert key_matches_cert(lineage.key_path.read_bytes(), lineage.cert_path.read_bytes())
    # A later save cleans up what the killed processes left behind.
    final = save(store, pairs[0])
    assert load(store, "example.com") == final
    assert leftovers(store.root) == []


# -- locks -----------------------------------------------------------------------

LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from certsmith.storage import FileStore

    with FileStore(Path(sys.argv[1])).lock(sys.argv[2]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


@contextlib.contextmanager
def held_by_child(store: FileStore, name: str) -> Iterator[subprocess.Popen[str]]:
    """A child process holding ``name``'s lock until its stdin is closed."""
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(store.root), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        yield child
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()


def test_lock_held_by_another_process(store: FileStore) -> None:
    with held_by_child(store, "example.com") as child:
        expected = rf"'example\.com'.*another certsmith process \(pid {child.pid}\)"
        with pytest.raises(LockedError, match=expected), store.lock("example.com"):
            pytest.fail("lock acquired while another process holds it")
        with store.lock("other.example.com"):  # other names are independent
            pass
        start = time.monotonic()
        with pytest.raises(LockedError), store.lock("example.com", wait=0.3):
            pass
        assert time.monotonic() - start >= 0.3
        # Released by the child while we wait: we get it.
        timer = threading.Timer(0.2, release, (child,))
        timer.start()
        try:
            with store.lock("example.com", wait=5.0):
                assert store.lock_path("example.com").read_text() == f"{os.getpid()}\n"
        finally:
            timer.cancel()
    assert mode(store.lock_path("example.com")) == 0o600
    assert mode(store.root / "locks") == 0o700


def test_lock_released_after_context(store: FileStore) -> None:
    with store.lock("example.com"):
        assert store.lock_path("example.com").read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"), store.lock("example.com"):
            pass
    assert store.lock_path("example.com").read_text() == ""
    with pytest.raises(RuntimeError), store.lock("example.com"):
        raise RuntimeError("boom")
    with store.lock("example.com"):  # released despite the exception
        pass
    # And another process can take it now.
    with held_by_child(store, "example.com") as child:
        release(child)
        assert child.wait(timeout=5) == 0


def test_alock_waits_without_blocking_the_loop(store: FileStore) -> None:
    async def main() -> None:
        async with store.alock("example.com"):
            with pytest.raises(LockedError):
                async with store.alock("example.com"):
                    pass
            with pytest.raises(LockedError), store.lock("example.com"):
                pass

        holder = store.alock("example.com")
        await holder.__aenter__()

        async def let_go() -> None:
            await asyncio.sleep(0.1)
            await holder.__aexit__(None, None, None)

        releaser = asyncio.create_task(let_go())
        start = time.monotonic()
        async with store.alock("example.com", wait=5.0):  # only works if the loop keeps running
            assert time.monotonic() - start < 2.0
        await releaser

    asyncio.run(main())


# -- records and bytes: what the Store protocol gives the manager ---------------------


def test_load_files_reads_one_immutable_version(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    one = save(store, pairs[0])
    two = save(store, pairs[1])
    first = store.load_files("example.com", one.meta.version)
    second = store.load_files("example.com", two.meta.version)
    assert first == files_of(pairs[0]) and second == files_of(pairs[1])
    assert first is not None and first.key_pem is not None and key_matches_cert(first.key_pem, first.cert_pem)
    assert store.load_files("example.com", 99) is None
    assert "PRIVATE KEY" not in repr(first)  # the key never reaches a log through repr


def test_a_certificate_for_a_users_csr_stores_no_key(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    files = CertificateFiles(pairs[0].cert_pem, b"CHAIN", pairs[0].cert_pem + b"CHAIN", key_pem=None)
    meta = store.save_certificate(meta_for(pairs[0], key_type="csr"), files)
    assert store.load_files("example.com", meta.version) == files
    assert not (store.lineage_dir("example.com") / "privkey.pem").exists()


def test_renewal_state_belongs_to_one_version(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    one = save(store, pairs[0])
    assert store.load_state("example.com") is None
    state = RenewalState(version=one.meta.version, ari_renew_at="2025-03-01T00:00:00Z", ari_next_check="x")
    store.save_state("example.com", state)
    assert store.load_state("example.com") == state
    assert mode(store.lineage_dir("example.com") / "renewal.json") == 0o600
    save(store, pairs[1])
    assert store.load_state("example.com") is None  # it described the previous certificate


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"version": "1"}', b'{"version": 1, "ari_renew_at": 5}'])
def test_a_damaged_renewal_state_counts_as_none(store: FileStore, pairs: tuple[Pair, Pair], content: bytes) -> None:
    save(store, pairs[0])
    (store.lineage_dir("example.com") / "renewal.json").write_bytes(content)
    assert store.load_state("example.com") is None
    assert load(store, "example.com") is not None


def test_delete_lineage_removes_every_version(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    save(store, pairs[0])
    save(store, pairs[1])
    save(store, pairs[0], name="other.example.com")
    with store.lock("example.com"):
        store.delete_lineage("example.com")
    assert load(store, "example.com") is None
    assert store.lineage_names() == ["other.example.com"]
    assert sorted(os.listdir(store.root / "certificates")) == ["other.example.com"]
    store.delete_lineage("example.com")  # already gone: nothing to do


def test_the_longest_lineage_name_fits_every_file_the_store_makes(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    longest = "a" * MAX_LINEAGE_NAME
    save(store, pairs[0], name=longest)
    save(store, pairs[1], name=longest)
    with store.lock(longest):
        store.delete_lineage(longest)
    assert store.lineage_names() == []


def test_long_names_get_a_short_stable_lineage_name() -> None:
    from certsmith.settings import lineage_name_for

    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57, "com"])
    name = lineage_name_for([long_name])
    assert len(name) <= MAX_LINEAGE_NAME and validate_lineage_name(name) == name
    assert name == lineage_name_for([long_name]) != lineage_name_for([long_name.replace("d", "e")])
    assert name.startswith("a" * 63 + ".")
    assert lineage_name_for(["*.example.com"]) == "_.example.com"


def test_a_deletion_cut_short_leaves_only_a_hidden_leftover(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    save(store, pairs[0])
    os.rename(store.lineage_dir("example.com"), store.root / "certificates" / ".deleted-example.com-abc")
    assert store.lineage_names() == []
    save(store, pairs[1])
    assert store.lineage_names() == ["example.com"]


def test_location_is_the_lineage_directory(store: FileStore) -> None:
    assert store.location("example.com") == str(store.root / "certificates" / "example.com")
    with pytest.raises(ConfigError):
        store.location("../x")


def test_the_account_lock_file_is_named_after_the_ca(store: FileStore) -> None:
    """Exclusiveness per CA is a Store contract test; here only the file name."""
    assert store.account_lock_path(DIRECTORY).name.startswith(".account-acme.example.test_14000-")


# -- a state directory another user could change ------------------------------------------


def test_a_world_writable_state_directory_is_tightened(
    store: FileStore, pairs: tuple[Pair, Pair], caplog: pytest.LogCaptureFixture
) -> None:
    store.root.mkdir(mode=0o700)
    os.chmod(store.root, 0o777)
    save(store, pairs[0])
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o755
    assert "removed their write permission" in caplog.text


def test_a_planted_symlink_for_a_lineage_is_refused(
    store: FileStore, pairs: tuple[Pair, Pair], tmp_path: Path
) -> None:
    save(store, pairs[0])
    lineage = store.lineage_dir("example.com")
    elsewhere = tmp_path / "attacker"
    os.rename(lineage, elsewhere)
    os.symlink(elsewhere, lineage)
    fresh = FileStore(store.root)  # a new process: nothing trusted yet
    with pytest.raises(StorageError, match="symbolic link"):
        fresh.load_meta("example.com")
    with pytest.raises(StorageError, match="symbolic link"):
        save(fresh, pairs[1])
    assert os.readlink(lineage) == str(elsewhere)  # nothing was written through it


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_state_directory_of_another_user_is_refused(store: FileStore, pairs: tuple[Pair, Pair]) -> None:
    store.root.mkdir(mode=0o700)
    os.chown(store.root, 65534, 65534)
    with pytest.raises(StorageError, match="belongs to another user"):
        save(store, pairs[0])
    assert os.listdir(store.root) == []


def test_a_shared_sticky_directory_is_refused_not_tightened(tmp_path: Path, pairs: tuple[Pair, Pair]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(StorageError, match="shared directory"):
        save(FileStore(shared), pairs[0])
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_rate_limiter_state_of_the_older_format_still_counts(tmp_path: Path) -> None:
    """A ratelimits.json written as {key: [times]} (before windows were stored) is read, as a week's tokens."""
    from certsmith.storage.base import RateBucket

    store = FileStore(tmp_path / "state")
    store.root.mkdir(parents=True)
    store.rate_path().write_text(json.dumps({"o": [100.0], "x": [1.0]}))
    refused = store.rate_take([RateBucket("o", 1, 10.0)], 105.0)
    assert refused is not None and refused.wait == pytest.approx(5.0)
    assert store.rate_take([RateBucket("o", 1, 10.0)], 111.0) is None
    saved = json.loads(store.rate_path().read_text())
    assert saved == {"o": {"window": 10.0, "times": [111.0]}, "x": {"window": 7 * 86400.0, "times": [1.0]}}
