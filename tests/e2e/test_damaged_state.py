"""Damaged state is contained: one broken lineage never stops the others, and never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certsmith.testing.pebble import PebbleServer
from tests.conftest import Cli

GOOD, HURT = "good.example.com", "hurt.example.com"


@pytest.fixture(scope="module")
def pristine(pebble: PebbleServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory with two lineages, issued once for every case of this module."""
    cli = Cli(pebble, tmp_path_factory.mktemp("pristine") / "state")
    cli.register()
    for name in (GOOD, HURT):
        cli.run("issue", "-d", name, *cli.http_args())
    return cli.state_dir


def _meta_path(state: Path) -> Path:
    return (state / "certificates" / HURT / "current" / "meta.json").resolve()


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return damage


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for key in keys[:-1]:
            data = data[key]
        if value is _DROP:
            del data[keys[-1]]
        else:
            data[keys[-1]] = value

    return change


_DROP = object()

DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:40]),
    "empty": lambda path: path.write_bytes(b""),
    "not-an-object": lambda path: path.write_text("[1, 2]"),
    "binary": lambda path: path.write_bytes(b"\xff\xfe\x00garbage"),
    "name-number": _edit(_set("name", value=5)),
    "names-string": _edit(_set("names", value="hurt.example.com")),
    "names-empty": _edit(_set("names", value=[])),
    "names-numbers": _edit(_set("names", value=[1, 2])),
    "version-string": _edit(_set("version", value="1")),
    "version-negative": _edit(_set("version", value=-3)),
    "not-after-garbage": _edit(_set("not_after", value="next tuesday")),
    "not-after-missing": _edit(_set("not_after", value=_DROP)),
    "settings-list": _edit(_set("settings", value=[])),
    "challenge-number": _edit(_set("settings", "challenge", value=5)),
    "challenge-type-unknown": _edit(_set("settings", "challenge", "challenge", value="carrier-pigeon-01")),
    "port-string": _edit(_set("settings", "challenge", "http_port", value="eighty")),
    "port-huge": _edit(_set("settings", "challenge", "http_port", value=10**30)),
    "resolvers-number": _edit(_set("settings", "challenge", "dns_resolvers", value=7)),
    "timeout-string": _edit(_set("settings", "challenge", "propagation_timeout", value="soon")),
    "csr-not-base64": _edit(_set("settings", "csr", value="%%%")),
    "profile-number": _edit(_set("settings", "profile", value=3)),
    "directory-number": _edit(_set("directory_url", value=3)),
    "key-type-unknown": _edit(_set("key_type", value="rsa-1")),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_one_damaged_lineage_is_reported_and_the_other_goes_on(
    pebble: PebbleServer, pristine: Path, tmp_path: Path, kind: str
) -> None:
    state = tmp_path / "state"
    shutil.copytree(pristine, state, symlinks=True)
    DAMAGE[kind](_meta_path(state))
    cli = Cli(pebble, state)

    listed = cli.run("--json", "list", check=False)
    assert "Traceback" not in listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)["certificates"]}
    assert rows[GOOD]["status"] == "valid"
    assert rows[HURT]["status"] == "damaged" and rows[HURT]["error"]
    assert "meta.json" in rows[HURT]["error"] or "settings" in rows[HURT]["error"]

    shown = cli.run("show", HURT, check=False)
    assert "Traceback" not in shown.stderr and "damaged" in shown.stdout

    renewed = cli.run("--json", "renew", check=False)
    assert renewed.returncode == 1 and "Traceback" not in renewed.stderr
    results = {r["name"]: r for r in json.loads(renewed.stdout)["results"]}
    assert results[GOOD]["renewed"] is False and not results[GOOD].get("error")
    assert results[HURT]["error"]


def test_issue_replaces_a_damaged_lineage_and_keeps_the_damaged_files(
    pebble: PebbleServer, pristine: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(pristine, state, symlinks=True)
    damaged = _meta_path(state)
    damaged.write_text('{"name": 5}')
    cli = Cli(pebble, state)
    cli.run("issue", "-d", HURT, *cli.http_args())
    assert json.loads(cli.run("--json", "show", HURT).stdout)["status"] == "valid"
    assert damaged.read_text() == '{"name": 5}'  # the damaged version stays in the archive
    forced = cli.run("--json", "renew", "--force", check=False)
    assert forced.returncode == 0, forced.stderr
