"""The compatibility set: Debian's Pebble 2.4, a CA without ARI or profiles.

The rest of the suite runs against Pebble 2.10; these keep the older shape of server
covered: issue over http-01, a forced renewal, revocation, and a clear refusal of
``--profile``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certsmith.testing.pebble import PebbleServer
from tests.conftest import Cli
from tests.e2e.helpers import san_names, verify_chain


@pytest.fixture
def cli24(pebble24: PebbleServer, tmp_path: Path) -> Cli:
    cli = Cli(pebble24, tmp_path / "state")
    cli.register()
    return cli


def test_the_server_is_pebble_24(pebble24: PebbleServer) -> None:
    directory = pebble24.directory()
    assert "renewalInfo" not in directory and "profiles" not in directory.get("meta", {})


def test_issue_renew_and_revoke(cli24: Cli, tmp_path: Path) -> None:
    lineage = cli24.state_dir / "certificates" / "compat.example.com"
    mark = cli24.pebble.log_mark()
    cli24.run("issue", "-d", "compat.example.com", "-d", "www.compat.example.com", *cli24.http_args())
    first = verify_chain(cli24.pebble, lineage, tmp_path)
    assert san_names(first) == {"compat.example.com", "www.compat.example.com"}

    renewed = json.loads(cli24.run("--json", "renew", "--force").stdout)
    assert renewed["results"][0]["renewed"] is True
    second = verify_chain(cli24.pebble, lineage, tmp_path)
    assert second.serial_number != first.serial_number
    assert len(cli24.pebble.orders_created(mark)) == 2

    cli24.run("revoke", "compat.example.com", "--reason", "superseded")
    status = json.loads(cli24.pebble.management_get(f"/cert-status-by-serial/{second.serial_number:x}"))
    assert status["Status"] == "Revoked" and status["Reason"] == 4  # superseded


def test_profile_is_refused_when_the_ca_advertises_none(cli24: Cli) -> None:
    mark = cli24.pebble.log_mark()
    result = cli24.run("issue", "-d", "profile.example.com", "--profile", "shortlived", *cli24.http_args(), check=False)
    assert result.returncode == 1 and "advertises no profiles" in result.stderr, result.stderr
    assert not (cli24.state_dir / "certificates" / "profile.example.com").exists()
    assert cli24.pebble.request_count("newOrder", mark) == 0
