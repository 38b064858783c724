"""The Cloudflare provider against the API v4 emulator, and a CLI issuance on Pebble.

Everything runs on 127.0.0.1: the emulator is an in-process HTTP server whose TXT
records are published to the challtestsrv Pebble resolves through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from certsmith.dns.base import load_provider
from certsmith.dns.cloudflare import ENV, CloudflareConfig, CloudflareError, CloudflareProvider
from certsmith.errors import ConfigError, ProviderConfigError
from certsmith.testing.conformance import check_provider
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, tree_snapshot, verify_chain
from tests.support.cloudflare_emulator import CloudflareAccount, CloudflareEmulator, CloudflareToken

TOKEN = "cf-dns-token-0123456789abcdefghijklmnopqrst"
ZONE_TOKEN = "cf-zone-token-0123456789abcdefghijklmnop"
EDIT_ONLY = "cf-edit-only-token-0123456789abcdefghijk"
NO_EDIT = "cf-read-only-token-0123456789abcdefghijk"
NO_ZONE_READ = "cf-no-zone-read-token-0123456789abcdefgh"
EMAIL, KEY = "owner@example.com", "0123456789abcdef0123456789abcdef01234"
OTHER = "cf-other-account-token-0123456789abcdefg"
VALUE = "XKrxpRBosdIKFzxW_CT3KLZNf6q0HG9i01zxXp5CPBs"


def accounts() -> list[CloudflareAccount]:
    return [
        CloudflareAccount(
            zones=["example.com", "sub.example.com", "cli-zone.com"],
            tokens=[
                CloudflareToken(TOKEN),
                CloudflareToken(ZONE_TOKEN, permissions={"Zone:Read"}),
                CloudflareToken(EDIT_ONLY, permissions={"DNS:Edit"}),
                CloudflareToken(NO_EDIT, permissions={"Zone:Read", "DNS:Read"}),
                CloudflareToken(NO_ZONE_READ, permissions={"DNS:Edit"}, zones=["example.com"]),
            ],
            global_keys={EMAIL: KEY},
        ),
        CloudflareAccount(zones=["other.test"], tokens=[CloudflareToken(OTHER)]),
    ]


@pytest.fixture
def emulator() -> Iterator[CloudflareEmulator]:
    with CloudflareEmulator(accounts()) as em:
        yield em


def env_for(emulator: CloudflareEmulator, **extra: str) -> dict[str, str]:
    base = {"CLOUDFLARE_BASE_URL": emulator.base_url}
    if not any(k in extra for k in ("CLOUDFLARE_EMAIL", "CF_Email", "CF_API_EMAIL")):
        base["CLOUDFLARE_DNS_API_TOKEN"] = TOKEN
    return {**base, **extra}


def run_with(env: Mapping[str, str], scenario: Any, max_attempts: int = 6) -> None:
    async def go() -> None:
        provider = CloudflareProvider(CloudflareConfig.from_env(env), retry_delay=0.001, max_attempts=max_attempts)
        try:
            await scenario(provider)
        finally:
            await provider.aclose()

    asyncio.run(go())


def present(env: Mapping[str, str], fqdn: str, value: str = VALUE, max_attempts: int = 6) -> None:
    async def scenario(provider: CloudflareProvider) -> None:
        await provider.present(fqdn, value)

    run_with(env, scenario, max_attempts)


def reader(emulator: CloudflareEmulator) -> Any:
    async def read_txt(fqdn: str) -> set[str]:
        return set(emulator.txt_values(fqdn))

    return read_txt


# --- the provider ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        {"CLOUDFLARE_DNS_API_TOKEN": TOKEN},
        {"CLOUDFLARE_DNS_API_TOKEN": EDIT_ONLY, "CLOUDFLARE_ZONE_API_TOKEN": ZONE_TOKEN},
        {"CLOUDFLARE_EMAIL": EMAIL, "CLOUDFLARE_API_KEY": KEY},
    ],
    ids=["token", "dns-and-zone-tokens", "global-key"],
)
def test_conformance(emulator: CloudflareEmulator, credentials: dict[str, str]) -> None:
    async def scenario(provider: CloudflareProvider) -> None:
        await check_provider(provider, "example.com.", reader(emulator))
        await check_provider(provider, "sub.example.com.", reader(emulator))

    run_with(env_for(emulator, **credentials), scenario)
    assert emulator.records("example.com") == [] and emulator.records("sub.example.com") == []
    assert {r.auth for r in emulator.requests} == {"key" if "CLOUDFLARE_EMAIL" in credentials else "token"}
    assert all(r.status == 200 or r.codes == (81058,) for r in emulator.requests)


def test_the_dns_token_alone_cannot_find_the_zone_without_zone_read(emulator: CloudflareEmulator) -> None:
    with pytest.raises(CloudflareError) as info:
        present(env_for(emulator, CLOUDFLARE_DNS_API_TOKEN=EDIT_ONLY), "_acme-challenge.example.com.")
    message = str(info.value)
    assert "lacks a permission" in message and "Zone:Read / DNS:Edit" in message, message
    assert info.value.codes == (9109,) and "\n" not in message and EDIT_ONLY not in message


def test_zone_lookup_walks_up_and_picks_the_delegated_subzone(emulator: CloudflareEmulator) -> None:
    async def scenario(provider: CloudflareProvider) -> None:
        await provider.present("_acme-challenge.www.sub.example.com.", VALUE)
        await provider.present("example.com.", VALUE)  # a record at a zone apex (a CNAME target)

    run_with(env_for(emulator), scenario)
    assert [r["name"] for r in emulator.records("sub.example.com")] == ["_acme-challenge.www.sub.example.com"]
    assert [r["name"] for r in emulator.records("example.com")] == ["example.com"]
    looked_up = [r.query["name"] for r in emulator.requests if r.path.endswith("/zones")]
    assert looked_up == ["_acme-challenge.www.sub.example.com", "www.sub.example.com", "sub.example.com",
                         "example.com"]  # fmt: skip


def test_a_second_record_on_the_name_is_kept(emulator: CloudflareEmulator) -> None:
    foreign = emulator.add_record("_acme-challenge.example.com", "someone-elses-token")

    async def scenario(provider: CloudflareProvider) -> None:
        await provider.present("_acme-challenge.example.com.", VALUE)
        assert set(emulator.txt_values("_acme-challenge.example.com")) == {VALUE, "someone-elses-token"}
        await provider.cleanup("_acme-challenge.example.com.", VALUE)
        await provider.cleanup("_acme-challenge.example.com.", "someone-elses-token")  # not ours: no-op

    run_with(env_for(emulator), scenario)
    assert [r["id"] for r in emulator.records("example.com")] == [foreign]
    assert emulator.calls("DELETE") == 1


def test_adopts_an_identical_record_found_on_a_later_page(emulator: CloudflareEmulator) -> None:
    name = "_acme-challenge.example.com"
    for i in range(130):
        emulator.add_record(name, f"decoy-{i:03d}")
    existing = emulator.add_record(name, VALUE)

    async def scenario(provider: CloudflareProvider) -> None:
        await provider.present(name + ".", VALUE)
        await provider.cleanup(name + ".", VALUE)

    run_with(env_for(emulator), scenario)
    listings = [r for r in emulator.requests if r.method == "GET" and r.path.endswith("/dns_records")]
    assert [r.query["page"] for r in listings] == ["1", "2"]
    [delete] = [r for r in emulator.requests if r.method == "DELETE"]
    assert delete.path.endswith("/" + existing)
    assert len(emulator.txt_values(name)) == 130 and VALUE not in emulator.txt_values(name)


def test_cleanup_of_a_record_deleted_behind_our_back(emulator: CloudflareEmulator) -> None:
    async def scenario(provider: CloudflareProvider) -> None:
        await provider.present("_acme-challenge.example.com.", VALUE)
        [record] = emulator.records("example.com")
        emulator.delete_record(record["id"])
        await provider.cleanup("_acme-challenge.example.com.", VALUE)

    run_with(env_for(emulator), scenario)
    assert [r.codes for r in emulator.requests if r.method == "DELETE"] == [(81044,)]


def test_invalid_token(emulator: CloudflareEmulator) -> None:
    with pytest.raises(CloudflareError) as info:
        present(env_for(emulator, CLOUDFLARE_DNS_API_TOKEN="not-a-real-token"), "_acme-challenge.example.com.")
    message = str(info.value)
    assert "does not accept the API token" in message and "CLOUDFLARE_DNS_API_TOKEN" in message, message
    assert "not-a-real-token" not in message and info.value.status == 403


def test_wrong_global_key(emulator: CloudflareEmulator) -> None:
    env = env_for(emulator, CLOUDFLARE_EMAIL=EMAIL, CLOUDFLARE_API_KEY="f" * 37)
    with pytest.raises(CloudflareError) as info:
        present(env, "_acme-challenge.example.com.")
    assert info.value.codes == (9103,)
    assert "CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY" in str(info.value) and "f" * 37 not in str(info.value)


def test_token_without_dns_edit_names_the_permission(emulator: CloudflareEmulator) -> None:
    with pytest.raises(CloudflareError) as info:
        present(env_for(emulator, CLOUDFLARE_DNS_API_TOKEN=NO_EDIT), "_acme-challenge.www.example.com.")
    message = str(info.value)
    assert info.value.codes == (10000,)
    assert "lacks a permission on zone example.com" in message and "Zone:Read / DNS:Edit" in message, message
    assert emulator.records("example.com") == []


def test_token_without_zone_read(emulator: CloudflareEmulator) -> None:
    with pytest.raises(CloudflareError, match="Zone:Read / DNS:Edit"):
        present(env_for(emulator, CLOUDFLARE_DNS_API_TOKEN=NO_ZONE_READ), "_acme-challenge.example.com.")


def test_zone_not_in_the_account(emulator: CloudflareEmulator) -> None:
    with pytest.raises(CloudflareError) as info:
        present(env_for(emulator), "_acme-challenge.other.test.")  # another account's zone
    message = str(info.value)
    assert "no Cloudflare zone contains _acme-challenge.other.test." in message
    assert "Zone:Read / DNS:Edit" in message and "other.test, test" in message
    assert emulator.records("other.test") == []


def test_rate_limiting_on_every_second_call_is_retried(emulator: CloudflareEmulator) -> None:
    emulator.throttle_every = 2

    async def scenario(provider: CloudflareProvider) -> None:
        await check_provider(provider, "example.com.", reader(emulator))

    run_with(env_for(emulator), scenario)
    assert sum(r.status == 429 for r in emulator.requests) >= 5
    assert emulator.records("example.com") == []


def test_retry_after_is_honoured(emulator: CloudflareEmulator) -> None:
    emulator.retry_after = "1"
    emulator.throttle_next(1)
    started = time.monotonic()
    present(env_for(emulator), "_acme-challenge.example.com.")
    assert time.monotonic() - started >= 0.95
    assert [r.status for r in emulator.requests][:2] == [429, 200]


def test_retries_are_bounded(emulator: CloudflareEmulator) -> None:
    emulator.throttle_every = 1
    with pytest.raises(CloudflareError) as info:
        present(env_for(emulator), "_acme-challenge.example.com.", max_attempts=3)
    assert "rate limiting" in str(info.value) and info.value.status == 429
    assert len(emulator.requests) == 3


# --- configuration ---------------------------------------------------------------------

ALIASES = [(var.name, alias) for var in ENV for alias in (var.name, *var.aliases)]


@pytest.mark.parametrize(("name", "alias"), ALIASES, ids=[a for _, a in ALIASES])
def test_every_variable_name_and_alias_is_accepted(name: str, alias: str) -> None:
    values = {
        "CLOUDFLARE_DNS_API_TOKEN": TOKEN,
        "CLOUDFLARE_ZONE_API_TOKEN": ZONE_TOKEN,
        "CLOUDFLARE_EMAIL": EMAIL,
        "CLOUDFLARE_API_KEY": KEY,
        "CLOUDFLARE_BASE_URL": "http://127.0.0.1:9/client/v4",
        "CLOUDFLARE_TTL": "300",
        "CLOUDFLARE_PROPAGATION_TIMEOUT": "33",
        "CLOUDFLARE_POLLING_INTERVAL": "5",
        "CLOUDFLARE_HTTP_TIMEOUT": "7",
    }
    env = {"CLOUDFLARE_EMAIL": EMAIL, "CLOUDFLARE_API_KEY": KEY} if name == "CLOUDFLARE_DNS_API_TOKEN" else {}
    if name in ("CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"):
        env = {"CLOUDFLARE_EMAIL": EMAIL, "CLOUDFLARE_API_KEY": KEY}
        del env[name]
    elif name != "CLOUDFLARE_DNS_API_TOKEN":
        env = {"CLOUDFLARE_DNS_API_TOKEN": TOKEN}
    env[alias] = values[name]
    config = CloudflareConfig.from_env(env)
    got = {
        "CLOUDFLARE_DNS_API_TOKEN": config.dns_token,
        "CLOUDFLARE_ZONE_API_TOKEN": config.zone_token,
        "CLOUDFLARE_EMAIL": config.email,
        "CLOUDFLARE_API_KEY": config.api_key,
        "CLOUDFLARE_BASE_URL": config.base_url,
        "CLOUDFLARE_TTL": str(config.ttl),
        "CLOUDFLARE_PROPAGATION_TIMEOUT": str(int(config.propagation_timeout or 0)),
        "CLOUDFLARE_POLLING_INTERVAL": "5",  # accepted, not used
        "CLOUDFLARE_HTTP_TIMEOUT": str(int(config.http_timeout)),
    }
    assert got[name] == values[name]


def test_missing_credentials_are_named() -> None:
    with pytest.raises(ProviderConfigError) as info:
        load_provider("cloudflare", {})
    assert "CLOUDFLARE_DNS_API_TOKEN or CF_DNS_API_TOKEN or CF_Token" in str(info.value)
    assert "CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY" in str(info.value)
    with pytest.raises(ProviderConfigError, match="CLOUDFLARE_API_KEY or CF_API_KEY or CF_Key"):
        load_provider("cloudflare", {"CF_Email": EMAIL})


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"CLOUDFLARE_BASE_URL": "http://api.example.com/client/v4"}, "plain http is only allowed"),
        ({"CLOUDFLARE_BASE_URL": "api.cloudflare.com"}, "must look like"),
        ({"CLOUDFLARE_TTL": "10"}, "CLOUDFLARE_TTL must be 1"),
        ({"CLOUDFLARE_TTL": "ten"}, "CLOUDFLARE_TTL must be a whole number"),
    ],
)
def test_bad_settings(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        CloudflareConfig.from_env({"CF_Token": TOKEN, **env})


# --- through the CLI on Pebble -----------------------------------------------------------


@pytest.fixture
def published(registered_cli: Cli) -> Iterator[CloudflareEmulator]:
    srv = registered_cli.pebble.challtestsrv
    assert srv is not None
    with CloudflareEmulator(accounts(), on_change=srv.set_txt_values) as em:
        yield em


def test_cli_issues_apex_and_wildcard(registered_cli: Cli, published: CloudflareEmulator, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    env = clean_env(CF_Token=TOKEN, CLOUDFLARE_BASE_URL=published.base_url)
    published.throttle_every = 3  # rate limiting on the way must not matter
    cli.run(
        "issue", "-d", "cli-zone.com", "-d", "*.cli-zone.com",
        "--dns", "cloudflare", "--dns-resolver", srv.dns_address, env=env,
    )  # fmt: skip
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "cli-zone.com", tmp_path)
    assert san_names(leaf) == {"cli-zone.com", "*.cli-zone.com"}
    created = [r for r in published.requests if r.method == "POST" and r.status == 200]
    assert len(created) == 2 and {r.body["name"] for r in created} == {"_acme-challenge.cli-zone.com"}
    deleted = [r for r in published.requests if r.method == "DELETE" and r.status == 200]
    assert len(deleted) == 2 and published.records("cli-zone.com") == []
    assert any(r.status == 429 for r in published.requests)


def test_cli_missing_permission_is_one_line(registered_cli: Cli, published: CloudflareEmulator) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    before = tree_snapshot(cli.state_dir)
    result = cli.run(
        "issue", "-d", "www.cli-zone.com", "--dns", "cloudflare", "--dns-resolver", srv.dns_address,
        env=clean_env(CLOUDFLARE_DNS_API_TOKEN=NO_EDIT, CLOUDFLARE_BASE_URL=published.base_url), check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Zone:Read / DNS:Edit" in result.stderr and NO_EDIT not in result.stderr, result.stderr
    after = tree_snapshot(cli.state_dir)
    assert {k: v for k, v in after.items() if not k.startswith("locks/")} == {
        k: v for k, v in before.items() if not k.startswith("locks/")
    }
