"""The directory cache: a second ``certsmith issue`` skips the GET of the directory, and a bad copy heals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from certsmith.storage.files import DIRECTORY_CACHE_MAX_AGE, FileStore
from tests.conftest import Cli
from tests.e2e.helpers import verify_chain


def _cache_file(cli: Cli) -> Path:
    return FileStore(cli.state_dir).directory_cache_path(cli.pebble.directory_url)


def _issue(cli: Cli, name: str, tmp_path: Path) -> None:
    cli.run("issue", "-d", name, *cli.http_args())
    verify_chain(cli.pebble, cli.state_dir / "certificates" / name, tmp_path)


def test_second_issue_makes_no_directory_request(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    cached = json.loads(_cache_file(cli).read_text())  # written by the registration
    assert cached["url"] == cli.pebble.directory_url and cached["document"]["newOrder"]
    mark = cli.pebble.log_mark()
    _issue(cli, "cache-one.example.com", tmp_path)
    _issue(cli, "cache-two.example.com", tmp_path)
    assert cli.pebble.request_count("/dir", mark) == 0
    assert len(cli.pebble.orders_created(mark)) == 2  # (requests may be more: a rejected nonce is retried)


@pytest.mark.parametrize(
    "damage",
    ["not json", "truncated", "other url", "stale", "from the future", "not a directory"],
)
def test_damaged_or_stale_copy_is_fetched_again(registered_cli: Cli, tmp_path: Path, damage: str) -> None:
    cli = registered_cli
    path = _cache_file(cli)
    data = json.loads(path.read_text())
    if damage == "not json":
        path.write_text("{nope")
    elif damage == "truncated":
        path.write_text(path.read_text()[:40])
    elif damage == "other url":
        data["url"] = "https://127.0.0.1:1/dir"
        path.write_text(json.dumps(data))
    elif damage == "stale":
        data["fetched_at"] = time.time() - DIRECTORY_CACHE_MAX_AGE - 60
        path.write_text(json.dumps(data))
    elif damage == "from the future":
        data["fetched_at"] = time.time() + 3600
        path.write_text(json.dumps(data))
    else:
        data["document"] = {"newNonce": 42}
        path.write_text(json.dumps(data))
    mark = cli.pebble.log_mark()
    _issue(cli, "cache-damaged.example.com", tmp_path)
    assert cli.pebble.request_count("/dir", mark) == 1
    healed = json.loads(path.read_text())
    assert healed["url"] == cli.pebble.directory_url and healed["document"] == cli.pebble.directory()


@pytest.mark.parametrize("resource", ["newNonce", "newOrder"])
def test_moved_resource_heals_the_copy(registered_cli: Cli, tmp_path: Path, resource: str) -> None:
    """A cached URL the CA no longer serves (404) fetches the directory anew and retries once."""
    cli = registered_cli
    path = _cache_file(cli)
    data = json.loads(path.read_text())
    data["document"][resource] = data["document"][resource].rstrip("/") + "-moved"
    path.write_text(json.dumps(data))
    mark = cli.pebble.log_mark()
    _issue(cli, f"cache-moved-{resource.lower()}.example.com", tmp_path)
    assert cli.pebble.request_count("/dir", mark) == 1
    assert json.loads(path.read_text())["document"] == cli.pebble.directory()
    # The copy is good again: the next process uses it.
    mark = cli.pebble.log_mark()
    _issue(cli, f"cache-after-{resource.lower()}.example.com", tmp_path)
    assert cli.pebble.request_count("/dir", mark) == 0


def test_profile_check_confirms_a_cached_copy(registered_cli: Cli, tmp_path: Path) -> None:
    """Profiles are checked before anything is sent, against a fetched directory, not a cached one."""
    cli = registered_cli
    offered = sorted(cli.pebble.directory().get("meta", {}).get("profiles", {}))
    if not offered:
        pytest.skip("this Pebble offers no profiles")
    path = _cache_file(cli)
    data = json.loads(path.read_text())
    data["document"].setdefault("meta", {})["profiles"] = {}  # a copy from before the CA offered profiles
    path.write_text(json.dumps(data))
    cli.run("issue", "-d", "cache-profile.example.com", "--profile", offered[0], *cli.http_args())
    verify_chain(cli.pebble, cli.state_dir / "certificates" / "cache-profile.example.com", tmp_path)
