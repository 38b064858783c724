"""The library: the sync facade against Pebble, and the CLI's lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import certsmith
from certsmith.settings import ChallengeSettings
from certsmith.testing.pebble import PebbleServer
from tests.e2e.helpers import san_names, verify_chain


def test_issue_facade(pebble: PebbleServer, tmp_path: Path) -> None:
    result = certsmith.issue(
        ["lib.example.com", "www.lib.example.com"],
        state_dir=tmp_path / "state",
        directory=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        email=["lib@example.com"],
        agree_tos=True,
        challenge=ChallengeSettings(http_port=pebble.http_port),
        profile="default",  # 90 days: not due right after issuance, whatever Pebble would pick
    )
    assert result.names == ("lib.example.com", "www.lib.example.com")
    leaf = verify_chain(pebble, result.directory, tmp_path)
    assert san_names(leaf) == {"lib.example.com", "www.lib.example.com"}
    outcomes = certsmith.renew(
        state_dir=tmp_path / "state", directory=pebble.directory_url, ca_bundle=pebble.ca_bundle
    )
    assert [(o.name, o.renewed, o.error) for o in outcomes] == [("lib.example.com", False, None)]
    assert outcomes[0].reason.startswith("not due")


PUBLIC_API = [
    "AccountError", "AcmeClient", "AcmeError", "CertificateRequest", "CertsmithError", "ChallengeSettings",
    "ConfigError", "DnsError", "FileStore", "Identifier", "IssueResult", "LockedError", "Manager", "Problem",
    "ProblemError", "RenewOutcome", "StorageError", "Store", "generate_key", "issue", "make_csr", "renew",
]


def test_public_api_is_pinned() -> None:
    """Adding or removing a public name is a decision: change PUBLIC_API and the README with it."""
    assert sorted(certsmith.__all__) == sorted(PUBLIC_API)
    for name in certsmith.__all__:
        assert getattr(certsmith, name) is not None
    with pytest.raises(AttributeError):
        certsmith.not_public  # noqa: B018


def test_cli_start_up_imports_no_heavy_modules() -> None:
    probe = (
        "import sys, certsmith.cli; "
        "heavy = [m for m in ('httpx', 'cryptography', 'dns', 'rich', 'certsmith.acme') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_many_certificates_at_once_from_one_manager(pebble: PebbleServer, tmp_path: Path) -> None:
    import asyncio

    from certsmith.manager import Manager
    from certsmith.settings import CertificateRequest
    from certsmith.storage.files import FileStore

    settings = ChallengeSettings(http_port=pebble.http_port)
    requests = [
        CertificateRequest(names=(f"many{n}.example.com", f"www.many{n}.example.com"), challenge=settings)
        for n in range(6)
    ]

    async def run() -> list[object]:
        async with Manager(FileStore(tmp_path / "state"), pebble.directory_url, ca_bundle=pebble.ca_bundle) as manager:
            await manager.accounts.register(pebble.directory_url, email=["many@example.com"], agree_tos=True)
            results = await manager.issue_many(requests)
            client = await manager.accounts.client(pebble.directory_url)
            assert client.request_count > 0
            return list(results)

    results = asyncio.run(run())
    assert all(isinstance(r, certsmith.IssueResult) for r in results), results
    for n in range(6):
        verify_chain(pebble, tmp_path / "state" / "certificates" / f"many{n}.example.com", tmp_path)


def test_a_lineage_locked_by_another_process_is_refused(pebble: PebbleServer, tmp_path: Path) -> None:
    from certsmith.storage.files import FileStore
    from tests.conftest import Cli

    cli = Cli(pebble, tmp_path / "state")
    cli.register()
    with FileStore(cli.state_dir).lock("locked.example.com"):
        result = cli.run("issue", "-d", "locked.example.com", *cli.http_args(), check=False)
    assert result.returncode == 1
    assert "another certsmith process" in result.stderr, result.stderr
    assert not (cli.state_dir / "certificates" / "locked.example.com").exists()
