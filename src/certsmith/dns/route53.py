"""Amazon Route 53 provider, through the AWS SDK for Python (boto3).

boto3 is an optional extra (``pip install 'certsmith[route53]'``), imported only when
the provider first talks to AWS, so the whole AWS credential chain works: explicit
keys, ``AWS_PROFILE`` (shared config and credentials files, SSO, assumed roles),
container and instance roles. boto3 is synchronous; every call runs in a worker
thread (:func:`asyncio.to_thread`), so the event loop never blocks.

Route 53 keeps all TXT values of one name in one record set, so ``present`` reads the
current set and UPSERTs it with our value added, and ``cleanup`` UPSERTs it without
our value (or DELETEs the set when ours was the last). Changes to one name are
serialised by a lock, so two concurrent presents at one name (apex + wildcard) never
lose a value. Each change is followed until Route 53 reports it ``INSYNC``.

The hosted zone is found through the API (``ListHostedZonesByName``, walking up the
labels; public zones unless ``AWS_PRIVATE_ZONE`` is true), or given as
``AWS_HOSTED_ZONE_ID``. Throttling (``Throttling``, ``PriorRequestNotComplete``) and
5xx answers are retried with bounded exponential back-off; ``AccessDenied`` becomes a
one-line error naming the IAM action that is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from certsmith.dns.base import EnvVar, ProviderInfo, check_endpoint, optional_seconds, parse_bool, parse_int, read_env
from certsmith.dns.http_api import ApiProvider, RecordLocks, RetryPolicy, normalise
from certsmith.errors import ConfigError, DnsError

log = logging.getLogger(__name__)

NAME = "route53"
DEFAULT_TTL = 10
DEFAULT_MAX_RETRIES = 5
INSTALL_HINT = "pip install 'certsmith[route53]'"
#: Error codes that mean "slow down / try again"; HTTP 5xx is retried as well.
RETRYABLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded", "ServiceUnavailable"}
)
#: Error codes that mean the credentials themselves are wrong.
CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "IncompleteSignature",
    }
)
#: The IAM action behind each SDK operation the provider calls.
IAM_ACTIONS = {
    "ListHostedZonesByName": "route53:ListHostedZonesByName",
    "ListResourceRecordSets": "route53:ListResourceRecordSets",
    "ChangeResourceRecordSets": "route53:ChangeResourceRecordSets",
    "GetChange": "route53:GetChange",
}

ENV = (
    EnvVar(
        "AWS_ACCESS_KEY_ID",
        "Access key ID; leave unset to use the AWS SDK's credential chain (profile, SSO, instance or task role)",
    ),
    EnvVar("AWS_SECRET_ACCESS_KEY", "Secret access key of that key ID", secret=True),
    EnvVar("AWS_SESSION_TOKEN", "Session token, when the key is a temporary (STS) credential", secret=True),
    EnvVar("AWS_REGION", "Region for the SDK (Route 53 is global; default: the profile's, else us-east-1)",
           aliases=("AWS_DEFAULT_REGION",)),
    EnvVar("AWS_PROFILE", "Named profile of the shared AWS config and credentials files"),
    EnvVar("AWS_HOSTED_ZONE_ID", "Hosted zone ID to use instead of looking the zone up by name"),
    EnvVar("AWS_PRIVATE_ZONE", "true: use the private hosted zone of that name instead of the public one",
           default="false"),
    EnvVar("AWS_MAX_RETRIES", "Retries of a throttled or failed API call", default=str(DEFAULT_MAX_RETRIES)),
    EnvVar("AWS_TTL", "TTL of the TXT record set, seconds (an existing set keeps its TTL)", default=str(DEFAULT_TTL)),
    EnvVar(
        "ROUTE53_PROPAGATION_TIMEOUT",
        "Seconds to wait until the record is visible",
        aliases=("AWS_PROPAGATION_TIMEOUT",),
    ),
    EnvVar(
        "AWS_ENDPOINT_URL_ROUTE_53",
        "Route 53 API endpoint, e.g. for a private deployment or a test server (the SDK's own variables)",
        aliases=("AWS_ENDPOINT_URL",),
    ),
)


class Route53Error(DnsError):
    """A Route 53 call failed; ``code`` is AWS's error code (``None`` for other failures)."""

    def __init__(self, message: str, *, operation: str, code: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code


@dataclass(frozen=True)
class Route53Config:
    """Settings of :class:`Route53Provider`; ``repr`` never shows the secret or the token."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    profile: str | None = None
    hosted_zone_id: str | None = None
    private_zone: bool = False
    max_retries: int = DEFAULT_MAX_RETRIES
    ttl: int = DEFAULT_TTL
    propagation_timeout: float | None = None
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            given, absent = (
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                if self.access_key_id
                else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
            )
            raise ConfigError(f"route53: {given} is set but {absent} is not; set both, or neither to use a profile")
        if self.endpoint_url is not None:
            check_endpoint("AWS_ENDPOINT_URL_ROUTE_53", self.endpoint_url, "https://route53.amazonaws.com")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read the settings from ``env`` (lego's names; the SDK's own for the endpoint)."""
        values = read_env(env, ENV, NAME)
        zone_id = values.get("AWS_HOSTED_ZONE_ID", "").strip()
        return cls(
            access_key_id=values.get("AWS_ACCESS_KEY_ID", "").strip() or None,
            secret_access_key=values.get("AWS_SECRET_ACCESS_KEY", "").strip() or None,
            session_token=values.get("AWS_SESSION_TOKEN", "").strip() or None,
            region=values.get("AWS_REGION", "").strip() or None,
            profile=values.get("AWS_PROFILE", "").strip() or None,
            hosted_zone_id=zone_id.removeprefix("/hostedzone/") or None,
            private_zone=parse_bool("AWS_PRIVATE_ZONE", values["AWS_PRIVATE_ZONE"]),
            max_retries=parse_int("AWS_MAX_RETRIES", values["AWS_MAX_RETRIES"], minimum=0, maximum=100, unit="retries"),
            ttl=parse_int("AWS_TTL", values["AWS_TTL"], minimum=1, maximum=2147483647),
            propagation_timeout=optional_seconds(values, "ROUTE53_PROPAGATION_TIMEOUT"),
            endpoint_url=values.get("AWS_ENDPOINT_URL_ROUTE_53", "").strip() or None,
        )





def quote_txt(value: str) -> str:
    """A TXT value in Route 53's zone-file form: quoted, with ``"`` and ``\\`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_txt(text: str) -> str:
    """The value of Route 53's ``"..."`` form (several quoted strings are joined)."""
    out: list[str] = []
    inside = False
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            inside = not inside
        elif inside:
            out.append(char)
    return "".join(out) if '"' in text else text


def describe_error(operation: str, code: str | None, message: str, access_key_id: str | None) -> str:
    """A one-line, actionable message for an AWS error answer."""
    prefix = f"Route 53 {operation} failed ({code})"
    who = f"access key {access_key_id}" if access_key_id else "the AWS credentials in use"
    if code in ("AccessDenied", "AccessDeniedException"):
        action = IAM_ACTIONS.get(operation, f"route53:{operation}")
        return (
            f"{prefix}: {who} may not call {action}; grant the IAM actions {', '.join(IAM_ACTIONS.values())} "
            "on the hosted zone (and route53:ListHostedZonesByName on *)"
        )
    if code in ("InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId"):
        return f"{prefix}: AWS does not know {who}; check AWS_ACCESS_KEY_ID (or the profile's key)"
    if code == "SignatureDoesNotMatch":
        return (
            f"{prefix}: the request signature does not match; AWS_SECRET_ACCESS_KEY is not the secret of {who}, "
            "or this machine's clock is off"
        )
    if code in ("ExpiredToken", "ExpiredTokenException"):
        return f"{prefix}: the session token has expired; refresh AWS_SESSION_TOKEN with its key (or log in again)"
    if code == "NoSuchHostedZone":
        return f"{prefix}: no such hosted zone in this account; check AWS_HOSTED_ZONE_ID"
    if code in RETRYABLE_CODES:
        return f"{prefix}: Route 53 kept throttling the requests; retry later or raise AWS_MAX_RETRIES"
    return f"{prefix}: {message}" if message else prefix


@dataclass
class _RecordSet:
    ttl: int
    values: list[str]


class Route53Provider(ApiProvider[Route53Config]):
    """Creates and deletes TXT values in Route 53 record sets.

    Keyword arguments tune the back-off (``retry_delay`` doubling up to
    ``max_retry_delay`` seconds, with jitter) and the wait for ``INSYNC``
    (``change_poll_interval``, ``change_timeout``). Use one instance from one event loop.
    """

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="Amazon Route 53",
        description=(
            "Amazon Route 53 through the AWS SDK (boto3, install with "
            f"{INSTALL_HINT}); any AWS credential source works. Needs the IAM actions "
            + ", ".join(IAM_ACTIONS.values())
            + "."
        ),
        env=ENV,
        example=(
            "pip install 'certsmith[route53]'\n"
            "export AWS_PROFILE=dns-admin   # or AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY\n"
            "certsmith issue -d example.com -d '*.example.com' --dns route53"
        ),
        links=(
            "https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html",
            "https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/access-control-managing-permissions.html",
            "https://boto3.amazonaws.com/v1/documentation/api/latest/guide/credentials.html",
        ),
        default_propagation_timeout=120.0,
        extra={"iam_actions": ", ".join(IAM_ACTIONS.values())},
    )

    def __init__(
        self,
        config: Route53Config,
        *,
        retry_delay: float = 0.5,
        max_retry_delay: float = 8.0,
        change_poll_interval: float = 2.0,
        change_timeout: float = 180.0,
        timeout: float = 30.0,
    ) -> None:
        import asyncio  # imported on use: `certsmith dns list` loads this module for its metadata only

        super().__init__(config, retry=RetryPolicy(config.max_retries + 1, retry_delay, max_retry_delay))
        self._change_poll_interval = change_poll_interval
        self._change_timeout = change_timeout
        self._timeout = timeout
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._zone_lock = asyncio.Lock()
        self._zones: dict[str, str] = {}
        self._lock_for: RecordLocks[str] = RecordLocks()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from lego's ``AWS_*`` variables."""
        return cls(Route53Config.from_env(env))

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        client, self._client = self._client, None
        if client is not None:
            import asyncio

            await asyncio.to_thread(client.close)

    # -- the contract --

    async def present(self, fqdn: str, value: str) -> None:
        """Add ``value`` to the TXT record set at ``fqdn``, keeping the values already there."""
        name = normalise(fqdn)
        async with self._lock_for(name):
            zone_id = await self._zone_id(name)
            current = await self._read(zone_id, name)
            values = list(current.values) if current else []
            if value in values:
                log.info("route53: TXT %s = %s is already there", name, value)
                return
            ttl = current.ttl if current else self.config.ttl
            await self._change(zone_id, "UPSERT", name, ttl, [*values, value])
            log.info("route53: TXT %s = %s added in hosted zone %s", name, value, zone_id)

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Remove ``value`` from the set at ``fqdn``; other values stay, an empty set is deleted."""
        name = normalise(fqdn)
        async with self._lock_for(name):
            zone_id = await self._zone_id(name)
            current = await self._read(zone_id, name)
            if current is None or value not in current.values:
                log.debug("route53: TXT %s = %s is not there; nothing to delete", name, value)
                return
            rest = [v for v in current.values if v != value]
            if rest:
                await self._change(zone_id, "UPSERT", name, current.ttl, rest)
            else:
                await self._change(zone_id, "DELETE", name, current.ttl, current.values)
            log.info("route53: TXT %s = %s removed from hosted zone %s", name, value, zone_id)

    # -- zones and record sets --

    async def _zone_id(self, name: str) -> str:
        if self.config.hosted_zone_id:
            return self.config.hosted_zone_id
        async with self._zone_lock:
            labels = name.rstrip(".").split(".")
            candidates = [".".join(labels[i:]) + "." for i in range(len(labels) - 1)]
            for candidate in candidates:
                if candidate in self._zones:
                    return self._zones[candidate]
            skipped_private = []
            for candidate in candidates:
                zone_id, other_kind = await self._zone_named(candidate)
                if zone_id is not None:
                    self._zones[candidate] = zone_id
                    return zone_id
                if other_kind:
                    skipped_private.append(candidate)
        kind = "private" if self.config.private_zone else "public"
        hint = ""
        if skipped_private:
            other = "public" if self.config.private_zone else "private"
            switch = "false" if self.config.private_zone else "true"
            hint = f" (there is a {other} zone {skipped_private[0]}; set AWS_PRIVATE_ZONE={switch} to use it)"
        raise Route53Error(
            f"no {kind} Route 53 hosted zone contains {name} in this AWS account{hint}; "
            "create the zone there or set AWS_HOSTED_ZONE_ID",
            operation="ListHostedZonesByName",
        )

    async def _zone_named(self, candidate: str) -> tuple[str | None, bool]:
        """The ID of the zone named ``candidate`` of the wanted kind; and whether one of the other kind exists."""
        other_kind = False
        params: dict[str, str] = {"DNSName": candidate, "MaxItems": "100"}
        while True:
            answer = await self._call("list_hosted_zones_by_name", **params)
            for zone in answer.get("HostedZones", []):
                if str(zone.get("Name", "")).lower() != candidate:
                    continue
                private = bool(zone.get("Config", {}).get("PrivateZone", False))
                if private == self.config.private_zone:
                    return str(zone["Id"]).removeprefix("/hostedzone/"), other_kind
                other_kind = True
            # Zones come sorted by name: a page that ends past ``candidate`` has told everything.
            if not answer.get("IsTruncated") or str(answer.get("NextDNSName", "")).lower() != candidate:
                return None, other_kind
            params = {"DNSName": candidate, "HostedZoneId": str(answer["NextHostedZoneId"]), "MaxItems": "100"}

    async def _read(self, zone_id: str, name: str) -> _RecordSet | None:
        answer = await self._call(
            "list_resource_record_sets",
            HostedZoneId=zone_id,
            StartRecordName=name,
            StartRecordType="TXT",
            MaxItems="1",
        )
        for record_set in answer.get("ResourceRecordSets", []):
            if (
                normalise(str(record_set.get("Name", ""))) == name
                and record_set.get("Type") == "TXT"
                and "SetIdentifier" not in record_set
            ):
                values = [unquote_txt(str(r["Value"])) for r in record_set.get("ResourceRecords", [])]
                return _RecordSet(int(record_set.get("TTL", self.config.ttl)), values)
        return None

    async def _change(self, zone_id: str, action: str, name: str, ttl: int, values: list[str]) -> None:
        batch = {
            "Comment": "certsmith dns-01",
            "Changes": [
                {
                    "Action": action,
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": "TXT",
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": quote_txt(v)} for v in values],
                    },
                }
            ],
        }
        answer = await self._call("change_resource_record_sets", HostedZoneId=zone_id, ChangeBatch=batch)
        await self._wait_insync(answer.get("ChangeInfo", {}))

    async def _wait_insync(self, info: Mapping[str, Any]) -> None:
        import asyncio

        change_id = str(info.get("Id", ""))
        status = info.get("Status")
        deadline = time.monotonic() + self._change_timeout
        while status != "INSYNC":
            if time.monotonic() >= deadline:
                raise Route53Error(
                    f"Route 53 change {change_id} is still {status} after {self._change_timeout:.0f} seconds; "
                    "Route 53 is slow to apply it, retry later",
                    operation="GetChange",
                )
            await asyncio.sleep(self._change_poll_interval)
            answer = await self._call("get_change", Id=change_id)
            status = answer.get("ChangeInfo", {}).get("Status")

    # -- the SDK --

    async def _sdk(self) -> Any:
        import asyncio

        async with self._client_lock:
            if self._client is None:
                self._client = await asyncio.to_thread(self._make_client)
            return self._client

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise DnsError(f"the route53 provider needs the AWS SDK for Python: {INSTALL_HINT}") from None
        cfg = self.config
        session = boto3.session.Session(
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            aws_session_token=cfg.session_token,
            region_name=cfg.region,
            profile_name=cfg.profile,
        )
        region = cfg.region or session.region_name or "us-east-1"
        sdk_config = Config(
            retries={"total_max_attempts": 1},  # retried here, with our own bounded back-off
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
            user_agent_extra="certsmith",
        )
        return session.client("route53", region_name=region, endpoint_url=cfg.endpoint_url, config=sdk_config)

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one SDK call in a thread; retry throttling, 5xx and connection failures."""
        import asyncio

        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        client = await self._sdk()
        operation = client.meta.method_to_api_mapping.get(method, method)
        attempts = self._retry.max_attempts
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                answer: dict[str, Any] = await asyncio.to_thread(getattr(client, method), **params)
                return answer
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if (code in RETRYABLE_CODES or status >= 500) and not last:
                    log.debug("route53: %s attempt %d: %s", operation, attempt, code)
                    await self._retry.backoff(attempt)
                    continue
                message = describe_error(operation, code, str(error.get("Message", "")), self.config.access_key_id)
                raise Route53Error(message, operation=operation, code=code) from None
            except (NoCredentialsError, PartialCredentialsError):
                raise Route53Error(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
                    "or run where an instance or task role is available",
                    operation=operation,
                ) from None
            except (EndpointConnectionError, ConnectionError) as exc:
                if last:
                    where = self.config.endpoint_url or "Route 53"
                    raise Route53Error(
                        f"cannot reach {where} ({type(exc).__name__}); check the network and AWS_ENDPOINT_URL_ROUTE_53",
                        operation=operation,
                    ) from None
                log.debug("route53: %s attempt %d: %s", operation, attempt, type(exc).__name__)
                await self._retry.backoff(attempt)
            except BotoCoreError as exc:
                raise Route53Error(f"Route 53 {operation} failed: {exc}", operation=operation) from None
        raise AssertionError("unreachable")  # pragma: no cover
