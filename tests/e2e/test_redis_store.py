"""The CLI on a Redis store against Pebble: issue, renew, list, show, with the files deploy target serving it."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import Cli, clean_env
from tests.e2e.helpers import verify_chain
from tests.support.redis_server import RedisServer


def test_issue_renew_list_show_on_redis(
    cli: Cli, redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = clean_env(CERTSMITH_STORE=redis_url, CERTSMITH_STORE_KEY=base64.b64encode(os.urandom(32)).decode())
    out = tmp_path / "served"
    out.mkdir()
    cli.run("account", "register", "--email", "test@example.com", "--agree-tos", env=env)
    deploy = f"files:cert={out}/cert.pem,chain={out}/chain.pem,fullchain={out}/fullchain.pem,key={out}/key.pem"
    issued = json.loads(cli.run(
        "--json", "issue", "-d", "redis.example.com", "--profile", "default", "--deploy", deploy, *cli.http_args(),
        env=env,
    ).stdout)
    assert issued["directory"] == f"{redis_url}#certsmith:lineage:redis.example.com"
    first = verify_chain(cli.pebble, out, tmp_path)
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == first.public_key().public_bytes(*spki)
    assert not cli.state_dir.exists()  # nothing on this host's disk but what the deploy target wrote

    renewed = json.loads(cli.run("--json", "renew", "redis.example.com", "--force", env=env).stdout)
    assert renewed["results"][0]["renewed"] is True
    second = verify_chain(cli.pebble, out, tmp_path)
    assert second.serial_number != first.serial_number

    listed = json.loads(cli.run("--json", "list", env=env).stdout)["certificates"]
    assert [row["name"] for row in listed] == ["redis.example.com"]
    shown = json.loads(cli.run("--json", "show", "redis.example.com", env=env).stdout)
    assert shown["serial"] == format(second.serial_number, "x") and shown["version"] == 2
    human = cli.run("show", "redis.example.com", env=env).stdout
    assert "redis.example.com" in human and "damaged" not in human

    # list and show need no store key; the key stays sealed in Redis.
    keyless = {k: v for k, v in env.items() if k != "CERTSMITH_STORE_KEY"}
    assert json.loads(cli.run("--json", "show", "redis.example.com", env=keyless).stdout)["version"] == 2
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter():
        if client.type(name) == b"hash":
            assert not any(b"PRIVATE KEY" in v for v in client.hgetall(name).values()), name
    # Without the key a renewal cannot read the account: one line, with advice, nothing changed.
    refused = cli.run("renew", "--force", env=keyless, check=False)
    assert refused.returncode == 1
    assert "encrypted and no store key is set" in refused.stderr and "Traceback" not in refused.stderr
    assert "CERTSMITH_STORE_KEY" in refused.stderr
    assert json.loads(cli.run("--json", "show", "redis.example.com", env=env).stdout)["version"] == 2

    # Redis gone: one clear line, the served files untouched.
    served = {p.name: p.read_bytes() for p in out.iterdir()}
    redis_server.stop()
    down = cli.run("renew", "--force", env=env, check=False)
    assert down.returncode == 1 and down.stderr.count("\n") <= 2
    assert "is unreachable" in down.stderr and "Traceback" not in down.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == served
    assert x509.load_pem_x509_certificate(served["cert.pem"]).serial_number == second.serial_number
    shutil.rmtree(out)


def test_the_store_url_in_the_env_file_is_used_as_a_timer_would(cli: Cli, redis_url: str, tmp_path: Path) -> None:
    """A timer's run has CERTSMITH_STORE only in its env file: that store is used, not the local directory."""
    env_file = tmp_path / "env"
    env_file.write_text(f"CERTSMITH_STORE={redis_url}\nCERTSMITH_STORE_KEY={base64.b64encode(os.urandom(32)).decode()}\n")
    env_file.chmod(0o600)
    cli.run("--env-file", str(env_file), "account", "register", "--email", "t@example.com", "--agree-tos",
            env=clean_env())
    cli.run("--env-file", str(env_file), "issue", "-d", "envfile.example.com", *cli.http_args(), env=clean_env())
    assert not cli.state_dir.exists()
    assert redis.Redis.from_url(redis_url).exists("certsmith:lineage:envfile.example.com")
    listed = json.loads(cli.run("--env-file", str(env_file), "--json", "list", env=clean_env()).stdout)
    assert [row["name"] for row in listed["certificates"]] == ["envfile.example.com"]
