"""Alibaba's official SDKs drive the Alidns emulator.

The SDKs sign with their own code, so these tests check the emulator's signature
verification and response shapes independently of certsmith's signing module:

* ``alibabacloud-alidns20150109`` (Tea / darabonba): V3 ``ACS3-HMAC-SHA256`` by
  default, V1 with ``signature_algorithm='v2'``;
* ``aliyun-python-sdk-alidns`` + ``aliyun-python-sdk-core``: V1, POST, parameters in
  the query, plus ``RegionId`` and an empty ``SignatureType``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from alibabacloud_alidns20150109 import models as tea_models
from alibabacloud_alidns20150109.client import Client as TeaClient
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.exceptions import ClientException as TeaClientException
from aliyunsdkalidns.request.v20150109.AddDomainRecordRequest import AddDomainRecordRequest
from aliyunsdkalidns.request.v20150109.DeleteDomainRecordRequest import DeleteDomainRecordRequest
from aliyunsdkalidns.request.v20150109.DescribeDomainRecordsRequest import DescribeDomainRecordsRequest
from aliyunsdkalidns.request.v20150109.DescribeDomainsRequest import DescribeDomainsRequest
from aliyunsdkcore.acs_exception.exceptions import ClientException as CoreClientException
from aliyunsdkcore.acs_exception.exceptions import ServerException as CoreServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import RpcRequest

from certsmith.dns.alidns import AlidnsConfig, AlidnsProvider
from tests.support.alidns_emulator import AlidnsAccount, AlidnsEmulator

AK, SECRET = "LTAI5tSdkKey", "sdk-Secret-0123456789abcdef"
STS_AK, STS_SECRET, STS_TOKEN = "STS.NSdkTemp", "sts-Secret-0123", "CAIS-sts-token-value"
# Every character the TXT rules allow that needs percent-encoding, a space included.
AWKWARD = "a b+c*d~e/f=g:h;i@j^k!l"


@pytest.fixture(scope="module")
def emulator() -> Iterator[AlidnsEmulator]:
    accounts = [
        AlidnsAccount(AK, SECRET, domains=["tea3.example", "tea1.example", "core.example", "mixed.example"]),
        AlidnsAccount(STS_AK, STS_SECRET, domains=["sts.example"], security_token=STS_TOKEN),
    ]
    with AlidnsEmulator(accounts) as em:
        yield em


def tea_client(
    emulator: AlidnsEmulator,
    algorithm: str | None,
    ak: str = AK,
    secret: str = SECRET,
    token: str | None = None,
) -> TeaClient:
    config = openapi_models.Config(access_key_id=ak, access_key_secret=secret, endpoint=emulator.host, protocol="http")
    if token is not None:
        config.security_token = token
    if algorithm is not None:
        config.signature_algorithm = algorithm
    return TeaClient(config)


def core_client(emulator: AlidnsEmulator, secret: str = SECRET) -> AcsClient:
    return AcsClient(AK, secret, "cn-hangzhou", port=emulator.port)


def core_call(client: AcsClient, request: RpcRequest) -> bytes:
    request.set_endpoint("127.0.0.1")
    request.set_protocol_type("http")
    body: bytes = client.do_action_with_exception(request)
    return body


@pytest.mark.parametrize(("algorithm", "version", "zone"), [(None, 3, "tea3.example"), ("v2", 1, "tea1.example")])
def test_tea_sdk_create_list_update_delete(
    emulator: AlidnsEmulator, algorithm: str | None, version: int, zone: str
) -> None:
    client = tea_client(emulator, algorithm)
    before = len(emulator.requests)

    domains = client.describe_domains(tea_models.DescribeDomainsRequest(key_word=zone))
    assert [d.domain_name for d in domains.body.domains.domain] == [zone]

    added = client.add_domain_record(
        tea_models.AddDomainRecordRequest(domain_name=zone, rr="_acme-challenge.www", type="TXT", value=AWKWARD)
    )
    other = client.add_domain_record(
        tea_models.AddDomainRecordRequest(
            domain_name=zone, rr="_acme-challenge.www", type="TXT", value="other", ttl=1200
        )
    )
    assert emulator.txt_values(f"_acme-challenge.www.{zone}.") == [AWKWARD, "other"]

    listed = client.describe_domain_records(
        tea_models.DescribeDomainRecordsRequest(domain_name=zone, rrkey_word="acme", type_key_word="txt", page_size=500)
    )
    assert listed.body.total_count == 2
    records = {r.record_id: (r.rr, r.value, r.ttl, r.type) for r in listed.body.domain_records.record}
    assert records == {
        added.body.record_id: ("_acme-challenge.www", AWKWARD, 600, "TXT"),
        other.body.record_id: ("_acme-challenge.www", "other", 1200, "TXT"),
    }

    sub = client.describe_sub_domain_records(
        tea_models.DescribeSubDomainRecordsRequest(sub_domain=f"_acme-challenge.www.{zone}", type="TXT")
    )
    assert sorted(r.value for r in sub.body.domain_records.record) == sorted([AWKWARD, "other"])

    client.update_domain_record(
        tea_models.UpdateDomainRecordRequest(
            record_id=other.body.record_id, rr="_acme-challenge.www", type="TXT", value="updated value"
        )
    )
    client.delete_domain_record(tea_models.DeleteDomainRecordRequest(record_id=added.body.record_id))
    assert emulator.txt_values(f"_acme-challenge.www.{zone}.") == ["updated value"]

    info = client.describe_domain_info(tea_models.DescribeDomainInfoRequest(domain_name=zone))
    assert info.body.min_ttl == 600
    deleted = client.delete_sub_domain_records(
        tea_models.DeleteSubDomainRecordsRequest(domain_name=zone, rr="_acme-challenge.www", type="TXT")
    )
    assert deleted.body.total_count == "1"
    assert emulator.records(zone) == []

    mine = emulator.requests[before:]
    assert {r.signature_version for r in mine} == {version}
    assert all(r.status == 200 for r in mine)


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_tea_sdk_wrong_secret(emulator: AlidnsEmulator, algorithm: str | None) -> None:
    client = tea_client(emulator, algorithm, secret="not-the-secret")
    with pytest.raises(TeaClientException) as info:
        client.describe_domains(tea_models.DescribeDomainsRequest())
    assert info.value.code == "SignatureDoesNotMatch"
    assert info.value.status_code == 400


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_tea_sdk_sts_token(emulator: AlidnsEmulator, algorithm: str | None) -> None:
    client = tea_client(emulator, algorithm, ak=STS_AK, secret=STS_SECRET, token=STS_TOKEN)
    client.add_domain_record(
        tea_models.AddDomainRecordRequest(domain_name="sts.example", rr="_acme-challenge", type="TXT", value="sts")
    )
    client.delete_sub_domain_records(
        tea_models.DeleteSubDomainRecordsRequest(domain_name="sts.example", rr="_acme-challenge")
    )
    wrong = tea_client(emulator, algorithm, ak=STS_AK, secret=STS_SECRET, token="forged")
    with pytest.raises(TeaClientException) as info:
        wrong.describe_domains(tea_models.DescribeDomainsRequest())
    assert info.value.code.startswith("InvalidSecurityToken")


def test_core_sdk_create_list_delete(emulator: AlidnsEmulator) -> None:
    client = core_client(emulator)
    before = len(emulator.requests)

    listing = DescribeDomainsRequest()
    listing.set_KeyWord("core")
    assert b'"DomainName":"core.example"' in core_call(client, listing)

    add = AddDomainRecordRequest()
    add.set_DomainName("core.example")
    add.set_RR("_acme-challenge")
    add.set_Type("TXT")
    add.set_Value(AWKWARD)
    add.set_TTL(600)
    record_id = json.loads(core_call(client, add))["RecordId"]
    assert emulator.txt_values("_acme-challenge.core.example") == [AWKWARD]

    describe = DescribeDomainRecordsRequest()
    describe.set_DomainName("core.example")
    describe.set_RRKeyWord("_acme")
    body = json.loads(core_call(client, describe))
    assert body["TotalCount"] == 1
    assert body["DomainRecords"]["Record"][0]["RecordId"] == record_id
    assert body["DomainRecords"]["Record"][0]["Value"] == AWKWARD

    delete = DeleteDomainRecordRequest()
    delete.set_RecordId(record_id)
    assert json.loads(core_call(client, delete))["RecordId"] == record_id
    assert emulator.records("core.example") == []

    mine = emulator.requests[before:]
    assert {(r.method, r.signature_version, r.status) for r in mine} == {("POST", 1, 200)}
    assert all(r.params["SignatureType"] == "" and r.params["RegionId"] == "cn-hangzhou" for r in mine)


def test_core_sdk_wrong_secret(emulator: AlidnsEmulator) -> None:
    client = core_client(emulator, secret="not-the-secret")
    before = len(emulator.requests)
    with pytest.raises((CoreServerException, CoreClientException)) as info:
        core_call(client, DescribeDomainsRequest())
    # The emulator answered SignatureDoesNotMatch with its string to sign; aliyunsdkcore
    # compares that with its own and, when they are identical, reports the secret as wrong.
    assert info.value.get_error_code() == "InvalidAccessKeySecret"
    assert info.value.get_http_status() == 400
    [logged] = emulator.requests[before:]
    assert logged.code == "SignatureDoesNotMatch"


def test_records_made_by_certsmith_are_visible_to_the_sdk(emulator: AlidnsEmulator) -> None:
    config = AlidnsConfig(AK, SECRET, endpoint=emulator.endpoint)

    async def present() -> None:
        provider = AlidnsProvider(config)
        try:
            await provider.present("_acme-challenge.deep.mixed.example.", "from-certsmith")
        finally:
            await provider.aclose()

    asyncio.run(present())
    client = tea_client(emulator, None)
    sub = client.describe_sub_domain_records(
        tea_models.DescribeSubDomainRecordsRequest(sub_domain="_acme-challenge.deep.mixed.example")
    )
    [record] = sub.body.domain_records.record
    assert (record.rr, record.type, record.value, record.ttl) == ("_acme-challenge.deep", "TXT", "from-certsmith", 600)
