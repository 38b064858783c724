"""An Alibaba Cloud DNS (Alidns 2015-01-09) API emulator for tests.

:class:`AlidnsEmulator` is a small HTTP server on 127.0.0.1 that speaks the real RPC
API closely enough for Alibaba's own SDKs, acme.sh-style GET clients and certsmith's
provider: GET and POST, parameters in the query and/or a form body, signatures V1
(HMAC-SHA1) and V3 (ACS3-HMAC-SHA256) verified exactly as the service does, JSON or
XML answers, the service's error codes, HTTP statuses and messages, nonce replay and
timestamp window checks, several accounts with RAM permissions, and throttling
injection. Signatures are recomputed from what arrived, using only the pure
canonicalisation functions of :mod:`certsmith.dns.alidns_signing`; that common part
(shared with the CAS, CDN, SLB... emulators) is :mod:`tests.support.alicloud_emulator`.

Typical use in a test::

    from tests.support.alidns_emulator import AlidnsAccount, AlidnsEmulator

    account = AlidnsAccount("LTAI-test", "secret", domains=["example.com"])
    with AlidnsEmulator([account]) as emulator:
        env = {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-test",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret",
            "ALIDNS_ENDPOINT": emulator.endpoint,
        }
        ...  # run the code under test
        assert emulator.txt_values("_acme-challenge.example.com.") == [...]

``on_change(fqdn, values)`` is called (in a server thread, with the emulator's lock
held) whenever the TXT records at a name change, e.g. to publish them to
``pebble-challtestsrv`` so a real ACME server can validate dns-01 challenges.

Where the reference marks the service's behaviour as unconfirmed, the emulator picks
one plausible behaviour and documents it (see the notes on the methods).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import idna

from certsmith.dns import alidns_signing as signing
from tests.support.alicloud_emulator import (
    LOOPBACK,
    AliCloudAccount,
    AliCloudRpcEmulator,
    ApiError,
    LoggedRequest,
    _int_param,
    _invalid,
    _missing,
)

__all__ = ["LOOPBACK", "AlidnsAccount", "AlidnsDomain", "AlidnsEmulator", "ApiError", "LoggedRequest"]

OnChange = Callable[[str, list[str]], None]

ACTIONS = (
    "DescribeDomains",
    "DescribeDomainInfo",
    "DescribeDomainRecords",
    "DescribeSubDomainRecords",
    "AddDomainRecord",
    "DeleteDomainRecord",
    "DeleteSubDomainRecords",
    "UpdateDomainRecord",
    "GetMainDomainName",
)
RECORD_TYPES = frozenset(
    {"A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "REDIRECT_URL", "FORWARD_URL", "SVCB", "HTTPS"}
)
#: TXT characters the documentation lists, plus ``_`` (base64url, so every ACME value) and ``"``.
TXT_CHARACTERS = re.compile(r'[A-Za-z0-9 \-~=:;/.@+^!*_"]{1,511}')
RR_PATTERN = re.compile(
    r"@|(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*"
)
ALL_TTLS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 43200, 86400)
#: Second-level suffixes for GetMainDomainName (the service's full list is not public).
MULTI_LABEL_SUFFIXES = frozenset(
    {"com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "ac.cn", "com.hk", "co.uk", "co.jp", "com.au", "com.tw"}
)


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class AlidnsDomain:
    """A domain (zone) of an account. ``name`` may be Unicode or punycode; ``min_ttl``
    is the edition's minimum TTL (600 free, 60 enterprise standard, 1 ultimate)."""

    name: str
    min_ttl: int = 600
    version_code: str = "mianfei"
    version_name: str = "Alibaba Cloud DNS Free"


@dataclass(frozen=True)
class AlidnsAccount(AliCloudAccount):
    """An account with its Alidns domains (a domain belongs to one account); see :class:`AliCloudAccount`."""

    domains: tuple[str | AlidnsDomain, ...] | list[str | AlidnsDomain] = ()


def _no_such_domain() -> ApiError:
    return ApiError(
        "InvalidDomainName.NoExist", 400, "The specified domain name does not exist. Refresh the page and try again."
    )


def _other_users_domain() -> ApiError:
    return ApiError(
        "IncorrectDomainUser",
        400,
        "The domain name belongs to other users. Transfer the domain name to the current user and then try the "
        "binding and setting actions.",
    )


def _not_your_record() -> ApiError:
    return ApiError("DomainRecordNotBelongToUser", 400, "The DNS record does not exist in your account.")


def _duplicate() -> ApiError:
    return ApiError("DomainRecordDuplicate", 400, "The DNS record already exists.")


# --- state ---------------------------------------------------------------------------


def _ascii_name(name: str) -> str:
    """Lower-case A-label form without the trailing dot; non-ASCII labels via IDNA 2008."""
    labels = []
    for label in name.strip().rstrip(".").split("."):
        if label.isascii():
            labels.append(label.lower())
        else:
            try:
                labels.append(idna.encode(label, uts46=True).decode("ascii"))
            except idna.IDNAError:
                raise ApiError("InvalidDomainName.Format", 400, "The specified domain name is invalid.") from None
    return ".".join(labels)


def _unicode_name(ascii_name: str) -> str:
    labels = []
    for label in ascii_name.split("."):
        try:
            labels.append(idna.decode(label) if label.startswith("xn--") else label)
        except idna.IDNAError:
            labels.append(label)
    return ".".join(labels)


@dataclass
class _Zone:
    account: AlidnsAccount
    domain: AlidnsDomain
    ascii: str
    unicode: str
    domain_id: str
    instance_id: str
    created: datetime
    records: dict[int, _Record] = field(default_factory=dict)


@dataclass
class _Record:
    record_id: int
    zone: _Zone
    rr: str
    type: str
    value: str
    ttl: int
    line: str
    priority: int | None
    created_ms: int
    updated_ms: int
    status: str = "ENABLE"
    locked: bool = False

    @property
    def fqdn(self) -> str:
        if self.rr == "@":
            return self.zone.ascii + "."
        return f"{_ascii_name(self.rr)}.{self.zone.ascii}."

    def as_api(self) -> dict[str, Any]:
        """The record as DescribeDomainRecords returns it (IDs as strings, TTL as int)."""
        data: dict[str, Any] = {
            "DomainName": self.zone.unicode,
            "RecordId": str(self.record_id),
            "RR": self.rr,
            "Type": self.type,
            "Value": self.value,
            "TTL": self.ttl,
            "Line": self.line,
            "Status": self.status,
            "Locked": self.locked,
            "Weight": 1,
            "LbaStatus": False,
            "CreateTimestamp": self.created_ms,
            "UpdateTimestamp": self.updated_ms,
        }
        if self.priority is not None:
            data["Priority"] = self.priority
        return data


# --- the emulator --------------------------------------------------------------------


class AlidnsEmulator(AliCloudRpcEmulator):
    """The Alidns RPC API on ``http://127.0.0.1:<port>`` (see the module docstring).

    Takes :class:`AliCloudRpcEmulator`'s arguments, and ``on_change``: called as
    ``on_change(fqdn, values)`` after every TXT change at ``fqdn`` (absolute, lower case,
    punycode, trailing dot).
    """

    PRODUCT: ClassVar[str] = "Alidns"
    RAM_PREFIX: ClassVar[str] = "alidns"
    API_VERSION: ClassVar[str] = signing.API_VERSION
    ACTIONS: ClassVar[tuple[str, ...]] = ACTIONS
    HOST_ID: ClassVar[str] = "alidns.aliyuncs.com"

    def __init__(
        self,
        accounts: Iterable[AlidnsAccount] = (),
        *,
        clock_skew: timedelta = timedelta(0),
        throttle_every: int = 0,
        throttle_status: int = 429,
        on_change: OnChange | None = None,
        lenient_timestamps: bool = False,
        port: int = 0,
    ) -> None:
        self.on_change = on_change
        self._zones: dict[str, _Zone] = {}
        self._ids = itertools.count(10**17 + 1)
        super().__init__(
            accounts,
            clock_skew=clock_skew,
            throttle_every=throttle_every,
            throttle_status=throttle_status,
            lenient_timestamps=lenient_timestamps,
            port=port,
        )

    # -- state set-up and inspection --

    def _account_added(self, account: AliCloudAccount) -> None:
        """Register the account's domains (a domain belongs to one account)."""
        if not isinstance(account, AlidnsAccount):
            return
        for entry in account.domains:
            domain = AlidnsDomain(entry) if isinstance(entry, str) else entry
            ascii_name = _ascii_name(domain.name)
            if ascii_name in self._zones:
                raise ValueError(f"domain {domain.name} already belongs to an account")
            self._zones[ascii_name] = _Zone(
                account=account,
                domain=domain,
                ascii=ascii_name,
                unicode=_unicode_name(ascii_name),
                domain_id=str(uuid.uuid4()),
                instance_id="dns-" + uuid.uuid4().hex[:12],
                created=self.now(),
            )


    def records(self, zone: str) -> list[dict[str, Any]]:
        """Every record of ``zone`` in DescribeDomainRecords form, oldest first."""
        with self._lock:
            found = self._zones.get(_ascii_name(zone))
            if found is None:
                raise KeyError(zone)
            return [r.as_api() for r in sorted(found.records.values(), key=lambda r: r.record_id)]

    def txt_values(self, fqdn: str) -> list[str]:
        """The TXT values at ``fqdn`` (with or without the trailing dot), oldest first."""
        name = _ascii_name(fqdn) + "."
        with self._lock:
            return [r.value for r in self._all_records() if r.type == "TXT" and r.fqdn == name]

    def add_record(self, zone: str, rr: str, type: str, value: str, ttl: int = 600) -> str:
        """Create a record directly (as if made in the console); returns its RecordId."""
        with self._lock:
            found = self._zones[_ascii_name(zone)]
            record = self._insert(found, rr, type.upper(), value, ttl, "default", None)
            self._changed({record.fqdn} if record.type == "TXT" else set())
            return str(record.record_id)

    def delete_record(self, record_id: str) -> None:
        """Delete a record directly (as if removed in the console)."""
        with self._lock:
            record = self._find_record(int(record_id))
            if record is None:
                raise KeyError(record_id)
            del record.zone.records[record.record_id]
            self._changed({record.fqdn} if record.type == "TXT" else set())

    # -- helpers for the actions --

    def _all_records(self) -> Iterable[_Record]:
        for zone in self._zones.values():
            yield from sorted(zone.records.values(), key=lambda r: r.record_id)

    def _find_record(self, record_id: int) -> _Record | None:
        for zone in self._zones.values():
            if record_id in zone.records:
                return zone.records[record_id]
        return None

    def _zone(self, account: AlidnsAccount, name: str | None) -> _Zone:
        if not name:
            raise _missing("DomainName")
        zone = self._zones.get(_ascii_name(name))
        if zone is None:
            raise _no_such_domain()
        if zone.account is not account:
            raise _other_users_domain()
        return zone

    def _insert(
        self, zone: _Zone, rr: str, type: str, value: str, ttl: int, line: str, priority: int | None
    ) -> _Record:
        now_ms = int(self.now().timestamp() * 1000)
        record = _Record(next(self._ids), zone, rr, type, value, ttl, line, priority, now_ms, now_ms)
        zone.records[record.record_id] = record
        return record

    def _changed(self, names: set[str]) -> None:
        if self.on_change is None:
            return
        for name in sorted(names):
            self.on_change(name, self.txt_values(name))

    def _validated(self, zone: _Zone, params: Mapping[str, str]) -> tuple[str, str, str, int, str, int | None]:
        """RR, Type, Value, TTL, Line and Priority of an Add/Update call, checked."""
        for name in ("RR", "Type", "Value"):
            if not params.get(name):
                raise _missing(name)
        rr, type_, value = params["RR"], params["Type"].upper(), params["Value"]
        if type_ not in RECORD_TYPES:
            raise _invalid("Type")
        if not RR_PATTERN.fullmatch(rr) or len(rr) > 253:
            raise _invalid("RR")
        if type_ == "TXT" and not TXT_CHARACTERS.fullmatch(value):
            raise _invalid("Value")
        if (type_ == "A" and not _is_ip(value, 4)) or (type_ == "AAAA" and not _is_ip(value, 6)):
            raise _invalid("Value")
        ttl = _int_param(params, "TTL", 600)
        if ttl <= 0:
            raise _invalid("TTL")
        if not zone.domain.min_ttl <= ttl <= 86400:
            raise ApiError(
                "QuotaExceeded.TTL",
                400,
                f"The specified TTL is invalid. A valid TTL must be in the range of {zone.domain.min_ttl} to 86400.",
            )
        priority = None
        if type_ == "MX":
            priority = _int_param(params, "Priority", 5)
            if not 1 <= priority <= 50:
                raise _invalid("Priority")
        return rr, type_, value, ttl, params.get("Line") or "default", priority

    @staticmethod
    def _same(record: _Record, rr: str, type_: str, value: str, line: str) -> bool:
        return (
            record.rr.lower() == rr.lower() and record.type == type_ and record.value == value and record.line == line
        )

    @staticmethod
    def _page(params: Mapping[str, str], limit: int, default: int = 20) -> tuple[int, int]:
        number = _int_param(params, "PageNumber", 1)
        size = _int_param(params, "PageSize", default)
        if number < 1:
            raise _invalid("PageNumber")
        if not 1 <= size <= limit:
            raise _invalid("PageSize")
        return number, size

    @staticmethod
    def _paged(items: list[Any], number: int, size: int) -> list[Any]:
        return items[(number - 1) * size : number * size]

    # -- the actions (each returns the body without RequestId) --

    def _do_DescribeDomains(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        number, size = self._page(params, 100)
        zones = [z for z in self._zones.values() if z.account is account]
        keyword = params.get("KeyWord", "").lower()
        if keyword:
            exact = params.get("SearchMode", "LIKE").upper() == "EXACT"
            zones = [
                z
                for z in zones
                if (keyword in (z.ascii, z.unicode.lower()) if exact else keyword in z.ascii or keyword in z.unicode)
            ]
        domains = [
            {
                "DomainId": z.domain_id,
                "DomainName": z.unicode,
                "PunyCode": z.ascii,
                "AliDomain": False,
                "RecordCount": len(z.records),
                "VersionCode": z.domain.version_code,
                "VersionName": z.domain.version_name,
                "InstanceId": z.instance_id,
                "DnsServers": {"DnsServer": ["ns1.alidns.com", "ns2.alidns.com"]},
                "CreateTime": z.created.strftime("%Y-%m-%dT%H:%MZ"),
                "CreateTimestamp": int(z.created.timestamp() * 1000),
                "Starmark": False,
                "ResourceGroupId": "rg-default",
                "Tags": {"Tag": []},
            }
            for z in sorted(zones, key=lambda z: z.ascii)
        ]
        return {
            "TotalCount": len(domains),
            "PageNumber": number,
            "PageSize": size,
            "Domains": {"Domain": self._paged(domains, number, size)},
        }

    def _do_DescribeDomainInfo(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        zone = self._zone(account, params.get("DomainName"))
        return {
            "DomainId": zone.domain_id,
            "DomainName": zone.unicode,
            "PunyCode": zone.ascii,
            "AliDomain": False,
            "VersionCode": zone.domain.version_code,
            "VersionName": zone.domain.version_name,
            "MinTtl": zone.domain.min_ttl,
            "AvailableTtls": {"AvailableTtl": [str(t) for t in ALL_TTLS if t >= zone.domain.min_ttl]},
            "DnsServers": {"DnsServer": ["ns1.alidns.com", "ns2.alidns.com"]},
            "InstanceId": zone.instance_id,
            "CreateTime": zone.created.strftime("%Y-%m-%dT%H:%MZ"),
            "RecordLines": {
                "RecordLine": [{"LineCode": "default", "LineName": "Default", "LineDisplayName": "Default"}]
            },
        }

    def _describe(self, records: list[_Record], params: Mapping[str, str], number: int, size: int) -> dict[str, Any]:
        descending = params.get("Direction", "DESC").upper() != "ASC"
        records = sorted(records, key=lambda r: r.record_id, reverse=descending)
        return {
            "TotalCount": len(records),
            "PageNumber": number,
            "PageSize": size,
            "DomainRecords": {"Record": [r.as_api() for r in self._paged(records, number, size)]},
        }

    def _do_DescribeDomainRecords(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Filters: ``KeyWord`` (``SearchMode`` LIKE, the default, or EXACT) on RR or Value;
        otherwise ``RRKeyWord``/``ValueKeyWord`` as case-insensitive substrings and
        ``TypeKeyWord`` exact; ``Type``, ``Line`` and ``Status`` exact. Empty values are
        no filter. Newest first unless ``Direction=ASC``."""
        zone = self._zone(account, params.get("DomainName"))
        number, size = self._page(params, 500)
        records = list(zone.records.values())
        keyword = params.get("KeyWord", "").lower()
        mode = params.get("SearchMode", "").upper()
        if keyword and mode != "ADVANCED":
            if mode == "EXACT":
                records = [r for r in records if keyword in (r.rr.lower(), r.value.lower())]
            else:
                records = [r for r in records if keyword in r.rr.lower() or keyword in r.value.lower()]
        if rr_kw := params.get("RRKeyWord", "").lower():
            records = [r for r in records if rr_kw in r.rr.lower()]
        if type_kw := params.get("TypeKeyWord", "").upper():
            records = [r for r in records if r.type == type_kw]
        if value_kw := params.get("ValueKeyWord", "").lower():
            records = [r for r in records if value_kw in r.value.lower()]
        records = _exact_filters(records, params)
        return self._describe(records, params, number, size)

    def _do_DescribeSubDomainRecords(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Without ``DomainName`` the zone is the account's longest domain containing
        ``SubDomain`` (the service's own rule is not documented)."""
        sub = params.get("SubDomain")
        if not sub:
            raise _missing("SubDomain")
        number, size = self._page(params, 100)
        name = _ascii_name(sub)
        if params.get("DomainName"):
            zone = self._zone(account, params["DomainName"])
        else:
            candidates = [
                z
                for z in self._zones.values()
                if z.account is account and (name == z.ascii or name.endswith("." + z.ascii))
            ]
            if not candidates:
                raise _no_such_domain()
            zone = max(candidates, key=lambda z: len(z.ascii))
        if name != zone.ascii and not name.endswith("." + zone.ascii):
            raise _invalid("SubDomain")
        fqdn = name + "."
        records = _exact_filters([r for r in zone.records.values() if r.fqdn == fqdn], params)
        return self._describe(records, params, number, size)

    def _do_AddDomainRecord(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        zone = self._zone(account, params.get("DomainName"))
        rr, type_, value, ttl, line, priority = self._validated(zone, params)
        same_name = [
            r for r in zone.records.values() if r.rr.lower() == rr.lower() and r.type == type_ and r.line == line
        ]
        if any(r.value == value for r in same_name):
            raise _duplicate()
        if len(same_name) >= 90:
            raise ApiError("QuotaExceeded.Record", 400, "The number of records exceeds the limit.")
        record = self._insert(zone, rr, type_, value, ttl, line, priority)
        self._changed({record.fqdn} if type_ == "TXT" else set())
        return {"RecordId": str(record.record_id)}

    def _do_DeleteDomainRecord(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        record = self._owned_record(account, params)
        del record.zone.records[record.record_id]
        self._changed({record.fqdn} if record.type == "TXT" else set())
        return {"RecordId": str(record.record_id)}

    def _do_UpdateDomainRecord(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        record = self._owned_record(account, params)
        rr, type_, value, ttl, line, priority = self._validated(record.zone, params)
        if self._same(record, rr, type_, value, line) and record.ttl == ttl and record.priority == priority:
            raise _duplicate()
        if any(self._same(r, rr, type_, value, line) for r in record.zone.records.values() if r is not record):
            raise _duplicate()
        touched = {record.fqdn} if record.type == "TXT" else set()
        record.rr, record.type, record.value, record.ttl, record.line, record.priority = (
            rr,
            type_,
            value,
            ttl,
            line,
            priority,
        )
        record.updated_ms = int(self.now().timestamp() * 1000)
        self._changed(touched | ({record.fqdn} if type_ == "TXT" else set()))
        return {"RecordId": str(record.record_id)}

    def _do_DeleteSubDomainRecords(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Deletes every unlocked record at ``RR`` (of ``Type`` when given); ``TotalCount`` is a string."""
        zone = self._zone(account, params.get("DomainName"))
        rr = params.get("RR")
        if not rr:
            raise _missing("RR")
        type_ = params.get("Type", "").upper()
        doomed = [
            r
            for r in zone.records.values()
            if r.rr.lower() == rr.lower() and (not type_ or r.type == type_) and not r.locked
        ]
        for record in doomed:
            del zone.records[record.record_id]
        self._changed({r.fqdn for r in doomed if r.type == "TXT"})
        return {"RR": rr, "TotalCount": str(len(doomed))}

    def _do_GetMainDomainName(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Splits by public suffix (a short built-in list), not by the account's domains."""
        text = params.get("InputString")
        if not text:
            raise _missing("InputString")
        if len(text) > 128:
            raise ApiError("QuotaExceeded.StringLength", 400, "The length of the input string exceeds the limit.")
        labels = text.strip().rstrip(".").lower().split(".")
        if len(labels) < 2 or not all(labels):
            raise ApiError("InvalidDomainName.Format", 400, "The specified domain name is invalid.")
        keep = 3 if ".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES and len(labels) >= 3 else 2
        main, rest = labels[-keep:], labels[:-keep]
        return {"RR": ".".join(rest) or "@", "DomainName": ".".join(main), "DomainLevel": len(rest) + 1}

    def _owned_record(self, account: AlidnsAccount, params: Mapping[str, str]) -> _Record:
        text = params.get("RecordId")
        if not text:
            raise _missing("RecordId")
        record = self._find_record(int(text)) if text.isdigit() else None
        if record is None or record.zone.account is not account:
            raise _not_your_record()
        return record


def _exact_filters(records: list[_Record], params: Mapping[str, str]) -> list[_Record]:
    if type_ := params.get("Type", "").upper():
        records = [r for r in records if r.type == type_]
    if line := params.get("Line", ""):
        records = [r for r in records if r.line == line]
    if status := params.get("Status", "").upper():
        records = [r for r in records if r.status == status]
    return records


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
