"""dns-persist-01 through the CLI on Pebble 2.10: the standing record, set by hand in challtestsrv or
created once through a DNS provider (RFC 2136 on a real BIND, the Alidns emulator), then issuance
and renewal with no DNS variable in the environment; ``persist check`` for each way a record fails;
an account key rollover keeps the record valid.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certsmith.dns.rfc2136 import Rfc2136Provider
from certsmith.testing.pebble import ChallTestSrv, PebbleServer
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, tree_snapshot, verify_chain
from tests.support.alidns_emulator import AlidnsAccount, AlidnsEmulator
from tests.support.bind import BindServer

ISSUER = "pebble.letsencrypt.org"  # Pebble's default caaIdentities, which it sends as issuer-domain-names


def domains(*names: str) -> list[str]:
    return [a for n in names for a in ("-d", n)]


def records(cli: Cli, *names: str, until: str | None = None) -> list[dict[str, str]]:
    extra = ["--until", until] if until else []
    result: list[dict[str, str]] = json.loads(cli.run("--json", "persist", "record", *domains(*names), *extra).stdout)
    return result


def srv_of(cli: Cli) -> ChallTestSrv:
    srv = cli.pebble.challtestsrv
    assert srv is not None
    return srv


def account_url(cli: Cli) -> str:
    url: str = json.loads(cli.run("--json", "account", "show").stdout)["url"]
    return url


def check(cli: Cli, *names: str) -> tuple[int, dict[str, Any]]:
    result = cli.run("--json", "persist", "check", *domains(*names), "--dns-resolver", srv_of(cli).dns_address,
                     check=False)
    return result.returncode, json.loads(result.stdout)


def test_record_set_by_hand_issues_a_name_and_a_wildcard_without_dns_variables(
    registered_cli: Cli, tmp_path: Path
) -> None:
    cli = registered_cli
    names = ("byhand.example.com", "*.byhand.example.com", "other.example.com")
    published = records(cli, *names)
    url = account_url(cli)
    assert published == [
        {"name": "_validation-persist.byhand.example.com.", "type": "TXT",
         "value": f"{ISSUER}; accounturi={url}; policy=wildcard"},
        {"name": "_validation-persist.other.example.com.", "type": "TXT", "value": f"{ISSUER}; accounturi={url}"},
    ]
    human = cli.run("persist", "record", "-d", "other.example.com").stdout
    assert human == f'_validation-persist.other.example.com. TXT "{ISSUER}; accounturi={url}"\n'
    stored = json.loads((cli.state_dir / "accounts").rglob("account.json").__next__().read_text())
    assert stored["issuer_domain_names"] == [ISSUER], "learned once, kept with the account"
    for record in published:
        srv_of(cli).set_txt_values(record["name"], [record["value"]])
    assert check(cli, *names)[0] == 0

    env = clean_env()
    assert not [k for k in env if k.startswith(("RFC2136_", "ALIBABA_", "ALIDNS_"))]
    cli.run("issue", *domains(*names), "--challenge", "dns-persist-01", env=env)
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "byhand.example.com", tmp_path)
    assert san_names(leaf) == set(names)
    renewed = json.loads(cli.run("--json", "renew", "--force", env=env).stdout)
    assert renewed["ok"], renewed
    # The record stays: nothing removes it after validation.
    assert check(cli, *names)[0] == 0


def test_each_failure_kind_is_named_by_check_and_issue_fails_without_a_record(registered_cli: Cli) -> None:
    cli = registered_cli
    url = account_url(cli)
    records(cli, "kinds.example.com")  # learns the issuer name
    srv = srv_of(cli)

    status, report = check(cli, "missing.example.com")
    assert status == 1 and report["ok"] is False
    [entry] = report["records"]
    assert entry["status"] == "missing" and ISSUER in entry["problem"]

    srv.set_txt_values("_validation-persist.kinds.example.com.", [
        f"{ISSUER}; accounturi=https://elsewhere.test/acct/1",
        "other-ca.example; accounturi=" + url,  # another CA's record is no help and no harm
    ])
    status, report = check(cli, "kinds.example.com")
    [entry] = report["records"]
    assert status == 1 and entry["status"] == "account-mismatch" and "https://elsewhere.test/acct/1" in entry["problem"]

    srv.set_txt_values("_validation-persist.kinds.example.com.", [f"{ISSUER}; accounturi={url}"])
    assert check(cli, "kinds.example.com")[0] == 0
    status, report = check(cli, "*.kinds.example.com")
    [entry] = report["records"]
    assert status == 1 and entry["status"] == "no-wildcard-policy" and "policy=wildcard" in entry["problem"]

    past = int(time.time()) - 3600
    srv.set_txt_values("_validation-persist.kinds.example.com.", [f"{ISSUER}; accounturi={url}; persistUntil={past}"])
    status, report = check(cli, "kinds.example.com")
    [entry] = report["records"]
    assert status == 1 and entry["status"] == "expired" and f"persistUntil={past}" in entry["problem"]
    human = cli.run("persist", "check", "-d", "kinds.example.com", "--dns-resolver", srv.dns_address, check=False)
    assert human.returncode == 1 and human.stdout.startswith("expired: _validation-persist.kinds.example.com.")

    # The CA agrees: an expired record does not validate, and the error says so.
    result = cli.run("issue", "-d", "kinds.example.com", "--challenge", "dns-persist-01", check=False)
    assert result.returncode == 1 and "persistUntil" in result.stderr
    assert not (cli.state_dir / "certificates" / "kinds.example.com").exists()


def test_until_is_written_and_an_unexpired_record_validates(registered_cli: Cli) -> None:
    cli = registered_cli
    [record] = records(cli, "until.example.com", until="2099-01-01")
    assert record["value"].endswith("; persistUntil=4070908800")
    srv_of(cli).set_txt_values(record["name"], [record["value"]])
    assert check(cli, "until.example.com")[0] == 0
    cli.run("issue", "-d", "until.example.com", "--challenge", "dns-persist-01")


def test_the_record_stays_valid_after_an_account_key_rollover(registered_cli: Cli) -> None:
    cli = registered_cli
    [record] = records(cli, "rollover.example.com")
    srv_of(cli).set_txt_values(record["name"], [record["value"]])
    cli.run("issue", "-d", "rollover.example.com", "--challenge", "dns-persist-01")
    cli.run("account", "rollover")
    assert records(cli, "rollover.example.com") == [record], "same account URL, same record"
    assert check(cli, "rollover.example.com")[0] == 0
    renewed = json.loads(cli.run("--json", "renew", "--force", "rollover.example.com").stdout)
    assert renewed["ok"], renewed


def test_a_renewal_whose_record_is_gone_says_how_to_check_it(registered_cli: Cli) -> None:
    cli = registered_cli
    [record] = records(cli, "gone.example.com")
    srv_of(cli).set_txt_values(record["name"], [record["value"]])
    cli.run("issue", "-d", "gone.example.com", "--challenge", "dns-persist-01")
    srv_of(cli).set_txt_values(record["name"], [])
    result = cli.run("renew", "--force", "gone.example.com", check=False)
    assert result.returncode == 1
    assert "gone.example.com: failed (validation failed for gone.example.com" in result.stdout, result
    assert "; check the standing _validation-persist records with: certsmith persist check -d gone.example.com" \
        in result.stdout
    failed = json.loads(cli.run("--json", "renew", "--force", "gone.example.com", check=False).stdout)
    assert failed["results"][0]["advice"].endswith("persist check -d gone.example.com")
    issued = cli.run("issue", "-d", "*.gone.example.com", "--challenge", "dns-persist-01", check=False)
    assert "certsmith persist check -d '*.gone.example.com'" in issued.stderr, issued.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["persist", "record", "-d", "x.example.com", "--until", "2001-01-01"], "is in the past"),
        (["persist", "record", "-d", "x.example.com", "--until", "next tuesday"], "is not a date"),
        (["persist", "record", "-d", "127.0.0.1"], "127.0.0.1 is an IP address: use http-01 or tls-alpn-01"),
        (["persist", "check", "-d", "bad..name"], "bad..name"),
        (["issue", "-d", "x.example.com", "--challenge", "dns-persist-01", "--dns", "rfc2136"],
         "dns-persist-01 uses no DNS provider"),
        (["issue", "-d", "127.0.0.1", "--challenge", "dns-persist-01"], "is an IP address"),
        (["persist", "create", "-d", "x.example.com", "--dns", "rfc2136"], "RFC2136_NAMESERVER"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(registered_cli: Cli, args: list[str], message: str) -> None:
    before = tree_snapshot(registered_cli.state_dir)
    result = registered_cli.run(*args, check=False)
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert tree_snapshot(registered_cli.state_dir) == before


def test_without_an_account_the_record_cannot_be_made(cli: Cli) -> None:
    result = cli.run("persist", "record", "-d", "x.example.com", check=False)
    assert result.returncode == 1 and "there is no account" in result.stderr


def test_a_ca_without_dns_persist_names_what_it_offers(pebble24: PebbleServer, tmp_path: Path) -> None:
    cli = Cli(pebble24, tmp_path / "state")
    cli.register()
    result = cli.run("persist", "record", "-d", "old.example.com", check=False)
    assert result.returncode == 1
    assert "the CA offers no dns-persist-01 challenge for old.example.com (it offers: dns-01, http-01" in result.stderr
    result = cli.run("issue", "-d", "old.example.com", "--challenge", "dns-persist-01", check=False)
    assert result.returncode == 1 and "(it offers: dns-01, http-01, tls-alpn-01)" in result.stderr


# --- persist create through DNS providers ------------------------------------------------

BIND_ZONE = "persist.test."


@pytest.fixture(scope="module")
def bind_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BindServer, PebbleServer]]:
    bind = BindServer(zones=(BIND_ZONE,), workdir=tmp_path_factory.mktemp("bind"))
    bind.start()
    pebble = PebbleServer(workdir=tmp_path_factory.mktemp("pebble-persist"), dns_server=bind.address)
    try:
        pebble.start()
        yield bind, pebble
    finally:
        pebble.stop()
        bind.stop()


def test_create_through_rfc2136_then_issue_without_credentials(
    bind_pebble: tuple[BindServer, PebbleServer], tmp_path: Path
) -> None:
    bind, pebble = bind_pebble
    cli = Cli(pebble, tmp_path / "state")
    cli.register()
    fqdn = "_validation-persist.persist.test."
    other = "other-ca.example; accounturi=https://other.example/acct/9"
    asyncio.run(Rfc2136Provider.from_env(bind.env()).present(fqdn, other))
    names = ("persist.test", "*.persist.test")
    args = [*domains(*names), "--dns", "rfc2136", "--dns-resolver", bind.address]
    created = json.loads(cli.run("--json", "persist", "create", *args, env=clean_env(**bind.env())).stdout)
    [entry] = created
    assert entry["action"] == "created" and entry["name"] == fqdn and entry["value"].endswith("policy=wildcard")
    assert asyncio.run(bind.read_txt(fqdn)) == {other, entry["value"]}, "the other CA's record is untouched"

    again = json.loads(cli.run("--json", "persist", "create", *args, env=clean_env(**bind.env())).stdout)
    assert [e["action"] for e in again] == ["adopted"]
    assert asyncio.run(bind.read_txt(fqdn)) == {other, entry["value"]}

    status = cli.run("persist", "check", *domains(*names), "--dns-resolver", bind.address)
    assert status.stdout.startswith(f"ok: {fqdn}")
    cli.run("issue", *domains(*names), "--challenge", "dns-persist-01", env=clean_env())
    leaf = verify_chain(pebble, cli.state_dir / "certificates" / "persist.test", tmp_path)
    assert san_names(leaf) == set(names)
    assert asyncio.run(bind.read_txt(fqdn)) == {other, entry["value"]}, "issuance leaves the record in place"


AK, SECRET = "LTAI5tPersistKey", "persist-Secret-Value-0123456789"


def test_create_through_alidns_then_issue_and_renew_without_credentials(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    srv = srv_of(cli)
    with AlidnsEmulator([AlidnsAccount(AK, SECRET, domains=["persist-zone.com"])], on_change=srv.set_txt_values) as em:
        env = clean_env(
            ALIBABA_CLOUD_ACCESS_KEY_ID=AK, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET, ALIDNS_ENDPOINT=em.endpoint
        )
        names = ("www.persist-zone.com", "*.persist-zone.com")
        created = cli.run(
            "persist", "create", *domains(*names), "--dns", "alidns", "--dns-resolver", srv.dns_address, env=env
        ).stdout
        assert created.count("created: ") == 2
        assert len([r for r in em.records("persist-zone.com") if "_validation-persist" in str(r)]) == 2
    # The emulator (and its credentials) are gone: issuance and renewal only need the CA.
    cli.run("issue", *domains(*names), "--challenge", "dns-persist-01", env=clean_env())
    renewed = json.loads(cli.run("--json", "renew", "--force", env=clean_env()).stdout)
    assert renewed["ok"], renewed
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "www.persist-zone.com", tmp_path)
    assert san_names(leaf) == set(names)
