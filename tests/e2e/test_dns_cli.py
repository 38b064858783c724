"""dns-01 through the CLI as a user runs it: Alidns (emulator) and RFC 2136 (a real BIND).

The Alidns emulator publishes its records to the challtestsrv Pebble resolves
through; the RFC 2136 tests run a second Pebble that resolves through BIND, and the
propagation check asks BIND itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from certsmith.testing.pebble import PebbleServer
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, tree_snapshot, verify_chain
from tests.support.alidns_emulator import AlidnsAccount, AlidnsDomain, AlidnsEmulator
from tests.support.bind import BindServer

AK, SECRET = "LTAI5tCliKey", "cli-Secret-Value-9876543210"
NO_RAM_AK, NO_RAM_SECRET = "LTAI5tNoRam", "no-ram-Secret-0000"


def accounts() -> list[AlidnsAccount]:
    return [
        AlidnsAccount(AK, SECRET, domains=["example-zone.com", AlidnsDomain("deep.test", min_ttl=1)]),
        AlidnsAccount(NO_RAM_AK, NO_RAM_SECRET, domains=["noram-zone.com"], allowed_actions=set()),
    ]


def alidns_env(emulator: AlidnsEmulator, ak: str = AK, secret: str = SECRET, **extra: str) -> dict[str, str]:
    return clean_env(
        ALIBABA_CLOUD_ACCESS_KEY_ID=ak,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret,
        ALIDNS_ENDPOINT=emulator.endpoint,
        **extra,
    )


def acme_challenge_records(emulator: AlidnsEmulator, zone: str) -> list[object]:
    return [r for r in emulator.records(zone) if "_acme-challenge" in str(r)]


def alidns_issue(cli: Cli, emulator: AlidnsEmulator, *names: str, env: dict[str, str] | None = None,
                 check: bool = True) -> tuple[int, str]:
    srv = cli.pebble.challtestsrv
    assert srv is not None
    args = [a for n in names for a in ("-d", n)]
    result = cli.run(
        "issue", *args, "--dns", "alidns", "--dns-resolver", srv.dns_address,
        env=env or alidns_env(emulator), check=check,
    )
    return result.returncode, result.stderr


@pytest.fixture
def emulator(registered_cli: Cli) -> Iterator[AlidnsEmulator]:
    srv = registered_cli.pebble.challtestsrv
    assert srv is not None
    with AlidnsEmulator(accounts(), on_change=srv.set_txt_values) as em:
        yield em


def test_alidns_zone_apex_and_wildcard(registered_cli: Cli, emulator: AlidnsEmulator, tmp_path: Path) -> None:
    cli = registered_cli
    alidns_issue(cli, emulator, "example-zone.com", "*.example-zone.com")
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "example-zone.com", tmp_path)
    assert san_names(leaf) == {"example-zone.com", "*.example-zone.com"}
    assert {r.params["RR"] for r in emulator.requests if r.action == "AddDomainRecord"} == {"_acme-challenge"}
    assert emulator.records("example-zone.com") == []
    # renewal repeats dns-01 through the stored settings
    renewed = json.loads(cli.run("--json", "renew", "--force", env=alidns_env(emulator)).stdout)
    assert renewed["results"][0]["renewed"] is True
    assert emulator.records("example-zone.com") == []


def test_alidns_name_two_levels_under_the_zone(registered_cli: Cli, emulator: AlidnsEmulator, tmp_path: Path) -> None:
    cli = registered_cli
    alidns_issue(cli, emulator, "a.b.deep.test")
    verify_chain(cli.pebble, cli.state_dir / "certificates" / "a.b.deep.test", tmp_path)
    assert {r.params["RR"] for r in emulator.requests if r.action == "AddDomainRecord"} == {"_acme-challenge.a.b"}
    assert emulator.records("deep.test") == []


def test_alidns_v1_signatures_with_throttling_on_every_second_call(
    registered_cli: Cli, emulator: AlidnsEmulator, tmp_path: Path
) -> None:
    cli = registered_cli
    emulator.throttle_every = 2
    alidns_issue(
        cli, emulator, "throttled.example-zone.com", "*.throttled.example-zone.com",
        env=alidns_env(emulator, ALIDNS_SIGNATURE_VERSION="1"),
    )
    verify_chain(cli.pebble, cli.state_dir / "certificates" / "throttled.example-zone.com", tmp_path)
    assert any(r.status == 429 for r in emulator.requests), "throttling must really have happened"
    assert emulator.records("example-zone.com") == []


def test_alidns_account_without_ram_permission(registered_cli: Cli, emulator: AlidnsEmulator) -> None:
    cli = registered_cli
    before = tree_snapshot(cli.state_dir)
    status, stderr = alidns_issue(
        cli, emulator, "www.noram-zone.com", env=alidns_env(emulator, NO_RAM_AK, NO_RAM_SECRET), check=False
    )
    assert status == 1
    assert "alidns:AddDomainRecord" in stderr and "AliyunDNSFullAccess" in stderr, stderr
    assert NO_RAM_SECRET not in stderr
    assert emulator.records("noram-zone.com") == []
    after = tree_snapshot(cli.state_dir)
    assert {k: v for k, v in after.items() if not k.startswith("locks/")} == {
        k: v for k, v in before.items() if not k.startswith("locks/")
    }


def test_alidns_stale_clock_gives_the_clock_message(registered_cli: Cli, emulator: AlidnsEmulator) -> None:
    cli = registered_cli
    emulator.clock_skew = timedelta(minutes=20)
    status, stderr = alidns_issue(cli, emulator, "clock.example-zone.com", check=False)
    assert status == 1
    assert "clock" in stderr and "20 minutes" in stderr, stderr
    assert SECRET not in stderr
    assert emulator.records("example-zone.com") == []


def test_alidns_wrong_secret(registered_cli: Cli, emulator: AlidnsEmulator) -> None:
    cli = registered_cli
    status, stderr = alidns_issue(
        cli, emulator, "secret.example-zone.com", env=alidns_env(emulator, secret="wrong-secret"), check=False
    )
    assert status == 1 and "AccessKey secret" in stderr and "wrong-secret" not in stderr, stderr


def test_alidns_missing_credentials_listed_at_once(registered_cli: Cli) -> None:
    result = registered_cli.run("issue", "-d", "x.example-zone.com", "--dns", "alidns", check=False)
    assert result.returncode == 1
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in result.stderr and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in result.stderr


# --- RFC 2136 against BIND -------------------------------------------------------------

BIND_ZONE = "bind.test."


@pytest.fixture(scope="module")
def bind_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BindServer, PebbleServer]]:
    bind = BindServer(zones=(BIND_ZONE,), workdir=tmp_path_factory.mktemp("bind"))
    bind.start()
    pebble = PebbleServer(workdir=tmp_path_factory.mktemp("pebble-bind"), dns_server=bind.address)
    try:
        pebble.start()
        yield bind, pebble
    finally:
        pebble.stop()
        bind.stop()


def test_rfc2136_apex_and_wildcard_with_tsig(bind_pebble: tuple[BindServer, PebbleServer], tmp_path: Path) -> None:
    bind, pebble = bind_pebble
    cli = Cli(pebble, tmp_path / "state")
    cli.register()
    names = ["bind.test", "*.bind.test", "www.sub.bind.test"]
    cli.run(
        "issue", *[a for n in names for a in ("-d", n)], "--dns", "rfc2136", "--dns-resolver", bind.address,
        env=clean_env(**bind.env()),
    )
    leaf = verify_chain(pebble, cli.state_dir / "certificates" / "bind.test", tmp_path)
    assert san_names(leaf) == set(names)
    for fqdn in ("_acme-challenge.bind.test.", "_acme-challenge.www.sub.bind.test."):
        assert asyncio.run(bind.read_txt(fqdn)) == set(), "records are removed after validation"


def test_rfc2136_wrong_tsig_secret(bind_pebble: tuple[BindServer, PebbleServer], tmp_path: Path) -> None:
    bind, pebble = bind_pebble
    cli = Cli(pebble, tmp_path / "state")
    cli.register()
    wrong = "c2VjcmV0LXRoYXQtaXMtd3JvbmctYnV0LWJhc2U2NA=="
    before = tree_snapshot(cli.state_dir)
    result = cli.run(
        "issue", "-d", "tsig.bind.test", "--dns", "rfc2136", "--dns-resolver", bind.address,
        env=clean_env(**bind.env(RFC2136_TSIG_SECRET=wrong)), check=False,
    )
    assert result.returncode == 1
    assert "TSIG key name or secret" in result.stderr, result.stderr
    assert wrong not in result.stderr
    after = tree_snapshot(cli.state_dir)
    assert {k: v for k, v in after.items() if not k.startswith("locks/")} == {
        k: v for k, v in before.items() if not k.startswith("locks/")
    }
    assert asyncio.run(bind.read_txt("_acme-challenge.tsig.bind.test.")) == set()
