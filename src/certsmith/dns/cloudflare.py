"""Cloudflare DNS provider (API v4).

Authenticates with an API token (``Authorization: Bearer``; lego's
``CLOUDFLARE_DNS_API_TOKEN``, acme.sh's ``CF_Token``) or with the account's global API
key (``CLOUDFLARE_EMAIL`` + ``CLOUDFLARE_API_KEY``). An optional second token,
``CLOUDFLARE_ZONE_API_TOKEN``, is used for the zone look-ups only, so the DNS token
may be limited to DNS:Edit.

Zones are found through the API (``GET /zones?name=``, walking up the labels of the
record name, longest first), never through public DNS. ``present`` creates one TXT
record and remembers its id (adopting an identical existing record, codes 81057 and
81058); ``cleanup`` deletes exactly that id. HTTP 429 and 5xx are retried with
bounded back-off that honours ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Self, Unpack

from certsmith._http import json_object, parse_retry_after
from certsmith.dns.base import EnvVar, ProviderInfo, check_endpoint, optional_seconds, parse_int, read_env
from certsmith.dns.http_api import HttpOptions, LookupCache, RecordApiProvider, Retryable, RetryPolicy
from certsmith.errors import ConfigError, DnsError, ProviderConfigError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

NAME = "cloudflare"
DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_TTL = 120
#: What the token needs, in the words of Cloudflare's token editor.
PERMISSIONS = "Zone:Read / DNS:Edit"
#: "The record already exists." / "An identical record already exists."
DUPLICATE_CODES = frozenset({81057, 81058})
#: "Record does not exist." (and the router's "perhaps your object identifier is invalid")
GONE_CODES = frozenset({81044, 7003})
#: Credentials the service does not know: unknown key/email, malformed or missing headers, invalid token.
#: 9109 is also "Unauthorized to access requested resource" (a missing permission): told apart by its message.
BAD_CREDENTIAL_CODES = frozenset({9103, 9106, 6003, 6111, 6102, 6103, 1000})

ENV = (
    EnvVar(
        "CLOUDFLARE_DNS_API_TOKEN",
        f"API token with the permissions {PERMISSIONS} on the zone (or set CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY)",
        secret=True,
        aliases=("CF_DNS_API_TOKEN", "CF_Token"),
    ),
    EnvVar(
        "CLOUDFLARE_ZONE_API_TOKEN",
        "Optional API token with Zone:Read used for the zone look-ups (default: the DNS token)",
        secret=True,
        aliases=("CF_ZONE_API_TOKEN",),
    ),
    EnvVar("CLOUDFLARE_EMAIL", "Account e-mail, with the global API key", aliases=("CF_API_EMAIL", "CF_Email")),
    EnvVar(
        "CLOUDFLARE_API_KEY",
        "Global API key, with CLOUDFLARE_EMAIL (an API token is safer)",
        secret=True,
        aliases=("CF_API_KEY", "CF_Key"),
    ),
    EnvVar("CLOUDFLARE_BASE_URL", "API endpoint (http:// only for loopback test servers)", default=DEFAULT_BASE_URL),
    EnvVar("CLOUDFLARE_TTL", "TTL of the TXT records, seconds (1 means automatic)", default=str(DEFAULT_TTL)),
    EnvVar("CLOUDFLARE_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
    EnvVar("CLOUDFLARE_POLLING_INTERVAL", "Accepted for lego compatibility; certsmith polls adaptively"),
    EnvVar("CLOUDFLARE_HTTP_TIMEOUT", "Seconds one API request may take", default="30"),
)

_CREDENTIALS = (
    "CLOUDFLARE_DNS_API_TOKEN or CF_DNS_API_TOKEN or CF_Token "
    "(or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY for the global API key)"
)


class CloudflareError(DnsError):
    """A Cloudflare API call failed; ``codes`` are the ``errors[].code`` values, ``status`` the HTTP status."""

    def __init__(self, message: str, *, codes: tuple[int, ...] = (), status: int | None = None) -> None:
        super().__init__(message)
        self.codes = codes
        self.status = status


@dataclass(frozen=True)
class CloudflareConfig:
    """Settings of :class:`CloudflareProvider`; ``repr`` never shows a token or the key."""

    dns_token: str | None = field(default=None, repr=False)
    zone_token: str | None = field(default=None, repr=False)
    email: str | None = None
    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    ttl: int = DEFAULT_TTL
    propagation_timeout: float | None = None
    http_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.dns_token and not (self.email and self.api_key):
            missing = [_CREDENTIALS]
            if self.email and not self.api_key:
                missing = ["CLOUDFLARE_API_KEY or CF_API_KEY or CF_Key (CLOUDFLARE_EMAIL is set)"]
            elif self.api_key and not self.email:
                missing = ["CLOUDFLARE_EMAIL or CF_API_EMAIL or CF_Email (CLOUDFLARE_API_KEY is set)"]
            raise ProviderConfigError(NAME, missing, f"create an API token with {PERMISSIONS}")
        if self.ttl != 1 and not 30 <= self.ttl <= 86400:
            raise ConfigError(f"CLOUDFLARE_TTL must be 1 (automatic) or between 30 and 86400 seconds, not {self.ttl}")
        check_endpoint("CLOUDFLARE_BASE_URL", self.base_url, DEFAULT_BASE_URL)

    @property
    def auth(self) -> str:
        """Which credential is used, for messages: ``API token`` or ``global API key of <email>``."""
        return "API token" if self.dns_token else f"global API key of {self.email}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read lego's ``CLOUDFLARE_*`` variables (acme.sh's ``CF_*`` as aliases)."""
        values = read_env(env, ENV, NAME, hint=f"create an API token with {PERMISSIONS}")
        return cls(
            dns_token=values.get("CLOUDFLARE_DNS_API_TOKEN", "").strip() or None,
            zone_token=values.get("CLOUDFLARE_ZONE_API_TOKEN", "").strip() or None,
            email=values.get("CLOUDFLARE_EMAIL", "").strip() or None,
            api_key=values.get("CLOUDFLARE_API_KEY", "").strip() or None,
            base_url=values["CLOUDFLARE_BASE_URL"].strip().rstrip("/"),
            ttl=parse_int("CLOUDFLARE_TTL", values["CLOUDFLARE_TTL"], maximum=86400),
            propagation_timeout=optional_seconds(values, "CLOUDFLARE_PROPAGATION_TIMEOUT"),
            http_timeout=optional_seconds(values, "CLOUDFLARE_HTTP_TIMEOUT") or 30.0,
        )





@dataclass(frozen=True)
class Zone:
    """A Cloudflare zone: its id and name (lower case, no trailing dot)."""

    id: str
    name: str


def candidate_zones(fqdn: str) -> list[str]:
    """The names a zone of ``fqdn`` could have, longest first (``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``)."""
    labels = fqdn.strip().lower().rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


class CloudflareProvider(RecordApiProvider[CloudflareConfig, tuple[Zone, str]]):
    """Creates and deletes TXT records through Cloudflare's API v4.

    Keyword arguments tune retries (``max_attempts`` per call; back-off from
    ``retry_delay`` doubling up to ``max_retry_delay`` seconds, ``Retry-After`` honoured
    up to that cap) and let tests supply an httpx ``transport``. Use one instance from
    one event loop.
    """

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="Cloudflare",
        description=(
            "Cloudflare DNS through its API v4 with an API token (or the global API key); zones are found "
            f"through the API, so delegated sub-zones work. The token needs {PERMISSIONS} on the zone."
        ),
        env=ENV,
        example=(
            "export CLOUDFLARE_DNS_API_TOKEN_FILE=/run/secrets/cloudflare-token\n"
            "certsmith issue -d example.com -d '*.example.com' --dns cloudflare"
        ),
        links=(
            "https://developers.cloudflare.com/api/resources/dns/subresources/records/",
            "https://developers.cloudflare.com/fundamentals/api/get-started/create-token/",
        ),
        default_propagation_timeout=120.0,
        extra={"permissions": PERMISSIONS},
    )

    default_retry = RetryPolicy(max_retry_delay=30.0)

    def __init__(self, config: CloudflareConfig, **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, **options)
        self._zones: LookupCache[str, Zone | None] = LookupCache()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from ``CLOUDFLARE_*`` (or ``CF_*``) variables."""
        return cls(CloudflareConfig.from_env(env))

    def _default_timeout(self) -> float:
        return self.config.http_timeout

    # -- the contract: present and cleanup (RecordApiProvider) run these under the record's lock --

    async def _create_record(self, fqdn: str, value: str) -> tuple[Zone, str]:
        zone = await self.find_zone(fqdn)
        record_id = await self._create(zone, fqdn, value)
        log.info("cloudflare: TXT %s = %s in zone %s, record %s", fqdn, value, zone.name, record_id)
        return zone, record_id

    async def _delete_record(self, fqdn: str, value: str, created: tuple[Zone, str]) -> None:
        zone, record_id = created
        try:
            await self._send("DELETE", f"/zones/{zone.id}/dns_records/{record_id}", zone=zone)
        except CloudflareError as exc:
            if not set(exc.codes) & GONE_CODES:
                raise
            log.info("cloudflare: record %s was already gone", record_id)
        log.info("cloudflare: deleted TXT %s = %s (record %s)", fqdn, value, record_id)

    # -- zones and records --

    async def find_zone(self, fqdn: str) -> Zone:
        """The zone holding ``fqdn``: ``GET /zones?name=`` for each parent name, longest first, cached."""
        tried = candidate_zones(fqdn)
        for name in tried:
            zone = await self._zones.get(name, partial(self._zone_named, name))
            if zone is not None:
                return zone
        raise CloudflareError(
            f"no Cloudflare zone contains {fqdn} for this {self.config.auth}: the zone is not in the account, "
            f"or the token may not read it. Give the token {PERMISSIONS} on the zone "
            f"(tried {', '.join(tried)})"
        )

    async def _zone_named(self, name: str) -> Zone | None:
        body = await self._send("GET", "/zones", params={"name": name}, zone_lookup=True)
        result = body.get("result")
        zones = result if isinstance(result, list) else []
        for item in zones:
            if isinstance(item, dict) and str(item.get("name", "")).lower().rstrip(".") == name:
                return Zone(id=str(item["id"]), name=name)
        return None

    async def _create(self, zone: Zone, fqdn: str, value: str) -> str:
        body = {"type": "TXT", "name": fqdn.rstrip("."), "content": value, "ttl": self.config.ttl}
        try:
            answer = await self._send("POST", f"/zones/{zone.id}/dns_records", json=body, zone=zone)
        except CloudflareError as exc:
            if not set(exc.codes) & DUPLICATE_CODES:
                raise
            codes, status = exc.codes, exc.status
            return await self.adopt(
                self._find(zone, fqdn, value),
                lambda: CloudflareError(
                    f"Cloudflare reported TXT {fqdn} = {value} as existing, but no identical record is listed; "
                    "retry later",
                    codes=codes,
                    status=status,
                ),
            )
        result = answer.get("result")
        if not isinstance(result, dict) or "id" not in result:
            raise CloudflareError(f"Cloudflare created TXT {fqdn} but returned no record id")
        return str(result["id"])

    async def _find(self, zone: Zone, fqdn: str, value: str) -> str | None:
        """The id of TXT ``fqdn`` = ``value`` (every page; matched exactly here)."""
        name = fqdn.rstrip(".")
        page = 1
        while True:
            params = {"type": "TXT", "name": name, "page": str(page), "per_page": "100"}
            records, info = await self._call_paged(f"/zones/{zone.id}/dns_records", params, zone)
            for record in records:
                if (
                    str(record.get("name", "")).lower().rstrip(".") == name
                    and record.get("type") == "TXT"
                    and str(record.get("content", "")) in (value, f'"{value}"')
                ):
                    return str(record["id"])
            total_pages = int(info.get("total_pages") or 0)
            if not records or page >= total_pages or page >= 1000:
                return None
            page += 1

    # -- the wire --

    def _headers(self, zone_lookup: bool) -> dict[str, str]:
        cfg = self.config
        headers = {"accept": "application/json"}
        token = (cfg.zone_token or cfg.dns_token) if zone_lookup else cfg.dns_token
        if token:
            headers["authorization"] = f"Bearer {token}"
        else:
            assert cfg.email and cfg.api_key
            headers["x-auth-email"] = cfg.email
            headers["x-auth-key"] = cfg.api_key
        return headers

    async def _call_paged(
        self, path: str, params: Mapping[str, str], zone: Zone
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        body = await self._send("GET", path, params=params, zone=zone)
        result = body.get("result")
        records = [r for r in result if isinstance(r, dict)] if isinstance(result, list) else []
        info = body.get("result_info")
        return records, info if isinstance(info, dict) else {}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        zone: Zone | None = None,
        zone_lookup: bool = False,
    ) -> dict[str, Any]:
        """One API call; 429, 5xx and transport errors are retried, bounded."""
        url = self.config.base_url + path

        def build() -> httpx.Request:
            return self._http.build_request(method, url, params=params, json=json, headers=self._headers(zone_lookup))

        def classify(response: httpx.Response) -> dict[str, Any] | Retryable:
            body = json_object(response)
            if response.status_code < 400 and body is not None and body.get("success") is not False:
                return body
            error = self._error(method, path, response, body, zone, zone_lookup)
            if response.status_code == 429 or response.status_code >= 500:
                after = parse_retry_after(response.headers.get("retry-after"))
                return Retryable(error, after=after, reason=str(response.status_code))
            raise error

        def unreachable(exc: httpx.TransportError) -> CloudflareError:
            return CloudflareError(
                f"cannot reach Cloudflare at {self.config.base_url} ({type(exc).__name__}: {exc}); "
                "check the network and CLOUDFLARE_BASE_URL"
            )

        return await self.send_with_retries(build, classify, unreachable=unreachable, label=f"{method} {path}")

    def _error(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        body: dict[str, Any] | None,
        zone: Zone | None,
        zone_lookup: bool,
    ) -> CloudflareError:
        status = response.status_code
        what = f"Cloudflare {method} {path.split('?')[0]} failed"
        if body is None:
            snippet = response.text[:200].strip()
            return CloudflareError(
                f"{what}: HTTP {status} with a non-JSON answer ({snippet!r}); check CLOUDFLARE_BASE_URL",
                status=status,
            )
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        chain = [c for e in errors for c in (e.get("error_chain") or []) if isinstance(c, dict)]
        codes = tuple(int(e["code"]) for e in (*errors, *chain) if isinstance(e.get("code"), int))
        server = "; ".join(f"{e.get('code')} {e.get('message', '')}".strip() for e in (*errors, *chain))
        server = server or f"HTTP {status}"
        credential = self._credential_name(zone_lookup)
        invalid_token = any(e.get("code") == 9109 and "invalid" in str(e.get("message", "")).lower() for e in errors)
        if status == 429:
            message = f"{what} ({server}): Cloudflare kept rate limiting the requests; retry later"
        elif invalid_token or set(codes) & BAD_CREDENTIAL_CODES:
            message = (
                f"{what} ({server}): Cloudflare does not accept the {self.config.auth}; "
                f"check {credential} (a token is used as is, without 'Bearer ')"
            )
        elif 10000 in codes or 9109 in codes or status == 403:
            scope = f" on zone {zone.name}" if zone is not None else ""
            message = f"{what} ({server}): the {self.config.auth} lacks a permission{scope}; give it {PERMISSIONS}"
        else:
            message = f"{what}: {server}"
        return CloudflareError(message, codes=codes, status=status)

    def _credential_name(self, zone_lookup: bool) -> str:
        cfg = self.config
        if zone_lookup and cfg.zone_token:
            return "CLOUDFLARE_ZONE_API_TOKEN"
        if cfg.dns_token:
            return "CLOUDFLARE_DNS_API_TOKEN"
        return "CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY"
