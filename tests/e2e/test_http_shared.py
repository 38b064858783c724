"""http-01 across a fleet: `issue --http-shared` publishes the answers in Redis, `serve-challenges` answers them."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from certsmith.testing.pebble import LOOPBACK, free_port
from tests.conftest import CERTSMITH, Cli, clean_env


@contextmanager
def serving(cli: Cli, env: dict[str, str], port: int) -> Iterator[subprocess.Popen[str]]:
    """`certsmith serve-challenges` as its own process on ``port``, until the block ends (SIGTERM: exit 0)."""
    process = subprocess.Popen(
        [*CERTSMITH, *cli.global_args(), "serve-challenges", "--http-address", LOOPBACK, "--http-port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "serve-challenges did not start listening"
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "Traceback" not in err


def raw_get(port: int, target: str) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data


def test_issue_answered_by_serve_challenges_on_another_port(cli: Cli, redis_url: str, tmp_path: Path) -> None:
    env = clean_env(CERTSMITH_STORE=redis_url)
    cli.run("--store-insecure-keys", "account", "register", "--email", "t@example.com", "--agree-tos", env=env)
    own_port = free_port()  # the ordering process listens here; Pebble never asks it
    with serving(cli, env, cli.pebble.http_port):
        base = f"http://{LOOPBACK}:{cli.pebble.http_port}/.well-known/acme-challenge/"
        assert httpx.get(base + "unknownToken123").status_code == 404
        assert raw_get(cli.pebble.http_port, "no-slash").startswith(b"HTTP/1.1 400 ")
        issued = cli.run(
            "--store-insecure-keys", "--json", "issue", "-d", "shared.example.com", "--profile", "default",
            "--challenge", "http-01", "--http-port", str(own_port), "--http-address", LOOPBACK, "--http-shared",
            env=env,
        )
        assert json.loads(issued.stdout)["issued"] is True
        # the setting is kept with the lineage, so a renewal publishes again and is answered the same way
        renewed = cli.run("--store-insecure-keys", "--json", "renew", "--force", env=env)
        assert json.loads(renewed.stdout)["results"][0]["renewed"] is True
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(match="certsmith:challenge:*")) == []  # tokens gone after the run
    assert client.hlen("certsmith:journal") == 0
    settings = json.loads(client.hget("certsmith:lineage:shared.example.com", "meta") or b"{}")["settings"]
    assert settings["challenge"]["http_shared"] is True


def test_without_serve_challenges_the_ca_cannot_validate(cli: Cli, redis_url: str) -> None:
    """The published answer alone does not reach the CA: proof that serve-challenges answered above."""
    env = clean_env(CERTSMITH_STORE=redis_url)
    cli.run("--store-insecure-keys", "account", "register", "--email", "t@example.com", "--agree-tos", env=env)
    mark = cli.pebble.log_mark()
    failed = cli.run(
        "--store-insecure-keys", "issue", "-d", "unserved.example.com", "--challenge", "http-01",
        "--http-port", str(free_port()), "--http-address", LOOPBACK, "--http-shared", env=env, check=False,
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert len(cli.pebble.orders_created(mark)) == 1, "the order reached the CA"
    assert "validation failed for unserved.example.com" in failed.stderr, failed.stderr
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(match="certsmith:challenge:*")) == []
    assert client.hlen("certsmith:journal") == 0


def test_serve_challenges_port_in_use_is_one_line(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli.run("serve-challenges", "--http-address", LOOPBACK, "--http-port", str(port), check=False)
    assert result.returncode == 1 and "is in use" in result.stderr and result.stderr.count("\n") <= 2
