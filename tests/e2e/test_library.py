"""The library: the sync facade against Pebble, and the CLI's lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import certsmith
from certsmith.manager import ChallengeSettings
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
    )
    assert result.names == ("lib.example.com", "www.lib.example.com")
    leaf = verify_chain(pebble, result.directory, tmp_path)
    assert san_names(leaf) == {"lib.example.com", "www.lib.example.com"}
    outcomes = certsmith.renew(
        state_dir=tmp_path / "state", directory=pebble.directory_url, ca_bundle=pebble.ca_bundle
    )
    assert outcomes == [{"name": "lib.example.com", "renewed": False, "reason": outcomes[0]["reason"]}]


def test_public_api_is_explicit() -> None:
    for name in certsmith.__all__:
        assert getattr(certsmith, name) is not None


def test_cli_start_up_imports_no_heavy_modules() -> None:
    probe = (
        "import sys, certsmith.cli; "
        "heavy = [m for m in ('httpx', 'cryptography', 'dns', 'rich', 'certsmith.acme') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
