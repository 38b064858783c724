"""The Route 53 provider against moto's Route 53 server (through boto3), behind the
front door of ``tests/support/route53_front.py`` that checks SigV4 signatures and IAM
actions and injects throttling. The last test issues a certificate through the CLI on
Pebble, the TXT records mirrored from moto to ``pebble-challtestsrv``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from certsmith.dns.base import load_provider
from certsmith.dns.route53 import Route53Config, Route53Error, Route53Provider, quote_txt, unquote_txt
from certsmith.errors import ConfigError, DnsError
from certsmith.testing.conformance import check_provider
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, verify_chain
from tests.support.route53_front import AwsUser, Route53Front

KEY, SECRET = "AKIAIOSFODNN7CERTSMI", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYcertsmith"
MAIN = AwsUser(KEY, SECRET)
STS = AwsUser("ASIAIOSFODNN7TEMPKEY", "temporary-Secret-0123", session_token="FwoGZXIvYXdzE-token")
NAME = "_acme-challenge.example.com."
TOKEN = "XKrxpRBosdIKFzxW_CT3KLZNf6q0HG9i01zxXp5CPBs"

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise


def limited(actions: set[str]) -> AwsUser:
    return AwsUser("AKIALIMITEDCERTSMITH", "limited-Secret-0123", actions=frozenset(actions))


ALL_ACTIONS = {
    "route53:ListHostedZonesByName", "route53:ListResourceRecordSets",
    "route53:ChangeResourceRecordSets", "route53:GetChange",
}  # fmt: skip


@pytest.fixture(scope="module")
def front() -> Iterator[Route53Front]:
    with Route53Front([MAIN, STS]) as server:
        yield server


@pytest.fixture
def aws(front: Route53Front) -> Route53Front:
    front.reset()
    front.users = {u.access_key_id: u for u in (MAIN, STS)}
    front.on_change = None
    front.create_zone("example.com")
    return front


def provider_for(env: Mapping[str, str]) -> Route53Provider:
    return Route53Provider(
        Route53Config.from_env(env), retry_delay=0.01, max_retry_delay=0.05, change_poll_interval=0.01
    )


def run_with(env: Mapping[str, str], scenario: Callable[[Route53Provider], Awaitable[None]]) -> None:
    async def go() -> None:
        provider = provider_for(env)
        try:
            await scenario(provider)
        finally:
            await provider.aclose()

    asyncio.run(go())


def present(env: Mapping[str, str], fqdn: str = NAME, value: str = TOKEN) -> None:
    async def scenario(provider: Route53Provider) -> None:
        await provider.present(fqdn, value)

    run_with(env, scenario)


def error_of(env: Mapping[str, str], fqdn: str = NAME) -> str:
    with pytest.raises(DnsError) as caught:
        present(env, fqdn)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the contract -------------------------------------------------------------------------


def test_conformance(aws: Route53Front) -> None:
    async def read_txt(fqdn: str) -> set[str]:
        return set(aws.txt_values(fqdn))

    async def scenario(provider: Route53Provider) -> None:
        await check_provider(provider, "example.com.", read_txt)

    run_with(aws.env(), scenario)
    # Each value became one UPSERT of the whole set; the last cleanup at a name deleted the set.
    assert aws.txt_sets(aws.zones["example.com"]) == {}


def test_concurrent_presents_at_one_name_keep_every_value(aws: Route53Front) -> None:
    values = [f"value-{i}" for i in range(6)]

    async def scenario(provider: Route53Provider) -> None:
        await asyncio.gather(*(provider.present(NAME, v) for v in values))
        assert sorted(aws.txt_values(NAME)) == values
        await asyncio.gather(*(provider.cleanup(NAME, v) for v in values[:3]))
        assert sorted(aws.txt_values(NAME)) == values[3:]

    run_with(aws.env(), scenario)


def test_a_foreign_value_is_kept_with_its_ttl(aws: Route53Front) -> None:
    zone_id = aws.zones["example.com"]
    aws.put_txt(zone_id, NAME, ["v=foreign"], ttl=300)

    async def scenario(provider: Route53Provider) -> None:
        await provider.present(NAME, TOKEN)
        assert sorted(aws.txt_values(NAME)) == sorted(["v=foreign", TOKEN])
        await provider.cleanup(NAME, TOKEN)

    run_with(aws.env(), scenario)
    assert aws.txt_values(NAME) == ["v=foreign"]
    rrsets = aws.moto.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    assert [r["TTL"] for r in rrsets if r["Type"] == "TXT"] == [300]


def test_cleanup_removes_exactly_ours_and_the_empty_set(aws: Route53Front) -> None:
    async def scenario(provider: Route53Provider) -> None:
        await provider.present(NAME, TOKEN)
        await provider.cleanup(NAME, "not-ours")  # a value that is not there: nothing happens
        assert aws.txt_values(NAME) == [TOKEN]
        await provider.cleanup(NAME, TOKEN)
        await provider.cleanup(NAME, TOKEN)  # already gone: harmless

    run_with(aws.env(), scenario)
    assert aws.txt_sets(aws.zones["example.com"]) == {}
    deletes = [r for r in aws.requests if r.operation == "ChangeResourceRecordSets" and b"<Action>DELETE" in r.body]
    assert len(deletes) == 1 and deletes[0].status == 200


def test_record_ttl_and_quoting(aws: Route53Front) -> None:
    present(aws.env(AWS_TTL="60"))
    rrsets = aws.moto.list_resource_record_sets(HostedZoneId=aws.zones["example.com"])["ResourceRecordSets"]
    txt = [r for r in rrsets if r["Type"] == "TXT"]
    assert txt == [{"Name": NAME, "Type": "TXT", "TTL": 60, "ResourceRecords": [{"Value": f'"{TOKEN}"'}]}]
    assert unquote_txt(quote_txt('a "b" \\c')) == 'a "b" \\c'
    assert unquote_txt('"abc" "def"') == "abcdef"


# --- zones ------------------------------------------------------------------------------


def test_the_deepest_zone_wins(aws: Route53Front) -> None:
    sub = aws.create_zone("sub.example.com")
    present(aws.env(), "_acme-challenge.www.sub.example.com.")
    assert aws.txt_sets(sub) == {"_acme-challenge.www.sub.example.com.": [TOKEN]}
    assert aws.txt_sets(aws.zones["example.com"]) == {}


def test_public_zone_preferred_private_on_request(aws: Route53Front) -> None:
    public = aws.zones["example.com"]
    private = aws.create_zone("example.com", private=True)
    present(aws.env())
    assert aws.txt_sets(public) == {NAME: [TOKEN]} and aws.txt_sets(private) == {}
    present(aws.env(AWS_PRIVATE_ZONE="true"), value="private-value")
    assert aws.txt_sets(private) == {NAME: ["private-value"]}


def test_only_a_private_zone_names_the_switch(aws: Route53Front) -> None:
    aws.create_zone("internal.test", private=True)
    message = error_of(aws.env(), "_acme-challenge.internal.test.")
    assert "no public Route 53 hosted zone contains _acme-challenge.internal.test." in message
    assert "AWS_PRIVATE_ZONE=true" in message


def test_zone_not_in_the_account(aws: Route53Front) -> None:
    message = error_of(aws.env(), "_acme-challenge.elsewhere.test.")
    assert "no public Route 53 hosted zone contains _acme-challenge.elsewhere.test. in this AWS account" in message


def test_hosted_zone_id_skips_the_lookup(aws: Route53Front) -> None:
    other = aws.create_zone("example.com")  # a second public zone of the same name
    present(aws.env(AWS_HOSTED_ZONE_ID=f"/hostedzone/{other}"))
    assert aws.txt_sets(other) == {NAME: [TOKEN]}
    assert aws.calls("ListHostedZonesByName", status=None) == 0
    message = error_of(aws.env(AWS_HOSTED_ZONE_ID="ZNOSUCHZONE"))
    assert "NoSuchHostedZone" in message and "AWS_HOSTED_ZONE_ID" in message


# --- credentials, permissions, throttling --------------------------------------------------


def test_unknown_key(aws: Route53Front) -> None:
    message = error_of(aws.env(AwsUser("AKIAUNKNOWNCERTSMITH", SECRET)))
    assert "(InvalidClientTokenId)" in message and "AKIAUNKNOWNCERTSMITH" in message


def test_wrong_secret(aws: Route53Front) -> None:
    message = error_of(aws.env(AwsUser(KEY, "not-the-secret")))
    assert "(SignatureDoesNotMatch)" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret" not in message


def test_session_token(aws: Route53Front) -> None:
    present(aws.env(STS))
    assert aws.txt_values(NAME) == [TOKEN]
    env = aws.env(STS)
    del env["AWS_SESSION_TOKEN"]
    assert "(InvalidClientTokenId)" in error_of(env)


def test_a_pending_change_is_followed_until_insync(aws: Route53Front) -> None:
    aws.pending_changes = True
    present(aws.env())
    assert aws.txt_values(NAME) == [TOKEN]
    assert aws.calls("GetChange") == 1


@pytest.mark.parametrize("missing", sorted(ALL_ACTIONS))
def test_a_missing_permission_is_named(aws: Route53Front, missing: str) -> None:
    aws.pending_changes = True  # so that GetChange is called too
    user = limited(ALL_ACTIONS - {missing})
    aws.users[user.access_key_id] = user
    message = error_of(aws.env(user))
    assert "(AccessDenied)" in message and f"may not call {missing};" in message


def test_the_minimal_permissions_are_enough(aws: Route53Front) -> None:
    user = limited(ALL_ACTIONS)
    aws.users[user.access_key_id] = user

    async def scenario(provider: Route53Provider) -> None:
        await provider.present(NAME, TOKEN)
        await provider.cleanup(NAME, TOKEN)

    run_with(aws.env(user), scenario)
    assert aws.txt_values(NAME) == []


@pytest.mark.parametrize("code", ["Throttling", "PriorRequestNotComplete", "InternalFailure"])
def test_throttling_is_retried(aws: Route53Front, code: str) -> None:
    aws.inject("ChangeResourceRecordSets", code, times=2)
    aws.inject("ListHostedZonesByName", code, times=1)
    present(aws.env())
    assert aws.txt_values(NAME) == [TOKEN]
    assert aws.calls("ChangeResourceRecordSets", status=None) == 3


def test_retries_are_bounded(aws: Route53Front) -> None:
    aws.inject("ChangeResourceRecordSets", "Throttling", times=10)
    message = error_of(aws.env(AWS_MAX_RETRIES="2"))
    assert "(Throttling)" in message and "AWS_MAX_RETRIES" in message
    assert aws.calls("ChangeResourceRecordSets", status=None) == 3


# --- variables -------------------------------------------------------------------------


def test_every_variable_and_alias(aws: Route53Front, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env = {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY_FILE": str(secret_file),
        "AWS_ENDPOINT_URL": aws.endpoint,  # the SDK's global endpoint variable
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_PROPAGATION_TIMEOUT": "2m",
        "AWS_MAX_RETRIES": "0",
        "AWS_TTL": "120",
        "AWS_PRIVATE_ZONE": "no",
    }
    provider = load_provider("route53", env)
    assert isinstance(provider, Route53Provider)
    config = provider.config
    assert (config.secret_access_key, config.endpoint_url, config.region) == (SECRET, aws.endpoint, "eu-west-1")
    assert provider.propagation_timeout == 120 and config.max_retries == 0 and config.ttl == 120
    assert SECRET not in repr(provider)
    present(env)
    assert aws.txt_values(NAME) == [TOKEN]
    service = {**env, "AWS_ENDPOINT_URL": "https://wrong.invalid", "AWS_ENDPOINT_URL_ROUTE_53": aws.endpoint}
    assert Route53Config.from_env(service).endpoint_url == aws.endpoint  # the service's own wins
    assert Route53Config.from_env({**env, "ROUTE53_PROPAGATION_TIMEOUT": "30"}).propagation_timeout == 30


def test_a_profile_from_the_shared_credentials_file(
    aws: Route53Front, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[dns]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    present({"AWS_PROFILE": "dns", "AWS_ENDPOINT_URL_ROUTE_53": aws.endpoint})
    assert aws.txt_values(NAME) == [TOKEN]


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"AWS_ACCESS_KEY_ID": KEY}, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        ({"AWS_SECRET_ACCESS_KEY": SECRET}, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"),
        ({"AWS_ENDPOINT_URL_ROUTE_53": "http://route53.example.net"}, "plain http is only allowed for loopback"),
        ({"AWS_PRIVATE_ZONE": "maybe"}, "AWS_PRIVATE_ZONE must be true or false"),
        ({"AWS_TTL": "0"}, "AWS_TTL must be"),
        ({"AWS_MAX_RETRIES": "-1"}, "AWS_MAX_RETRIES must be"),
    ],
)
def test_bad_variables(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        Route53Config.from_env(env)


def test_without_boto3_the_error_names_the_extra(aws: Route53Front, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if the extra were not installed
    message = error_of(aws.env())
    assert message == "the route53 provider needs the AWS SDK for Python: pip install 'certsmith[route53]'"


def test_the_error_type_carries_the_code(aws: Route53Front) -> None:
    with pytest.raises(Route53Error) as caught:
        present(aws.env(AwsUser(KEY, "wrong")))
    assert caught.value.code == "SignatureDoesNotMatch" and caught.value.operation == "ListHostedZonesByName"


# --- the whole path: the CLI on Pebble -------------------------------------------------------


def test_cli_issues_apex_and_wildcard(front: Route53Front, registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    front.reset()
    front.users = {MAIN.access_key_id: MAIN}
    front.on_change = srv.set_txt_values
    zone_id = front.create_zone("route53.example.com")
    try:
        cli.run(
            "issue", "-d", "route53.example.com", "-d", "*.route53.example.com",
            "--dns", "route53", "--dns-resolver", srv.dns_address, env=clean_env(**front.env()),
        )  # fmt: skip
    finally:
        front.on_change = None
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "route53.example.com", tmp_path)
    assert san_names(leaf) == {"route53.example.com", "*.route53.example.com"}
    changes = [r for r in front.requests if r.operation == "ChangeResourceRecordSets" and r.status == 200]
    assert len(changes) >= 3  # two values added (one name), then removed
    assert front.txt_sets(zone_id) == {}
