"""Deploy targets without a CA: the --deploy syntax, option checks, files in every format, the runner."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from certsmith.crypto import generate_key, private_key_pem
from certsmith.deploy import base
from certsmith.deploy.base import (
    BaseTarget,
    DeployContext,
    DeployOutcome,
    DeploySpec,
    TargetInfo,
    TargetOption,
    load_target,
    parse_deploy_spec,
)
from certsmith.deploy.files import FilesTarget
from certsmith.deploy.runner import run_targets
from certsmith.errors import ConfigError, DeployError
from certsmith.settings import CertificateRequest
from certsmith.storage.base import CertificateFiles, LineageMeta, Store
from tests.support.memory_store import MemoryStore

PASSWORD = "s3cret pass"


def make_files(key_type: str = "ec256", *, with_key: bool = True, serial: int = 1000) -> CertificateFiles:
    """A leaf signed by a throwaway CA, with that CA as the chain."""
    ca_key = generate_key("ec256")
    key = generate_key(key_type)
    now = datetime.now(UTC)

    def cert(subject: str, issuer: str, public: Any, signer: Any, number: int) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(number)
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(signer, hashes.SHA256())
        )

    pem = serialization.Encoding.PEM
    ca = cert("Test CA", "Test CA", ca_key.public_key(), ca_key, 1).public_bytes(pem)
    leaf = cert("a.test", "Test CA", key.public_key(), ca_key, serial).public_bytes(pem)
    return CertificateFiles(leaf, ca, leaf + ca, private_key_pem(key) if with_key else None)


def context(files: CertificateFiles, state: dict[str, Any] | None = None, **extra: Any) -> DeployContext:
    return DeployContext(
        lineage="a.test", names=("a.test",), version=1, serial="3e8", not_after="2030-01-01T00:00:00Z",
        files=files, state={} if state is None else state, env={}, **extra,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the --deploy syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target", "options"),
    [
        ("reload", "reload", {}),
        ("files:cert=/a.pem,key=/a.key", "files", {"cert": "/a.pem", "key": "/a.key"}),
        ("reload:command='systemctl reload nginx'", "reload", {"command": "systemctl reload nginx"}),
        ("reload:command='a, b',timeout=5", "reload", {"command": "a, b", "timeout": "5"}),
        ('reload:command="say \\"hi\\" \\\\ there"', "reload", {"command": 'say "hi" \\ there'}),
        ("reload:command='it''", None, None),
        ("files: cert = /a b.pem , mode=640", "files", {"cert": "/a b.pem", "mode": "640"}),
        ("reload:command='don\\'t'", None, None),
    ],
)
def test_deploy_syntax(text: str, target: str | None, options: dict[str, str] | None) -> None:
    if target is None:
        with pytest.raises(ConfigError, match=r"^--deploy"):
            parse_deploy_spec(text)
        return
    spec = parse_deploy_spec(text)
    assert spec.target == target
    assert spec.option_map() == options
    assert parse_deploy_spec(spec.text) == spec  # what is shown can be typed back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "start with a target name"),
        (":cert=/a", "start with a target name"),
        ("Files:cert=/a", "start with a target name"),
        ("files:", "nothing after ':'"),
        ("files:cert", "'cert' is not KEY=VALUE"),
        ("files:cert=/a,", "a ',' with no option after it"),
        ("files:cert=/a,,key=/b", "'' is not KEY=VALUE"),
        ("files:cert=/a,cert=/b", "option 'cert' is given twice"),
        ("files:Cert=/a", "'Cert' is not an option name"),
        ("reload:command='unclosed", "never closed"),
        ("reload:command='a'b", "text after the closing quote"),
        ("reload:command=a'b'", "quote the whole value"),
    ],
)
def test_deploy_syntax_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_deploy_spec(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# -- options and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("ftp:host=x", {}, "unknown deploy target 'ftp'; available: alicloud-"),
        ("files:cert=/a,colour=red", {}, "has no option colour (its options: cert, chain"),
        ("files:mode=600", {}, "needs at least one of cert, chain, fullchain, key, der, pkcs12"),
        ("files:cert=relative.pem", {}, "must be an absolute path"),
        ("files:cert=/a,chain=/a", {}, "cert= and chain= are the same file /a"),
        ("files:cert=/a,mode=rw", {}, "mode=rw is not an octal mode"),
        ("files:cert=/a,mode=4755", {}, "set-user-ID"),
        ("files:cert=/a,mode=044", {}, "would not let the owner read"),
        ("files:cert=/a,owner=no-such-user-here", {}, "owner=no-such-user-here: no such user"),
        ("files:cert=/a,group=no-such-group-here", {}, "group=no-such-group-here: no such group"),
        ("files:pkcs12=/a.p12", {}, "needs the password in CERTSMITH_PKCS12_PASSWORD"),
        ("files:cert=/a,legacy=true", {}, "legacy= applies to pkcs12= only"),
        ("files:pkcs12=/a.p12,legacy=maybe", {"CERTSMITH_PKCS12_PASSWORD": "x"}, "legacy must be true or false"),
        ("files:pkcs12=/a.p12", {"CERTSMITH_PKCS12_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read"),
        ("reload", {}, "deploy target 'reload' needs command=..."),
        ("reload:command=x,timeout=soon", {}, "timeout must be a number of seconds"),
        ("reload:command=x,timeout=0", {}, "between 0 and 86400"),
    ],
)
def test_bad_options_are_refused_in_one_line(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_target(parse_deploy_spec(text), env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_password_from_file_and_modes(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    env = {"CERTSMITH_PKCS12_PASSWORD_FILE": str(secret)}
    target = load_target(parse_deploy_spec("files:pkcs12=/x.p12,group=0"), env)
    assert isinstance(target, FilesTarget)
    assert target.config.password == PASSWORD.encode()
    assert PASSWORD not in repr(target.config)
    assert target.config.key_mode == 0o640  # a group was given, so it may read the key
    private = load_target(parse_deploy_spec("files:key=/k"), {})
    opened = load_target(parse_deploy_spec("files:key=/k,cert=/c,mode=0666"), {})
    assert isinstance(private, FilesTarget) and isinstance(opened, FilesTarget)
    assert private.config.key_mode == 0o600
    assert opened.config.key_mode == 0o640 and opened.config.mode == 0o666


def test_password_file_keeps_its_spaces(tmp_path: Path) -> None:
    """A target's secret file loses only its line end (a password may begin or end with a space);
    DNS providers, sharing the same reader, strip the white space around an API token."""
    secret = tmp_path / "pw"
    secret.write_text(" pass word \r\n")
    target = load_target(parse_deploy_spec("files:pkcs12=/x.p12"), {"CERTSMITH_PKCS12_PASSWORD_FILE": str(secret)})
    assert isinstance(target, FilesTarget)
    assert target.config.password == b" pass word "


def test_stored_settings_keep_options_never_secrets() -> None:
    spec = parse_deploy_spec("files:pkcs12=/x.p12,legacy=true")
    request = CertificateRequest(names=("a.test",), deploy=(spec, parse_deploy_spec("reload:command='a b'")))
    stored = request.settings_json()
    assert stored["deploy"] == [
        {"target": "files", "options": {"pkcs12": "/x.p12", "legacy": "true"}},
        {"target": "reload", "options": {"command": "a b"}},
    ]
    meta = LineageMeta(
        name="a.test", names=("a.test",), key_type="ec256", directory_url="https://ca.test/dir", settings=stored,
        not_before="2026-01-01T00:00:00Z", not_after="2026-04-01T00:00:00Z", serial="1", issuer="x", version=1,
        created_at="", updated_at="",
    )
    assert CertificateRequest.from_lineage(meta).deploy == request.deploy
    damaged = LineageMeta(**{**meta.__dict__, "settings": {**stored, "deploy": [{"target": 5}]}})
    with pytest.raises(ConfigError, match=r"stored settings of 'a\.test' are damaged"):
        CertificateRequest.from_lineage(damaged)


# -- the files target ------------------------------------------------------------------------


def files_target(tmp_path: Path, options: str, env: dict[str, str] | None = None) -> FilesTarget:
    target = load_target(parse_deploy_spec("files:" + options.replace("DIR", str(tmp_path))), env or {})
    assert isinstance(target, FilesTarget)
    return target


def test_pem_and_der_written_once_then_unchanged(tmp_path: Path) -> None:
    files = make_files()
    target = files_target(tmp_path, "cert=DIR/c.pem,chain=DIR/ch.pem,fullchain=DIR/f.pem,key=DIR/k.pem,der=DIR/c.der")
    first = run(target.deploy(context(files)))
    assert len(first.changed) == 5 and first.unchanged == []
    assert (tmp_path / "c.pem").read_bytes() == files.cert_pem
    assert (tmp_path / "ch.pem").read_bytes() == files.chain_pem
    assert (tmp_path / "f.pem").read_bytes() == files.fullchain_pem
    assert (tmp_path / "k.pem").read_bytes() == files.key_pem
    der = x509.load_der_x509_certificate((tmp_path / "c.der").read_bytes())
    assert der == x509.load_pem_x509_certificate(files.cert_pem)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pem").stat().st_mode) == 0o644
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    second = run(target.deploy(context(files)))
    assert second.changed == [] and len(second.unchanged) == 5
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    # a loosened mode is put back without rewriting the content
    (tmp_path / "k.pem").chmod(0o644)
    third = run(target.deploy(context(files)))
    assert third.changed == [f"mode 0600 of {tmp_path / 'k.pem'}"]
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_a_new_certificate_replaces_the_files(tmp_path: Path) -> None:
    target = files_target(tmp_path, "fullchain=DIR/f.pem,key=DIR/k.pem")
    run(target.deploy(context(make_files())))
    newer = make_files(serial=2000)
    outcome = run(target.deploy(context(newer)))
    assert outcome.changed == [f"wrote {tmp_path / 'f.pem'}", f"wrote {tmp_path / 'k.pem'}"]
    assert (tmp_path / "k.pem").read_bytes() == newer.key_pem


def test_a_symlink_is_replaced_by_a_file(tmp_path: Path) -> None:
    files = make_files()
    elsewhere = tmp_path / "elsewhere.pem"
    elsewhere.write_bytes(files.cert_pem)
    (tmp_path / "c.pem").symlink_to(elsewhere)
    outcome = run(files_target(tmp_path, "cert=DIR/c.pem").deploy(context(files)))
    assert outcome.changed == [f"wrote {tmp_path / 'c.pem'}"]
    assert not (tmp_path / "c.pem").is_symlink()
    assert elsewhere.read_bytes() == files.cert_pem


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_opens_and_is_kept_when_unchanged(tmp_path: Path, legacy: bool) -> None:
    files = make_files("rsa2048")
    env = {"CERTSMITH_PKCS12_PASSWORD": PASSWORD}
    target = files_target(tmp_path, f"pkcs12=DIR/a.p12,legacy={str(legacy).lower()}", env)
    state: dict[str, Any] = {}
    assert run(target.deploy(context(files, state))).changed == [f"wrote {tmp_path / 'a.p12'}"]
    data = (tmp_path / "a.p12").read_bytes()
    key, cert, extra = pkcs12.load_key_and_certificates(data, PASSWORD.encode())
    assert cert == x509.load_pem_x509_certificate(files.cert_pem)
    assert extra == x509.load_pem_x509_certificates(files.chain_pem)
    assert isinstance(key, rsa.RSAPrivateKey) and private_key_pem(key) == files.key_pem
    assert stat.S_IMODE((tmp_path / "a.p12").stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(data, b"wrong")
    assert run(target.deploy(context(files, state))).changed == []
    assert (tmp_path / "a.p12").read_bytes() == data  # not re-encrypted
    # another password, or the other encryption, writes it again
    other = files_target(tmp_path, "pkcs12=DIR/a.p12", {"CERTSMITH_PKCS12_PASSWORD": "other"})
    assert run(other.deploy(context(files, state))).changed == [f"wrote {tmp_path / 'a.p12'}"]
    pkcs12.load_key_and_certificates((tmp_path / "a.p12").read_bytes(), b"other")
    assert state["pkcs12_format"] == "modern"
    switched = files_target(tmp_path, "pkcs12=DIR/a.p12,legacy=true", {"CERTSMITH_PKCS12_PASSWORD": "other"})
    assert run(switched.deploy(context(files, state))).changed == [f"wrote {tmp_path / 'a.p12'}"]
    assert state["pkcs12_format"] == "legacy"


def test_pkcs12_encryption_is_aes_by_default_and_3des_when_legacy(tmp_path: Path) -> None:
    import subprocess

    files = make_files()
    env = {"CERTSMITH_PKCS12_PASSWORD": PASSWORD}
    run(files_target(tmp_path, "pkcs12=DIR/m.p12", env).deploy(context(files)))
    run(files_target(tmp_path, "pkcs12=DIR/l.p12,legacy=1", env).deploy(context(files)))

    def info(name: str) -> str:
        result = subprocess.run(
            ["openssl", "pkcs12", "-info", "-nokeys", "-in", str(tmp_path / name), "-passin", f"pass:{PASSWORD}"],
            capture_output=True, text=True, check=True,
        )
        return result.stderr

    assert "AES-256-CBC" in info("m.p12") and "sha256" in info("m.p12")
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info("l.p12")


def test_missing_directory_fails_and_leaves_nothing(tmp_path: Path) -> None:
    target = files_target(tmp_path, "cert=DIR/missing/c.pem")
    with pytest.raises(DeployError, match=r"the directory .*/missing does not exist"):
        run(target.deploy(context(make_files())))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_fails_and_leaves_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_bytes(b"old")
    target = files_target(tmp_path, "cert=DIR/c.pem/x")  # below a file: not even root can write there
    with pytest.raises(DeployError, match=r"cannot write .*/c.pem/x: Not a directory"):
        run(target.deploy(context(make_files())))
    assert (tmp_path / "c.pem").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pem"]


def test_a_csr_lineage_has_no_key_to_copy(tmp_path: Path) -> None:
    target = files_target(tmp_path, "cert=DIR/c.pem,key=DIR/k.pem")
    with pytest.raises(DeployError, match="no private key"):
        run(target.deploy(context(make_files(with_key=False))))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_owner_and_group(tmp_path: Path) -> None:
    files = make_files()
    target = files_target(tmp_path, "cert=DIR/c.pem,key=DIR/k.pem,owner=65534,group=65534")
    run(target.deploy(context(files)))
    for name, mode in (("c.pem", 0o644), ("k.pem", 0o640)):
        info = (tmp_path / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, mode)
    os.chown(tmp_path / "k.pem", 0, 0)
    assert run(target.deploy(context(files))).changed == [f"owner of {tmp_path / 'k.pem'}"]
    assert (tmp_path / "k.pem").stat().st_uid == 65534


# -- the runner ------------------------------------------------------------------------------


class Recorder(BaseTarget):
    """A plug-in-style target (registered below as ``recorder``) that remembers every run."""

    info: ClassVar[TargetInfo] = TargetInfo(
        name="recorder", title="Recorder", description="test", options=(TargetOption("fail", "fail when set"),)
    )
    runs: ClassVar[list[tuple[str, tuple[str, ...]]]] = []

    def __init__(self, fail: str) -> None:
        self.fail = fail

    @classmethod
    def from_options(cls, options: Any, env: Any) -> Self:
        return cls(options.get("fail", ""))

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        self.runs.append((self.fail, context.changed))
        context.state["runs"] = context.state.get("runs", 0) + 1
        if self.fail:
            raise DeployError(self.fail)
        if context.state.get("serial") == context.serial:
            return DeployOutcome(unchanged=["upload"])
        context.state["serial"] = context.serial
        return DeployOutcome(changed=["uploaded"])


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    monkeypatch.setitem(base._BUILTINS, "recorder", f"{__name__}:Recorder")
    Recorder.runs = []
    return Recorder


def stored_lineage(store: Store, files: CertificateFiles) -> LineageMeta:
    meta = LineageMeta(
        name="a.test", names=("a.test",), key_type="ec256", directory_url="https://ca.test/dir", settings={},
        not_before="2026-01-01T00:00:00Z", not_after="2026-04-01T00:00:00Z", serial="3e8", issuer="x", version=0,
        created_at="", updated_at="",
    )
    return store.save_certificate(meta, files)


def test_runner_order_failures_and_state(recorder: type[Recorder], tmp_path: Path) -> None:
    store = MemoryStore()
    meta = stored_lineage(store, make_files())
    marker = tmp_path / "reloaded"
    specs = (
        parse_deploy_spec(f"reload:command='echo \"$CERTSMITH_CHANGED\" >> {marker}'"),
        parse_deploy_spec("recorder:fail=boom"),
        parse_deploy_spec("recorder"),
    )
    results = run(run_targets(store, specs, meta, dict(os.environ)))
    assert [r.target for r in results] == ["recorder", "recorder", "reload"]  # reload last
    assert results[0].error == "deploy target recorder failed: boom"
    assert results[1].changed == ("uploaded",)
    assert results[2].ok and marker.read_text() == "uploaded\n"
    states = store.load_deploy_state("a.test")
    assert states["recorder:fail=boom"] == {"runs": 1}  # saved although it failed
    assert states["recorder"] == {"runs": 1, "serial": "3e8"}
    assert recorder.runs == [("boom", ()), ("", ())]
    # again: nothing changed, so reload does not run; the failing one fails again
    again = run(run_targets(store, specs, meta, dict(os.environ)))
    assert again[1].changed == () and again[1].unchanged == ("upload",)
    assert again[2].skipped and marker.read_text() == "uploaded\n"


def test_reload_failure_and_timeout(tmp_path: Path) -> None:
    store = MemoryStore()
    meta = stored_lineage(store, make_files())
    failing = (parse_deploy_spec("reload:command='echo nope >&2; exit 3'"),)
    [result] = run(run_targets(store, failing, meta, dict(os.environ)))
    assert result.error == "deploy target reload failed: 'echo nope >&2; exit 3' exited with status 3: nope"
    assert store.load_deploy_state("a.test") == {}  # not recorded as done: the next run tries again
    slow = (parse_deploy_spec("reload:command='sleep 30',timeout=0.2"),)
    [result] = run(run_targets(store, slow, meta, dict(os.environ)))
    assert result.error == "deploy target reload failed: 'sleep 30' did not finish within 0.2s"


def test_unknown_stored_target_fails_alone(recorder: type[Recorder]) -> None:
    store = MemoryStore()
    meta = stored_lineage(store, make_files())
    results = run(run_targets(store, (DeploySpec("gone"), DeploySpec("recorder")), meta, {}))
    assert results[0].error is not None and "unknown deploy target 'gone'" in results[0].error
    assert results[1].changed == ("uploaded",)


def test_file_store_keeps_deploy_state(tmp_path: Path) -> None:
    from certsmith.storage.files import FileStore

    store = FileStore(tmp_path / "state")
    meta = stored_lineage(store, make_files())
    assert store.load_deploy_state(meta.name) == {}
    store.save_deploy_state(meta.name, {"files:cert=/a": {"pkcs12_format": "modern"}})
    path = tmp_path / "state" / "certificates" / meta.name / "deploy.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.load_deploy_state(meta.name) == {"files:cert=/a": {"pkcs12_format": "modern"}}
    path.write_text("[not an object")
    assert store.load_deploy_state(meta.name) == {}  # damaged: targets start afresh
