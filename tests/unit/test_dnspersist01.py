"""dns-persist-01 without a network: record names and values, parsing as the draft reads them,
judging what a name's TXT values are worth, the challenge's issuer-domain-names, settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from certsmith.acme.resources import Challenge
from certsmith.challenges.base import ChallengeJob, unsupported_reason
from certsmith.challenges.dnspersist01 import (
    DnsPersist01Solver,
    judge,
    parse_value,
    persist_fqdn,
    plan_records,
    record_value,
)
from certsmith.cli.persist import parse_until
from certsmith.errors import ChallengeError, ConfigError
from certsmith.settings import ChallengeSettings
from certsmith.storage.base import StoredAccount

ACCT = "https://ca.test/acct/1"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_names_and_values() -> None:
    assert persist_fqdn("*.Example.COM") == "_validation-persist.example.com."
    assert persist_fqdn("bücher.example") == "_validation-persist.xn--bcher-kva.example."
    with pytest.raises(ChallengeError, match="cannot derive"):
        persist_fqdn("*.")
    assert record_value("ca.test", ACCT) == f"ca.test; accounturi={ACCT}"
    full = record_value("ca.test", ACCT, wildcard=True, until=5)
    assert full == f"ca.test; accounturi={ACCT}; policy=wildcard; persistUntil=5"


def test_apex_and_wildcard_share_one_record_with_the_policy() -> None:
    records = plan_records(["example.com", "*.example.com", "www.example.com"], "ca.test", ACCT)
    assert [(r.fqdn, r.wildcard, r.names) for r in records] == [
        ("_validation-persist.example.com.", True, ("example.com", "*.example.com")),
        ("_validation-persist.www.example.com.", False, ("www.example.com",)),
    ]


def test_parsing_follows_the_draft() -> None:
    parsed = parse_value(f" ca.test ;AccountURI = {ACCT} ;\tPOLICY=Wildcard; persistUntil=10")
    assert parsed.issuer == "ca.test" and parsed.error is None
    assert parsed.account_url == ACCT and parsed.wildcard and parsed.persist_until == 10
    assert parse_value("ca.test").params == {} and parse_value("ca.test").error is None
    assert parse_value(f"ca.test; accounturi={ACCT};").error == "an empty parameter (a stray ';')"
    assert "appears twice" in (parse_value("ca.test; a=1; A=2").error or "")
    assert "not tag=value" in (parse_value("ca.test; junk").error or "")
    assert "not a Unix time" in (parse_value(f"ca.test; accounturi={ACCT}; persistUntil=soon").error or "")
    assert not parse_value(f"ca.test; accounturi={ACCT}; policy=other").wildcard


@pytest.mark.parametrize(
    ("wildcard", "values", "kind", "text"),
    [
        (False, [], "missing", "no record for ca.test"),
        (False, [f"other.test; accounturi={ACCT}"], "missing", "no record"),
        (False, ["ca.test; accounturi=https://x/2"], "account-mismatch", "https://x/2"),
        (False, ["ca.test; policy=wildcard"], "malformed", "no accounturi"),
        (False, [f"ca.test; accounturi={ACCT};"], "malformed", "stray"),
        (True, [f"ca.test; accounturi={ACCT}"], "no-wildcard-policy", "*.example.com"),
        (False, [f"ca.test; accounturi={ACCT}; persistUntil=100"], "expired", "1970-01-01T00:01:40+00:00"),
        (False, [f"ca.test; accounturi={ACCT}; persistUntil=4070908800"], "ok", None),
        (True, ["ca.test; accounturi=https://x/2", f"ca.test; accounturi={ACCT}; policy=wildcard"], "ok", None),
        # the closest failure is reported: a right account without the policy beats a wrong account
        (True, ["ca.test; accounturi=https://x/2", f"ca.test; accounturi={ACCT}"], "no-wildcard-policy", "policy"),
    ],
)
def test_judging(wildcard: bool, values: list[str], kind: str, text: str | None) -> None:
    names = ["*.example.com"] if wildcard else ["example.com"]
    [record] = plan_records(names, "ca.test", ACCT)
    verdict = judge(record, values, ACCT, ["ca.test"], NOW)
    assert verdict.kind == kind
    if text is None:
        assert verdict.problem is None
    else:
        assert verdict.problem is not None and text in verdict.problem


def test_issuer_domain_names_are_read_tolerantly() -> None:
    def chal(value: object) -> Challenge:
        parsed = Challenge.from_json({"type": "dns-persist-01", "url": "https://c", "issuer-domain-names": value})
        assert parsed is not None and parsed.token is None
        return parsed

    assert chal(["a.test", "b.test"]).issuer_domain_names == ("a.test", "b.test")
    assert chal(["a.test", 3, "", None]).issuer_domain_names == ("a.test",)
    assert chal("a.test").issuer_domain_names == ()
    assert chal(None).issuer_domain_names == ()


def test_learned_names_round_trip_and_a_damaged_list_is_forgotten() -> None:
    account = StoredAccount("https://d", ACCT, b"k", (), "valid", "", ("ca.test",))
    assert StoredAccount.from_json(account.to_json(), b"k") == account
    assert "issuer_domain_names" not in StoredAccount("https://d", ACCT, b"k", (), "valid", "").to_json()
    damaged = {**account.to_json(), "issuer_domain_names": "ca.test"}
    assert StoredAccount.from_json(damaged, b"k").issuer_domain_names == ()


def test_which_identifiers_dns_persist_validates() -> None:
    assert unsupported_reason("dns-persist-01", "dns", "example.com", wildcard=True) is None
    assert "IP address" in (unsupported_reason("dns-persist-01", "ip", "192.0.2.1", wildcard=False) or "")
    assert "dns-01 or dns-persist-01" in (unsupported_reason("http-01", "dns", "*.x.test", wildcard=True) or "")


def test_settings_refuse_a_dns_provider_and_the_solver_creates_nothing() -> None:
    with pytest.raises(ConfigError, match="dns-persist-01 uses no DNS provider"):
        ChallengeSettings(challenge="dns-persist-01", dns_provider="alidns")
    settings = ChallengeSettings.from_json(ChallengeSettings(challenge="dns-persist-01").to_json())
    assert settings.challenge == "dns-persist-01"
    solver = DnsPersist01Solver()
    job = ChallengeJob("dns", "*.example.com", "", "", wildcard=True)
    asyncio.run(solver.present([job]))
    with pytest.raises(ChallengeError, match="IP address"):
        asyncio.run(solver.present([ChallengeJob("ip", "192.0.2.1", "", "")]))


def test_until() -> None:
    assert parse_until(None, 0) is None
    assert parse_until("2099-01-01", 0) == 4070908800
    assert parse_until("2099-01-01T01:00:00+01:00", 0) == 4070908800
    assert parse_until("4070908800", 0) == 4070908800
    with pytest.raises(ConfigError, match="in the past"):
        parse_until("2020-01-01", NOW.timestamp())
    with pytest.raises(ConfigError, match="is not a date"):
        parse_until("tomorrow", 0)
