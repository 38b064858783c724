"""The Tencent Cloud DNSPod provider against the emulator, the emulator checked with
Tencent's official SDK (``tencentcloud-sdk-python-dnspod``), and a certificate issued
through the CLI on Pebble with the emulator's records published to ``pebble-challtestsrv``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from tencentcloud.dnspod.v20210323 import dnspod_client, models

from certsmith.dns import tencentcloud_signing as signing
from certsmith.dns.base import load_provider
from certsmith.dns.tencentcloud import CAM_ACTIONS, TencentCloudConfig, TencentCloudError, TencentCloudProvider
from certsmith.errors import ConfigError, ProviderConfigError
from certsmith.testing.conformance import check_provider
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, verify_chain
from tests.support.tencentcloud_emulator import TencentAccount, TencentCloudEmulator

SID, SKEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3CERTSMITH", "Gu5t9xGARNpq86cd98joQYCN3CERTSMITH"
MAIN = TencentAccount(SID, SKEY, domains=("example.com", "sub.example.com"))
STS = TencentAccount("AKIDtemporaryCERTSMITH", "temporary-key-0123", domains=("example.com",), session_token="tok-1")
NAME = "_acme-challenge.example.com."
TOKEN = "XKrxpRBosdIKFzxW_CT3KLZNf6q0HG9i01zxXp5CPBs"


@pytest.fixture
def emulator() -> Iterator[TencentCloudEmulator]:
    with TencentCloudEmulator([MAIN, STS]) as em:
        yield em


def env_for(em: TencentCloudEmulator, sid: str = SID, key: str = SKEY, **extra: str) -> dict[str, str]:
    env = {"TENCENTCLOUD_SECRET_ID": sid, "TENCENTCLOUD_SECRET_KEY": key, "TENCENTCLOUD_ENDPOINT": em.endpoint}
    return {**env, **extra}


def run_with(
    env: Mapping[str, str], scenario: Callable[[TencentCloudProvider], Awaitable[None]], **kwargs: Any
) -> None:
    async def go() -> None:
        provider = TencentCloudProvider(TencentCloudConfig.from_env(env), retry_delay=0.001, **kwargs)
        try:
            await scenario(provider)
        finally:
            await provider.aclose()

    asyncio.run(go())


def present(env: Mapping[str, str], fqdn: str = NAME, value: str = TOKEN, **kwargs: Any) -> None:
    async def scenario(provider: TencentCloudProvider) -> None:
        await provider.present(fqdn, value)

    run_with(env, scenario, **kwargs)


def error_of(env: Mapping[str, str], fqdn: str = NAME, **kwargs: Any) -> TencentCloudError:
    with pytest.raises(TencentCloudError) as caught:
        present(env, fqdn, **kwargs)
    assert "\n" not in str(caught.value)
    return caught.value


# --- the provider --------------------------------------------------------------------------


def test_conformance(emulator: TencentCloudEmulator) -> None:
    async def read_txt(fqdn: str) -> set[str]:
        return set(emulator.txt_values(fqdn))

    async def scenario(provider: TencentCloudProvider) -> None:
        await check_provider(provider, "example.com.", read_txt)
        await check_provider(provider, "sub.example.com.", read_txt)

    run_with(env_for(emulator), scenario)
    assert emulator.records("example.com") == [] and emulator.records("sub.example.com") == []


def test_records_as_created(emulator: TencentCloudEmulator) -> None:
    present(env_for(emulator, TENCENTCLOUD_TTL="120"))
    present(env_for(emulator), "_acme-challenge.www.sub.example.com.")
    [apex] = emulator.records("example.com")
    assert (apex.name, apex.type, apex.value, apex.ttl, apex.line) == ("_acme-challenge", "TXT", TOKEN, 120, "默认")
    assert [r.name for r in emulator.records("sub.example.com")] == ["_acme-challenge.www"]  # the deepest zone


def test_a_foreign_record_is_kept_and_cleanup_removes_exactly_ours(emulator: TencentCloudEmulator) -> None:
    foreign = emulator.add_txt("example.com", "_acme-challenge", "v=foreign")

    async def scenario(provider: TencentCloudProvider) -> None:
        await provider.present(NAME, TOKEN)
        assert sorted(emulator.txt_values(NAME)) == sorted(["v=foreign", TOKEN])
        await provider.cleanup(NAME, TOKEN)
        await provider.cleanup(NAME, "v=foreign")  # never created by us: left alone

    run_with(env_for(emulator), scenario)
    assert [(r.record_id, r.value) for r in emulator.records("example.com")] == [(foreign, "v=foreign")]
    deleted = [r.params["RecordId"] for r in emulator.requests if r.action == "DeleteRecord"]
    assert len(deleted) == 1 and deleted[0] != foreign


def test_an_identical_record_is_adopted(emulator: TencentCloudEmulator) -> None:
    existing = emulator.add_txt("example.com", "_acme-challenge", TOKEN)

    async def scenario(provider: TencentCloudProvider) -> None:
        await provider.present(NAME, TOKEN)
        await provider.cleanup(NAME, TOKEN)

    run_with(env_for(emulator), scenario)
    assert emulator.records("example.com") == []
    assert [r.params["RecordId"] for r in emulator.requests if r.action == "DeleteRecord"] == [existing]


def test_a_record_deleted_behind_our_back(emulator: TencentCloudEmulator) -> None:
    async def scenario(provider: TencentCloudProvider) -> None:
        await provider.present(NAME, TOKEN)
        [record] = emulator.records("example.com")
        async with httpx.AsyncClient() as http:  # someone else deletes it, through the API
            body = json.dumps({"Domain": "example.com", "RecordId": record.record_id}).encode()
            await http.post(emulator.endpoint, content=body, headers=signed("DeleteRecord", body, emulator))
        await provider.cleanup(NAME, TOKEN)

    run_with(env_for(emulator), scenario)
    assert emulator.requests[-1].code == "InvalidParameter.RecordIdInvalid"


def test_rate_limiting_is_retried(emulator: TencentCloudEmulator) -> None:
    emulator.inject("CreateRecord", "RequestLimitExceeded", times=3)
    emulator.inject("DescribeDomainList", "InternalError", times=1)
    present(env_for(emulator))
    assert emulator.txt_values(NAME) == [TOKEN]
    assert emulator.calls("CreateRecord", ok=False) == 3 and emulator.calls("CreateRecord") == 1


def test_retries_are_bounded(emulator: TencentCloudEmulator) -> None:
    emulator.inject("CreateRecord", "RequestLimitExceeded", times=10)
    error = error_of(env_for(emulator), max_attempts=3)
    assert error.code == "RequestLimitExceeded" and "rate-limiting" in str(error)
    assert emulator.calls("CreateRecord", ok=False) == 3


def test_wrong_secret_key(emulator: TencentCloudEmulator) -> None:
    error = error_of(env_for(emulator, key="not-the-key"))
    assert error.code == "AuthFailure.SignatureFailure"
    assert "TENCENTCLOUD_SECRET_KEY" in str(error) and SID in str(error) and "not-the-key" not in str(error)


def test_unknown_secret_id(emulator: TencentCloudEmulator) -> None:
    error = error_of(env_for(emulator, sid="AKIDunknown"))
    assert error.code == "AuthFailure.SecretIdNotFound" and "AKIDunknown is unknown" in str(error)


def test_clock_off(emulator: TencentCloudEmulator) -> None:
    error = error_of(env_for(emulator), clock=lambda: time.time() - 600)
    assert error.code == "AuthFailure.SignatureExpire" and "system clock" in str(error)


def test_session_token(emulator: TencentCloudEmulator) -> None:
    env = env_for(emulator, STS.secret_id, STS.secret_key, TENCENTCLOUD_SESSION_TOKEN="tok-1")
    present(env)
    assert emulator.txt_values(NAME) == [TOKEN]
    env["TENCENTCLOUD_SESSION_TOKEN"] = "tok-expired"
    assert error_of(env, value="other").code == "AuthFailure.TokenFailure"


@pytest.mark.parametrize("missing", ["DescribeDomainList", "CreateRecord"])
def test_a_missing_permission_is_named(missing: str) -> None:
    actions = frozenset(CAM_ACTIONS) - {f"dnspod:{missing}"}
    with TencentCloudEmulator([TencentAccount(SID, SKEY, domains=("example.com",), actions=actions)]) as em:
        error = error_of(env_for(em))
    assert error.code == "UnauthorizedOperation" and f"may not call dnspod:{missing};" in str(error)


def test_delete_permission_is_named_on_cleanup() -> None:
    actions = frozenset(CAM_ACTIONS) - {"dnspod:DeleteRecord"}
    with TencentCloudEmulator([TencentAccount(SID, SKEY, domains=("example.com",), actions=actions)]) as em:

        async def scenario(provider: TencentCloudProvider) -> None:
            await provider.present(NAME, TOKEN)
            with pytest.raises(TencentCloudError, match="may not call dnspod:DeleteRecord;"):
                await provider.cleanup(NAME, TOKEN)

        run_with(env_for(em), scenario)


def test_minimal_permissions_are_enough() -> None:
    account = TencentAccount(SID, SKEY, domains=("example.com",), actions=frozenset(CAM_ACTIONS))
    with TencentCloudEmulator([account]) as em:

        async def scenario(provider: TencentCloudProvider) -> None:
            await check_provider(provider, "example.com.", lambda f: asyncio.sleep(0, set(em.txt_values(f))))

        run_with(env_for(em), scenario)


def test_name_outside_the_account_lists_its_zones(emulator: TencentCloudEmulator) -> None:
    error = error_of(env_for(emulator), "_acme-challenge.elsewhere.test.")
    assert "no DNSPod domain contains _acme-challenge.elsewhere.test." in str(error)
    assert "the account has: example.com, sub.example.com" in str(error)
    with TencentCloudEmulator([TencentAccount(SID, SKEY)]) as empty:
        assert "no domains in DNSPod" in str(error_of(env_for(empty)))


# --- variables --------------------------------------------------------------------------


def test_acme_sh_aliases_and_every_variable(emulator: TencentCloudEmulator, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SKEY + "\n")
    env = {
        "Tencent_SecretId": SID,
        "Tencent_SecretKey_FILE": str(key_file),
        "TENCENTCLOUD_ENDPOINT": emulator.host,  # no scheme: https is assumed
        "TENCENTCLOUD_REGION": "ap-guangzhou",
        "TENCENTCLOUD_TTL": "300",
        "TENCENTCLOUD_PROPAGATION_TIMEOUT": "90s",
    }
    provider = load_provider("tencentcloud", env)
    assert isinstance(provider, TencentCloudProvider)
    config = provider.config
    assert (config.secret_id, config.secret_key, config.region, config.ttl) == (SID, SKEY, "ap-guangzhou", 300)
    assert config.endpoint == f"https://{emulator.host}" and provider.propagation_timeout == 90
    assert SKEY not in repr(provider)
    asyncio.run(provider.aclose())
    present({**env, "TENCENTCLOUD_ENDPOINT": emulator.endpoint})
    assert emulator.txt_values(NAME) == [TOKEN]


def test_bad_variables() -> None:
    with pytest.raises(ProviderConfigError) as caught:
        TencentCloudConfig.from_env({})
    assert caught.value.missing == ["TENCENTCLOUD_SECRET_ID or Tencent_SecretId",
                                    "TENCENTCLOUD_SECRET_KEY or Tencent_SecretKey"]  # fmt: skip
    base = {"TENCENTCLOUD_SECRET_ID": SID, "TENCENTCLOUD_SECRET_KEY": SKEY}
    with pytest.raises(ConfigError, match="plain http is only allowed for loopback"):
        TencentCloudConfig.from_env({**base, "TENCENTCLOUD_ENDPOINT": "http://dnspod.example.net"})
    with pytest.raises(ConfigError, match="TENCENTCLOUD_TTL must be"):
        TencentCloudConfig.from_env({**base, "TENCENTCLOUD_TTL": "0"})


# --- the emulator against Tencent's SDK -------------------------------------------------------


def sdk_client(em: TencentCloudEmulator, method: str = "POST", key: str = SKEY, token: str | None = None,
               sid: str = SID) -> dnspod_client.DnspodClient:  # fmt: skip
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=em.host, reqMethod=method))
    return dnspod_client.DnspodClient(credential.Credential(sid, key, token), "", profile)


def request(cls: type[Any], **fields: Any) -> Any:
    req = cls()
    req.from_json_string(json.dumps(fields))
    return req


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_the_sdk_drives_the_emulator(emulator: TencentCloudEmulator, method: str) -> None:
    client = sdk_client(emulator, method)
    domains = client.DescribeDomainList(request(models.DescribeDomainListRequest))
    assert [d.Name for d in domains.DomainList] == ["example.com", "sub.example.com"]
    assert domains.DomainCountInfo.AllTotal == 2
    created = client.CreateRecord(request(
        models.CreateRecordRequest, Domain="example.com", SubDomain="_acme-challenge", RecordType="TXT",
        RecordLine="默认", Value=TOKEN,
    ))  # fmt: skip
    listed = client.DescribeRecordList(
        request(models.DescribeRecordListRequest, Domain="example.com", Subdomain="_acme-challenge", RecordType="TXT")
    )
    assert [(r.RecordId, r.Value, r.Line) for r in listed.RecordList] == [(created.RecordId, TOKEN, "默认")]
    client.DeleteRecord(request(models.DeleteRecordRequest, Domain="example.com", RecordId=created.RecordId))
    assert emulator.records("example.com") == []
    with pytest.raises(TencentCloudSDKException) as caught:
        client.DeleteRecord(request(models.DeleteRecordRequest, Domain="example.com", RecordId=created.RecordId))
    assert caught.value.code == "InvalidParameter.RecordIdInvalid"
    with pytest.raises(TencentCloudSDKException) as caught:
        client.DescribeRecordList(request(models.DescribeRecordListRequest, Domain="example.com"))
    assert caught.value.code == "ResourceNotFound.NoDataOfRecord"


def test_the_sdk_gets_the_services_auth_errors(emulator: TencentCloudEmulator) -> None:
    cases = [
        (sdk_client(emulator, key="wrong"), "AuthFailure.SignatureFailure"),
        (sdk_client(emulator, sid="AKIDunknown"), "AuthFailure.SecretIdNotFound"),
        (sdk_client(emulator, sid=STS.secret_id, key=STS.secret_key), "AuthFailure.TokenFailure"),
    ]
    for client, code in cases:
        with pytest.raises(TencentCloudSDKException) as caught:
            client.DescribeDomainList(request(models.DescribeDomainListRequest))
        assert caught.value.code == code
    sts = sdk_client(emulator, sid=STS.secret_id, key=STS.secret_key, token="tok-1")
    assert [d.Name for d in sts.DescribeDomainList(request(models.DescribeDomainListRequest)).DomainList]
    emulator.inject("DescribeDomainList", "RequestLimitExceeded")
    with pytest.raises(TencentCloudSDKException) as caught:
        sts.DescribeDomainList(request(models.DescribeDomainListRequest))
    assert caught.value.code == "RequestLimitExceeded"
    with pytest.raises(TencentCloudSDKException) as caught:
        sdk_client(emulator).CreateRecord(request(
            models.CreateRecordRequest, Domain="other.test", SubDomain="x", RecordType="TXT", RecordLine="默认",
            Value="v",
        ))  # fmt: skip
    assert caught.value.code == "InvalidParameterValue.DomainNotExists"


def test_our_signature_is_the_sdks() -> None:
    """Our key derivation and the SDK's give the same signature for the same string to sign."""
    to_sign = signing.string_to_sign(1551113065, "2019-02-25/cvm/tc3_request", "POST\n/\n\n...")
    assert signing.signature(SKEY, "2019-02-25", "cvm", to_sign) == Sign.sign_tc3(SKEY, "2019-02-25", "cvm", to_sign)
    assert signing.utc_date(1551113065) == "2019-02-25"


def signed(action: str, body: bytes, em: TencentCloudEmulator, *, timestamp: int | None = None,
           service: str = "dnspod", key: str = SKEY) -> dict[str, str]:  # fmt: skip
    headers = signing.sign_json_post(
        host=em.host, service=service, action=action, version="2021-03-23", body=body,
        secret_id=SID, secret_key=key, timestamp=int(time.time()) if timestamp is None else timestamp,
    )  # fmt: skip
    return headers


def test_the_emulator_checks_the_signature_exactly(emulator: TencentCloudEmulator) -> None:
    body = b'{"Type":"ALL"}'

    def code(content: bytes, headers: dict[str, str]) -> str | None:
        answer = httpx.post(emulator.endpoint, content=content, headers=headers).json()["Response"]
        error: dict[str, str] | None = answer.get("Error")
        return error["Code"] if error else None

    assert code(body, signed("DescribeDomainList", body, emulator)) is None
    assert code(b'{"Type":"MINE"}', signed("DescribeDomainList", body, emulator)) == "AuthFailure.SignatureFailure"
    wrong_scope = signed("DescribeDomainList", body, emulator, service="cvm")
    assert code(body, wrong_scope) == "AuthFailure.SignatureFailure"
    stale = signed("DescribeDomainList", body, emulator, timestamp=int(time.time()) - 301)
    assert code(body, stale) == "AuthFailure.SignatureExpire"
    retyped = {**signed("DescribeDomainList", body, emulator), "Content-Type": "application/json"}
    assert code(body, retyped) == "AuthFailure.SignatureFailure"  # content-type is signed
    assert emulator.last_canonical_request is not None
    assert emulator.last_canonical_request.startswith("POST\n/\n\ncontent-type:application/json\nhost:")


# --- the whole path: the CLI on Pebble -------------------------------------------------------


def test_cli_issues_apex_and_wildcard(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    account = TencentAccount(SID, SKEY, domains=("example.com",))
    with TencentCloudEmulator([account], on_change=srv.set_txt_values) as em:
        cli.run(
            "issue", "-d", "tencent.example.com", "-d", "*.tencent.example.com",
            "--dns", "tencentcloud", "--dns-resolver", srv.dns_address, env=clean_env(**env_for(em)),
        )  # fmt: skip
        leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "tencent.example.com", tmp_path)
        assert san_names(leaf) == {"tencent.example.com", "*.tencent.example.com"}
        creates = [r for r in em.requests if r.action == "CreateRecord" and r.code is None]
        assert len(creates) == 2 and {r.params["SubDomain"] for r in creates} == {"_acme-challenge.tencent"}
        assert em.calls("DeleteRecord") == 2 and em.records("example.com") == []
