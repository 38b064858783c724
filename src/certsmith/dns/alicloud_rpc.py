"""What every Alibaba Cloud RPC-style API shares (Alidns, CAS, CDN, DCDN, SLB, ALB), and a client.

The Alidns provider and the deploy targets in :mod:`certsmith.deploy` use it. Every
product speaks the same protocol: one POST per call with the parameters in
the query string, signed with V3 (``ACS3-HMAC-SHA256``, the default) or V1
(``HMAC-SHA1``) by :mod:`certsmith.dns.alidns_signing`, a JSON answer with ``Code`` and
``Message`` on failure. Only the API version, the endpoint and the RAM actions differ,
so a product is a :class:`Product` value, not a class.

Calls are retried on throttling, 5xx and transport errors with bounded exponential
back-off, each attempt freshly signed (new nonce and timestamp). A failure becomes an
:class:`AliCloudError` whose message says what to do: which RAM actions to grant, which
secret to check, how far the clock is off.

The credentials are the Alidns provider's (same variables, same lego / acme.sh aliases,
``_FILE`` for secrets, an STS token), so one AccessKey can serve DNS and delivery.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar

from certsmith._http import json_object
from certsmith._text import clean
from certsmith.dns import alidns_signing as signing
from certsmith.dns.base import EnvVar, check_endpoint, read_env
from certsmith.dns.http_api import Retryable, RetryPolicy, send_with_retries
from certsmith.errors import CertsmithError, ConfigError, ProviderConfigError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: The AccessKey variables of every Alibaba Cloud product (lego's and acme.sh's names as aliases).
CREDENTIAL_ENV: tuple[EnvVar, ...] = (
    EnvVar(
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "AccessKey ID of a RAM user allowed to make the calls",
        required=True,
        aliases=("ALICLOUD_ACCESS_KEY", "Ali_Key"),
    ),
    EnvVar(
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "AccessKey secret of that AccessKey ID",
        required=True,
        secret=True,
        aliases=("ALICLOUD_SECRET_KEY", "Ali_Secret"),
    ),
    EnvVar(
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "STS security token, when the AccessKey is a temporary STS credential",
        secret=True,
        aliases=("ALICLOUD_SECURITY_TOKEN",),
    ),
)
REGION_ENV = EnvVar(
    "ALICLOUD_REGION",
    "Region of the product's resources (e.g. cn-hangzhou), for the products that are regional",
    aliases=("ALIBABA_CLOUD_REGION_ID",),
)
SIGNATURE_ENV = EnvVar(
    "ALICLOUD_SIGNATURE_VERSION", "Request signature: 3 (ACS3-HMAC-SHA256) or 1 (HMAC-SHA1)", default="3"
)

#: Error codes that mean "try again later"; HTTP 5xx is retried as well.
RETRYABLE_CODES = frozenset(
    {"Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable", "SystemBusy", "InternalError"}
)
#: The same signed request arrived twice: the HTTP layer sent it again on a new connection after the first one
#: closed without an answer (the service may have acted on the first). Another attempt is signed afresh.
RESENT_CODES = frozenset({"SignatureNonceUsed"})
#: One attempt: for :meth:`RpcClient.create`, which decides itself what follows a failure.
_ONCE = RetryPolicy(max_attempts=1)
_FORBIDDEN_CODES = frozenset({"Forbidden.RAM", "Forbidden", "NoPermission", "Forbidden.NoPermission"})


@dataclass(frozen=True)
class Product:
    """One Alibaba Cloud product's API: what differs between CAS, CDN, SLB...

    ``endpoint`` may contain ``{region}`` (ALB's is regional); ``endpoint_var`` names the
    variable that overrides it (tests point it at an emulator). ``ram_actions`` are what
    a RAM user needs for the calls certsmith makes, ``ram_policy`` the system policy
    that grants them all.
    """

    name: str
    version: str
    endpoint: str
    endpoint_var: str
    ram_actions: tuple[str, ...]
    ram_policy: str
    needs_region: bool = False
    #: Said after the RAM actions when a call is forbidden (e.g. an optional action).
    ram_note: str = ""

    def endpoint_env(self) -> EnvVar:
        return EnvVar(
            self.endpoint_var,
            f"{self.name} API endpoint (http:// only for loopback test servers)",
            default=self.endpoint,
        )


@dataclass(frozen=True, repr=False)
class Credentials:
    """An AccessKey (optionally an STS credential); ``repr`` never shows the secret or the token."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:
        token = "<set>" if self.security_token else None
        return f"Credentials(access_key_id={self.access_key_id!r}, access_key_secret=<hidden>, security_token={token})"


@dataclass(frozen=True)
class ApiSettings:
    """Everything :class:`RpcClient` needs for one product, read from the environment in one place."""

    product: Product
    credentials: Credentials
    endpoint: str
    region: str | None = None
    signature_version: int = 3

    @classmethod
    def from_env(cls, product: Product, env: Mapping[str, str], *, target: str) -> Self:
        """Read credentials, endpoint, region and signature version; one error lists what is missing.

        ``target`` is the deploy target's name, for the messages.
        """
        variables = (*CREDENTIAL_ENV, product.endpoint_env(), REGION_ENV, SIGNATURE_ENV)
        try:
            values = read_env(env, variables, target)
        except ProviderConfigError as exc:
            raise ConfigError(
                f"deploy target {target!r} needs the environment variable {', '.join(exc.missing)} (an AccessKey "
                f"of a RAM user with the actions {', '.join(product.ram_actions)} or the policy {product.ram_policy})"
            ) from None
        region = values.get("ALICLOUD_REGION", "").strip() or None
        if product.needs_region and region is None:
            raise ConfigError(
                f"deploy target {target!r} needs ALICLOUD_REGION (e.g. cn-hangzhou): {product.name} is regional"
            )
        endpoint = values[product.endpoint_var].strip()
        if "{region}" in endpoint:
            if region is None:
                raise ConfigError(f"{product.endpoint_var} names {{region}}: set ALICLOUD_REGION (e.g. cn-hangzhou)")
            endpoint = endpoint.replace("{region}", region)
        endpoint = with_scheme(endpoint)
        check_endpoint(product.endpoint_var, endpoint, product.endpoint.replace("{region}", region or "cn-hangzhou"))
        return cls(
            product=product,
            credentials=Credentials(
                access_key_id=values["ALIBABA_CLOUD_ACCESS_KEY_ID"].strip(),
                access_key_secret=values["ALIBABA_CLOUD_ACCESS_KEY_SECRET"].strip(),
                security_token=values.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip() or None,
            ),
            endpoint=endpoint,
            region=region,
            signature_version=parse_signature_version(values["ALICLOUD_SIGNATURE_VERSION"]),
        )


def parse_signature_version(text: str, variable: str = "ALICLOUD_SIGNATURE_VERSION") -> int:
    """3 (``ACS3-HMAC-SHA256``) or 1 (``HMAC-SHA1``) from the names people use for them."""
    key = text.strip().lower()
    if key in ("3", "v3", "acs3-hmac-sha256"):
        return 3
    if key in ("1", "v1", "1.0", "v2", "hmac-sha1"):  # Alibaba's newer docs call V1 "V2"
        return 1
    raise ConfigError(f"{variable} must be 3 or 1, not {text!r}")


def with_scheme(endpoint: str) -> str:
    """``alidns.aliyuncs.com`` (the SDKs' form) means ``https://alidns.aliyuncs.com``."""
    return endpoint if "://" in endpoint else "https://" + endpoint


def clock_offset(date_header: str | None, local_now: datetime) -> float | None:
    """Seconds the server's ``Date`` is ahead of ``local_now`` (negative: behind)."""
    if not date_header:
        return None
    try:
        server = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    return (server - local_now).total_seconds()


def build_request(
    http: httpx.AsyncClient,
    *,
    url: str,
    host: str,
    credentials: Credentials,
    version: str,
    signature_version: int,
    action: str,
    params: Mapping[str, str],
    now: datetime,
    in_body: bool = False,
) -> httpx.Request:
    """A freshly signed POST of ``action`` (a new nonce every time).

    V1 sends the parameters in a form body; V3 in the query, or in a form body with
    ``in_body`` (the deploy targets: a private key being uploaded must never be part of a
    URL, which HTTP libraries log).
    """
    nonce = uuid.uuid4().hex
    if signature_version == 1:
        fields = signing.v1_common_params(
            action, credentials.access_key_id, nonce, now, credentials.security_token, version=version
        )
        fields.update(params)
        fields["Signature"] = signing.sign_v1("POST", fields, credentials.access_key_secret)
        return http.build_request(
            "POST",
            url,
            content=signing.canonical_query(fields).encode("ascii"),
            headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        )
    body = signing.canonical_query(params).encode("ascii") if in_body else b""
    headers = signing.sign_v3(
        method="POST",
        host=host,
        action=action,
        query={} if in_body else params,
        access_key_id=credentials.access_key_id,
        secret=credentials.access_key_secret,
        nonce=nonce,
        moment=now,
        security_token=credentials.security_token,
        version=version,
        body=body,
    )
    headers["accept"] = "application/json"
    if in_body:
        headers["content-type"] = "application/x-www-form-urlencoded"
        return http.build_request("POST", url, content=body, headers=headers)
    query = signing.canonical_query(params)
    return http.build_request("POST", url + ("?" + query if query else ""), headers=headers)


class AliCloudError(CertsmithError):
    """An API call failed: ``code`` is the service's error code (``None`` for transport failures).

    ``transient``: a failure worth another attempt (no answer, throttling, HTTP 5xx, a nonce
    seen twice), after which the service may nevertheless have done the work.
    """

    def __init__(
        self,
        message: str,
        *,
        action: str,
        product: str = "",
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        server_message: str = "",
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.product = product
        self.action = action
        self.code = code
        self.status = status
        self.request_id = request_id
        self.server_message = server_message


def describe_error(
    *,
    product: Product,
    action: str,
    code: str | None,
    server_message: str,
    access_key_id: str,
    offset: float | None = None,
) -> str:
    """One actionable line for ``code``.

    The service's message is quoted only for codes without an explanation here, and never
    for ``SignatureDoesNotMatch`` (it echoes the string to sign, security token included).
    """
    prefix = f"{product.name} {action} failed ({code})"
    if code in ("SignatureDoesNotMatch", "IncompleteSignature"):
        return (
            f"{prefix}: the request signature does not match; the AccessKey secret is not the one "
            f"of AccessKey ID {access_key_id}. Check ALIBABA_CLOUD_ACCESS_KEY_SECRET (or its _FILE) "
            "for a typo, a truncated copy or a secret of another key"
        )
    if code in ("InvalidAccessKeyId.NotFound", "InvalidAccessKeyId"):
        return (
            f"{prefix}: the AccessKey ID {access_key_id} is unknown to Alibaba Cloud (deleted, disabled "
            "or mistyped). Check ALIBABA_CLOUD_ACCESS_KEY_ID or create a new AccessKey in the RAM console"
        )
    if code == "InvalidTimeStamp.Expired":
        if offset is None:
            clock = "the clock of this machine is probably off by more than 15 minutes"
        else:
            minutes = round(abs(offset) / 60)
            unit = "minute" if minutes == 1 else "minutes"
            direction = "behind" if offset > 0 else "ahead of"
            clock = (
                f"the clock is off by {minutes} {unit} (this machine is {direction} Alibaba Cloud's time; "
                "requests must be within 15 minutes)"
            )
        return f"{prefix}: {clock}. Synchronise the system clock (NTP, chrony or systemd-timesyncd)"
    if code == "InvalidTimeStamp.Format":
        return f"{prefix}: the request timestamp was rejected; this is a bug in certsmith, please report it"
    if code == "SignatureNonceUsed":
        return f"{prefix}: a request nonce was reused; retry, and report it if it happens again"
    if code in _FORBIDDEN_CODES:
        note = f" {product.ram_note}" if product.ram_note else ""
        return (
            f"{prefix}: the RAM user of AccessKey {access_key_id} may not call {action}. Grant it the "
            f"actions {', '.join(product.ram_actions)}{note}, or attach the system policy {product.ram_policy}"
        )
    if code is not None and code.startswith("InvalidSecurityToken"):
        return (
            f"{prefix}: the STS security token was rejected (expired or not issued for this AccessKey); "
            "refresh ALIBABA_CLOUD_SECURITY_TOKEN together with the AccessKey ID and secret"
        )
    if code in RETRYABLE_CODES:
        return f"{prefix}: Alibaba Cloud kept throttling the requests; retry later or lower the concurrency"
    if "string to sign" in server_message.lower():
        server_message = ""  # it echoes the signed parameters: a private key being uploaded, the STS token
    detail = f": {clean(server_message, 300)}" if server_message else ""
    return f"{prefix}{detail}"


class RpcClient:
    """Signed calls to one product's API.

    ``retry`` bounds each call (the DNS providers' :class:`~certsmith.dns.http_api.RetryPolicy`);
    ``clock`` and an httpx ``transport`` are for tests. Use one instance from one event
    loop; ``aclose`` it (or use ``async with``).
    """

    def __init__(
        self,
        settings: ApiSettings,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        self.settings = settings
        self._retry = retry or RetryPolicy(max_attempts=5)
        self._clock = clock or (lambda: datetime.now(UTC))
        url = httpx.URL(settings.endpoint)
        self._url = str(url.copy_with(path="/", query=None, fragment=None))
        self._host = url.netloc.decode("ascii")
        from certsmith._httpx_bridge import transport_for

        transport = transport or transport_for(httpx.create_ssl_context())
        self._http = httpx.AsyncClient(timeout=timeout, verify=True, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self, action: str, params: Mapping[str, str | int | bool] | None = None, *, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        """Sign and send ``action``; the answer's JSON object, or :class:`AliCloudError`.

        Values are sent as strings (``True`` as ``true``); ``RegionId`` is added for
        regional products unless given. Throttling, 5xx and transport errors are retried
        (within ``retry``, by default the client's policy).
        """
        settings = self.settings
        product = settings.product
        fields = {k: _text(v) for k, v in (params or {}).items()}
        if product.needs_region and settings.region and "RegionId" not in fields:
            fields["RegionId"] = settings.region

        def build() -> httpx.Request:
            return build_request(
                self._http, url=self._url, host=self._host, credentials=settings.credentials,
                version=product.version, signature_version=settings.signature_version,
                action=action, params=fields, now=self._clock(), in_body=True,
            )

        def unreachable(exc: httpx.TransportError) -> AliCloudError:
            return AliCloudError(
                f"cannot reach {product.name} at {settings.endpoint} ({type(exc).__name__}: "
                f"{clean(str(exc), 200)}); check the network and {product.endpoint_var}",
                product=product.name,
                action=action,
                transient=True,
            )

        return await send_with_retries(
            self._http, retry or self._retry, build,
            lambda response: classify(response, lambda body: self._error(action, response, body)),
            unreachable=unreachable, label=f"{product.name} {action}", log=log,
        )

    async def create(
        self,
        action: str,
        params: Mapping[str, str | int | bool],
        find: Callable[[], Awaitable[dict[str, Any] | None]],
    ) -> tuple[dict[str, Any], bool]:
        """Call ``action``, which creates something a repeated call would create twice; the answer and ``False``,
        or what ``find()`` found and ``True``.

        The call is not resent blindly: after a transient failure (no answer, HTTP 5xx,
        throttling: the service may have done the work all the same) ``find()`` looks for
        what it would have created, and only when it finds nothing is the call tried again,
        within the client's retry policy. Other refusals are raised at once.
        """
        policy = self._retry
        attempt = 1
        while True:
            try:
                return await self.call(action, params, retry=_ONCE), False
            except AliCloudError as exc:
                if not exc.transient or attempt >= policy.max_attempts:
                    raise
                log.debug("%s %s attempt %d: %s; looking for its result", self.settings.product.name, action,
                          attempt, exc.code or "no answer")
            await policy.backoff(attempt)
            found = await find()
            if found is not None:
                return found, True
            attempt += 1

    def _error(self, action: str, response: httpx.Response, body: dict[str, Any] | None) -> AliCloudError:
        settings = self.settings
        product = settings.product

        def describe(code: str, server_message: str) -> str:
            return describe_error(
                product=product, action=action, code=code, server_message=server_message,
                access_key_id=settings.credentials.access_key_id,
                offset=clock_offset(response.headers.get("date"), self._clock()),
            )

        return api_error(
            AliCloudError, response, body, name=product.name, action=action, endpoint_var=product.endpoint_var,
            describe=describe,
        )


ErrorT = TypeVar("ErrorT", bound=AliCloudError)


def classify(
    response: httpx.Response, error: Callable[[dict[str, Any] | None], AliCloudError]
) -> dict[str, Any] | Retryable:
    """An Alibaba Cloud API answer's JSON object; else ``error(body)``, to retry (throttling, HTTP 5xx, a nonce
    seen twice) or raised."""
    body = json_object(response)
    code = body.get("Code") if body is not None else None
    if response.status_code < 400 and body is not None and not code:
        return body
    exc = error(body)
    if code in RETRYABLE_CODES or code in RESENT_CODES or response.status_code >= 500:
        exc.transient = True
        return Retryable(exc, reason=str(code or ""))
    raise exc


def api_error(
    kind: type[ErrorT],
    response: httpx.Response,
    body: dict[str, Any] | None,
    *,
    name: str,
    action: str,
    endpoint_var: str,
    describe: Callable[[str, str], str],
) -> ErrorT:
    """The ``kind`` of error for a refused call of product ``name``: ``describe(code, server message)`` words it
    (the request ID appended); an answer that is not JSON points at ``endpoint_var``."""
    if body is None:
        return kind(
            f"{name} {action} failed: HTTP {response.status_code} with a non-JSON answer "
            f"({clean(response.text, 200)!r}); check {endpoint_var}",
            product=name,
            action=action,
            status=response.status_code,
        )
    code = str(body.get("Code") or f"HTTP{response.status_code}")
    server_message = str(body.get("Message", ""))
    message = describe(code, server_message)
    request_id = body.get("RequestId")
    if request_id:
        message += f" [RequestId {clean(str(request_id), 80)}]"
    return kind(
        message,
        product=name,
        action=action,
        code=code,
        status=response.status_code,
        request_id=str(request_id) if request_id else None,
        server_message=server_message,
    )


def _text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
