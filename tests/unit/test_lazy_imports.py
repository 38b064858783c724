"""The commands that only read local state import only what they need.

A regression guard, not a timing test: ``--help``, ``list``, ``show``, ``dns list``
and ``schedule`` must not load the HTTP stack, the event loop, certificate parsing
or the ACME client (each is tens of milliseconds of start-up). Each command runs in
a fresh interpreter with ``-X importtime``, whose report names every module imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from certsmith.storage.base import CertificateFiles, LineageMeta
from certsmith.storage.files import FileStore

SRC = Path(__file__).resolve().parents[2] / "src"

#: Never imported by the commands below (a prefix also forbids its submodules).
FORBIDDEN = (
    "httpx",
    "httpcore",
    "h2",
    "asyncio",
    "ssl",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric",
    "certsmith.acme",
    "certsmith.crypto",
    "certsmith.jose",
    "certsmith.manager",
    "certsmith.accounts",
    "rich",
)

#: Also never imported by ``list`` and ``show`` of lineages without deploy targets: the deploy
#: machinery (settings parse a lineage's targets only when it has some), OpenSSL's libcrypto
#: through hashlib (a lineage name digest is needed only when issuing) and random (drawn
#: only for an ARI renewal time).
READ_ONLY_FORBIDDEN = ("certsmith.deploy.base", "certsmith.deploy.runner", "hashlib", "random")

_PEM = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"


def _imported(args: list[str], state_dir: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTSMITH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(SRC), env.get("PYTHONPATH"))))
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "certsmith", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            modules.add(line.rsplit("|", 1)[1].strip())
    return modules, result


def _forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("state")
    store = FileStore(root)
    for name in ("example.com", "_.example.org"):
        meta = LineageMeta(
            name=name, names=(name.replace("_.", "*."),), key_type="ec256",
            directory_url="https://acme.test/dir", settings={}, not_before="2026-01-01T00:00:00Z",
            not_after="2099-01-01T00:00:00Z", serial="01", issuer="Test CA", version=0,
            created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z",
        )
        store.save_certificate(meta, CertificateFiles(_PEM, _PEM, _PEM * 2, b"key"))
    return root


COMMANDS = [
    ["--help"],
    ["list"],
    ["--json", "list"],
    ["show", "example.com"],
    ["show", "no-such-lineage"],
    ["dns", "list"],
    ["schedule", "--help"],
    ["schedule", "show", "--unit-dir", "units", "--cron-file", "cron"],
    ["issue", "--help"],
    ["renew", "--help"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("populated_dir", [False, True], ids=["empty", "populated"])
def test_local_commands_stay_light(
    args: list[str], populated_dir: bool, populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    modules, result = _imported(args, populated if populated_dir else tmp_path / "empty")
    assert "certsmith.cli" in modules, result.stderr[-2000:]
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert _forbidden(modules) == []
    if args in (["list"], ["--json", "list"]) or args[0] == "show":
        assert sorted(modules & set(READ_ONLY_FORBIDDEN)) == []
    if args == ["list"] and populated_dir:
        assert "example.com" in result.stdout and "_.example.org" in result.stdout


def test_the_guard_sees_heavy_imports(tmp_path: Path) -> None:
    """``issue`` does load the ACME client, so the check above is not vacuous."""
    modules, result = _imported(["--directory", "https://127.0.0.1:1/dir", "issue", "-d", "a.test"], tmp_path)
    assert result.returncode == 1
    assert {"asyncio", "ssl", "certsmith.acme.client", "cryptography.x509"} <= modules


def test_issue_without_deploy_targets_does_not_load_the_deploy_machinery(tmp_path: Path) -> None:
    """An ``issue`` without ``--deploy`` gets past the preflight (it fails only at the CA, which
    does not listen on port 1) without importing the deploy targets (nor the deploy hook's runner:
    no --deploy-hook); one with ``--deploy`` does."""
    common = ["--directory", "https://127.0.0.1:1/dir", "issue", "-d", "a.test", "--email", "a@example.com",
              "--agree-tos"]
    modules, result = _imported(common, tmp_path / "plain")
    assert result.returncode == 1 and "cannot reach the CA" in result.stderr, result.stderr[-2000:]
    assert "certsmith.acme.client" in modules
    assert sorted(m for m in modules if m == "certsmith.deploy" or m.startswith("certsmith.deploy.")) == []
    # A first issue has no stored certificate to judge (policy) and renews nothing (renewal).
    assert sorted(modules & {"certsmith.policy", "certsmith.renewal"}) == []

    modules, result = _imported([*common, "--deploy", "files:nosuchoption=1"], tmp_path / "deploy")
    assert result.returncode == 1 and "has no option nosuchoption" in result.stderr, result.stderr[-2000:]
    assert "certsmith.deploy.base" in modules


def test_commands_in_their_own_modules_are_loaded_only_when_named(tmp_path: Path) -> None:
    """``issue`` (its help, and a run that gets past the preflight) never imports the modules of
    ``persist``, ``schedule``, ``store`` and ``sync`` (nor ``deploy``'s for its help; a run parses
    ``--deploy`` values with it); naming one loads it alone, and ``--help`` loads them all (it lists
    their help)."""
    others = {f"certsmith.cli.{name}" for name in ("deploy", "persist", "schedule", "store", "sync")}
    run = ["--directory", "https://127.0.0.1:1/dir", "issue", "-d", "a.test", "--email", "a@example.com",
           "--agree-tos"]
    for args in (["issue", "--help"], run):
        modules, result = _imported(args, tmp_path)
        assert "certsmith.cli" in modules and result.returncode in (0, 1), result.stderr[-2000:]
        assert sorted(modules & others) == ([] if args[0] == "issue" else ["certsmith.cli.deploy"]), args
    modules, result = _imported(["schedule", "--help"], tmp_path)
    assert result.returncode == 0 and sorted(modules & others) == ["certsmith.cli.schedule"], result.stderr[-2000:]
    modules, result = _imported(["--help"], tmp_path)
    assert result.returncode == 0 and others <= modules, result.stderr[-2000:]
    modules, result = _imported(["schedul"], tmp_path)  # a typo still gets click's suggestion among every command
    assert result.returncode == 2 and "Did you mean 'schedule'?" in result.stderr, result.stderr[-2000:]


def test_issue_sends_through_its_own_http_without_loading_httpx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a proxy, ``issue`` loads neither httpx nor the standard-library modules it imports
    (http.client, http.cookiejar, urllib.request, most of email) nor its transport stack (httpcore, h11,
    anyio): together about a third of an issue process's CPU. With a proxy, httpx carries the requests."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    args = ["--directory", "https://127.0.0.1:1/dir", "issue", "-d", "a.test", "--email", "a@example.com",
            "--agree-tos"]
    modules, result = _imported(args, tmp_path)
    assert result.returncode == 1 and "cannot reach the CA" in result.stderr, result.stderr[-2000:]
    assert "certsmith._http11" in modules
    heavy = ("httpx", "httpcore", "h11", "anyio", "http.client", "http.cookiejar", "urllib.request",
             "email.message", "email.parser")  # cryptography.x509 imports email.utils itself
    assert sorted(m for m in modules if m.startswith(heavy)) == []
    assert "idna" not in modules  # an ASCII name needs no IDNA tables (tests/unit/test_crypto.py)

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")  # with a proxy, httpx's own transport is used
    modules, result = _imported(args, tmp_path)
    assert result.returncode == 1 and {"httpx", "httpcore"} <= modules, result.stderr[-2000:]
