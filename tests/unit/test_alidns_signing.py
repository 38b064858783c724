"""Alidns signatures, percent-encoding, zone selection, configuration and error messages.

The signature vectors are the official ones from Alibaba's documentation and the
computed ones of shared/reference/alidns-api.md sections 2.3 and 3. Error handling is
exercised through the real provider against an ``httpx.MockTransport`` server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from certsmith.dns import alidns_signing as signing
from certsmith.dns.alidns import (
    RAM_ACTIONS,
    AlidnsConfig,
    AlidnsError,
    AlidnsProvider,
    Zone,
    clock_offset,
    describe_error,
    to_ascii,
    zone_from_api,
)
from certsmith.dns.base import provider_class
from certsmith.dns.http_api import select_zone
from certsmith.errors import ConfigError, DnsError, ProviderConfigError

# --- V1 --------------------------------------------------------------------------------

DOC_PARAMS = {
    "AccessKeyId": "testid",
    "Action": "DescribeDomainRecords",
    "DomainName": "example.com",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "f59ed6a9-83fc-473b-9cc6-99c95df3856e",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-03-24T16:41:54Z",
    "Version": "2015-01-09",
}
DOC_STRING_TO_SIGN = (
    "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeDomainRecords%26DomainName%3Dexample.com"
    "%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Df59ed6a9-83fc-473b-9cc6-99c95df3856e"
    "%26SignatureVersion%3D1.0%26Timestamp%3D2016-03-24T16%253A41%253A54Z%26Version%3D2015-01-09"
)
ECS_PARAMS = {
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
}
TOKEN = "XKrxpRBosdIKFzxW_CT3KLZNf6q0HG9i01zxXp5CPBs"
ADD_PARAMS = {
    **DOC_PARAMS,
    "Action": "AddDomainRecord",
    "Format": "JSON",
    "RR": "_acme-challenge.www",
    "TTL": "600",
    "Type": "TXT",
    "Value": TOKEN,
}


def test_v1_alidns_documentation_vector() -> None:
    assert signing.v1_string_to_sign("GET", DOC_PARAMS) == DOC_STRING_TO_SIGN
    assert signing.sign_v1("GET", DOC_PARAMS, "testsecret") == "uRpHwaSEt3J+6KQD//svCh/x+pI="


def test_v1_generic_rpc_documentation_vectors() -> None:
    assert signing.sign_v1("GET", ECS_PARAMS, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    old_spelling = {k if k != "Timestamp" else "TimeStamp": v for k, v in ECS_PARAMS.items()}
    assert signing.sign_v1("GET", old_spelling, "testsecret") == "CT9X0VtwR86fNWSnsc6v8YGOjuE="


@pytest.mark.parametrize(
    ("method", "expected"), [("POST", "ahB1c9zVSwzD4vciLqAvkWhDhcc="), ("GET", "z1Oqbtc1G3XQ0RabUwj2R7xCgY8=")]
)
def test_v1_computed_add_domain_record_vectors(method: str, expected: str) -> None:
    assert signing.sign_v1(method, ADD_PARAMS, "testsecret") == expected


def test_v1_edge_case_vector() -> None:
    params = {**ADD_PARAMS, "SignatureType": "", "Value": "a b*c~d/e+f=gé"}
    string_to_sign = signing.v1_string_to_sign("GET", params)
    assert "Value%3Da%2520b%252Ac~d%252Fe%252Bf%253Dg%25C3%25A9" in string_to_sign
    assert "%26SignatureType%3D%26" in string_to_sign  # an empty value is signed as "Key="
    assert signing.sign_v1("GET", params, "testsecret") == "KegQLwBYnJKYLOTtWVIFCu3g2NI="


def test_v1_ignores_signature_parameter_and_order() -> None:
    reordered = dict(reversed(list(DOC_PARAMS.items())))
    reordered["Signature"] = "whatever"
    assert signing.v1_string_to_sign("get", reordered) == DOC_STRING_TO_SIGN


def test_v1_common_params_carry_sts_token() -> None:
    moment = datetime(2016, 3, 25, 0, 41, 54, tzinfo=timezone(timedelta(hours=8)))
    params = signing.v1_common_params("AddDomainRecord", "id", "n1", moment, security_token="tok")
    assert params["Timestamp"] == "2016-03-24T16:41:54Z"  # always UTC
    assert params["SecurityToken"] == "tok"
    assert "SecurityToken" not in signing.v1_common_params("AddDomainRecord", "id", "n1", moment)


# --- V3 --------------------------------------------------------------------------------

V3_MOMENT = datetime(2023, 10, 26, 10, 22, 32, tzinfo=UTC)
V3_NONCE = "3156853299f313e23d1673dc12e1703d"


def test_v3_official_ecs_vector() -> None:
    headers = {
        "host": "ecs.cn-shanghai.aliyuncs.com",
        "x-acs-action": "RunInstances",
        "x-acs-version": "2014-05-26",
        "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": V3_NONCE,
        "x-acs-content-sha256": signing.EMPTY_SHA256,
    }
    query = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
    canonical = signing.v3_canonical_request("POST", "/", query, headers, headers, signing.EMPTY_SHA256)
    assert canonical.splitlines()[:3] == [
        "POST",
        "/",
        "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai",
    ]
    string_to_sign = signing.v3_string_to_sign(canonical)
    assert string_to_sign.startswith("ACS3-HMAC-SHA256\n7ea06492")
    assert string_to_sign.endswith("1e259")
    signature = signing.v3_signature("YourAccessKeySecret", string_to_sign)
    assert signature == "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"


def test_v3_computed_alidns_vector() -> None:
    headers = signing.sign_v3(
        method="POST",
        host="alidns.aliyuncs.com",
        action="AddDomainRecord",
        query={"DomainName": "example.com", "RR": "_acme-challenge.www", "TTL": "600", "Type": "TXT", "Value": TOKEN},
        access_key_id="YourAccessKeyId",
        secret="YourAccessKeySecret",
        nonce=V3_NONCE,
        moment=V3_MOMENT,
    )
    assert headers["Authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,"
        "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=71859dbe95b078852469885f62882dc449c45074d698bfa06c63b5d3b5e168b6"
    )
    assert headers["x-acs-content-sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_v3_sts_headers_are_signed() -> None:
    headers = signing.sign_v3(
        method="POST", host="h", action="A", query={}, access_key_id="id", secret="s",
        nonce="n", moment=V3_MOMENT, security_token="tok",
    )  # fmt: skip
    assert headers["x-acs-security-token"] == "tok"
    assert "x-acs-accesskey-id;x-acs-action" in headers["Authorization"]
    assert "x-acs-security-token;x-acs-signature-nonce" in headers["Authorization"]


def test_v3_canonical_headers_trim_lowercase_and_join_repeats() -> None:
    text = signing.canonical_headers({"X-Acs-B": ["  2 ", "1"], "Host": " h "}, ["host", "x-acs-b"])
    assert text == "host:h\nx-acs-b:1,2\n"
    with pytest.raises(KeyError):
        signing.canonical_headers({"host": "h"}, ["host", "x-acs-date"])


# --- percent-encoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (" ", "%20"),
        ("*", "%2A"),
        ("~", "~"),
        ("/", "%2F"),
        ("+", "%2B"),
        ("=", "%3D"),
        ("&", "%26"),
        ("%", "%25"),
        (":", "%3A"),
        ("-_.", "-_."),
        ("AZaz09", "AZaz09"),
        ("é", "%C3%A9"),
        ("例", "%E4%BE%8B"),
        ("😀", "%F0%9F%98%80"),
    ],
)
def test_percent_encode(raw: str, encoded: str) -> None:
    assert signing.percent_encode(raw) == encoded


def test_canonical_query_sorts_by_byte_order_and_keeps_empty_values() -> None:
    query = signing.canonical_query({"Type": "TXT", "TTL": "600", "Timestamp": "t", "a": "", "B": "x y"})
    assert query == "B=x%20y&TTL=600&Timestamp=t&Type=TXT&a="
    assert signing.canonical_query({}) == ""


def test_utc_timestamp_requires_aware_datetimes() -> None:
    assert signing.utc_timestamp(datetime(2024, 1, 1, 1, 2, 3, tzinfo=UTC)) == "2024-01-01T01:02:03Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        signing.utc_timestamp(datetime(2024, 1, 1))


# --- zones -----------------------------------------------------------------------------

ZONES = [
    zone_from_api({"DomainName": "example.com", "PunyCode": "example.com"}),
    zone_from_api({"DomainName": "sub.example.com", "PunyCode": "sub.example.com"}),
    zone_from_api({"DomainName": "例子.com", "PunyCode": "xn--fsqu00a.com"}),
    zone_from_api({"DomainName": "bücher.example"}),  # no PunyCode: derived
    zone_from_api({"DomainName": "Test.Example.CN."}),
]


@pytest.mark.parametrize(
    ("fqdn", "zone", "rr"),
    [
        ("_acme-challenge.example.com.", "example.com", "_acme-challenge"),
        ("_acme-challenge.a.b.example.com.", "example.com", "_acme-challenge.a.b"),
        ("example.com.", "example.com", "@"),
        ("_acme-challenge.sub.example.com.", "sub.example.com", "_acme-challenge"),
        ("_acme-challenge.x.sub.example.com", "sub.example.com", "_acme-challenge.x"),
        ("_ACME-Challenge.Example.COM.", "example.com", "_acme-challenge"),
        ("_acme-challenge.www.xn--fsqu00a.com.", "例子.com", "_acme-challenge.www"),
        ("_acme-challenge.www.例子.com.", "例子.com", "_acme-challenge.www"),
        ("_acme-challenge.bücher.example.", "bücher.example", "_acme-challenge"),
        ("_acme-challenge.xn--bcher-kva.example.", "bücher.example", "_acme-challenge"),
        ("_acme-challenge.test.example.cn.", "Test.Example.CN", "_acme-challenge"),
    ],
)
def test_select_zone_longest_suffix(fqdn: str, zone: str, rr: str) -> None:
    found = select_zone(fqdn, ZONES)
    assert found is not None
    assert (found[0].name, found[1]) == (zone, rr)


@pytest.mark.parametrize("fqdn", ["_acme-challenge.notexample.com.", "example.org.", "com.", "xample.com."])
def test_select_zone_matches_whole_labels_only(fqdn: str) -> None:
    assert select_zone(fqdn, ZONES) is None


def test_to_ascii() -> None:
    assert to_ascii("_acme-challenge.WWW.例子.com.") == "_acme-challenge.www.xn--fsqu00a.com"
    assert zone_from_api({"DomainName": "bücher.example"}) == Zone("bücher.example", "xn--bcher-kva.example")
    with pytest.raises(DnsError, match="internationalised"):
        to_ascii("a\u200d\u0301b.example.")


# --- configuration ---------------------------------------------------------------------

BASE_ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sekr3t-value"}


def test_config_defaults_and_registry() -> None:
    assert provider_class("alidns") is AlidnsProvider
    provider = AlidnsProvider.from_env(BASE_ENV)
    config = provider.config
    assert (config.endpoint, config.ttl, config.signature_version) == ("https://alidns.aliyuncs.com", 600, 3)
    assert config.propagation_timeout is None
    assert provider.propagation_timeout == AlidnsProvider.info.default_propagation_timeout
    asyncio.run(provider.aclose())


def test_config_reads_every_variable() -> None:
    env = {
        **BASE_ENV,
        "ALIBABA_CLOUD_SECURITY_TOKEN": "sts-token",
        "ALIDNS_ENDPOINT": "http://127.0.0.1:8080",
        "ALIDNS_TTL": "120",
        "ALIDNS_PROPAGATION_TIMEOUT": "90.5",
        "ALIDNS_SIGNATURE_VERSION": "1",
    }
    provider = AlidnsProvider.from_env(env)
    assert provider.propagation_timeout == 90.5
    assert provider.config == AlidnsConfig(
        "LTAI-id", "sekr3t-value", "sts-token", "http://127.0.0.1:8080", 120, 90.5, 1
    )
    asyncio.run(provider.aclose())


@pytest.mark.parametrize(
    "env",
    [
        {"ALICLOUD_ACCESS_KEY": "LTAI-id", "ALICLOUD_SECRET_KEY": "sekr3t-value", "ALICLOUD_SECURITY_TOKEN": "t"},
        {"Ali_Key": "LTAI-id", "Ali_Secret": "sekr3t-value"},
    ],
)
def test_config_accepts_lego_and_acme_sh_names(env: dict[str, str]) -> None:
    config = AlidnsConfig.from_env(env)
    assert (config.access_key_id, config.access_key_secret) == ("LTAI-id", "sekr3t-value")
    assert config.security_token == env.get("ALICLOUD_SECURITY_TOKEN")


def test_config_endpoint_without_scheme_means_https() -> None:
    config = AlidnsConfig.from_env({**BASE_ENV, "ALIDNS_ENDPOINT": "alidns.cn-hangzhou.aliyuncs.com"})
    assert config.endpoint == "https://alidns.cn-hangzhou.aliyuncs.com"


def test_config_reads_secret_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    (tmp_path / "token").write_text("token-file\n")
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-id",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET_FILE": str(tmp_path / "secret"),
        "ALIBABA_CLOUD_SECURITY_TOKEN_FILE": str(tmp_path / "token"),
    }
    config = AlidnsConfig.from_env(env)
    assert (config.access_key_secret, config.security_token) == ("from-file", "token-file")


def test_config_lists_every_missing_variable_at_once() -> None:
    with pytest.raises(ProviderConfigError) as info:
        AlidnsConfig.from_env({"ALIDNS_TTL": "600"})
    assert info.value.missing == [
        "ALIBABA_CLOUD_ACCESS_KEY_ID or ALICLOUD_ACCESS_KEY or Ali_Key",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET or ALICLOUD_SECRET_KEY or Ali_Secret",
    ]
    assert "AliyunDNSFullAccess" in str(info.value)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"ALIDNS_TTL": "ten"}, "ALIDNS_TTL"),
        ({"ALIDNS_TTL": "0"}, "between 1 and 86400"),
        ({"ALIDNS_PROPAGATION_TIMEOUT": "-1"}, "positive"),
        ({"ALIDNS_SIGNATURE_VERSION": "2.5"}, "3 or 1"),
        ({"ALIDNS_ENDPOINT": "http://alidns.aliyuncs.com"}, "plain http"),
        ({"ALIDNS_ENDPOINT": "ftp://alidns.aliyuncs.com"}, "https://alidns"),
    ],
)
def test_config_rejects_bad_values(extra: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AlidnsConfig.from_env({**BASE_ENV, **extra})


def test_config_repr_hides_the_secret_and_token() -> None:
    config = AlidnsConfig("LTAI-id", "sekr3t-value", security_token="sts-t0ken")
    provider = AlidnsProvider(config)
    for text in (repr(config), str(config), repr(provider)):
        assert "sekr3t-value" not in text
        assert "sts-t0ken" not in text
        assert "LTAI-id" in text
    asyncio.run(provider.aclose())


def test_info_lists_every_variable() -> None:
    names = {var.name for var in AlidnsProvider.info.env}
    assert {
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "ALIDNS_ENDPOINT",
        "ALIDNS_TTL",
        "ALIDNS_PROPAGATION_TIMEOUT",
        "ALIDNS_SIGNATURE_VERSION",
    } == names
    assert AlidnsProvider.info.example and AlidnsProvider.info.links
    assert all(var.secret for var in AlidnsProvider.info.env if "SECRET" in var.name or "TOKEN" in var.name)


# --- error messages --------------------------------------------------------------------


def test_clock_offset_from_date_header() -> None:
    local = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert clock_offset("Wed, 01 May 2024 12:20:00 GMT", local) == 1200
    assert clock_offset("Wed, 01 May 2024 11:40:30 GMT", local) == -1170
    assert clock_offset(None, local) is None
    assert clock_offset("not a date", local) is None


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        ("SignatureDoesNotMatch", ["secret", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "LTAI-id"]),
        ("InvalidAccessKeyId.NotFound", ["AccessKey ID LTAI-id is unknown"]),
        ("Forbidden.RAM", [*RAM_ACTIONS, "AliyunDNSFullAccess", "AddDomainRecord"]),
        ("InvalidSecurityToken.Expired", ["ALIBABA_CLOUD_SECURITY_TOKEN"]),
        ("Throttling.User", ["throttling"]),
        ("SomethingNew", ["SomethingNew", "the server said this"]),
    ],
)
def test_describe_error(code: str, fragments: list[str]) -> None:
    message = describe_error(
        action="AddDomainRecord", code=code, server_message="the server said this", access_key_id="LTAI-id"
    )
    for fragment in fragments:
        assert fragment in message


def test_describe_error_never_echoes_the_string_to_sign() -> None:
    message = describe_error(
        action="AddDomainRecord",
        code="SignatureDoesNotMatch",
        server_message="...server string to sign is:POST&%2F&SecurityToken%3Dsts-t0ken",
        access_key_id="LTAI-id",
    )
    assert "sts-t0ken" not in message


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(1200.0, "off by 20 minutes (this machine is behind"), (-3600.0, "off by 60 minutes (this machine is ahead of"),
     (None, "probably off by more than 15 minutes")],
)  # fmt: skip
def test_describe_clock_error(offset: float | None, expected: str) -> None:
    message = describe_error(
        action="DescribeDomains", code="InvalidTimeStamp.Expired", server_message="", access_key_id="x", offset=offset
    )
    assert expected in message
    assert "NTP" in message


def test_describe_missing_domain_lists_zones() -> None:
    message = describe_error(
        action="AddDomainRecord",
        code="InvalidDomainName.NoExist",
        server_message="",
        access_key_id="x",
        zones=["b.com", "a.com"],
        domain="c.com",
    )
    assert "c.com is not a domain in this Alibaba Cloud account" in message
    assert "the account has: a.com, b.com" in message


# --- the provider against a scripted server --------------------------------------------

SECRET = "Sup3r-S3cret-Acc3ssKey"
STS = "sts-T0ken-value"


class Scripted:
    """A fake Alidns: answers each action from ``replies`` and records what was sent."""

    def __init__(self, replies: dict[str, list[tuple[int, dict[str, object]]]], date: datetime | None = None) -> None:
        self.replies = replies
        self.date = date
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        action = request.headers.get("x-acs-action") or dict(httpx.QueryParams(request.content.decode()))["Action"]
        status, body = self.replies[action].pop(0) if len(self.replies[action]) > 1 else self.replies[action][0]
        headers = {"Date": format_datetime(self.date, usegmt=True)} if self.date else {}
        return httpx.Response(status, json={"RequestId": "RID-1", **body}, headers=headers)


DOMAINS = (
    200,
    {
        "TotalCount": 1,
        "PageNumber": 1,
        "PageSize": 100,
        "Domains": {"Domain": [{"DomainName": "example.com", "PunyCode": "example.com"}]},
    },
)
INFO = (200, {"DomainName": "example.com", "MinTtl": 600})


def error(code: str, status: int = 400, message: str = "msg") -> tuple[int, dict[str, object]]:
    return status, {"Code": code, "Message": message, "HostId": "alidns.aliyuncs.com"}


def run_provider(
    server: Scripted, version: int = 3, max_attempts: int = 6, clock: Callable[[], datetime] | None = None
) -> AlidnsProvider:
    config = AlidnsConfig("LTAI-id", SECRET, security_token=STS, signature_version=version)
    transport = httpx.MockTransport(server)
    return AlidnsProvider(config, retry_delay=0.001, max_attempts=max_attempts, clock=clock, transport=transport)


def present(provider: AlidnsProvider, fqdn: str = "_acme-challenge.www.example.com.") -> None:
    async def go() -> None:
        try:
            await provider.present(fqdn, TOKEN)
        finally:
            await provider.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error("SignatureDoesNotMatch", message=f"server string to sign is:POST&SecurityToken%3D{STS}"), "secret"),
        (error("InvalidAccessKeyId.NotFound", 404), "AccessKey ID LTAI-id is unknown"),
        (error("Forbidden.RAM"), "alidns:DescribeDomains"),
        (error("InvalidTimeStamp.Expired"), "the clock is off by 20 minutes"),
        (error("InvalidSecurityToken.Expired"), "refresh ALIBABA_CLOUD_SECURITY_TOKEN"),
    ],
)
def test_errors_are_actionable_and_never_leak_secrets(
    reply: tuple[int, dict[str, object]], expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = Scripted({"DescribeDomains": [reply]}, date=datetime.now(UTC) + timedelta(minutes=20))
    provider = run_provider(server)
    with pytest.raises(AlidnsError) as info:
        present(provider)
    assert expected in str(info.value)
    assert "RID-1" in str(info.value)
    leaked = [str(info.value), repr(info.value), repr(info.value.args), caplog.text, repr(provider)]
    for text in leaked:
        assert SECRET not in text
        assert STS not in text
        assert SECRET + "&" not in text


def test_missing_zone_lists_the_accounts_zones() -> None:
    server = Scripted({"DescribeDomains": [DOMAINS]})
    with pytest.raises(
        AlidnsError, match=r"no Alidns domain contains _acme-challenge\.other\.org\..*has: example\.com"
    ):
        present(run_provider(server), "_acme-challenge.other.org.")


def test_domain_gone_after_listing_lists_zones() -> None:
    server = Scripted({"DescribeDomains": [DOMAINS], "DescribeDomainInfo": [error("InvalidDomainName.NoExist")]})
    with pytest.raises(
        AlidnsError, match=r"example\.com is not a domain in this Alibaba Cloud account; the account has"
    ):
        present(run_provider(server))


def test_retries_5xx_and_throttling_with_fresh_nonces() -> None:
    server = Scripted(
        {
            "DescribeDomains": [error("Throttling.User", 429), error("ServiceUnavailable", 503), DOMAINS],
            "DescribeDomainInfo": [(502, {}), INFO],
            "AddDomainRecord": [error("Throttling"), (200, {"RecordId": "42"})],
        }
    )
    present(run_provider(server))
    nonces = [r.headers["x-acs-signature-nonce"] for r in server.sent]
    assert len(server.sent) == 7
    assert len(set(nonces)) == 7


def test_retries_are_bounded() -> None:
    server = Scripted({"DescribeDomains": [error("Throttling.User", 429)]})
    with pytest.raises(AlidnsError, match="kept throttling") as info:
        present(run_provider(server, max_attempts=3))
    assert info.value.code == "Throttling.User"
    assert len(server.sent) == 3


def test_client_errors_are_not_retried() -> None:
    server = Scripted({"DescribeDomains": [error("SignatureDoesNotMatch")]})
    with pytest.raises(AlidnsError):
        present(run_provider(server))
    assert len(server.sent) == 1


def test_non_json_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    config = AlidnsConfig("id", SECRET)
    provider = AlidnsProvider(config, max_attempts=2, retry_delay=0.001, transport=httpx.MockTransport(handler))
    with pytest.raises(AlidnsError, match="non-JSON answer"):
        present(provider)


def test_quota_exceeded_ttl_retries_with_the_minimum_when_info_is_forbidden() -> None:
    server = Scripted(
        {
            "DescribeDomains": [DOMAINS],
            "DescribeDomainInfo": [error("Forbidden.RAM")],
            "AddDomainRecord": [
                error(
                    "QuotaExceeded.TTL",
                    message="The specified TTL is invalid. A valid TTL must be in the range of 600 to 86400.",
                ),
                (200, {"RecordId": "7"}),
            ],
        }
    )
    config = AlidnsConfig("LTAI-id", SECRET, ttl=60)
    provider = AlidnsProvider(config, retry_delay=0.001, transport=httpx.MockTransport(server))
    present(provider)
    ttls = [
        httpx.QueryParams(r.url.query).get("TTL") for r in server.sent if r.headers["x-acs-action"] == "AddDomainRecord"
    ]
    assert ttls == ["60", "600"]


def test_v1_requests_are_form_posts_signed_with_fresh_utc_timestamps() -> None:
    server = Scripted(
        {"DescribeDomains": [DOMAINS], "DescribeDomainInfo": [INFO], "AddDomainRecord": [(200, {"RecordId": "1"})]}
    )
    moment = datetime(2024, 1, 2, 11, 4, 5, tzinfo=timezone(timedelta(hours=8)))
    present(run_provider(server, version=1, clock=lambda: moment))
    for request in server.sent:
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        fields = dict(httpx.QueryParams(request.content.decode()))
        assert fields["Timestamp"] == "2024-01-02T03:04:05Z"
        assert fields["SecurityToken"] == STS
        assert fields["Signature"] == signing.sign_v1("POST", fields, SECRET)
    add = dict(httpx.QueryParams(server.sent[-1].content.decode()))
    assert {k: add[k] for k in ("DomainName", "RR", "Type", "Value", "TTL")} == {
        "DomainName": "example.com", "RR": "_acme-challenge.www", "Type": "TXT", "Value": TOKEN, "TTL": "600",
    }  # fmt: skip


def test_v3_requests_sign_every_acs_header() -> None:
    server = Scripted(
        {"DescribeDomains": [DOMAINS], "DescribeDomainInfo": [INFO], "AddDomainRecord": [(200, {"RecordId": "1"})]}
    )
    present(run_provider(server))
    for request in server.sent:
        authorization = request.headers["authorization"]
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        assert set(signed) == {"host"} | {h for h in request.headers if h.startswith("x-acs-")}
        headers = {name: request.headers[name] for name in signed}
        canonical = signing.v3_canonical_request(
            "POST", "/", dict(httpx.QueryParams(request.url.query)), headers, signed, signing.EMPTY_SHA256
        )
        expected = signing.v3_signature(SECRET, signing.v3_string_to_sign(canonical))
        assert authorization.endswith("Signature=" + expected)
        assert request.headers["x-acs-security-token"] == STS
        assert json.dumps(dict(request.headers)).count(SECRET) == 0
