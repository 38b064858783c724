"""certsmith store migrate and store check, with the real CLI, a real redis-server and Pebble.

A state directory copied into Redis and back comes out byte for byte (files, modes and
links), the account still works from the copy, private keys in Redis are sealed, and a
damaged source, a non-empty destination or a missing store key are refused in one line.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import redis

from tests.conftest import Cli, clean_env


def tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every file and link below ``root``: its mode and bytes (files) or target (links)."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            out[rel] = (0, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            out[rel] = (stat.S_IMODE(info.st_mode), "dir")
        else:
            out[rel] = (stat.S_IMODE(info.st_mode), path.read_bytes())
    return out


def store_env(redis_url: str, key: str | None) -> dict[str, str]:
    return clean_env(**({"CERTSMITH_STORE_KEY": key} if key else {}))


def test_round_trip_file_redis_file_is_byte_identical_and_the_account_still_works(
    registered_cli: Cli, redis_url: str, tmp_path: Path
) -> None:
    cli = registered_cli
    key = base64.b64encode(os.urandom(32)).decode()
    env = store_env(redis_url, key)
    cli.run("issue", "-d", "migrate.example.com", *cli.http_args())
    cli.run("renew", "migrate.example.com", "--force")
    cli.run("account", "rollover")  # leaves an archived account key behind
    state = cli.state_dir
    assert len(list((state / "certificates" / "migrate.example.com" / "archive").iterdir())) == 2
    assert list(state.glob("accounts/*/*/account.key.2*"))

    moved = json.loads(cli.run("--json", "store", "migrate", "--from", str(state), "--to", redis_url, env=env).stdout)
    assert moved["ok"] and moved["certificates"] == ["migrate.example.com"] and moved["versions"] == 2
    assert moved["accounts"] == [cli.pebble.directory_url]
    client = redis.Redis.from_url(redis_url)
    values = [v for name in client.scan_iter() if client.type(name) == b"hash" for v in client.hgetall(name).values()]
    values += [v for name in client.scan_iter() if client.type(name) == b"list" for v in client.lrange(name, 0, -1)]
    assert values and not any(b"PRIVATE KEY" in v for v in values)  # every key sealed, the archived ones too

    back = tmp_path / "back"
    cli.run("store", "migrate", "--from", redis_url, "--to", str(back), env=env)
    assert tree(back / "accounts") == tree(state / "accounts")
    assert tree(back / "certificates") == tree(state / "certificates")
    assert json.loads(cli.run("--json", "store", "check", env=clean_env(CERTSMITH_STORE=redis_url)).stdout) == {
        "ok": True, "problems": []}

    # The migrated account orders from the Redis copy; the source directory is untouched.
    before = tree(state)
    renewed = json.loads(cli.run("--json", "--store", redis_url, "renew", "--force", env=env).stdout)
    assert renewed["results"][0]["renewed"] is True
    shown = json.loads(cli.run("--json", "--store", redis_url, "show", "migrate.example.com", env=env).stdout)
    assert shown["version"] == 3
    assert tree(state) == before


def test_refusals_a_non_empty_destination_no_store_key_and_a_damaged_source(
    registered_cli: Cli, redis_url: str, tmp_path: Path
) -> None:
    cli = registered_cli
    state = cli.state_dir
    cli.run("issue", "-d", "refuse.example.com", *cli.http_args())
    client = redis.Redis.from_url(redis_url)

    # No store key: the private keys cannot be sealed, so nothing at all is written.
    keyless = cli.run("store", "migrate", "--from", str(state), "--to", redis_url, env=clean_env(), check=False)
    assert keyless.returncode == 1 and keyless.stderr.count("\n") == 1 and "CERTSMITH_STORE_KEY" in keyless.stderr
    assert list(client.scan_iter()) == []

    env = store_env(redis_url, base64.b64encode(os.urandom(32)).decode())
    cli.run("store", "migrate", "--from", str(state), "--to", redis_url, env=env)
    snapshot = {k: client.dump(k) for k in client.scan_iter()}
    again = cli.run("store", "migrate", "--from", str(state), "--to", redis_url, env=env, check=False)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "is not empty (1 account(s), 1 certificate(s)" in again.stderr and "--merge" in again.stderr
    assert {k: client.dump(k) for k in client.scan_iter()} == snapshot
    merged = json.loads(cli.run("--json", "store", "migrate", "--from", str(state), "--to", redis_url, "--merge",
                                env=env).stdout)
    assert merged["certificates"] == [] and merged["skipped_certificates"] == ["refuse.example.com"]
    assert {k: client.dump(k) for k in client.scan_iter()} == snapshot

    # A damaged version: check reports it (exit 1), and migrating from there is refused before writing.
    meta = next((state / "certificates" / "refuse.example.com" / "archive").iterdir()) / "meta.json"
    meta.write_bytes(b'{"name": 3')
    checked = cli.run("--json", "store", "check", check=False)
    assert checked.returncode == 1
    problems = json.loads(checked.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["damaged"] and str(meta.parent) == problems[0]["where"]
    human = cli.run("store", "check", check=False)
    assert human.returncode == 1 and "damaged: " in human.stdout and "1 problem(s)" in human.stdout
    target = tmp_path / "copy"
    refused = cli.run("store", "migrate", "--from", str(state), "--to", str(target), check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "has 1 problem(s)" in refused.stderr and not target.exists()

    # A damaged record in Redis is reported too.
    client.hset("certsmith:lineage:refuse.example.com:1", "meta", b"{broken")
    redis_checked = cli.run("--json", "store", "check", env=clean_env(CERTSMITH_STORE=redis_url), check=False)
    assert redis_checked.returncode == 1
    assert [p["where"] for p in json.loads(redis_checked.stdout)["problems"]] == [
        "certsmith:lineage:refuse.example.com:1"]
    same = cli.run("store", "migrate", "--from", str(state), "--to", str(state), check=False)
    assert same.returncode == 1 and "the same store" in same.stderr
    relative = os.path.relpath(state / "certificates" / "..", Path.cwd())  # another spelling of that directory
    same = cli.run("store", "migrate", "--from", str(state), "--to", relative, check=False)
    assert same.returncode == 1 and "the same store" in same.stderr
