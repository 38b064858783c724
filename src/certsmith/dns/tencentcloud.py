"""Tencent Cloud DNSPod provider (DNSPod API 3.0, version 2021-03-23).

The provider speaks the JSON API at ``dnspod.tencentcloudapi.com`` directly over one
:class:`httpx.AsyncClient`, signed with TC3-HMAC-SHA256
(:mod:`certsmith.dns.tencentcloud_signing`). Zones are found in the account through
``DescribeDomainList`` (every page, longest matching suffix), never by a public DNS
guess. ``present`` creates one TXT record (``CreateRecord``, line "默认") and remembers
its ``RecordId`` -- an identical existing record is adopted; ``cleanup`` deletes exactly
that ``RecordId`` (``DeleteRecord``). ``RequestLimitExceeded`` and 5xx answers are
retried with bounded back-off, each attempt freshly signed. lego's variable names are
the main ones, acme.sh's ``Tencent_SecretId``/``Tencent_SecretKey`` are aliases.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self, Unpack

from certsmith.dns import tencentcloud_signing as signing
from certsmith.dns.base import (
    EnvVar,
    ProviderInfo,
    check_endpoint,
    optional_seconds,
    parse_int,
    read_env,
)
from certsmith.dns.http_api import (
    AccountZonesProvider,
    HttpOptions,
    Retryable,
    Zone,
    endpoint_root,
    to_ascii,
    zone_list,
)
from certsmith.errors import DnsError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

NAME = "tencentcloud"
SERVICE = "dnspod"
API_VERSION = "2021-03-23"
DEFAULT_ENDPOINT = "https://dnspod.tencentcloudapi.com"
DEFAULT_TTL = 600
DEFAULT_LINE = "默认"  # the "default" resolution line
RETRYABLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "RequestLimitExceeded.RequestLimitExceeded",
        "FailedOperation.FrequencyLimit",
        "InternalError",
        "ServiceUnavailable",
    }
)
#: Codes meaning the record is already gone (``DeleteRecord``).
GONE_CODES = frozenset({"ResourceNotFound.NoDataOfRecord", "InvalidParameter.RecordIdInvalid"})
CAM_ACTIONS = ("dnspod:DescribeDomainList", "dnspod:CreateRecord", "dnspod:DeleteRecord", "dnspod:DescribeRecordList")
CAM_POLICY = "QcloudDNSPodFullAccess"

ENV = (
    EnvVar(
        "TENCENTCLOUD_SECRET_ID",
        "SecretId of a CAM user allowed to manage the zone's records",
        required=True,
        aliases=("Tencent_SecretId",),
    ),
    EnvVar(
        "TENCENTCLOUD_SECRET_KEY",
        "SecretKey of that SecretId",
        required=True,
        secret=True,
        aliases=("Tencent_SecretKey",),
    ),
    EnvVar("TENCENTCLOUD_SESSION_TOKEN", "Session token, when the key is a temporary (STS) credential", secret=True),
    EnvVar("TENCENTCLOUD_REGION", "Region sent as X-TC-Region (DNSPod is global; usually unset)"),
    EnvVar("TENCENTCLOUD_ENDPOINT", "API endpoint (http:// only for loopback test servers)", default=DEFAULT_ENDPOINT),
    EnvVar("TENCENTCLOUD_TTL", "TTL of the TXT records, seconds", default=str(DEFAULT_TTL)),
    EnvVar("TENCENTCLOUD_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
)


class TencentCloudError(DnsError):
    """A DNSPod API call failed; ``code`` is ``Response.Error.Code`` (``None`` for transport failures)."""

    def __init__(self, message: str, *, action: str, code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.action = action
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class TencentCloudConfig:
    """Settings of :class:`TencentCloudProvider`; ``repr`` never shows the key or the token."""

    secret_id: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    ttl: int = DEFAULT_TTL
    propagation_timeout: float | None = None

    def __post_init__(self) -> None:
        check_endpoint("TENCENTCLOUD_ENDPOINT", self.endpoint, DEFAULT_ENDPOINT)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read the settings from ``env``; one error lists every missing variable."""
        values = read_env(env, ENV, NAME, hint=f"create an API key for a CAM user with the policy {CAM_POLICY}")
        endpoint = values["TENCENTCLOUD_ENDPOINT"].strip()
        return cls(
            secret_id=values["TENCENTCLOUD_SECRET_ID"].strip(),
            secret_key=values["TENCENTCLOUD_SECRET_KEY"].strip(),
            session_token=values.get("TENCENTCLOUD_SESSION_TOKEN", "").strip() or None,
            region=values.get("TENCENTCLOUD_REGION", "").strip() or None,
            endpoint=endpoint if "://" in endpoint else "https://" + endpoint,
            ttl=parse_int("TENCENTCLOUD_TTL", values["TENCENTCLOUD_TTL"], minimum=1, maximum=604800),
            propagation_timeout=optional_seconds(values, "TENCENTCLOUD_PROPAGATION_TIMEOUT"),
        )




def describe_error(action: str, code: str, server_message: str, secret_id: str) -> str:
    """A one-line, actionable message for a ``Response.Error.Code``."""
    prefix = f"DNSPod {action} failed ({code})"
    if code == "AuthFailure.SignatureFailure":
        return (
            f"{prefix}: the request signature does not match; TENCENTCLOUD_SECRET_KEY is not the SecretKey "
            f"of SecretId {secret_id} (check for a typo or a truncated copy)"
        )
    if code in ("AuthFailure.SecretIdNotFound", "AuthFailure.InvalidSecretId"):
        return (
            f"{prefix}: the SecretId {secret_id} is unknown to Tencent Cloud (deleted, disabled or mistyped); "
            "check TENCENTCLOUD_SECRET_ID"
        )
    if code == "AuthFailure.SignatureExpire":
        return (
            f"{prefix}: the request timestamp is more than 5 minutes off Tencent Cloud's time; "
            "synchronise the system clock (NTP, chrony or systemd-timesyncd)"
        )
    if code in ("AuthFailure.TokenFailure", "AuthFailure.InvalidAuthorization") and "token" in server_message.lower():
        return f"{prefix}: the session token was rejected; refresh TENCENTCLOUD_SESSION_TOKEN with its key"
    if code in ("UnauthorizedOperation", "AuthFailure.UnauthorizedOperation", "OperationDenied"):
        return (
            f"{prefix}: the CAM user of SecretId {secret_id} may not call dnspod:{action}; grant it "
            f"{', '.join(CAM_ACTIONS)} or the policy {CAM_POLICY}"
        )
    if code in RETRYABLE_CODES:
        return f"{prefix}: Tencent Cloud kept rate-limiting the requests; retry later"
    return f"{prefix}: {server_message}" if server_message else prefix


class TencentCloudProvider(AccountZonesProvider[TencentCloudConfig, tuple[str, int]]):
    """Creates and deletes TXT records through the DNSPod API 3.0.

    Keyword arguments tune retries (``max_attempts`` per call; back-off from
    ``retry_delay`` doubling up to ``max_retry_delay`` seconds, with jitter) and let
    tests supply the ``clock`` (Unix seconds) and an httpx ``transport``. Use one
    instance from one event loop.
    """

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="Tencent Cloud DNSPod",
        description=(
            "Tencent Cloud DNSPod through its API 3.0 (TC3-HMAC-SHA256); zones are found in the account. "
            "Needs the CAM actions " + ", ".join(CAM_ACTIONS) + f" or the policy {CAM_POLICY}."
        ),
        env=ENV,
        example=(
            "export TENCENTCLOUD_SECRET_ID=AKID...\n"
            "export TENCENTCLOUD_SECRET_KEY_FILE=/run/secrets/tencentcloud-key\n"
            "certsmith issue -d example.com -d '*.example.com' --dns tencentcloud"
        ),
        links=(
            "https://www.tencentcloud.com/document/api/1157/49025",
            "https://www.tencentcloud.com/document/api/1157/49030",
            "https://cloud.tencent.com/document/api/1427/56152",
        ),
        default_propagation_timeout=120.0,
        extra={"cam_actions": ", ".join(CAM_ACTIONS), "cam_policy": CAM_POLICY},
    )

    def __init__(
        self, config: TencentCloudConfig, *, clock: Callable[[], float] | None = None, **options: Unpack[HttpOptions]
    ) -> None:
        super().__init__(config, **options)
        self._clock = clock or time.time
        self._url, self._host = endpoint_root(config.endpoint)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from ``TENCENTCLOUD_*`` (or acme.sh's ``Tencent_*``) variables."""
        return cls(TencentCloudConfig.from_env(env))

    # -- the contract: present and cleanup (RecordApiProvider) run these under the record's lock --

    async def _create_record(self, fqdn: str, value: str) -> tuple[str, int]:
        zone, subdomain = await self._locate(fqdn)
        record_id = await self._create(zone, subdomain, value)
        log.info("tencentcloud: TXT %s (%s in %s) = %s, RecordId %d", fqdn, subdomain, zone.name, value, record_id)
        return zone.name, record_id

    async def _delete_record(self, fqdn: str, value: str, created: tuple[str, int]) -> None:
        domain, record_id = created
        try:
            await self._call("DeleteRecord", {"Domain": domain, "RecordId": record_id})
        except TencentCloudError as exc:
            if exc.code not in GONE_CODES:
                raise
            log.info("tencentcloud: RecordId %d was already gone", record_id)
        log.info("tencentcloud: deleted TXT %s = %s (RecordId %d)", fqdn, value, record_id)

    # -- zones and records --

    async def _list_zones(self) -> list[Zone]:
        """Every domain of the account: all ``DescribeDomainList`` pages."""
        zones: list[Zone] = []
        limit = 3000
        for page in range(1000):
            try:
                result = await self._call("DescribeDomainList", {"Type": "ALL", "Offset": page * limit, "Limit": limit})
            except TencentCloudError as exc:
                if exc.code == "ResourceNotFound.NoDataOfDomain":
                    return zones  # the service's answer for an account without domains
                raise
            domains = [d for d in result.get("DomainList") or [] if isinstance(d, dict)]
            for domain in domains:
                name = str(domain.get("Name", "")).rstrip(".")
                puny = str(domain.get("Punycode") or "").rstrip(".")
                zones.append(Zone(name=name, ascii=to_ascii(puny or name)))
            total = int((result.get("DomainCountInfo") or {}).get("AllTotal") or 0)
            if len(domains) < limit or len(zones) >= total:
                break
        return zones

    def _no_zone(self, fqdn: str, zones: list[Zone]) -> DnsError:
        return TencentCloudError(
            f"no DNSPod domain contains {fqdn}: it is not in this Tencent Cloud account "
            f"(SecretId {self.config.secret_id}); {zone_list([z.name for z in zones], 'DNSPod')}",
            action="DescribeDomainList",
        )

    async def _create(self, zone: Zone, subdomain: str, value: str) -> int:
        params = {
            "Domain": zone.name,
            "SubDomain": subdomain,
            "RecordType": "TXT",
            "RecordLine": DEFAULT_LINE,
            "Value": value,
            "TTL": self.config.ttl,
        }
        try:
            result = await self._call("CreateRecord", params)
        except TencentCloudError as exc:
            if exc.code != "InvalidParameter.DomainRecordExist":
                raise
            code = exc.code
            return await self.adopt(
                self._find(zone, subdomain, value),
                lambda: TencentCloudError(
                    f"DNSPod reported TXT {subdomain} in {zone.name} = {value} as existing, but it is not listed; "
                    "retry later",
                    action="CreateRecord",
                    code=code,
                ),
            )
        return int(result["RecordId"])

    async def _find(self, zone: Zone, subdomain: str, value: str) -> int | None:
        try:
            result = await self._call(
                "DescribeRecordList", {"Domain": zone.name, "Subdomain": subdomain, "RecordType": "TXT", "Limit": 3000}
            )
        except TencentCloudError as exc:
            if exc.code == "ResourceNotFound.NoDataOfRecord":
                return None
            raise
        for record in result.get("RecordList") or []:
            if (
                isinstance(record, dict)
                and str(record.get("Name", "")).lower() == subdomain.lower()
                and str(record.get("Type", "")).upper() == "TXT"
                and str(record.get("Value", "")).strip('"') == value
            ):
                return int(record["RecordId"])
        return None

    # -- the wire --

    async def _call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Sign and send one API call; retry rate limiting, 5xx and transport errors."""
        body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

        def build() -> httpx.Request:
            headers = signing.sign_json_post(
                host=self._host,
                service=SERVICE,
                action=action,
                version=API_VERSION,
                body=body,
                secret_id=self.config.secret_id,
                secret_key=self.config.secret_key,
                timestamp=int(self._clock()),
                region=self.config.region,
                token=self.config.session_token,
            )
            return self._http.build_request("POST", self._url, content=body, headers=headers)

        def unreachable(exc: httpx.TransportError) -> TencentCloudError:
            return TencentCloudError(
                f"cannot reach DNSPod at {self.config.endpoint} ({type(exc).__name__}); "
                "check the network and TENCENTCLOUD_ENDPOINT",
                action=action,
            )

        return await self.send_with_retries(
            build, lambda response: self._classify(action, response), unreachable=unreachable, label=action
        )

    def _classify(self, action: str, response: httpx.Response) -> dict[str, Any] | Retryable:
        answer = _response(response)
        error = answer.get("Error") if answer is not None else None
        if answer is not None and not error and response.status_code < 400:
            return answer
        code = str(error.get("Code", "")) if isinstance(error, dict) else f"HTTP{response.status_code}"
        if answer is None:
            failure = TencentCloudError(
                f"DNSPod {action} failed: HTTP {response.status_code} with an answer that is not the API's JSON "
                f"({response.text[:200].strip()!r}); check TENCENTCLOUD_ENDPOINT",
                action=action,
                code=code,
            )
        else:
            server_message = str(error.get("Message", "")) if isinstance(error, dict) else ""
            request_id = answer.get("RequestId")
            message = describe_error(action, code, server_message, self.config.secret_id)
            if request_id:
                message += f" [RequestId {request_id}]"
            failure = TencentCloudError(message, action=action, code=code, request_id=request_id)
        if code in RETRYABLE_CODES or response.status_code >= 500:
            return Retryable(failure, reason=code)
        raise failure


def _response(response: httpx.Response) -> dict[str, Any] | None:
    """``body["Response"]`` when the body is the API's JSON, else ``None``."""
    try:
        body = response.json()
    except ValueError:
        return None
    inner = body.get("Response") if isinstance(body, dict) else None
    return inner if isinstance(inner, dict) else None
