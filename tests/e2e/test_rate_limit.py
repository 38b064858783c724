"""The shared rate limiter against Pebble, its state in Redis: deferred before the CA is asked, never refused by it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from certsmith.manager import IssueResult, Manager
from certsmith.ratelimit import Limit, RateLimited
from certsmith.settings import CertificateRequest, ChallengeSettings
from certsmith.storage.redis import RedisStore
from certsmith.testing.pebble import PebbleServer
from tests.conftest import Cli, clean_env

WINDOW = 6.0


def test_twenty_orders_with_a_limit_of_five(pebble: PebbleServer, redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, insecure_keys=True)
    settings = ChallengeSettings(http_port=pebble.http_port)
    requests = [CertificateRequest(names=(f"rl{i}.example.com",), challenge=settings) for i in range(20)]

    async def run() -> tuple[list[IssueResult | Exception], list[IssueResult | Exception]]:
        limits = {pebble.directory_url: {"new-orders": Limit(5, WINDOW)}}
        async with Manager(store, pebble.directory_url, ca_bundle=pebble.ca_bundle, rate_limits=limits) as manager:
            await manager.accounts.register(pebble.directory_url, agree_tos=True)
            first = list(await manager.issue_many(requests))
            started = time.monotonic()
            # the window frees the tokens: after it, the next five go through
            await asyncio.sleep(max(0.0, WINDOW + 0.2 - (time.monotonic() - started)))
            later = list(await manager.issue_many(requests[15:]))
            return first, later

    mark = pebble.log_mark()
    try:
        first, later = asyncio.run(run())
        sent = pebble.orders_created(mark)
    finally:
        store.close()
    issued = [r for r in first if isinstance(r, IssueResult)]
    deferred = [r for r in first if isinstance(r, RateLimited)]
    assert len(issued) == 5 and len(deferred) == 15, first
    message = str(deferred[0])
    assert "new orders per account is limited to 5 per 6s" in message
    assert "a token frees up in" in message and "nothing was sent to the CA" in message
    assert deferred[0].limit == "new-orders" and 0 < deferred[0].wait <= WINDOW
    assert all(isinstance(r, IssueResult) for r in later), later
    assert len(sent) == 10  # 5, then 5 more once the window had passed


def test_cli_issue_and_renew_deferred(cli: Cli, redis_url: str) -> None:
    """issue: one line naming the limit; renew: the lineage reported "deferred", exit 0, nothing at the CA."""
    env = clean_env(CERTSMITH_STORE=redis_url, CERTSMITH_RATE_LIMITS="new-orders=2/1h")
    cli.run("--store-insecure-keys", "account", "register", "--email", "t@example.com", "--agree-tos", env=env)
    for name in ("a.rl.example.com", "b.rl.example.com"):
        cli.run("--store-insecure-keys", "issue", "-d", name, "--profile", "default", *cli.http_args(), env=env)
    mark = cli.pebble.log_mark()
    refused = cli.run("--store-insecure-keys", "issue", "-d", "c.rl.example.com", *cli.http_args(), env=env,
                      check=False)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "new orders per account is limited to 2 per 1h" in lines[0], refused.stderr
    assert "a token frees up in" in lines[0] and "Traceback" not in refused.stderr

    renewed = cli.run("--store-insecure-keys", "--json", "renew", "--force", env=env, check=False)
    assert renewed.returncode == 0, renewed.stderr
    results = json.loads(renewed.stdout)["results"]
    assert [(r["name"], r["reason"]) for r in results] == [
        ("a.rl.example.com", "deferred"), ("b.rl.example.com", "deferred")
    ]
    assert all("new orders per account" in r["deferred"] and r["retry_at"].endswith("Z") for r in results)
    human = cli.run("--store-insecure-keys", "renew", "--force", env=env, check=False)
    assert human.returncode == 0 and "a.rl.example.com: deferred (deferred by the rate limiter" in human.stdout
    assert cli.pebble.orders_created(mark) == []

    # lifted for this CA: the renewal goes through
    lifted = cli.run("--store-insecure-keys", "--rate-limit", "new-orders=off", "--json", "renew", "--force",
                     "a.rl.example.com", env=env)
    assert json.loads(lifted.stdout)["results"][0]["renewed"] is True


def test_bad_rate_limit_values_are_one_line(cli: Cli, tmp_path: Path) -> None:
    for value, expected in (
        ("orders=5/1h", "NAME is one of new-orders"),
        ("new-orders=5", "the amount must be COUNT/PERIOD"),
        ("new-orders=5/soon", "is not a duration"),
        ("new-orders=-1/1h", "the amount must be COUNT/PERIOD"),
    ):
        result = cli.run("--rate-limit", value, "renew", check=False)
        assert result.returncode == 1, value
        assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not cli.state_dir.exists() or not any(cli.state_dir.rglob("ratelimits.json"))
