"""The Alidns provider against the emulator, and the emulator's own API checks.

Everything runs on 127.0.0.1: the emulator is an in-process HTTP server, and the
last tests publish the emulator's TXT records to a real ``pebble-challtestsrv``.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dns.asyncresolver
import dns.resolver
import httpx
import pytest

from certsmith.dns import alidns_signing as signing
from certsmith.dns.alidns import RAM_ACTIONS, AlidnsConfig, AlidnsError, AlidnsProvider
from certsmith.errors import ProviderConfigError
from certsmith.testing.conformance import check_provider
from certsmith.testing.pebble import ChallTestSrv, free_port
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, verify_chain
from tests.support.alidns_emulator import AlidnsAccount, AlidnsDomain, AlidnsEmulator

AK, SECRET = "LTAI5tMainKey", "main-Secret-Value-0123456789"
TOKEN = "XKrxpRBosdIKFzxW_CT3KLZNf6q0HG9i01zxXp5CPBs"
HTTP = httpx.Client(timeout=10)  # one client: creating one per request costs ~40 ms


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


def main_account(**overrides: Any) -> AlidnsAccount:
    fields: dict[str, Any] = {
        "access_key_id": AK,
        "access_key_secret": SECRET,
        "domains": [
            "example.com",
            "sub.example.com",
            AlidnsDomain("例子.com", min_ttl=1),
            AlidnsDomain("slow.test", min_ttl=600),
            AlidnsDomain("fast.test", min_ttl=1),
        ],
    }
    fields.update(overrides)
    return AlidnsAccount(**fields)


@pytest.fixture
def emulator() -> Iterator[AlidnsEmulator]:
    with AlidnsEmulator([main_account(), AlidnsAccount("LTAI5tOther", "other-secret", domains=["other.test"])]) as em:
        yield em


def env_for(emulator: AlidnsEmulator, ak: str = AK, secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ak,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
        "ALIDNS_ENDPOINT": emulator.endpoint,
        **extra,
    }


def provider_for(env: Mapping[str, str], max_attempts: int = 6) -> AlidnsProvider:
    return AlidnsProvider(AlidnsConfig.from_env(env), retry_delay=0.001, max_attempts=max_attempts)


def reader(emulator: AlidnsEmulator) -> Any:
    async def read_txt(fqdn: str) -> set[str]:
        return set(emulator.txt_values(fqdn))

    return read_txt


def run_with(env: Mapping[str, str], scenario: Any, max_attempts: int = 6) -> None:
    """Run ``await scenario(provider)`` with a fresh provider, closing it afterwards."""

    async def go() -> None:
        provider = provider_for(env, max_attempts)
        try:
            await scenario(provider)
        finally:
            await provider.aclose()

    asyncio.run(go())


def present(env: Mapping[str, str], fqdn: str, value: str = TOKEN, max_attempts: int = 6) -> None:
    async def scenario(provider: AlidnsProvider) -> None:
        await provider.present(fqdn, value)

    run_with(env, scenario, max_attempts)


# --- the provider --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3", "1"])
def test_conformance(emulator: AlidnsEmulator, version: str) -> None:
    env = env_for(emulator, ALIDNS_SIGNATURE_VERSION=version)

    async def scenario(provider: AlidnsProvider) -> None:
        await check_provider(provider, "example.com.", reader(emulator))

    run_with(env, scenario)
    assert {r.signature_version for r in emulator.requests} == {int(version)}
    assert {r.code for r in emulator.requests} == {None, "DomainRecordDuplicate"}  # the repeated present
    assert emulator.calls("DescribeDomains") == 1  # the zone list is cached
    assert emulator.records("example.com") == []


def test_conformance_in_an_idn_zone_and_a_delegated_subzone(emulator: AlidnsEmulator) -> None:
    async def scenario(provider: AlidnsProvider) -> None:
        await check_provider(provider, "xn--fsqu00a.com.", reader(emulator))
        await check_provider(provider, "sub.example.com.", reader(emulator))
        await provider.present("_acme-challenge.www.sub.example.com.", TOKEN)
        await provider.present("_acme-challenge.www.例子.com.", TOKEN)

    run_with(env_for(emulator), scenario)
    [sub] = emulator.records("sub.example.com")
    assert (sub["DomainName"], sub["RR"]) == ("sub.example.com", "_acme-challenge.www")
    assert emulator.records("example.com") == []
    [idn] = emulator.records("例子.com")
    assert (idn["DomainName"], idn["RR"]) == ("例子.com", "_acme-challenge.www")


def test_apex_record_uses_at(emulator: AlidnsEmulator) -> None:
    present(env_for(emulator), "fast.test.")
    assert [r["RR"] for r in emulator.records("fast.test")] == ["@"]
    assert emulator.txt_values("fast.test.") == [TOKEN]


def test_adopts_an_identical_existing_record(emulator: AlidnsEmulator) -> None:
    existing = emulator.add_record("example.com", "_acme-challenge.www", "TXT", TOKEN)
    # Decoys that the fuzzy server-side filters also return:
    emulator.add_record("example.com", "_acme-challenge.www2", "TXT", TOKEN)
    emulator.add_record("example.com", "_acme-challenge.www", "TXT", TOKEN + "x")

    async def scenario(provider: AlidnsProvider) -> None:
        await provider.present("_acme-challenge.www.example.com.", TOKEN)
        assert len(emulator.records("example.com")) == 3
        await provider.cleanup("_acme-challenge.www.example.com.", TOKEN)

    run_with(env_for(emulator), scenario)
    assert [r.code for r in emulator.requests if r.action == "AddDomainRecord"] == ["DomainRecordDuplicate"]
    [delete] = [r for r in emulator.requests if r.action == "DeleteDomainRecord"]
    assert delete.params["RecordId"] == existing
    remaining = {(r["RR"], r["Value"]) for r in emulator.records("example.com")}
    assert remaining == {("_acme-challenge.www2", TOKEN), ("_acme-challenge.www", TOKEN + "x")}


def test_cleanup_leaves_a_foreign_txt_alone(emulator: AlidnsEmulator) -> None:
    foreign = emulator.add_record("example.com", "_acme-challenge", "TXT", "someone-elses-token")

    async def scenario(provider: AlidnsProvider) -> None:
        await provider.present("_acme-challenge.example.com.", TOKEN)
        assert set(emulator.txt_values("_acme-challenge.example.com")) == {TOKEN, "someone-elses-token"}
        await provider.cleanup("_acme-challenge.example.com.", TOKEN)
        await provider.cleanup("_acme-challenge.example.com.", "someone-elses-token")  # not ours: no-op

    run_with(env_for(emulator), scenario)
    assert [r["RecordId"] for r in emulator.records("example.com")] == [foreign]
    assert emulator.calls("DeleteDomainRecord") == 1


def test_cleanup_of_a_record_deleted_behind_our_back(emulator: AlidnsEmulator) -> None:
    async def scenario(provider: AlidnsProvider) -> None:
        await provider.present("_acme-challenge.example.com.", TOKEN)
        [record] = emulator.records("example.com")
        emulator.delete_record(record["RecordId"])
        await provider.cleanup("_acme-challenge.example.com.", TOKEN)

    run_with(env_for(emulator), scenario)
    assert [r.code for r in emulator.requests if r.action == "DeleteDomainRecord"] == ["DomainRecordNotBelongToUser"]


def test_throttling_every_second_call_still_succeeds(emulator: AlidnsEmulator) -> None:
    emulator.throttle_every = 2

    async def scenario(provider: AlidnsProvider) -> None:
        await check_provider(provider, "example.com.", reader(emulator))

    run_with(env_for(emulator), scenario)
    codes = [r.code for r in emulator.requests]
    assert codes.count("Throttling.User") >= 5
    assert set(codes) == {None, "Throttling.User", "DomainRecordDuplicate"}  # e.g. no SignatureNonceUsed
    nonces = [r.headers["x-acs-signature-nonce"] for r in emulator.requests]
    assert len(set(nonces)) == len(nonces)


def test_service_unavailable_is_retried(emulator: AlidnsEmulator) -> None:
    emulator.fail_next("ServiceUnavailable", 503, times=2)
    present(env_for(emulator), "_acme-challenge.example.com.")
    assert emulator.txt_values("_acme-challenge.example.com.") == [TOKEN]
    assert [r.status for r in emulator.requests][:3] == [503, 503, 200]


def test_retries_are_bounded(emulator: AlidnsEmulator) -> None:
    emulator.throttle_every = 1
    with pytest.raises(AlidnsError) as info:
        present(env_for(emulator), "_acme-challenge.example.com.", max_attempts=4)
    assert info.value.code == "Throttling.User"
    assert len(emulator.requests) == 4


def test_account_without_ram_permissions(emulator: AlidnsEmulator) -> None:
    emulator.add_account(AlidnsAccount("LTAI5tNoRam", "noram-secret", domains=["noram.test"], allowed_actions=set()))
    with pytest.raises(AlidnsError) as info:
        present(env_for(emulator, "LTAI5tNoRam", "noram-secret"), "_acme-challenge.noram.test.")
    message = str(info.value)
    assert info.value.code == "Forbidden.RAM"
    for action in RAM_ACTIONS:
        assert action in message
    assert "AliyunDNSFullAccess" in message
    assert "noram-secret" not in message


def test_minimal_ram_policy_is_enough(emulator: AlidnsEmulator) -> None:
    """Without alidns:DescribeDomainInfo the configured TTL is used as is."""
    emulator.add_account(
        AlidnsAccount("LTAI5tMin", "min-secret", domains=["min.test"], allowed_actions=set(RAM_ACTIONS))
    )
    env = env_for(emulator, "LTAI5tMin", "min-secret", ALIDNS_TTL="900")

    async def scenario(provider: AlidnsProvider) -> None:
        await check_provider(provider, "min.test.", reader(emulator))
        await provider.present("_acme-challenge.min.test.", TOKEN)

    run_with(env, scenario)
    assert [r["TTL"] for r in emulator.records("min.test")] == [900]
    assert {r.code for r in emulator.requests if r.action == "DescribeDomainInfo"} == {"Forbidden.RAM"}


@pytest.mark.parametrize(("skew", "direction"), [(20, "behind"), (-20, "ahead of")])
def test_stale_clock_gives_the_clock_message(emulator: AlidnsEmulator, skew: int, direction: str) -> None:
    emulator.clock_skew = timedelta(minutes=skew)
    with pytest.raises(AlidnsError) as info:
        present(env_for(emulator), "_acme-challenge.example.com.")
    assert info.value.code == "InvalidTimeStamp.Expired"
    assert "the clock is off by 20 minutes" in str(info.value)
    assert f"this machine is {direction} Alibaba Cloud's time" in str(info.value)


def test_clock_within_the_window_is_fine(emulator: AlidnsEmulator) -> None:
    emulator.clock_skew = timedelta(minutes=14)
    present(env_for(emulator), "_acme-challenge.example.com.")
    assert emulator.txt_values("_acme-challenge.example.com.") == [TOKEN]


@pytest.mark.parametrize("version", ["3", "1"])
def test_wrong_secret(emulator: AlidnsEmulator, version: str) -> None:
    env = env_for(emulator, secret="Wrong-Secret-123", ALIDNS_SIGNATURE_VERSION=version)
    with pytest.raises(AlidnsError) as info:
        present(env, "_acme-challenge.example.com.")
    assert info.value.code == "SignatureDoesNotMatch"
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in str(info.value)
    assert "Wrong-Secret-123" not in str(info.value)


def test_unknown_access_key(emulator: AlidnsEmulator) -> None:
    with pytest.raises(AlidnsError, match="AccessKey ID LTAI5tNobody is unknown") as info:
        present(env_for(emulator, ak="LTAI5tNobody"), "_acme-challenge.example.com.")
    assert info.value.status == 404


def test_name_outside_the_account_lists_its_zones(emulator: AlidnsEmulator) -> None:
    with pytest.raises(AlidnsError) as info:
        present(env_for(emulator), "_acme-challenge.other.test.")  # belongs to another account
    message = str(info.value)
    assert "not in this Alibaba Cloud account" in message
    assert "example.com, fast.test, slow.test, sub.example.com, 例子.com" in message


def test_missing_env_vars_are_listed_at_once(emulator: AlidnsEmulator) -> None:
    with pytest.raises(ProviderConfigError) as info:
        AlidnsProvider.from_env({"ALIDNS_ENDPOINT": emulator.endpoint})
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID or ALICLOUD_ACCESS_KEY or Ali_Key" in str(info.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET or ALICLOUD_SECRET_KEY or Ali_Secret" in str(info.value)


def test_ttl_raised_to_the_domains_min_ttl(emulator: AlidnsEmulator) -> None:
    env = env_for(emulator, ALIDNS_TTL="60")

    async def scenario(provider: AlidnsProvider) -> None:
        await provider.present("_acme-challenge.slow.test.", TOKEN)
        await provider.present("_acme-challenge.fast.test.", TOKEN)
        await provider.present("_acme-challenge.www.slow.test.", TOKEN)

    run_with(env, scenario)
    assert [r["TTL"] for r in emulator.records("slow.test")] == [600, 600]
    assert [r["TTL"] for r in emulator.records("fast.test")] == [60]
    assert emulator.calls("DescribeDomainInfo") == 2  # once per zone


def test_sts_credentials(emulator: AlidnsEmulator) -> None:
    emulator.add_account(AlidnsAccount("STS.NTemp", "sts-secret", domains=["sts.test"], security_token="tok-123"))
    for version in ("3", "1"):
        env = env_for(emulator, "STS.NTemp", "sts-secret", ALIBABA_CLOUD_SECURITY_TOKEN="tok-123")
        env["ALIDNS_SIGNATURE_VERSION"] = version

        async def scenario(provider: AlidnsProvider) -> None:
            await check_provider(provider, "sts.test.", reader(emulator))

        run_with(env, scenario)
    with pytest.raises(AlidnsError) as info:
        present(env_for(emulator, "STS.NTemp", "sts-secret"), "_acme-challenge.sts.test.")
    assert info.value.code == "MissingSecurityToken"
    with pytest.raises(AlidnsError) as info:
        present(
            env_for(emulator, "STS.NTemp", "sts-secret", ALIBABA_CLOUD_SECURITY_TOKEN="tok-999"),
            "_acme-challenge.sts.test.",
        )
    assert "refresh ALIBABA_CLOUD_SECURITY_TOKEN" in str(info.value)
    assert "tok-999" not in str(info.value)


# --- the emulator's own checks, with hand-made requests ---------------------------------


def v1_fields(action: str, params: Mapping[str, str], *, fmt: str | None = "JSON", **common: str) -> dict[str, str]:
    fields = {
        "Action": action,
        "Version": "2015-01-09",
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": signing.utc_timestamp(datetime.now(UTC)),
    }
    if fmt is not None:
        fields["Format"] = fmt
    fields.update(common)
    fields.update(params)
    return fields


def v1_get(emulator: AlidnsEmulator, fields: dict[str, str], secret: str = SECRET) -> httpx.Response:
    signed = {"Signature": signing.sign_v1("GET", fields, secret), **fields}  # Signature first, like acme.sh
    return HTTP.get(f"{emulator.endpoint}/?{urlencode(signed)}")  # urlencode: space -> "+"


def v1_post(emulator: AlidnsEmulator, fields: dict[str, str], in_query: tuple[str, ...] = ()) -> httpx.Response:
    signed = {**fields, "Signature": signing.sign_v1("POST", fields, SECRET)}
    query = {k: v for k, v in signed.items() if k in in_query}
    body = {k: v for k, v in signed.items() if k not in in_query}
    return HTTP.post(f"{emulator.endpoint}/", params=query, data=body)


def v3_request(
    emulator: AlidnsEmulator, action: str, query: dict[str, str], body: bytes = b"", **extra_headers: str
) -> tuple[str, dict[str, str]]:
    headers = signing.sign_v3(
        method="POST",
        host=emulator.host,
        action=action,
        query=query,
        access_key_id=AK,
        secret=SECRET,
        nonce=uuid.uuid4().hex,
        moment=datetime.now(UTC),
        body=body,
    )
    headers.update(extra_headers)
    return f"{emulator.endpoint}/?{signing.canonical_query(query)}", headers


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["Code"]
    return code


ADD = {"DomainName": "example.com", "RR": "_acme-challenge", "Type": "TXT", "Value": "a b+c"}


def test_v1_get_and_post_with_form_decoding(emulator: AlidnsEmulator) -> None:
    response = v1_get(emulator, v1_fields("AddDomainRecord", ADD, fmt="json"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.headers["x-acs-request-id"] == response.json()["RequestId"]
    record_id = response.json()["RecordId"]
    assert isinstance(record_id, str) and record_id.isdigit()
    posted = v1_post(emulator, v1_fields("AddDomainRecord", {**ADD, "Value": "x"}), in_query=("Action", "Version"))
    assert posted.status_code == 200, posted.text
    assert emulator.txt_values("_acme-challenge.example.com.") == ["a b+c", "x"]


def test_rejects_a_tampered_v1_request(emulator: AlidnsEmulator) -> None:
    fields = v1_fields("AddDomainRecord", ADD)
    signed = {**fields, "Signature": signing.sign_v1("GET", fields, SECRET), "Value": "evil"}
    response = HTTP.get(f"{emulator.endpoint}/?{urlencode(signed)}")
    assert (response.status_code, error_code(response)) == (400, "SignatureDoesNotMatch")
    message = response.json()["Message"]
    assert message.startswith("Specified signature is not matched with our calculation. server string to sign is:")
    assert message.endswith(signing.v1_string_to_sign("GET", {**fields, "Value": "evil"}))
    assert emulator.records("example.com") == []
    # The same request signed for POST but sent as GET fails too: the method is signed.
    fields = v1_fields("AddDomainRecord", ADD)
    signed = {**fields, "Signature": signing.sign_v1("POST", fields, SECRET)}
    assert error_code(HTTP.get(f"{emulator.endpoint}/?{urlencode(signed)}")) == "SignatureDoesNotMatch"


def test_rejects_a_reused_nonce(emulator: AlidnsEmulator) -> None:
    fields = v1_fields("DescribeDomains", {})
    assert v1_get(emulator, fields).status_code == 200
    replay = v1_get(emulator, fields)
    assert (replay.status_code, error_code(replay)) == (400, "SignatureNonceUsed")
    url, headers = v3_request(emulator, "DescribeDomains", {})
    assert HTTP.post(url, headers=headers).status_code == 200
    replay = HTTP.post(url, headers=headers)
    assert (replay.status_code, error_code(replay)) == (400, "SignatureNonceUsed")


@pytest.mark.parametrize(
    ("minutes", "expected"), [(-16, "InvalidTimeStamp.Expired"), (16, "InvalidTimeStamp.Expired"), (-14, None)]
)
def test_timestamp_window(emulator: AlidnsEmulator, minutes: int, expected: str | None) -> None:
    moment = datetime.now(UTC) + timedelta(minutes=minutes)
    response = v1_get(emulator, v1_fields("DescribeDomains", {}, Timestamp=signing.utc_timestamp(moment)))
    assert (response.json().get("Code"), response.status_code) == (expected, 400 if expected else 200)


@pytest.mark.parametrize("stamp", ["2024-01-01 00:00:00", "2024-01-01T00:00:00+00:00Z", "yesterday"])
def test_timestamp_format(emulator: AlidnsEmulator, stamp: str) -> None:
    response = v1_get(emulator, v1_fields("DescribeDomains", {}, Timestamp=stamp))
    assert error_code(response) == "InvalidTimeStamp.Format"


def test_lenient_timestamps_accept_lexicons_form(emulator: AlidnsEmulator) -> None:
    emulator.lenient_timestamps = True
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00Z")
    assert v1_get(emulator, v1_fields("DescribeDomains", {}, Timestamp=stamp)).status_code == 200


def test_date_header_follows_the_emulator_clock(emulator: AlidnsEmulator) -> None:
    emulator.clock_skew = timedelta(minutes=20)
    response = v1_get(emulator, v1_fields("DescribeDomains", {}))
    offset = parsedate_to_datetime(response.headers["date"]) - datetime.now(UTC)
    assert timedelta(minutes=19) < offset < timedelta(minutes=21)
    assert error_code(response) == "InvalidTimeStamp.Expired"


def test_errors_are_xml_without_format(emulator: AlidnsEmulator) -> None:
    response = v1_get(emulator, v1_fields("DescribeDomains", {}, fmt=None), secret="wrong")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "Error"
    assert root.findtext("Code") == "SignatureDoesNotMatch"
    assert root.findtext("HostId") == "alidns.aliyuncs.com"
    assert "q=SignatureDoesNotMatch" in (root.findtext("Recommend") or "")
    assert b"<![CDATA[" in response.content
    ok = v1_get(emulator, v1_fields("DescribeDomainInfo", {"DomainName": "example.com"}, fmt="XML"))
    info = ET.fromstring(ok.content)
    assert (info.tag, info.findtext("MinTtl"), info.findtext("PunyCode")) == (
        "DescribeDomainInfoResponse",
        "600",
        "example.com",
    )


def test_v3_checks(emulator: AlidnsEmulator) -> None:
    url, headers = v3_request(emulator, "AddDomainRecord", ADD)
    assert HTTP.post(url, headers=headers).status_code == 200
    # A tampered query.
    url, headers = v3_request(emulator, "AddDomainRecord", {**ADD, "Value": "one"})
    tampered = HTTP.post(url.replace("Value=one", "Value=two"), headers=headers)
    assert error_code(tampered) == "SignatureDoesNotMatch"
    # A body that does not match its signed hash.
    url, headers = v3_request(emulator, "DescribeDomains", {}, body=b"PageSize=1")
    headers["content-type"] = "application/x-www-form-urlencoded"
    assert error_code(HTTP.post(url, headers=headers, content=b"PageSize=2")) == "SignatureDoesNotMatch"
    # A signed form body is fine.
    url, headers = v3_request(emulator, "DescribeDomains", {}, body=b"PageSize=1")
    headers["content-type"] = "application/x-www-form-urlencoded"
    response = HTTP.post(url, headers=headers, content=b"PageSize=1")
    assert response.json()["PageSize"] == 1
    # An x-acs-* header left out of SignedHeaders.
    url, headers = v3_request(emulator, "DescribeDomains", {})
    assert error_code(HTTP.post(url, headers={**headers, "x-acs-extra": "1"})) == "IncompleteSignature"
    # An unknown action and version.
    url, headers = v3_request(emulator, "DescribeNothing", {})
    response = HTTP.post(url, headers=headers)
    assert (response.status_code, error_code(response)) == (404, "InvalidApi.NotFound")
    assert [r.status for r in emulator.requests] == [200, 400, 400, 200, 400, 404]


def test_unknown_access_key_and_forbidden_ram(emulator: AlidnsEmulator) -> None:
    response = v1_get(emulator, v1_fields("DescribeDomains", {}, AccessKeyId="nobody"))
    assert (response.status_code, error_code(response)) == (404, "InvalidAccessKeyId.NotFound")
    emulator.add_account(
        AlidnsAccount("LTAI5tRO", "ro", domains=["ro.test"], allowed_actions={"alidns:DescribeDomains"})
    )
    fields = v1_fields("DescribeDomains", {}, AccessKeyId="LTAI5tRO")
    assert v1_get(emulator, fields, secret="ro").status_code == 200
    fields = v1_fields("AddDomainRecord", {**ADD, "DomainName": "ro.test"}, AccessKeyId="LTAI5tRO")
    response = v1_get(emulator, fields, secret="ro")
    assert (response.status_code, error_code(response)) == (400, "Forbidden.RAM")
    assert response.json()["AccessDeniedDetail"]["AuthAction"] == "alidns:AddDomainRecord"


def test_response_shapes(emulator: AlidnsEmulator) -> None:
    def call(action: str, **params: str) -> dict[str, Any]:
        response = v1_get(emulator, v1_fields(action, params))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert isinstance(body.pop("RequestId"), str)
        return body

    domains = call("DescribeDomains", PageSize="2")
    assert (domains["TotalCount"], domains["PageSize"], domains["PageNumber"]) == (5, 2, 1)
    first = domains["Domains"]["Domain"][0]
    assert isinstance(first["DomainId"], str) and first["AliDomain"] is False
    assert isinstance(first["RecordCount"], int)
    assert first["DnsServers"]["DnsServer"]
    idn = call("DescribeDomains", KeyWord="例子")["Domains"]["Domain"]
    assert [(d["DomainName"], d["PunyCode"]) for d in idn] == [("例子.com", "xn--fsqu00a.com")]

    info = call("DescribeDomainInfo", DomainName="xn--fsqu00a.com")
    assert (info["DomainName"], info["MinTtl"]) == ("例子.com", 1)
    assert "1" in info["AvailableTtls"]["AvailableTtl"]

    pairs = [("_acme-challenge", "v1"), ("_acme-challenge", "v2"), ("_acme-challenge.www", "v1"), ("www", "v9")]
    ids = [call("AddDomainRecord", **{**ADD, "RR": rr, "Value": v})["RecordId"] for rr, v in pairs]
    assert all(isinstance(i, str) for i in ids)
    records = call("DescribeDomainRecords", DomainName="example.com", RRKeyWord="ACME", ValueKeyWord="v")
    assert records["TotalCount"] == 3 and records["PageSize"] == 20
    record = records["DomainRecords"]["Record"][0]
    assert record["RecordId"] == ids[2]  # newest first
    assert isinstance(record["TTL"], int) and isinstance(record["Locked"], bool)
    assert isinstance(record["CreateTimestamp"], int) and record["Status"] == "ENABLE"
    paged = call("DescribeDomainRecords", DomainName="example.com", PageSize="1", PageNumber="2", Direction="ASC")
    assert [r["RecordId"] for r in paged["DomainRecords"]["Record"]] == [ids[1]]
    exact = call("DescribeDomainRecords", DomainName="example.com", KeyWord="www", SearchMode="EXACT")
    assert [r["RecordId"] for r in exact["DomainRecords"]["Record"]] == [ids[3]]
    by_type = call("DescribeDomainRecords", DomainName="example.com", TypeKeyWord="txt", RRKeyWord="", Type="TXT")
    assert by_type["TotalCount"] == 4

    sub = call("DescribeSubDomainRecords", SubDomain="_acme-challenge.example.com")
    assert sorted(r["Value"] for r in sub["DomainRecords"]["Record"]) == ["v1", "v2"]
    nested = call("DescribeSubDomainRecords", SubDomain="_acme-challenge.www.example.com", Type="TXT")
    assert [r["RR"] for r in nested["DomainRecords"]["Record"]] == ["_acme-challenge.www"]

    updated = call("UpdateDomainRecord", RecordId=ids[3], RR="www", Type="TXT", Value="v10", TTL="1200")
    assert updated == {"RecordId": ids[3]}
    assert emulator.txt_values("www.example.com") == ["v10"]

    deleted = call("DeleteSubDomainRecords", DomainName="example.com", RR="_acme-challenge", Type="TXT")
    assert deleted == {"RR": "_acme-challenge", "TotalCount": "2"}
    assert call("DeleteDomainRecord", RecordId=ids[2]) == {"RecordId": ids[2]}
    assert call("GetMainDomainName", InputString="a.www.example.com.cn") == {
        "RR": "a.www",
        "DomainName": "example.com.cn",
        "DomainLevel": 3,
    }


def test_business_errors(emulator: AlidnsEmulator) -> None:
    def code(action: str, **params: str) -> tuple[int, str]:
        response = v1_get(emulator, v1_fields(action, params))
        return response.status_code, error_code(response)

    assert v1_get(emulator, v1_fields("AddDomainRecord", ADD)).status_code == 200
    assert code("AddDomainRecord", **ADD) == (400, "DomainRecordDuplicate")
    assert code("AddDomainRecord", **{**ADD, "DomainName": "nothere.test"}) == (400, "InvalidDomainName.NoExist")
    assert code("AddDomainRecord", **{**ADD, "DomainName": "other.test"}) == (400, "IncorrectDomainUser")
    assert code("AddDomainRecord", **{**ADD, "TTL": "60", "Value": "z"}) == (400, "QuotaExceeded.TTL")
    assert code("AddDomainRecord", **{**ADD, "Value": "quote'"}) == (400, "InvalidParameter")
    assert code("AddDomainRecord", DomainName="example.com", RR="x", Type="TXT") == (400, "MissingValue")
    assert code("DeleteDomainRecord", RecordId="12345") == (400, "DomainRecordNotBelongToUser")
    other = emulator.add_record("other.test", "x", "TXT", "y")
    assert code("DeleteDomainRecord", RecordId=other) == (400, "DomainRecordNotBelongToUser")
    assert code("DescribeDomainRecords", DomainName="example.com", PageSize="501") == (400, "InvalidParameter")
    assert code("DescribeDomains", PageSize="101") == (400, "InvalidParameter")
    assert code("GetMainDomainName", InputString="x" * 129) == (400, "QuotaExceeded.StringLength")
    [record] = [r for r in emulator.records("example.com")]
    assert code("UpdateDomainRecord", RecordId=record["RecordId"], RR="_acme-challenge", Type="TXT", Value="a b+c") == (
        400,
        "DomainRecordDuplicate",
    )


# --- publishing to pebble-challtestsrv ---------------------------------------------------


@pytest.fixture(scope="module")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallTestSrv]:
    server = ChallTestSrv(free_port(kind=socket.SOCK_DGRAM), free_port())
    server.start(Path(tmp_path_factory.mktemp("challtestsrv")) / "challtestsrv.log")
    yield server
    server.stop()


def publisher(server: ChallTestSrv) -> Any:
    return server.set_txt_values


async def served_txt(server: ChallTestSrv, fqdn: str) -> set[str]:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.dns_port
    resolver.lifetime = 3
    try:
        answer = await resolver.resolve(fqdn, "TXT")
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return set()
    return {b"".join(rdata.strings).decode() for rdata in answer}


def test_on_change_publishes_to_challtestsrv(challtestsrv: ChallTestSrv) -> None:
    account = main_account()
    with AlidnsEmulator([account], on_change=publisher(challtestsrv)) as emulator:
        env = env_for(emulator)
        name = "_acme-challenge.www.example.com."

        async def scenario(provider: AlidnsProvider) -> None:
            await asyncio.gather(provider.present(name, "value-a"), provider.present(name, "value-b"))
            assert await served_txt(challtestsrv, name) == {"value-a", "value-b"}
            await provider.cleanup(name, "value-a")
            assert await served_txt(challtestsrv, name) == {"value-b"}
            await check_provider(provider, "example.com.", lambda fqdn: served_txt(challtestsrv, fqdn))
            await provider.cleanup(name, "value-b")
            assert await served_txt(challtestsrv, name) == set()

        run_with(env, scenario)


def test_cli_issues_a_wildcard_certificate_through_the_emulator(registered_cli: Cli, tmp_path: Path) -> None:
    """The whole path a user takes: ``certsmith issue --dns alidns`` against Pebble, with the
    emulator's records published to the challtestsrv that Pebble resolves through."""
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    with AlidnsEmulator([main_account()], on_change=publisher(srv)) as emulator:
        env = clean_env(**env_for(emulator, ALIDNS_SIGNATURE_VERSION="1"))
        cli.run(
            "issue", "-d", "alidns.example.com", "-d", "*.alidns.example.com",
            "--dns", "alidns", "--dns-resolver", srv.dns_address, env=env,
        )  # fmt: skip
        leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "alidns.example.com", tmp_path)
        assert san_names(leaf) == {"alidns.example.com", "*.alidns.example.com"}
        adds = [r for r in emulator.requests if r.action == "AddDomainRecord" and r.status == 200]
        assert adds and {r.params["RR"] for r in adds} == {"_acme-challenge.alidns"}
        assert emulator.calls("DeleteDomainRecord") == len(adds)
        assert emulator.records("example.com") == []  # everything cleaned up
