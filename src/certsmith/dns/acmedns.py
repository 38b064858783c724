"""acme-dns provider (https://github.com/joohoi/acme-dns).

acme-dns is a tiny DNS server with an HTTP API that serves only ACME challenge
records. Each domain gets an account once (``POST /register``): a username, a
password and a random ``subdomain`` whose ``fulldomain`` lives in acme-dns's own
zone. The user delegates the challenge name once with a CNAME::

    _acme-challenge.example.com.  CNAME  <subdomain>.auth.example.org.

and from then on ``POST /update`` (headers ``X-Api-User``/``X-Api-Key``, body
``{"subdomain", "txt"}``) sets the TXT value. certsmith's dns-01 solver follows that
CNAME and calls :meth:`AcmeDnsProvider.present` with the *target* name, which the
provider maps back to the stored account.

The flow, as in lego:

* first run for a domain: register, store the credentials, print the CNAME to create
  and fail with that instruction;
* while the CNAME is missing (``present`` is called with ``_acme-challenge.<domain>``):
  fail with the same instruction;
* once the CNAME exists (``present`` is called with the fulldomain): update.

Credentials are stored as JSON (lego's format: ``{"example.com": {"username",
"password", "fulldomain", "subdomain", "allowfrom"}}``, so a lego storage file can be
reused) with mode 0600, at ``ACME_DNS_STORAGE_PATH`` or
``$XDG_CONFIG_HOME/certsmith/acme-dns.json`` (``~/.config/certsmith/acme-dns.json``):
a provider does not know certsmith's ``--state-dir``. acme.sh's pre-registered
``ACMEDNS_USERNAME``/``ACMEDNS_PASSWORD``/``ACMEDNS_SUBDOMAIN`` are used for every name
instead when set.

acme-dns keeps the two most recent TXT values per subdomain (enough for a domain and
its wildcard) and has no delete: ``cleanup`` deletes nothing; the next update
overwrites the oldest value. A third concurrent value for one subdomain is refused,
because it would push out one still being validated.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, Unpack

from certsmith._http import json_object
from certsmith._redact import add_secret
from certsmith.dns.base import EnvVar, ProviderInfo, check_endpoint, optional_seconds, read_env
from certsmith.dns.http_api import HttpApiProvider, HttpOptions, Retryable, RetryPolicy
from certsmith.errors import ConfigError, DnsError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

NAME = "acme-dns"
CHALLENGE_LABEL = "_acme-challenge."
#: Values acme-dns serves per subdomain: the two most recent updates.
VALUES_PER_SUBDOMAIN = 2

ENV = (
    EnvVar(
        "ACME_DNS_API_BASE",
        "URL of the acme-dns API, e.g. https://auth.acme-dns.io",
        required=True,
        aliases=("ACMEDNS_BASE_URL",),
    ),
    EnvVar(
        "ACME_DNS_STORAGE_PATH",
        "JSON file keeping the registered accounts (mode 0600; lego's format). "
        "Default: $XDG_CONFIG_HOME/certsmith/acme-dns.json",
    ),
    EnvVar("ACME_DNS_ALLOWLIST", "Comma-separated CIDR networks allowed to update, sent when registering"),
    EnvVar("ACMEDNS_USERNAME", "acme.sh: username of an account registered beforehand (used for every name)"),
    EnvVar("ACMEDNS_PASSWORD", "acme.sh: password of that account", secret=True),
    EnvVar("ACMEDNS_SUBDOMAIN", "acme.sh: subdomain of that account"),
    EnvVar("ACME_DNS_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
    EnvVar("ACME_DNS_HTTP_TIMEOUT", "Seconds one API request may take", default="30"),
)


class AcmeDnsError(DnsError):
    """An acme-dns call failed; ``status`` is the HTTP status, ``code`` the ``error`` field."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CnameRequired(AcmeDnsError):
    """The challenge name is not delegated to acme-dns yet; the message says which CNAME to create."""

    def __init__(self, message: str, *, domain: str, fulldomain: str) -> None:
        super().__init__(message)
        self.domain = domain
        self.fulldomain = fulldomain


@dataclass(frozen=True)
class Account:
    """One acme-dns registration; ``repr`` never shows the password."""

    username: str
    password: str = field(repr=False)
    fulldomain: str
    subdomain: str
    allowfrom: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": self.password,
            "fulldomain": self.fulldomain,
            "subdomain": self.subdomain,
            "allowfrom": list(self.allowfrom),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Account:
        try:
            account = cls(
                username=str(data["username"]),
                password=str(data["password"]),
                fulldomain=str(data["fulldomain"]).lower().rstrip("."),
                subdomain=str(data["subdomain"]),
                allowfrom=tuple(str(a) for a in data.get("allowfrom") or ()),
            )
        except (KeyError, TypeError):
            raise ConfigError(f"{where} lacks username, password, fulldomain or subdomain") from None
        add_secret(account.password)
        return account


def default_storage_path() -> Path:
    """``$XDG_CONFIG_HOME/certsmith/acme-dns.json``, else ``~/.config/certsmith/acme-dns.json``."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "certsmith" / "acme-dns.json"


@dataclass(frozen=True)
class AcmeDnsConfig:
    """Settings of :class:`AcmeDnsProvider`; ``preset`` is acme.sh's pre-registered account."""

    api_base: str
    storage_path: Path = field(default_factory=default_storage_path)
    allowlist: tuple[str, ...] = ()
    preset: Account | None = None
    propagation_timeout: float | None = None
    http_timeout: float = 30.0

    def __post_init__(self) -> None:
        check_endpoint("ACME_DNS_API_BASE", self.api_base, "https://auth.example.org")
        for network in self.allowlist:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"ACME_DNS_ALLOWLIST: {network!r} is not a CIDR network, e.g. 192.0.2.0/24") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read lego's ``ACME_DNS_*`` (and acme.sh's ``ACMEDNS_*``) variables."""
        values = read_env(env, ENV, NAME, hint="the URL of your acme-dns server")
        preset_fields = [
            values.get(n, "").strip() for n in ("ACMEDNS_USERNAME", "ACMEDNS_PASSWORD", "ACMEDNS_SUBDOMAIN")
        ]
        preset = None
        if any(preset_fields):
            if not all(preset_fields):
                raise ConfigError(
                    "ACMEDNS_USERNAME, ACMEDNS_PASSWORD and ACMEDNS_SUBDOMAIN go together: set all three or none"
                )
            username, password, subdomain = preset_fields
            preset = Account(username, password, fulldomain="", subdomain=subdomain)
        storage = values.get("ACME_DNS_STORAGE_PATH", "").strip()
        allow = values.get("ACME_DNS_ALLOWLIST", "")
        return cls(
            api_base=values["ACME_DNS_API_BASE"].strip().rstrip("/"),
            storage_path=Path(storage).expanduser() if storage else default_storage_path(),
            allowlist=tuple(a.strip() for a in allow.split(",") if a.strip()),
            preset=preset,
            propagation_timeout=optional_seconds(values, "ACME_DNS_PROPAGATION_TIMEOUT"),
            http_timeout=optional_seconds(values, "ACME_DNS_HTTP_TIMEOUT") or 30.0,
        )





class AcmeDnsProvider(HttpApiProvider[AcmeDnsConfig]):
    """Sets TXT values through an acme-dns server (see the module docstring).

    ``max_attempts`` bounds the tries per call (5xx, 429 and transport errors are
    retried with back-off from ``retry_delay``); ``transport`` lets tests supply an
    httpx transport. Use one instance from one event loop.
    """

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="acme-dns",
        description=(
            "An acme-dns server: registers once per domain, stores the credentials (mode 0600) and asks "
            "you to create one CNAME; then only the challenge TXT values are updated. acme-dns keeps "
            "two values per name and cannot delete, so cleanup leaves the last values in place."
        ),
        env=ENV,
        example=(
            "export ACME_DNS_API_BASE=https://auth.acme-dns.io\n"
            "certsmith issue -d example.com -d '*.example.com' --dns acme-dns   # prints the CNAME to create\n"
            "certsmith issue -d example.com -d '*.example.com' --dns acme-dns   # after creating it"
        ),
        links=("https://github.com/joohoi/acme-dns", "https://go-acme.github.io/lego/dns/acme-dns/"),
        default_propagation_timeout=120.0,
    )

    default_retry = RetryPolicy(max_attempts=4, max_retry_delay=10.0)

    def __init__(self, config: AcmeDnsConfig, **options: Unpack[HttpOptions]) -> None:
        import asyncio  # here, not at the top: reading `info` must not need it

        super().__init__(config, **options)
        self._storage_lock = asyncio.Lock()
        self._live: dict[str, list[str]] = {}  # subdomain -> values presented and not cleaned up

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from ``ACME_DNS_*`` (or acme.sh's ``ACMEDNS_*``) variables."""
        return cls(AcmeDnsConfig.from_env(env))

    def _default_timeout(self) -> float:
        return self.config.http_timeout

    # -- the contract --

    async def present(self, fqdn: str, value: str) -> None:
        """Update the account behind ``fqdn``; register and ask for the CNAME when there is none yet."""
        name = fqdn.strip().lower().rstrip(".")
        account = self.config.preset or await self._account_for(name)
        live = self._live.setdefault(account.subdomain, [])
        if value in live:
            return  # already set in this session; updating again could push out the other value
        if len(live) >= VALUES_PER_SUBDOMAIN:
            raise AcmeDnsError(
                f"acme-dns keeps only {VALUES_PER_SUBDOMAIN} TXT values per name and {name} already has "
                f"{len(live)} in use; issue fewer names that share it (a domain and its wildcard are fine)"
            )
        live.append(value)
        try:
            await self._update(account, value, name)
        except BaseException:
            live.remove(value)
            raise
        log.info("acme-dns: TXT %s = %s (subdomain %s)", name, value, account.subdomain)

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Nothing to delete: acme-dns has no delete, and its next update overwrites the oldest value."""
        name = fqdn.strip().lower().rstrip(".")
        for values in self._live.values():
            if value in values:
                values.remove(value)
                break
        log.debug("acme-dns: %s = %s stays until the next update (acme-dns cannot delete)", name, value)

    # -- accounts --

    async def _account_for(self, name: str) -> Account:
        async with self._storage_lock:
            accounts = self._load()
            for account in accounts.values():
                if account.fulldomain == name:
                    return account
            if not name.startswith(CHALLENGE_LABEL):
                known = ", ".join(sorted(accounts)) or "none"
                raise AcmeDnsError(
                    f"{name} is not a challenge name (_acme-challenge.<domain>) nor the acme-dns name of an "
                    f"account in {self.config.storage_path} (accounts for: {known})"
                )
            domain = name[len(CHALLENGE_LABEL) :]
            stored = accounts.get(domain)
            if stored is None:
                stored = accounts[domain] = await self._register()
                self._save(accounts)
                log.warning(
                    "acme-dns: registered %s at %s; create this DNS record, then run certsmith again: "
                    "_acme-challenge.%s. CNAME %s.",
                    domain,
                    self.config.api_base,
                    domain,
                    stored.fulldomain,
                )
            raise CnameRequired(
                f"_acme-challenge.{domain} is not delegated to acme-dns yet: create the DNS record "
                f"'_acme-challenge.{domain}. CNAME {stored.fulldomain}.' and run again "
                f"(credentials in {self.config.storage_path})",
                domain=domain,
                fulldomain=stored.fulldomain,
            )

    def _load(self) -> dict[str, Account]:
        path = self.config.storage_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read ACME_DNS_STORAGE_PATH {path}: {exc.strerror}") from None
        try:
            data = json.loads(text or "{}")
        except ValueError:
            raise ConfigError(f"ACME_DNS_STORAGE_PATH {path} is not valid JSON") from None
        if not isinstance(data, dict):
            raise ConfigError(f"ACME_DNS_STORAGE_PATH {path} must hold a JSON object of domain -> account")
        return {
            str(domain).lower().rstrip("."): Account.from_json(entry, f"{path} entry {domain!r}")
            for domain, entry in data.items()
            if isinstance(entry, dict)
        }

    def _save(self, accounts: Mapping[str, Account]) -> None:
        from certsmith._atomic import replace_file

        path = self.config.storage_path
        data = {domain: account.to_json() for domain, account in sorted(accounts.items())}
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            replace_file(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the acme-dns credentials to {path} ({exc.strerror}); set ACME_DNS_STORAGE_PATH "
                "to a writable file"
            ) from None

    # -- the wire --

    async def _register(self) -> Account:
        body: dict[str, Any] = {"allowfrom": list(self.config.allowlist)} if self.config.allowlist else {}
        data = await self._post("register", "/register", body, {}, expect=201)
        account = Account.from_json(data, f"the answer of {self.config.api_base}/register")
        log.info("acme-dns: registered subdomain %s", account.subdomain)
        return account

    async def _update(self, account: Account, value: str, name: str) -> None:
        headers = {"X-Api-User": account.username, "X-Api-Key": account.password}
        await self._post("update", "/update", {"subdomain": account.subdomain, "txt": value}, headers, name=name)

    async def _post(
        self,
        call: str,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        expect: int = 200,
        name: str | None = None,
    ) -> dict[str, Any]:
        """POST ``path``; the answer's JSON object when the status is ``expect`` (5xx and 429 are retried).

        A ``register`` answer must be a JSON object; an ``update`` answer may be anything.
        """
        url = self.config.api_base + path

        def classify(response: httpx.Response) -> dict[str, Any] | Retryable:
            data = json_object(response)
            if response.status_code == expect and (data is not None or call != "register"):
                return data or {}
            error = self._error(call, response, data, name)
            if response.status_code == 429 or response.status_code >= 500:
                return Retryable(error, reason=str(response.status_code))
            raise error

        def unreachable(exc: httpx.TransportError) -> AcmeDnsError:
            return AcmeDnsError(
                f"cannot reach acme-dns at {self.config.api_base} ({type(exc).__name__}: {exc}); "
                "check ACME_DNS_API_BASE"
            )

        return await self.send_with_retries(
            lambda: self._http.build_request("POST", url, json=body, headers=headers),
            classify,
            unreachable=unreachable,
            label=call,
        )

    def _error(
        self, call: str, response: httpx.Response, data: dict[str, Any] | None, name: str | None = None
    ) -> AcmeDnsError:
        status = response.status_code
        code = str(data.get("error")) if data is not None and data.get("error") else None
        what = f"acme-dns {call} at {self.config.api_base} failed (HTTP {status}" + (f", {code})" if code else ")")
        if call == "update" and status == 401:
            where = (
                "ACMEDNS_USERNAME / ACMEDNS_PASSWORD / ACMEDNS_SUBDOMAIN"
                if self.config.preset
                else f"the account for {name} in {self.config.storage_path}"
            )
            return AcmeDnsError(
                f"{what}: the server does not accept {where} (unknown account, wrong password, or this "
                "machine's address is outside the account's allowfrom); register again by removing that entry, "
                "then update the CNAME",
                status=status,
                code=code,
            )
        if call == "update" and code == "bad_txt":
            return AcmeDnsError(f"{what}: the TXT value was rejected", status=status, code=code)
        if call == "register" and code == "invalid_allowfrom_cidr":
            return AcmeDnsError(f"{what}: check ACME_DNS_ALLOWLIST", status=status, code=code)
        if data is None:
            snippet = response.text[:200].strip()
            return AcmeDnsError(f"{what}: not an acme-dns answer ({snippet!r}); check ACME_DNS_API_BASE", status=status)
        return AcmeDnsError(what, status=status, code=code)
