"""Huawei's official SDK (``huaweicloudsdkdns`` on ``huaweicloudsdkcore``) drives the emulator.

The SDK signs with its own code, so these tests check the emulator's signature
verification and answer shapes independently of certsmith's signing module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkdns.v2 import (
    CreateRecordSetRequest,
    CreateRecordSetRequestBody,
    DeleteRecordSetRequest,
    DnsClient,
    ListPublicZonesRequest,
    ListRecordSetsByZoneRequest,
    ShowRecordSetRequest,
    UpdateRecordSetReq,
    UpdateRecordSetRequest,
)

from tests.support.huaweicloud_emulator import HuaweiAccount, HuaweiCloudEmulator

AK, SK = "HPUASDKKEY", "sdk-Sk-0123456789"
LIMITED = HuaweiAccount("HPUASDKLIMITED", "limited", zones=["limited.example"], allowed_actions={"dns:zone:list"})
ACCOUNT = HuaweiAccount(AK, SK, zones=["sdk.example", "sub.sdk.example"])
AWKWARD = '"a b+c*d~e/f=g:h;i@j^k!l"'


@pytest.fixture(scope="module")
def emulator() -> Iterator[HuaweiCloudEmulator]:
    with HuaweiCloudEmulator([ACCOUNT, LIMITED]) as em:
        yield em


def client(emulator: HuaweiCloudEmulator, account: HuaweiAccount = ACCOUNT, sk: str | None = None) -> DnsClient:
    credentials = BasicCredentials(account.access_key_id, sk or account.secret_access_key, account.project_id)
    return (
        DnsClient.new_builder()
        .with_credentials(credentials)
        .with_endpoints([emulator.endpoint])
        .with_http_config(HttpConfig.get_default_config())
        .build()
    )


def test_sdk_lists_zones_and_manages_a_record_set(emulator: HuaweiCloudEmulator) -> None:
    sdk = client(emulator)
    zones = sdk.list_public_zones(ListPublicZonesRequest(name="sdk.example", type="public"))
    assert sorted(z.name for z in zones.zones) == ["sdk.example.", "sub.sdk.example."]  # the name filter is fuzzy
    exact = sdk.list_public_zones(ListPublicZonesRequest(name="sdk.example", search_mode="equal"))
    [zone] = exact.zones
    assert zone.name == "sdk.example." and zone.zone_type == "public"

    name = "_acme-challenge.www.sdk.example."
    created = sdk.create_record_set(
        CreateRecordSetRequest(
            zone_id=zone.id, body=CreateRecordSetRequestBody(name=name, type="TXT", ttl=120, records=[AWKWARD])
        )
    )
    assert (created.name, created.type, created.ttl, created.records) == (name, "TXT", 120, [AWKWARD])
    assert emulator.txt_values(name) == [AWKWARD.strip('"')]

    listed = sdk.list_record_sets_by_zone(ListRecordSetsByZoneRequest(zone_id=zone.id, name=name, type="TXT"))
    assert [r.id for r in listed.recordsets] == [created.id] and listed.metadata.total_count == 1

    with pytest.raises(ClientRequestException) as duplicate:
        sdk.create_record_set(
            CreateRecordSetRequest(
                zone_id=zone.id, body=CreateRecordSetRequestBody(name=name, type="TXT", records=['"x"'])
            )
        )
    assert (duplicate.value.status_code, duplicate.value.error_code) == (400, "DNS.0312")

    sdk.update_record_set(
        UpdateRecordSetRequest(
            zone_id=zone.id,
            recordset_id=created.id,
            body=UpdateRecordSetReq(name=name, type="TXT", ttl=300, records=[AWKWARD, '"second"']),
        )
    )
    shown = sdk.show_record_set(ShowRecordSetRequest(zone_id=zone.id, recordset_id=created.id))
    assert shown.records == [AWKWARD, '"second"'] and shown.ttl == 300
    sdk.delete_record_set(DeleteRecordSetRequest(zone_id=zone.id, recordset_id=created.id))
    assert emulator.txt_values(name) == []
    with pytest.raises(ClientRequestException) as gone:
        sdk.show_record_set(ShowRecordSetRequest(zone_id=zone.id, recordset_id=created.id))
    assert (gone.value.status_code, gone.value.error_code) == (404, "DNS.0302")


def test_sdk_sees_the_services_errors(emulator: HuaweiCloudEmulator) -> None:
    with pytest.raises(ClientRequestException) as wrong:
        client(emulator, sk="wrong-secret").list_public_zones(ListPublicZonesRequest())
    assert (wrong.value.status_code, wrong.value.error_code) == (401, "APIGW.0301")
    assert "verify aksk signature fail" in wrong.value.error_msg

    limited = client(emulator, LIMITED)
    [zone] = limited.list_public_zones(ListPublicZonesRequest()).zones
    with pytest.raises(ClientRequestException) as denied:
        limited.create_record_set(
            CreateRecordSetRequest(
                zone_id=zone.id, body=CreateRecordSetRequestBody(name="x.limited.example.", type="TXT", records=['"x"'])
            )
        )
    assert denied.value.status_code == 403
    assert denied.value.error_msg == "Policy doesn't allow dns:recordset:create to be performed."

    with pytest.raises(ClientRequestException) as other_zone:
        limited.list_record_sets_by_zone(ListRecordSetsByZoneRequest(zone_id=emulator.zone_id("sdk.example")))
    assert other_zone.value.error_code == "DNS.0101"

    emulator.fail_next(429, "APIGW.0308", "The throttling threshold has been reached")
    with pytest.raises(ClientRequestException) as throttled:
        client(emulator).list_public_zones(ListPublicZonesRequest())
    assert throttled.value.status_code == 429  # the SDK turns any 429 into its own "429" error
    assert emulator.requests[-1].code == "APIGW.0308"
