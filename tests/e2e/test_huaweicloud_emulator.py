"""The Huawei Cloud DNS provider against the emulator, and a certificate through the CLI.

The emulator (``tests/support/huaweicloud_emulator.py``) verifies every signature, so
each call here also checks certsmith's signing; ``test_huaweicloud_sdk.py`` checks the
emulator against Huawei's own SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from certsmith.dns.base import load_provider
from certsmith.dns.huaweicloud import HuaweiCloudConfig, HuaweiCloudError, HuaweiCloudProvider, quote_txt, unquote_txt
from certsmith.errors import ConfigError, ProviderConfigError
from certsmith.testing.conformance import check_provider
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, verify_chain
from tests.support.huaweicloud_emulator import HuaweiAccount, HuaweiCloudEmulator

AK, SK = "HPUAMAINKEY0123", "main-Sk-Value-0123456789"
OTHER_AK, OTHER_SK = "HPUAOTHERKEY", "other-Sk"
LIMITED_AK, LIMITED_SK = "HPUALIMITED", "limited-Sk"
NAME = "_acme-challenge.www.example.com."

Scenario = Callable[[HuaweiCloudProvider], Awaitable[None]]


@pytest.fixture(scope="module")
def emulator() -> Iterator[HuaweiCloudEmulator]:
    accounts = [
        HuaweiAccount(AK, SK, zones=["example.com", "sub.example.com", "hw.example.net"]),
        HuaweiAccount(OTHER_AK, OTHER_SK, zones=["other.test"]),
        HuaweiAccount(
            LIMITED_AK, LIMITED_SK, zones=["limited.test"], allowed_actions={"dns:zone:list", "dns:recordset:list"}
        ),
    ]
    with HuaweiCloudEmulator(accounts) as em:
        yield em


def env_for(emulator: HuaweiCloudEmulator, ak: str = AK, sk: str = SK, **extra: str) -> dict[str, str]:
    return {
        "HUAWEICLOUD_ACCESS_KEY_ID": ak,
        "HUAWEICLOUD_SECRET_ACCESS_KEY": sk,
        "HUAWEICLOUD_REGION": "ap-southeast-1",
        "HUAWEICLOUD_ENDPOINT": emulator.endpoint,
        **extra,
    }


def run_with(env: Mapping[str, str], scenario: Scenario, max_attempts: int = 6) -> None:
    async def go() -> None:
        provider = HuaweiCloudProvider(HuaweiCloudConfig.from_env(env), retry_delay=0.001, max_attempts=max_attempts)
        try:
            await scenario(provider)
        finally:
            await provider.aclose()

    asyncio.run(go())


def failure(env: Mapping[str, str], fqdn: str = NAME, max_attempts: int = 6) -> HuaweiCloudError:
    caught: list[HuaweiCloudError] = []

    async def scenario(provider: HuaweiCloudProvider) -> None:
        with pytest.raises(HuaweiCloudError) as info:
            await provider.present(fqdn, "v")
        caught.append(info.value)

    run_with(env, scenario, max_attempts)
    message = str(caught[0])
    assert "\n" not in message
    return caught[0]


def test_conformance_in_a_zone_and_a_delegated_subzone(emulator: HuaweiCloudEmulator) -> None:
    async def scenario(provider: HuaweiCloudProvider) -> None:
        async def read(fqdn: str) -> set[str]:
            return set(emulator.txt_values(fqdn))

        await check_provider(provider, "example.com.", read)
        await check_provider(provider, "sub.example.com.", read)
        await provider.present("_acme-challenge.a.sub.example.com.", "in-sub")
        await provider.cleanup("_acme-challenge.a.sub.example.com.", "in-sub")

    run_with(env_for(emulator), scenario)
    sub = emulator.zone_id("sub.example.com")
    creates = [r for r in emulator.requests if r.method == "POST" and r.status == 202]
    assert any(r.path.split("/")[3] == sub and r.body["name"] == "_acme-challenge.a.sub.example.com." for r in creates)
    assert emulator.record_sets() == []


def test_two_values_at_one_name_and_a_foreign_value_survive(emulator: HuaweiCloudEmulator) -> None:
    emulator.add_txt(NAME, "someone-else")

    async def scenario(provider: HuaweiCloudProvider) -> None:
        await asyncio.gather(provider.present(NAME, "apex"), provider.present(NAME, "wildcard"))
        assert sorted(emulator.txt_values(NAME)) == ["apex", "someone-else", "wildcard"]
        await provider.present(NAME, "apex")  # idempotent
        assert sorted(emulator.txt_values(NAME)) == ["apex", "someone-else", "wildcard"]
        await asyncio.gather(provider.cleanup(NAME, "apex"), provider.cleanup(NAME, "wildcard"))
        assert emulator.txt_values(NAME) == ["someone-else"]
        await provider.cleanup(NAME, "never-presented")  # not ours: nothing happens

    run_with(env_for(emulator), scenario)
    [rs] = emulator.record_sets()
    assert rs["records"] == ['"someone-else"']
    emulator.requests.clear()

    async def last_value(provider: HuaweiCloudProvider) -> None:
        await provider.present("_acme-challenge.hw.example.net.", "only")
        await provider.cleanup("_acme-challenge.hw.example.net.", "only")

    run_with(env_for(emulator), last_value)
    assert emulator.calls("DELETE", 202) == 1  # ours was the last value: the set is deleted
    assert emulator.txt_values("_acme-challenge.hw.example.net.") == []


def test_a_set_created_meanwhile_is_merged(emulator: HuaweiCloudEmulator) -> None:
    name = "_acme-challenge.race.example.com."

    emulator.race_after_next_list(name, "other-client")  # another client creates the set meanwhile

    async def scenario(provider: HuaweiCloudProvider) -> None:
        await provider.present(name, "ours")

    run_with(env_for(emulator), scenario)
    assert sorted(emulator.txt_values(name)) == ["other-client", "ours"]
    assert any(r.code == "DNS.0312" for r in emulator.requests)


def test_txt_quoting_round_trip() -> None:
    for value in ["plain", 'with "quotes"', "back\\slash", "a b+c"]:
        assert unquote_txt(quote_txt(value)) == value
    assert unquote_txt('"part one" "part two"') == "part onepart two"


def test_wrong_secret_and_unknown_key(emulator: HuaweiCloudEmulator) -> None:
    wrong = failure(env_for(emulator, sk="not-the-secret"))
    assert (wrong.status, wrong.code) == (401, "APIGW.0301")
    assert "HUAWEICLOUD_SECRET_ACCESS_KEY" in str(wrong) and AK in str(wrong)
    unknown = failure(env_for(emulator, ak="HPUANOSUCHKEY"))
    assert unknown.code == "APIGW.0301" and "HPUANOSUCHKEY" in str(unknown)
    assert "not-the-secret" not in str(wrong)


def test_missing_permission_is_named(emulator: HuaweiCloudEmulator) -> None:
    error = failure(env_for(emulator, LIMITED_AK, LIMITED_SK), "_acme-challenge.limited.test.")
    assert error.status == 403
    assert "lacks the permission dns:recordset:create" in str(error)
    assert "DNS FullAccess" in str(error)


def test_zone_not_in_the_account(emulator: HuaweiCloudEmulator) -> None:
    error = failure(env_for(emulator), "_acme-challenge.other.test.")
    assert "no public zone of this account" in str(error) and "other.test" in str(error)


def test_throttling_is_retried_then_reported(emulator: HuaweiCloudEmulator) -> None:
    emulator.fail_next(
        429, "APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit", times=2
    )
    name = "_acme-challenge.throttled.example.com."

    async def scenario(provider: HuaweiCloudProvider) -> None:
        await provider.present(name, "after-retries")
        await provider.cleanup(name, "after-retries")

    run_with(env_for(emulator), scenario)
    assert sum(1 for r in emulator.requests if r.code == "APIGW.0308") >= 2
    emulator.fail_next(429, "APIGW.0308", "The throttling threshold has been reached", times=3)
    error = failure(env_for(emulator), max_attempts=3)
    assert error.code == "APIGW.0308" and "throttling" in str(error)


def test_wrong_endpoint_path_and_project(emulator: HuaweiCloudEmulator) -> None:
    missing = failure(env_for(emulator, HUAWEICLOUD_ENDPOINT=emulator.endpoint + "/nowhere"))
    assert missing.code == "APIGW.0101" and "HUAWEICLOUD_ENDPOINT" in str(missing)
    project = failure(env_for(emulator, HUAWEICLOUD_PROJECT_ID="not-my-project"))
    assert project.code == "APIGW.0301"
    good = env_for(emulator, HUAWEICLOUD_PROJECT_ID="0a1b2c3d4e5f60718293a4b5c6d7e8f9")

    async def scenario(provider: HuaweiCloudProvider) -> None:
        await provider.present("_acme-challenge.p.example.com.", "x")
        await provider.cleanup("_acme-challenge.p.example.com.", "x")

    run_with(good, scenario)


def test_configuration_errors() -> None:
    with pytest.raises(ProviderConfigError) as missing:
        load_provider("huaweicloud", {})
    for name in ("HUAWEICLOUD_ACCESS_KEY_ID", "HUAWEICLOUD_SECRET_ACCESS_KEY", "HUAWEICLOUD_REGION"):
        assert name in str(missing.value)
    base = {
        "HUAWEICLOUD_ACCESS_KEY_ID": "a",
        "HUAWEICLOUD_SECRET_ACCESS_KEY": "sk-Never-Shown",
        "HUAWEICLOUD_REGION": "cn-north-4",
    }
    config = HuaweiCloudConfig.from_env(base)
    assert config.endpoint == "https://dns.cn-north-4.myhuaweicloud.com" and config.ttl == 300
    assert "sk-Never-Shown" not in repr(config) and "<hidden>" in repr(config)
    with pytest.raises(ConfigError, match="plain http"):
        HuaweiCloudConfig.from_env({**base, "HUAWEICLOUD_ENDPOINT": "http://dns.example.com"})
    with pytest.raises(ConfigError, match="HUAWEICLOUD_REGION"):
        HuaweiCloudConfig.from_env({**base, "HUAWEICLOUD_REGION": "Not A Region"})
    with pytest.raises(ConfigError, match="HUAWEICLOUD_TTL"):
        HuaweiCloudConfig.from_env({**base, "HUAWEICLOUD_TTL": "0"})


def test_cli_issues_apex_and_wildcard(registered_cli: Cli, tmp_path: Path) -> None:
    """``certsmith issue --dns huaweicloud`` against Pebble; the emulator publishes its
    TXT sets to the challtestsrv Pebble resolves through."""
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    account = HuaweiAccount(AK, SK, zones=["example.org"])
    with HuaweiCloudEmulator([account], on_change=srv.set_txt_values) as emulator:
        env = clean_env(**env_for(emulator))
        cli.run(
            "issue", "-d", "hw.example.org", "-d", "*.hw.example.org",
            "--dns", "huaweicloud", "--dns-resolver", srv.dns_address, env=env,
        )  # fmt: skip
        leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "hw.example.org", tmp_path)
        assert san_names(leaf) == {"hw.example.org", "*.hw.example.org"}
        assert emulator.calls("POST", 202) == 1 and emulator.calls("PUT", 202) >= 1  # two values, one set
        assert emulator.record_sets() == []  # everything cleaned up
