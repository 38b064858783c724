"""Alibaba Cloud DNS (Alidns, API 2015-01-09) provider.

The provider speaks the RPC API directly over one :class:`httpx.AsyncClient`, signed
with V3 (``ACS3-HMAC-SHA256``, the default) or V1 (``HMAC-SHA1``); the signing code
lives in :mod:`certsmith.dns.alidns_signing`. Zones are found through the API
(``DescribeDomains``, every page, longest matching suffix, IDN aware), never through
public DNS, so delegated sub-zones and split-horizon setups work.

``present`` adds one TXT record and remembers its ``RecordId`` (adopting an identical
existing record on ``DomainRecordDuplicate``); ``cleanup`` deletes exactly that
``RecordId`` and nothing else. Throttling and 5xx answers are retried with bounded
exponential back-off, each attempt freshly signed. The variable names are Alibaba's
own, with lego's and acme.sh's accepted as aliases.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, Unpack

from certsmith._text import clean
from certsmith.dns import alicloud_rpc as rpc
from certsmith.dns import alidns_signing as signing
from certsmith.dns.alicloud_rpc import CREDENTIAL_ENV, Credentials, clock_offset, parse_signature_version, with_scheme
from certsmith.dns.base import EnvVar, ProviderInfo, check_endpoint, optional_seconds, parse_int, read_env
from certsmith.dns.http_api import (
    AccountZonesProvider,
    HttpOptions,
    LookupCache,
    Zone,
    endpoint_root,
    to_ascii,
    zone_list,
)
from certsmith.errors import ConfigError, DnsError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

NAME = "alidns"
DEFAULT_ENDPOINT = "https://alidns.aliyuncs.com"
DEFAULT_TTL = 600
#: The RAM actions the provider needs (``DescribeDomainInfo`` is optional: without it
#: the configured TTL is used as is).
RAM_ACTIONS = (
    "alidns:DescribeDomains",
    "alidns:AddDomainRecord",
    "alidns:DeleteDomainRecord",
    "alidns:DescribeDomainRecords",
)
RAM_POLICY = "AliyunDNSFullAccess"
#: The API as a product: what the shared Alibaba Cloud error advice needs.
PRODUCT = rpc.Product(
    name="Alidns",
    version=signing.API_VERSION,
    endpoint=DEFAULT_ENDPOINT,
    endpoint_var="ALIDNS_ENDPOINT",
    ram_actions=RAM_ACTIONS,
    ram_policy=RAM_POLICY,
    ram_note="(and optionally alidns:DescribeDomainInfo)",
)

ENV = (
    *CREDENTIAL_ENV,
    EnvVar("ALIDNS_ENDPOINT", "API endpoint (http:// only for loopback test servers)", default=DEFAULT_ENDPOINT),
    EnvVar(
        "ALIDNS_TTL",
        "TTL of the TXT records, seconds; raised to the domain's minimum (MinTtl) when lower",
        default=str(DEFAULT_TTL),
        aliases=("ALICLOUD_TTL",),
    ),
    EnvVar(
        "ALIDNS_PROPAGATION_TIMEOUT",
        "Seconds to wait until the record is visible",
        aliases=("ALICLOUD_PROPAGATION_TIMEOUT",),
    ),
    EnvVar("ALIDNS_SIGNATURE_VERSION", "Request signature: 3 (ACS3-HMAC-SHA256) or 1 (HMAC-SHA1)", default="3"),
)


#: Listings read at most this many pages: an answer that never ends is a broken endpoint.
_MAX_PAGES = 50


def _number(result: Mapping[str, Any], key: str, action: str) -> int:
    """``result[key]`` as a count (absent: 0); :class:`AlidnsError` for a malformed answer."""
    value = result.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise AlidnsError(f"Alidns answered {action} with a malformed {key} ({clean(repr(value), 40)})",
                          action=action, code=None)
    return min(int(value), 10**9)


def _record_id(result: Mapping[str, Any], action: str) -> str:
    value = result.get("RecordId")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise AlidnsError(f"Alidns answered {action} without a usable RecordId ({clean(repr(value), 40)})",
                          action=action, code=None)
    return str(value)


class AlidnsError(rpc.AliCloudError, DnsError):
    """An Alidns API call failed.

    ``code`` is the service's error code (``None`` for transport failures),
    ``status`` the HTTP status, ``server_message`` the service's own message.
    """


@dataclass(frozen=True, repr=False)
class AlidnsConfig:
    """Settings of :class:`AlidnsProvider`; ``repr`` never shows the secret or the token."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    ttl: int = DEFAULT_TTL
    propagation_timeout: float | None = None
    signature_version: int = 3

    def __post_init__(self) -> None:
        if self.signature_version not in (1, 3):
            raise ConfigError("ALIDNS_SIGNATURE_VERSION must be 3 (ACS3-HMAC-SHA256) or 1 (HMAC-SHA1)")
        if not 1 <= self.ttl <= 86400:
            raise ConfigError(f"ALIDNS_TTL must be between 1 and 86400 seconds, not {self.ttl}")
        if self.propagation_timeout is not None and self.propagation_timeout <= 0:
            raise ConfigError("ALIDNS_PROPAGATION_TIMEOUT must be a positive number of seconds")
        check_endpoint("ALIDNS_ENDPOINT", self.endpoint, "https://alidns.aliyuncs.com")

    def __repr__(self) -> str:
        token = "<set>" if self.security_token else None
        return (
            f"AlidnsConfig(access_key_id={self.access_key_id!r}, access_key_secret=<hidden>, "
            f"security_token={token}, endpoint={self.endpoint!r}, ttl={self.ttl}, "
            f"propagation_timeout={self.propagation_timeout}, signature_version={self.signature_version})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read the settings from ``env``; one error lists every missing variable."""
        values = read_env(env, ENV, NAME, hint=f"create an AccessKey for a RAM user with the policy {RAM_POLICY}")
        return cls(
            access_key_id=values["ALIBABA_CLOUD_ACCESS_KEY_ID"].strip(),
            access_key_secret=values["ALIBABA_CLOUD_ACCESS_KEY_SECRET"].strip(),
            security_token=values.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip() or None,
            endpoint=with_scheme(values["ALIDNS_ENDPOINT"].strip()),
            ttl=parse_int("ALIDNS_TTL", values["ALIDNS_TTL"], minimum=1, maximum=86400),
            propagation_timeout=optional_seconds(values, "ALIDNS_PROPAGATION_TIMEOUT"),
            signature_version=parse_signature_version(values["ALIDNS_SIGNATURE_VERSION"], "ALIDNS_SIGNATURE_VERSION"),
        )


def zone_from_api(domain: Mapping[str, Any]) -> Zone:
    """A :class:`Zone` from one ``DescribeDomains`` entry (``DomainName``, ``PunyCode``)."""
    name = str(domain.get("DomainName", "")).rstrip(".")
    puny = str(domain.get("PunyCode") or "").rstrip(".")
    return Zone(name=name, ascii=to_ascii(puny or name))


# --- error messages ------------------------------------------------------------------


def describe_error(
    *,
    action: str,
    code: str | None,
    server_message: str,
    access_key_id: str,
    offset: float | None = None,
    zones: list[str] | None = None,
    domain: str | None = None,
) -> str:
    """An actionable message for an Alidns error code.

    ``offset`` is the server-minus-local clock difference in seconds (from the
    response's ``Date``); ``zones`` the account's domains when known. Codes every
    Alibaba Cloud product shares are explained by :func:`certsmith.dns.alicloud_rpc.describe_error`.
    """
    if code in ("InvalidDomainName.NoExist", "IncorrectDomainUser") and zones is not None:
        what = f"{domain} is not a domain" if domain else "the name is not in a domain"
        return f"Alidns {action} failed ({code}): {what} in this Alibaba Cloud account; {_zone_list(zones)}"
    return rpc.describe_error(
        product=PRODUCT, action=action, code=code, server_message=server_message,
        access_key_id=access_key_id, offset=offset,
    )


def _zone_list(zones: list[str]) -> str:
    return zone_list(zones, "Alibaba Cloud DNS", advice=". Use the AccessKey of the account that owns the domain")


# --- provider ------------------------------------------------------------------------


class AlidnsProvider(AccountZonesProvider[AlidnsConfig, str]):
    """Creates and deletes TXT records through the Alidns API.

    ``propagation_timeout`` is ``ALIDNS_PROPAGATION_TIMEOUT``, else
    ``info.default_propagation_timeout``. The keyword arguments tune
    retries (``max_attempts`` per call, back-off from ``retry_delay`` doubling up to
    ``max_retry_delay`` seconds, with jitter) and let tests supply the ``clock`` and an
    httpx ``transport``.
    Use one instance from one event loop.
    """

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="Alibaba Cloud DNS (Alidns)",
        description=(
            "Alibaba Cloud DNS through its API (signature V3 or V1); zones are found in the account, "
            "so delegated sub-zones work. Needs the RAM actions "
            + ", ".join(RAM_ACTIONS)
            + f" or the policy {RAM_POLICY}."
        ),
        env=ENV,
        example=(
            "export ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5t...\n"
            "export ALIBABA_CLOUD_ACCESS_KEY_SECRET_FILE=/run/secrets/alidns-secret\n"
            "certsmith issue -d example.com -d '*.example.com' --dns alidns"
        ),
        links=(
            "https://www.alibabacloud.com/help/en/dns/api-alidns-2015-01-09-overview",
            "https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature",
            "https://www.alibabacloud.com/help/en/ram/user-guide/create-an-accesskey-pair",
        ),
        default_propagation_timeout=120.0,
        extra={"ram_actions": ", ".join(RAM_ACTIONS), "ram_policy": RAM_POLICY},
    )

    def __init__(
        self, config: AlidnsConfig, *, clock: Callable[[], datetime] | None = None, **options: Unpack[HttpOptions]
    ) -> None:
        super().__init__(config, **options)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._url, self._host = endpoint_root(config.endpoint)
        self._min_ttls: LookupCache[str, int | None] = LookupCache()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from ``ALIBABA_CLOUD_*`` / ``ALIDNS_*`` (or lego/acme.sh) variables."""
        return cls(AlidnsConfig.from_env(env))

    # -- the contract: present and cleanup (RecordApiProvider) run these under the record's lock --

    async def _create_record(self, fqdn: str, value: str) -> str:
        zone, rr = await self._locate(fqdn)
        ttl = await self._ttl_for(zone)
        record_id = await self._add(zone, rr, value, ttl)
        log.info("alidns: TXT %s (RR %s in %s) = %s, RecordId %s", fqdn, rr, zone.name, value, record_id)
        return record_id

    async def _delete_record(self, fqdn: str, value: str, created: str) -> None:
        try:
            await self._call("DeleteDomainRecord", {"RecordId": created})
        except AlidnsError as exc:
            if exc.code != "DomainRecordNotBelongToUser":
                raise
            log.info("alidns: RecordId %s was already gone", created)
        log.info("alidns: deleted TXT %s = %s (RecordId %s)", fqdn, value, created)

    # -- zones, TTL, records --

    async def _list_zones(self) -> list[Zone]:
        """Every domain of the account: all ``DescribeDomains`` pages."""
        zones: list[Zone] = []
        page = 1
        while True:
            result = await self._call("DescribeDomains", {"PageNumber": str(page), "PageSize": "100"})
            domains = _items(result, "Domains", "Domain")
            zones.extend(zone_from_api(d) for d in domains)
            total = _number(result, "TotalCount", "DescribeDomains")
            if not domains or len(zones) >= total or page >= _MAX_PAGES:
                return zones
            page += 1

    def _no_zone(self, fqdn: str, zones: list[Zone]) -> DnsError:
        return AlidnsError(
            f"no Alidns domain contains {fqdn}: it is not in this Alibaba Cloud account "
            f"(AccessKey {self.config.access_key_id}); {_zone_list([z.name for z in zones])}",
            action="DescribeDomains",
            code=None,
        )

    async def _ttl_for(self, zone: Zone) -> int:
        """The configured TTL, raised to the domain's ``MinTtl`` (looked up once per zone)."""
        minimum = await self._min_ttls.get(zone.ascii, lambda: self._min_ttl(zone))
        if minimum is not None and minimum > self.config.ttl:
            log.debug("alidns: TTL %d raised to the minimum %d of %s", self.config.ttl, minimum, zone.name)
            return minimum
        return self.config.ttl

    async def _min_ttl(self, zone: Zone) -> int | None:
        try:
            info = await self._call("DescribeDomainInfo", {"DomainName": zone.name})
        except AlidnsError as exc:
            if exc.code != "Forbidden.RAM":
                raise
            log.info("alidns: no permission for DescribeDomainInfo; using TTL %d as configured", self.config.ttl)
            return None
        return _number(info, "MinTtl", "DescribeDomainInfo") if "MinTtl" in info else None

    async def _add(self, zone: Zone, rr: str, value: str, ttl: int) -> str:
        params = {"DomainName": zone.name, "RR": rr, "Type": "TXT", "Value": value, "TTL": str(ttl)}
        for _ in range(2):
            try:
                result = await self._call("AddDomainRecord", params)
                return _record_id(result, "AddDomainRecord")
            except AlidnsError as exc:
                if exc.code == "DomainRecordDuplicate":
                    return await self.adopt(
                        self._find(zone, rr, value),
                        lambda: AlidnsError(
                            f"Alidns reported TXT {rr} in {zone.name} = {value} as a duplicate, "
                            "but no identical record is listed; retry later",
                            action="AddDomainRecord",
                            code="DomainRecordDuplicate",
                        ),
                    )
                minimum = _ttl_minimum(exc.server_message) if exc.code == "QuotaExceeded.TTL" else None
                if minimum is None or minimum <= int(params["TTL"]):
                    raise
                log.info("alidns: TTL %s too low for %s; using %d", params["TTL"], zone.name, minimum)
                params["TTL"] = str(minimum)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _find(self, zone: Zone, rr: str, value: str) -> str | None:
        """The RecordId of TXT ``rr`` = ``value`` (server filters are fuzzy; match exactly here)."""
        page = 1
        while True:
            result = await self._call(
                "DescribeDomainRecords",
                {
                    "DomainName": zone.name,
                    "RRKeyWord": rr,
                    "TypeKeyWord": "TXT",
                    "ValueKeyWord": value,
                    "PageNumber": str(page),
                    "PageSize": "500",
                },
            )
            records = _items(result, "DomainRecords", "Record")
            for record in records:
                if (
                    str(record.get("RR", "")).lower() == rr.lower()
                    and str(record.get("Type", "")).upper() == "TXT"
                    and str(record.get("Value", "")) in (value, f'"{value}"')
                ):
                    return _record_id(record, "DescribeDomainRecords")
            if not records or page * 500 >= _number(result, "TotalCount", "DescribeDomainRecords"):
                return None
            if page >= _MAX_PAGES:
                raise AlidnsError(
                    f"Alidns listed more than {_MAX_PAGES} pages of TXT {rr} records in {zone.name}; giving up",
                    action="DescribeDomainRecords",
                    code=None,
                )
            page += 1

    # -- the wire --

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Sign and send one API call; retry throttling, 5xx and transport errors."""

        def unreachable(exc: httpx.TransportError) -> AlidnsError:
            return AlidnsError(
                f"cannot reach Alidns at {self.config.endpoint} ({type(exc).__name__}: {exc}); "
                "check the network and ALIDNS_ENDPOINT",
                action=action,
            )

        return await self.send_with_retries(
            lambda: self._build(action, params),
            lambda response: rpc.classify(response, lambda body: self._error(action, params, response, body)),
            unreachable=unreachable,
            label=action,
        )

    def _build(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """A freshly signed request: new nonce and UTC timestamp on every attempt."""
        cfg = self.config
        return rpc.build_request(
            self._http, url=self._url, host=self._host,
            credentials=Credentials(cfg.access_key_id, cfg.access_key_secret, cfg.security_token),
            version=signing.API_VERSION, signature_version=cfg.signature_version,
            action=action, params=params, now=self._clock(),
        )

    def _error(
        self, action: str, params: Mapping[str, str], response: httpx.Response, body: dict[str, Any] | None
    ) -> AlidnsError:
        def describe(code: str, server_message: str) -> str:
            known = self._zones.known(None)
            zones = None
            if code in ("InvalidDomainName.NoExist", "IncorrectDomainUser") and known is not None:
                zones = [z.name for z in known]
            return describe_error(
                action=action,
                code=code,
                server_message=server_message,
                access_key_id=self.config.access_key_id,
                offset=clock_offset(response.headers.get("date"), self._clock()),
                zones=zones,
                domain=params.get("DomainName"),
            )

        return rpc.api_error(
            AlidnsError, response, body, name="Alidns", action=action, endpoint_var="ALIDNS_ENDPOINT",
            describe=describe,
        )


def _items(result: Mapping[str, Any], outer: str, inner: str) -> list[dict[str, Any]]:
    """``result[outer][inner]`` as a list of objects (tolerating absent or odd shapes)."""
    container = result.get(outer)
    items = container.get(inner) if isinstance(container, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


_TTL_RANGE = re.compile(r"range of (\d+) to (\d+)")


def _ttl_minimum(message: str) -> int | None:
    """The lower bound from ``QuotaExceeded.TTL``'s "range of 600 to 86400"."""
    match = _TTL_RANGE.search(message)
    return int(match.group(1)) if match else None
