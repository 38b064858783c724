"""The acme-dns provider against the acme-dns emulator, and a CLI issuance through a CNAME on Pebble.

The CLI test runs the flow a user meets: the first run registers, stores the
credentials and fails with the CNAME to create; the test creates that CNAME in the
challtestsrv Pebble resolves through; the second run issues the certificate (apex and
wildcard share the acme-dns subdomain's two values).
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from certsmith.dns.acmedns import AcmeDnsConfig, AcmeDnsError, AcmeDnsProvider, CnameRequired
from certsmith.errors import ConfigError, ProviderConfigError
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, verify_chain
from tests.support.acme_dns_emulator import AcmeDnsEmulator

VALUE_A, VALUE_B, VALUE_C = "A" * 43, "B" * 43, "C" * 43


@pytest.fixture
def emulator() -> Iterator[AcmeDnsEmulator]:
    with AcmeDnsEmulator() as em:
        yield em


def env_for(emulator: AcmeDnsEmulator, storage: Path, **extra: str) -> dict[str, str]:
    return {"ACME_DNS_API_BASE": emulator.api_base, "ACME_DNS_STORAGE_PATH": str(storage), **extra}


def run_with(env: Mapping[str, str], scenario: Any) -> None:
    async def go() -> None:
        provider = AcmeDnsProvider(AcmeDnsConfig.from_env(env), retry_delay=0.001)
        try:
            await scenario(provider)
        finally:
            await provider.aclose()

    asyncio.run(go())


def stored(storage: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(storage.read_text())
    return data


# --- the provider ----------------------------------------------------------------------


def test_first_run_registers_stores_and_asks_for_the_cname(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    storage = tmp_path / "conf" / "acme-dns.json"

    async def scenario(provider: AcmeDnsProvider) -> None:
        results = await asyncio.gather(
            provider.present("_acme-challenge.example.com.", VALUE_A),
            provider.present("_acme-challenge.example.com.", VALUE_B),  # the wildcard, concurrently
            return_exceptions=True,
        )
        assert all(isinstance(r, CnameRequired) for r in results), results
        message = str(results[0])
        account = stored(storage)["example.com"]
        assert f"'_acme-challenge.example.com. CNAME {account['fulldomain']}.'" in message
        assert "\n" not in message and account["password"] not in message
        with pytest.raises(CnameRequired):  # and again until the CNAME exists
            await provider.present("_acme-challenge.example.com.", VALUE_A)

    run_with(env_for(emulator, storage), scenario)
    assert [r.path for r in emulator.requests] == ["/register"]  # registered once, no update
    assert stat.S_IMODE(storage.stat().st_mode) == 0o600
    assert set(stored(storage)["example.com"]) == {"username", "password", "fulldomain", "subdomain", "allowfrom"}


def test_after_the_cname_the_target_is_updated(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    storage = tmp_path / "acme-dns.json"
    account = emulator.register()
    storage.write_text(json.dumps({"example.com": account}))  # a lego storage file works as is
    target = account["fulldomain"] + "."

    async def scenario(provider: AcmeDnsProvider) -> None:
        await provider.present(target, VALUE_A)  # in order: acme-dns replaces the oldest value
        await provider.present(target, VALUE_B)
        assert sorted(emulator.txt_values(target)) == [VALUE_A, VALUE_B]
        await provider.present(target, VALUE_A)  # repeated: no update that could push out VALUE_B
        with pytest.raises(AcmeDnsError, match="keeps only 2 TXT values"):
            await provider.present(target, VALUE_C)
        await provider.cleanup(target, VALUE_A)  # nothing to delete on acme-dns...
        assert sorted(emulator.txt_values(target)) == [VALUE_A, VALUE_B]
        await provider.present(target, VALUE_C)  # ...but the slot is free for the next value
        assert emulator.txt_values(target) == [VALUE_B, VALUE_C]  # the oldest was replaced

    run_with(env_for(emulator, storage), scenario)
    assert [r.status for r in emulator.requests if r.path == "/update"] == [200, 200, 200]


def test_allowlist_is_sent_when_registering(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    storage = tmp_path / "acme-dns.json"

    async def scenario(provider: AcmeDnsProvider) -> None:
        with pytest.raises(CnameRequired):
            await provider.present("_acme-challenge.allow.test.", VALUE_A)
        target = stored(storage)["allow.test"]["fulldomain"] + "."
        with pytest.raises(AcmeDnsError, match="outside the account's allowfrom") as info:
            await provider.present(target, VALUE_A)
        assert info.value.status == 401 and info.value.code == "forbidden"

    run_with(env_for(emulator, storage, ACME_DNS_ALLOWLIST="192.0.2.0/24, 2001:db8::/32"), scenario)
    assert emulator.requests[0].body == {"allowfrom": ["192.0.2.0/24", "2001:db8::/32"]}
    assert stored(storage)["allow.test"]["allowfrom"] == ["192.0.2.0/24", "2001:db8::/32"]


def test_wrong_stored_password(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    storage = tmp_path / "acme-dns.json"
    account = {**emulator.register(), "password": "x" * 40}
    storage.write_text(json.dumps({"example.com": account}))
    with pytest.raises(AcmeDnsError) as info:
        run_with(env_for(emulator, storage), lambda p: p.present(account["fulldomain"] + ".", VALUE_A))
    message = str(info.value)
    assert "does not accept the account for" in message and str(storage) in message and "x" * 40 not in message


def test_acme_sh_preset_account(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    account = emulator.register()
    env = {
        "ACMEDNS_BASE_URL": emulator.api_base,
        "ACMEDNS_USERNAME": account["username"],
        "ACMEDNS_PASSWORD": account["password"],
        "ACMEDNS_SUBDOMAIN": account["subdomain"],
        "ACME_DNS_STORAGE_PATH": str(tmp_path / "unused.json"),
    }
    run_with(env, lambda p: p.present("_acme-challenge.any.example.", VALUE_A))
    assert emulator.txt_values(account["fulldomain"]) == [VALUE_A]
    assert not (tmp_path / "unused.json").exists()
    with pytest.raises(ConfigError, match="go together"):
        AcmeDnsConfig.from_env({**env, "ACMEDNS_SUBDOMAIN": ""})


def test_server_errors_are_retried(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    storage = tmp_path / "acme-dns.json"
    account = emulator.register()
    storage.write_text(json.dumps({"example.com": account}))
    emulator.fail_next_with = [500, 503]
    run_with(env_for(emulator, storage), lambda p: p.present(account["fulldomain"], VALUE_A))
    assert [r.status for r in emulator.requests] == [500, 503, 200]


def test_a_name_that_is_neither_ours_nor_a_challenge_name(emulator: AcmeDnsEmulator, tmp_path: Path) -> None:
    with pytest.raises(AcmeDnsError, match="not a challenge name"):
        run_with(env_for(emulator, tmp_path / "s.json"), lambda p: p.present("www.example.com.", VALUE_A))


@pytest.mark.parametrize("base", ["ACME_DNS_API_BASE", "ACMEDNS_BASE_URL"])
def test_variable_names(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = AcmeDnsConfig.from_env({base: "https://auth.example.org/", "ACME_DNS_PROPAGATION_TIMEOUT": "2m"})
    assert config.api_base == "https://auth.example.org"
    assert config.storage_path == tmp_path / "xdg" / "certsmith" / "acme-dns.json"
    assert config.propagation_timeout == 120
    with pytest.raises(ProviderConfigError, match="ACME_DNS_API_BASE or ACMEDNS_BASE_URL"):
        AcmeDnsConfig.from_env({})
    with pytest.raises(ConfigError, match="plain http is only allowed"):
        AcmeDnsConfig.from_env({base: "http://auth.example.org"})
    with pytest.raises(ConfigError, match="ACME_DNS_ALLOWLIST"):
        AcmeDnsConfig.from_env({base: "https://auth.example.org", "ACME_DNS_ALLOWLIST": "nonsense"})


# --- the emulator's own API ---------------------------------------------------------------


def test_emulator_speaks_acme_dns(emulator: AcmeDnsEmulator) -> None:
    with httpx.Client(base_url=emulator.api_base) as http:
        assert http.get("/health").status_code == 200
        reg = http.post("/register")
        assert reg.status_code == 201
        account = reg.json()
        assert account["fulldomain"] == f"{account['subdomain']}.auth.acme-dns.test"
        auth = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        ok = http.post("/update", headers=auth, json={"subdomain": account["subdomain"], "txt": VALUE_A})
        assert (ok.status_code, ok.json()) == (200, {"txt": VALUE_A})
        bad_txt = http.post("/update", headers=auth, json={"subdomain": account["subdomain"], "txt": "short"})
        assert (bad_txt.status_code, bad_txt.json()) == (400, {"error": "bad_txt"})
        wrong_key = {**auth, "X-Api-Key": "y" * 40}
        denied = http.post("/update", headers=wrong_key, json={"subdomain": account["subdomain"], "txt": VALUE_A})
        assert (denied.status_code, denied.json()) == (401, {"error": "forbidden"})
        other = http.post("/register").json()["subdomain"]
        foreign = http.post("/update", headers=auth, json={"subdomain": other, "txt": VALUE_A})
        assert (foreign.status_code, foreign.json()) == (401, {"error": "forbidden"})
        cidr = http.post("/register", json={"allowfrom": ["not-a-cidr"]})
        assert (cidr.status_code, cidr.json()) == (400, {"error": "invalid_allowfrom_cidr"})


# --- through the CLI on Pebble -----------------------------------------------------------


def test_cli_issuance_through_the_cname(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    storage = tmp_path / "acme-dns.json"
    domain = "acmedns-cli.example.com"
    with AcmeDnsEmulator(on_change=srv.set_txt_values) as emulator:
        env = clean_env(ACME_DNS_API_BASE=emulator.api_base, ACME_DNS_STORAGE_PATH=str(storage))
        args = ["issue", "-d", domain, "-d", f"*.{domain}", "--dns", "acme-dns", "--dns-resolver", srv.dns_address]

        first = cli.run(*args, env=env, check=False)
        assert first.returncode == 1
        fulldomain = stored(storage)[domain]["fulldomain"]
        assert f"_acme-challenge.{domain}. CNAME {fulldomain}." in first.stderr, first.stderr
        assert stored(storage)[domain]["password"] not in first.stderr

        srv.call("/set-cname", {"host": f"_acme-challenge.{domain}.", "target": fulldomain + "."})
        try:
            cli.run(*args, env=env)
        finally:
            srv.call("/clear-cname", {"host": f"_acme-challenge.{domain}."})
        leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / domain, tmp_path)
        assert san_names(leaf) == {domain, f"*.{domain}"}
        assert [r.path for r in emulator.requests].count("/register") == 1
        assert [r.status for r in emulator.requests if r.path == "/update"] == [200, 200]
