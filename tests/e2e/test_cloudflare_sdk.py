"""Cloudflare's official Python SDK (``cloudflare`` v4+) drives the Cloudflare emulator.

The SDK builds its own requests (auth headers, query encoding, pagination by page
number until an empty page, retries on 429), so these tests check the emulator's
wire format independently of certsmith's provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import cloudflare
import pytest
from cloudflare import Cloudflare

from certsmith.dns.cloudflare import CloudflareConfig, CloudflareProvider
from tests.support.cloudflare_emulator import CloudflareAccount, CloudflareEmulator, CloudflareToken

TOKEN = "sdk-token-0123456789abcdefghijklmnopqrstu"
READ_ONLY = "sdk-read-only-0123456789abcdefghijklmno"
EMAIL, KEY = "sdk@example.com", "abcdef0123456789abcdef0123456789abcde"


@pytest.fixture(scope="module")
def emulator() -> Iterator[CloudflareEmulator]:
    account = CloudflareAccount(
        zones=["sdk.example", "key.example", "mixed.example", "paged.example"],
        tokens=[CloudflareToken(TOKEN), CloudflareToken(READ_ONLY, permissions={"Zone:Read", "DNS:Read"})],
        global_keys={EMAIL: KEY},
    )
    with CloudflareEmulator([account, CloudflareAccount(zones=["other.example"])]) as em:
        yield em


def client(emulator: CloudflareEmulator, token: str = TOKEN, **options: object) -> Cloudflare:
    return Cloudflare(api_token=token, base_url=emulator.base_url, **options)  # type: ignore[arg-type]


def zone_id(sdk: Cloudflare, name: str) -> str:
    [zone] = list(sdk.zones.list(name=name))
    assert zone.name == name
    return zone.id


def test_zones_list_and_records_create_list_delete(emulator: CloudflareEmulator) -> None:
    sdk = client(emulator)
    assert {z.name for z in sdk.zones.list()} == {"sdk.example", "key.example", "mixed.example", "paged.example"}
    zid = zone_id(sdk, "sdk.example")
    assert list(sdk.zones.list(name="other.example")) == []  # another account's zone is invisible

    first = sdk.dns.records.create(
        zone_id=zid, type="TXT", name="_acme-challenge.sdk.example", content="a" * 43, ttl=120
    )
    second = sdk.dns.records.create(zone_id=zid, type="TXT", name="_acme-challenge", content="b" * 43, ttl=1)
    assert first is not None and second is not None
    assert (first.name, first.type, first.content, first.ttl) == ("_acme-challenge.sdk.example", "TXT", "a" * 43, 120)
    assert second.name == "_acme-challenge.sdk.example"  # a relative name is completed with the zone
    assert sorted(emulator.txt_values("_acme-challenge.sdk.example.")) == ["a" * 43, "b" * 43]

    listed = list(sdk.dns.records.list(zone_id=zid, type="TXT", name={"exact": "_acme-challenge.sdk.example"}))
    assert {r.id for r in listed} == {first.id, second.id}
    only = list(sdk.dns.records.list(zone_id=zid, content={"exact": "b" * 43}))
    assert [r.id for r in only] == [second.id]

    with pytest.raises(cloudflare.BadRequestError) as info:
        sdk.dns.records.create(zone_id=zid, type="TXT", name="_acme-challenge.sdk.example", content="a" * 43, ttl=120)
    assert info.value.body["errors"][0]["code"] == 81058  # type: ignore[index]

    deleted = sdk.dns.records.delete(first.id, zone_id=zid)
    assert deleted is not None and deleted.id == first.id
    assert emulator.txt_values("_acme-challenge.sdk.example.") == ["b" * 43]
    with pytest.raises(cloudflare.NotFoundError):
        sdk.dns.records.delete(first.id, zone_id=zid)
    sdk.dns.records.delete(second.id, zone_id=zid)
    assert emulator.records("sdk.example") == []


def test_pagination_walks_every_page(emulator: CloudflareEmulator) -> None:
    sdk = client(emulator)
    zid = zone_id(sdk, "paged.example")
    for i in range(23):
        emulator.add_record(f"r{i}.paged.example", f"value-{i}")
    before = len(emulator.requests)
    records = list(sdk.dns.records.list(zone_id=zid, per_page=5))
    assert sorted(r.content or "" for r in records) == sorted(f"value-{i}" for i in range(23))
    pages = [r.query.get("page", "1") for r in emulator.requests[before:]]
    assert pages == ["1", "2", "3", "4", "5", "6"]  # the SDK stops at the first empty page


def test_global_api_key(emulator: CloudflareEmulator) -> None:
    sdk = Cloudflare(api_email=EMAIL, api_key=KEY, base_url=emulator.base_url)
    zid = zone_id(sdk, "key.example")
    record = sdk.dns.records.create(zone_id=zid, type="TXT", name="_acme-challenge.key.example", content="k", ttl=60)
    assert record is not None
    sdk.dns.records.delete(record.id, zone_id=zid)
    assert emulator.requests[-1].auth == "key"
    wrong = Cloudflare(api_email=EMAIL, api_key="0" * 37, base_url=emulator.base_url)
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        list(wrong.zones.list())
    assert info.value.body["errors"][0]["code"] == 9103  # type: ignore[index]


def test_invalid_token_and_missing_permission(emulator: CloudflareEmulator) -> None:
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        list(client(emulator, "no-such-token").zones.list())
    assert info.value.status_code == 403
    assert info.value.body["errors"] == [{"code": 9109, "message": "Invalid access token"}]  # type: ignore[index]

    reader = client(emulator, READ_ONLY)
    zid = zone_id(reader, "sdk.example")
    assert list(reader.dns.records.list(zone_id=zid)) == []
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        reader.dns.records.create(zone_id=zid, type="TXT", name="x.sdk.example", content="x", ttl=1)
    assert info.value.body["errors"] == [{"code": 10000, "message": "Authentication error"}]  # type: ignore[index]


def test_the_sdk_retries_rate_limiting(emulator: CloudflareEmulator) -> None:
    emulator.throttle_next(2)
    before = len(emulator.requests)
    assert zone_id(client(emulator, max_retries=2), "sdk.example")
    assert [r.status for r in emulator.requests[before:]][:3] == [429, 429, 200]  # then the empty page 2
    emulator.throttle_next(1)
    with pytest.raises(cloudflare.RateLimitError):
        list(client(emulator, max_retries=0).zones.list())


def test_records_made_by_certsmith_are_visible_to_the_sdk(emulator: CloudflareEmulator) -> None:
    config = CloudflareConfig(dns_token=TOKEN, base_url=emulator.base_url, ttl=300)

    async def present() -> None:
        provider = CloudflareProvider(config)
        try:
            await provider.present("_acme-challenge.deep.mixed.example.", "from-certsmith")
        finally:
            await provider.aclose()

    asyncio.run(present())
    sdk = client(emulator)
    [record] = list(sdk.dns.records.list(zone_id=zone_id(sdk, "mixed.example"), type="TXT"))
    assert (record.name, record.type, record.content, record.ttl) == (
        "_acme-challenge.deep.mixed.example", "TXT", "from-certsmith", 300,
    )  # fmt: skip
