"""Huawei Cloud DNS (API v2) provider.

The provider speaks the REST API directly over one :class:`httpx.AsyncClient`, every
request signed with AK/SK (``SDK-HMAC-SHA256``, :mod:`certsmith.dns.huaweicloud_signing`).
The zone is found through the API (``GET /v2/zones?type=public&name=``, walking up the
labels of the name, exact match), never through public DNS.

Huawei Cloud keeps all TXT values of a name in one *record set*. ``present`` therefore
adds its value to the existing set (``PUT``) or creates the set (``POST``; when another
client created it in between -- ``DNS.0312`` -- it merges instead), and ``cleanup``
removes only its own value: it writes the remaining values back, or deletes the set
when ours was the last. Work on one name is serialised by a lock, so two values at one
name (an apex and its wildcard) both survive. Throttling (``APIGW.0308``, HTTP 429) and
5xx answers are retried with bounded back-off, each attempt freshly signed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, Unpack

from certsmith._http import json_object, parse_retry_after
from certsmith.dns import huaweicloud_signing as signing
from certsmith.dns.base import EnvVar, ProviderInfo, check_endpoint, optional_seconds, parse_int, read_env
from certsmith.dns.http_api import HttpApiProvider, HttpOptions, LookupCache, RecordLocks, Retryable, normalise
from certsmith.errors import ConfigError, DnsError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

NAME = "huaweicloud"
DEFAULT_TTL = 300
ENDPOINT_TEMPLATE = "https://dns.{region}.myhuaweicloud.com"
#: Answers that mean "try again later"; HTTP 5xx is retried as well.
RETRYABLE_CODES = frozenset({"APIGW.0308", "APIGW.0309", "DNS.0021"})
#: The IAM actions the provider needs, and the system policy that holds them.
IAM_ACTIONS = (
    "dns:zone:list",
    "dns:recordset:list",
    "dns:recordset:create",
    "dns:recordset:update",
    "dns:recordset:delete",
)
IAM_POLICY = "DNS FullAccess"
ALREADY_EXISTS = "DNS.0312"
ZONE_NOT_FOUND = "DNS.0101"
RECORDSET_NOT_FOUND = "DNS.0302"

ENV = (
    EnvVar("HUAWEICLOUD_ACCESS_KEY_ID", "Access key ID (AK) of an IAM user allowed to manage the zone", required=True),
    EnvVar("HUAWEICLOUD_SECRET_ACCESS_KEY", "Secret access key (SK) of that AK", required=True, secret=True),
    EnvVar("HUAWEICLOUD_REGION", "Region of the DNS endpoint, e.g. ap-southeast-1 or cn-north-4", required=True),
    EnvVar(
        "HUAWEICLOUD_PROJECT_ID",
        "Project ID of the region, sent as X-Project-Id (optional: DNS v2 public zones do not need it)",
    ),
    EnvVar(
        "HUAWEICLOUD_ENDPOINT",
        "API endpoint (default https://dns.<region>.myhuaweicloud.com; http:// only for loopback test servers)",
    ),
    EnvVar("HUAWEICLOUD_TTL", "TTL of the TXT record set, seconds", default=str(DEFAULT_TTL)),
    EnvVar("HUAWEICLOUD_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
)


class HuaweiCloudError(DnsError):
    """A Huawei Cloud DNS API call failed: ``code`` (``None`` for transport errors), ``status``."""

    def __init__(
        self, message: str, *, operation: str, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code
        self.status = status


@dataclass(frozen=True, repr=False)
class HuaweiCloudConfig:
    """Settings of :class:`HuaweiCloudProvider`; ``repr`` never shows the secret."""

    access_key_id: str
    secret_access_key: str
    region: str
    endpoint: str
    project_id: str | None = None
    ttl: int = DEFAULT_TTL
    propagation_timeout: float | None = None

    def __repr__(self) -> str:
        return (
            f"HuaweiCloudConfig(access_key_id={self.access_key_id!r}, secret_access_key=<hidden>, "
            f"region={self.region!r}, endpoint={self.endpoint!r}, project_id={self.project_id!r}, "
            f"ttl={self.ttl}, propagation_timeout={self.propagation_timeout})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read the settings from ``env``; one error lists every missing variable."""
        values = read_env(env, ENV, NAME, hint=f"create an access key for an IAM user with the policy {IAM_POLICY}")
        region = values["HUAWEICLOUD_REGION"].strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", region):
            raise ConfigError(f"HUAWEICLOUD_REGION must look like ap-southeast-1, not {region!r}")
        endpoint = values.get("HUAWEICLOUD_ENDPOINT", "").strip() or ENDPOINT_TEMPLATE.format(region=region)
        endpoint = endpoint if "://" in endpoint else "https://" + endpoint
        check_endpoint("HUAWEICLOUD_ENDPOINT", endpoint, "https://dns.ap-southeast-1.myhuaweicloud.com")
        return cls(
            access_key_id=values["HUAWEICLOUD_ACCESS_KEY_ID"].strip(),
            secret_access_key=values["HUAWEICLOUD_SECRET_ACCESS_KEY"].strip(),
            region=region,
            endpoint=endpoint.rstrip("/"),
            project_id=values.get("HUAWEICLOUD_PROJECT_ID", "").strip() or None,
            ttl=parse_int("HUAWEICLOUD_TTL", values["HUAWEICLOUD_TTL"], minimum=1, maximum=2147483647),
            propagation_timeout=optional_seconds(values, "HUAWEICLOUD_PROPAGATION_TIMEOUT"),
        )





def quote_txt(value: str) -> str:
    """A TXT value as Huawei Cloud stores it: in double quotes, ``"`` and ``\\`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_txt(record: str) -> str:
    """The value of a stored TXT record (quoted strings joined, escapes undone)."""
    text = record.strip()
    if not text.startswith('"'):
        return text
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return "".join(re.sub(r"\\(.)", r"\1", part) for part in parts)


_POLICY = re.compile(r"Policy doesn't allow (\S+) to be performed")


def describe_error(operation: str, status: int, code: str | None, message: str, access_key_id: str) -> str:
    """A one-line, actionable message for an API error."""
    prefix = f"Huawei Cloud DNS {operation} failed (HTTP {status}{', ' + code if code else ''})"
    denied = _POLICY.search(message)
    if denied or status == 403:
        action = denied.group(1) if denied else None
        what = f"the permission {action}" if action else "a permission for this call"
        return (
            f"{prefix}: the IAM user of access key {access_key_id} lacks {what}. Grant it "
            f"{', '.join(IAM_ACTIONS)} or attach the system policy {IAM_POLICY}"
        )
    if code == "APIGW.0301" or status == 401:
        return (
            f"{prefix}: the access key {access_key_id} or its secret was rejected (unknown AK, wrong SK, or a "
            "clock more than 15 minutes off). Check HUAWEICLOUD_ACCESS_KEY_ID and HUAWEICLOUD_SECRET_ACCESS_KEY"
        )
    if code == "APIGW.0101":
        return f"{prefix}: the API does not exist at this endpoint; check HUAWEICLOUD_ENDPOINT and HUAWEICLOUD_REGION"
    if code in RETRYABLE_CODES or status == 429:
        return f"{prefix}: Huawei Cloud kept throttling the requests; retry later or lower the concurrency"
    detail = f": {message}" if message else ""
    return f"{prefix}{detail}"


@dataclass(frozen=True)
class Zone:
    """A public zone of the account: its ``id`` and ``name`` (lower case, trailing dot)."""

    id: str
    name: str


class HuaweiCloudProvider(HttpApiProvider[HuaweiCloudConfig]):
    """Adds and removes TXT values through the Huawei Cloud DNS v2 API.

    Keyword arguments tune retries (``max_attempts`` per call, back-off from
    ``retry_delay`` doubling up to ``max_retry_delay``) and let tests supply the
    ``clock`` and an httpx ``transport``. Use one instance from one event loop.
    """

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="Huawei Cloud DNS",
        description=(
            "Huawei Cloud DNS (API v2, AK/SK signed); public zones are found in the account and TXT values "
            "are merged into the name's record set. Needs " + ", ".join(IAM_ACTIONS) + f" or the policy {IAM_POLICY}."
        ),
        env=ENV,
        example=(
            "export HUAWEICLOUD_ACCESS_KEY_ID=HPUA...\n"
            "export HUAWEICLOUD_SECRET_ACCESS_KEY=...\n"
            "export HUAWEICLOUD_REGION=ap-southeast-1\n"
            "certsmith issue -d example.com -d '*.example.com' --dns huaweicloud"
        ),
        links=(
            "https://support.huaweicloud.com/intl/en-us/api-dns/dns_api_64001.html",
            "https://support.huaweicloud.com/intl/en-us/devg-apisign/api-sign-algorithm.html",
        ),
        default_propagation_timeout=120.0,
        extra={"iam_actions": ", ".join(IAM_ACTIONS), "iam_policy": IAM_POLICY},
    )

    def __init__(
        self, config: HuaweiCloudConfig, *, clock: Callable[[], datetime] | None = None, **options: Unpack[HttpOptions]
    ) -> None:
        import httpx  # imported on use: `certsmith dns list` only reads `info`

        super().__init__(config, **options)
        self._clock = clock or (lambda: datetime.now(UTC))
        url = httpx.URL(config.endpoint)
        self._host = url.netloc.decode("ascii")
        self._base_path = url.path.rstrip("/")
        self._zones: LookupCache[str, Zone | None] = LookupCache()
        self._lock: RecordLocks[str] = RecordLocks()
        self._ours: set[tuple[str, str]] = set()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from ``HUAWEICLOUD_*`` variables (lego's names)."""
        return cls(HuaweiCloudConfig.from_env(env))

    # -- the contract --

    async def present(self, fqdn: str, value: str) -> None:
        """Add ``value`` to the TXT record set of ``fqdn`` (creating the set when there is none)."""
        name = normalise(fqdn)
        async with self._lock(name):
            zone = await self._zone_for(name)
            for _ in range(3):
                existing = await self._find_set(zone, name)
                if existing is not None:
                    values = [unquote_txt(r) for r in existing.get("records") or []]
                    if value not in values:
                        await self._put(zone, existing, [*values, value])
                    break
                try:
                    await self._request(
                        "POST",
                        f"/v2/zones/{zone.id}/recordsets",
                        "create the record set",
                        body={"name": name, "type": "TXT", "ttl": self.config.ttl, "records": [quote_txt(value)]},
                    )
                    break
                except HuaweiCloudError as exc:
                    if exc.code != ALREADY_EXISTS:
                        raise
                    log.debug("huaweicloud: the TXT set of %s appeared meanwhile; merging", name)
            else:
                raise HuaweiCloudError(
                    f"Huawei Cloud DNS: the TXT record set of {name} keeps changing; retry later",
                    operation="create the record set",
                    code=ALREADY_EXISTS,
                )
            self._ours.add((name, value))
            log.info("huaweicloud: TXT %s += %s (zone %s)", name, value, zone.name)

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Remove ``value`` from the set; delete the set when no other value is left."""
        name = normalise(fqdn)
        async with self._lock(name):
            if (name, value) not in self._ours:
                log.debug("huaweicloud: no value of ours for TXT %s = %s; nothing to delete", name, value)
                return
            zone = await self._zone_for(name)
            existing = await self._find_set(zone, name)
            values = [unquote_txt(r) for r in existing.get("records") or []] if existing else []
            if existing is not None and value in values:
                rest = [v for v in values if v != value]
                try:
                    if rest:
                        await self._put(zone, existing, rest)
                    else:
                        await self._request(
                            "DELETE", f"/v2/zones/{zone.id}/recordsets/{existing['id']}", "delete the record set"
                        )
                except HuaweiCloudError as exc:
                    if exc.code != RECORDSET_NOT_FOUND:
                        raise
            self._ours.discard((name, value))
            log.info("huaweicloud: TXT %s -= %s", name, value)

    # -- zones and record sets --

    async def _zone_for(self, name: str) -> Zone:
        """The public zone holding ``name``: the longest suffix the account has."""
        labels = name.rstrip(".").split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:]) + "."
            zone = await self._zone_named(candidate)
            if zone is not None:
                return zone
        raise HuaweiCloudError(
            f"Huawei Cloud DNS: no public zone of this account (access key {self.config.access_key_id}) "
            f"contains {name}; add the zone in Huawei Cloud DNS or use the account that holds it",
            operation="list zones",
            code=ZONE_NOT_FOUND,
        )

    async def _zone_named(self, candidate: str) -> Zone | None:
        return await self._zones.get(candidate, lambda: self._ask_zone(candidate))

    async def _ask_zone(self, candidate: str) -> Zone | None:
        body = await self._request(
            "GET", "/v2/zones", "list zones", query={"type": "public", "name": candidate.rstrip(".")}
        )
        found = None
        for zone in body.get("zones") or []:
            if isinstance(zone, dict) and str(zone.get("name", "")).lower().rstrip(".") + "." == candidate:
                found = Zone(id=str(zone["id"]), name=candidate)
        return found

    async def _find_set(self, zone: Zone, name: str) -> dict[str, Any] | None:
        """The TXT record set named exactly ``name`` (the server's filter is fuzzy)."""
        body = await self._request(
            "GET",
            f"/v2/zones/{zone.id}/recordsets",
            "list record sets",
            query={"name": name, "type": "TXT", "limit": "500"},
        )
        for item in body.get("recordsets") or []:
            if (
                isinstance(item, dict)
                and str(item.get("name", "")).lower() == name
                and str(item.get("type", "")).upper() == "TXT"
            ):
                return item
        return None

    async def _put(self, zone: Zone, existing: Mapping[str, Any], values: list[str]) -> None:
        ttl = existing.get("ttl")
        await self._request(
            "PUT",
            f"/v2/zones/{zone.id}/recordsets/{existing['id']}",
            "update the record set",
            body={
                "name": existing["name"],
                "type": "TXT",
                "ttl": ttl if isinstance(ttl, int) else self.config.ttl,
                "records": [quote_txt(v) for v in values],
            },
        )

    # -- the wire --

    async def _request(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sign and send one call; retry throttling, 5xx and transport errors."""

        def classify(response: httpx.Response) -> dict[str, Any] | Retryable:
            if response.status_code < 300:
                return json_object(response) or {}
            answer = json_object(response) or {}
            code = answer.get("error_code") or answer.get("code")
            message = str(answer.get("error_msg") or answer.get("message") or "")
            code = str(code) if code else None
            if not answer and response.status_code >= 400:
                message = f"non-JSON answer {response.text[:120].strip()!r}; check HUAWEICLOUD_ENDPOINT"
            error = HuaweiCloudError(
                describe_error(operation, response.status_code, code, message, self.config.access_key_id),
                operation=operation,
                code=code,
                status=response.status_code,
            )
            if response.status_code in (429, 500, 502, 503, 504) or code in RETRYABLE_CODES:
                after = parse_retry_after(response.headers.get("retry-after"))
                return Retryable(error, after=after, reason=str(code or ""))
            raise error

        def unreachable(exc: httpx.TransportError) -> HuaweiCloudError:
            return HuaweiCloudError(
                f"cannot reach Huawei Cloud DNS at {self.config.endpoint} ({type(exc).__name__}); "
                "check the network and HUAWEICLOUD_ENDPOINT / HUAWEICLOUD_REGION",
                operation=operation,
            )

        return await self.send_with_retries(
            lambda: self._build(method, path, query or {}, body), classify, unreachable=unreachable, label=operation
        )

    def _build(
        self, method: str, path: str, query: Mapping[str, str], body: Mapping[str, Any] | None
    ) -> httpx.Request:
        full_path = self._base_path + path
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = {"Host": self._host}
        if body is not None:
            headers["Content-Type"] = "application/json;charset=utf8"
        if self.config.project_id:
            headers["X-Project-Id"] = self.config.project_id
        signed = signing.sign(
            method=method,
            path=full_path,
            query=list(query.items()),
            headers=headers,
            body=content,
            access_key_id=self.config.access_key_id,
            secret=self.config.secret_access_key,
            moment=self._clock(),
        )
        signed["Accept"] = "application/json"  # unsigned, like the SDK's own extra headers
        query_text = signing.canonical_query(query.items())
        scheme = self.config.endpoint.split("://")[0]
        url = f"{scheme}://{self._host}{full_path}" + ("?" + query_text if query_text else "")
        return self._http.build_request(method, url, content=content or None, headers=signed)
