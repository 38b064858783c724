"""The DNS provider contract, the provider registry and the recipe every provider follows.

A provider only creates and deletes TXT records at absolute names (with the trailing
dot). Everything else about dns-01 -- deriving ``_acme-challenge`` names, following
CNAMEs, waiting for propagation -- belongs to :mod:`certsmith.challenges.dns01` and
:mod:`certsmith.dns.zone`, so a new provider stays small.

Built-in providers are listed in ``_BUILTINS`` and imported only when used; third
parties register theirs under the ``certsmith.dns_providers`` entry-point group (the
entry point's name is the provider's name, its value ``module:Class``). A name
``lexicon:<provider>`` is routed to :mod:`certsmith.dns.lexicon_bridge`, which drives
that dns-lexicon provider; those names are not part of :func:`available_providers`
(``certsmith dns list --lexicon`` shows them).

The recipe
----------
One module per provider (``certsmith/dns/<name>.py``) holding:

1. ``ENV``: a tuple of :class:`EnvVar` -- every variable the provider reads, with the
   ecosystem's usual names (``aliases`` for lego's and acme.sh's spellings), ``secret``
   for credentials (those may also be given as ``<NAME>_FILE``), ``required`` and
   ``default``. A ``<PROVIDER>_PROPAGATION_TIMEOUT`` variable lets users override
   the metadata's ``default_propagation_timeout``.
2. A frozen dataclass config, e.g. ``ExampleConfig``, with a ``propagation_timeout:
   float | None`` field and a classmethod ``from_env(env) -> Self`` -- the one place
   that validates. It starts with :func:`read_env` (one :class:`ProviderConfigError`
   naming every missing variable; secrets registered for redaction) and turns text
   into values with :func:`parse_int`, :func:`parse_seconds` (:func:`optional_seconds`
   for an unset-means-default variable), :func:`parse_bool` and :func:`parse_host_port`,
   whose :class:`ConfigError` messages name the variable.
   Keep secrets out of ``repr`` (``field(repr=False)``).
3. The provider class, a ``ConfiguredProvider[ExampleConfig]`` (which gives ``repr`` and the
   ``propagation_timeout`` property: ``config.propagation_timeout`` or the metadata's default):
   ``info: ClassVar[ProviderInfo]`` (name, title, description, ``env=ENV``, an example, links,
   ``default_propagation_timeout``), ``__init__(config)`` setting ``self.config``,
   ``from_env`` returning ``cls(ExampleConfig.from_env(env))``, and the async
   ``present``/``cleanup``/``aclose`` of :class:`DnsProvider`.
   Import heavy libraries (httpx, SDKs) inside the methods that need them, so that
   ``certsmith dns list`` can read ``info`` without them.
   A provider for an HTTP API subclasses :class:`certsmith.dns.http_api.RecordApiProvider`
   (records with ids) or :class:`~certsmith.dns.http_api.HttpApiProvider` (record sets,
   anything else): they hold the httpx client, the retry options and back-off, the one
   retry loop (``send_with_retries``), per-record locks and the map of created records,
   so the provider writes only its signing, its calls and its error messages.
4. An entry in ``_BUILTINS`` (or a ``certsmith.dns_providers`` entry point), then run
   ``python scripts/dns_providers_readme.py`` to regenerate the README's table.
5. Tests: a valid environment in ``GOOD_ENV`` of ``tests/unit/test_dns_providers.py``
   (configuration round trip) and a backend in ``BACKENDS`` of
   ``tests/e2e/test_dns_providers.py`` -- an emulator of its API in ``tests/support/``
   -- for :func:`certsmith.testing.conformance.check_provider`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, Self, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from certsmith import _plugins

# EnvVar and parse_bool are shared with the deploy targets; providers import them from here.
from certsmith._env import EnvVar as EnvVar
from certsmith._env import parse_bool as parse_bool
from certsmith._env import resolve
from certsmith.errors import ConfigError, ProviderConfigError


@dataclass(frozen=True)
class ProviderInfo:
    """What ``certsmith dns list`` and the README show about a provider.

    ``default_propagation_timeout`` is how long the solver waits for the records to
    become visible unless the user overrides it (flag or ``<PROVIDER>_PROPAGATION_TIMEOUT``).
    """

    name: str
    title: str
    description: str
    env: tuple[EnvVar, ...] = ()
    example: str = ""
    links: tuple[str, ...] = ()
    default_propagation_timeout: float = 120.0
    extra: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class DnsProvider(Protocol):
    """Creates and deletes TXT records.

    ``fqdn`` is always absolute and lower case, e.g. ``_acme-challenge.example.com.``.
    ``present`` must be idempotent (an identical existing record is fine) and must
    remember what it created so that ``cleanup`` deletes exactly that record and
    never another TXT value at the same name. Both may be called concurrently for
    different names and for different values at the same name.
    """

    info: ClassVar[ProviderInfo]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the provider from environment variables (see ``info.env``)."""
        ...

    @property
    def propagation_timeout(self) -> float:
        """Seconds the solver waits for the records to become visible.

        The configured override (``<PROVIDER>_PROPAGATION_TIMEOUT``) when set, else
        ``info.default_propagation_timeout``.
        """
        ...

    async def present(self, fqdn: str, value: str) -> None:
        """Create the TXT record ``fqdn`` = ``value``."""
        ...

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Delete the TXT record ``fqdn`` = ``value`` that ``present`` created."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the provider is no longer needed."""
        ...


class ProviderConfig(Protocol):
    """What :class:`ConfiguredProvider` needs of a provider's config dataclass."""

    @property
    def propagation_timeout(self) -> float | None: ...


C = TypeVar("C", bound=ProviderConfig)


class ConfiguredProvider(Generic[C]):
    """What every provider built from a config has: ``config``, ``repr`` and ``propagation_timeout``
    (the config's override, else ``info.default_propagation_timeout``). Its ``__init__`` sets ``self.config``."""

    info: ClassVar[ProviderInfo]
    config: C

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @property
    def propagation_timeout(self) -> float:
        """The configured ``<PROVIDER>_PROPAGATION_TIMEOUT``, else ``info.default_propagation_timeout``."""
        return self.config.propagation_timeout or self.info.default_propagation_timeout


# -- reading the environment ------------------------------------------------------------


def read_env(
    env: Mapping[str, str], variables: tuple[EnvVar, ...], provider: str, hint: str = ""
) -> dict[str, str]:
    """Resolve ``variables`` from ``env`` by name, alias or ``<NAME>_FILE``.

    Returns a mapping from each variable's primary name to its value (defaults
    applied, absent optional variables left out). Raises one
    :class:`ProviderConfigError` naming every missing required variable. The value
    of every ``secret`` variable is registered with :func:`certsmith._redact.add_secret`,
    so it never shows in a log line, however the provider uses it.
    """
    values, missing = resolve(env, variables)
    if missing:
        raise ProviderConfigError(provider, [" or ".join((var.name, *var.aliases)) for var in missing], hint)
    return values


# -- turning text into values -----------------------------------------------------------
#
# Each parser names the variable (``name``) in its error, so a provider's ``from_env``
# needs no messages of its own for the common cases.


def parse_int(name: str, text: str, *, minimum: int = 1, maximum: int | None = None, unit: str = "seconds") -> int:
    """A whole number from ``minimum`` (default 1: positive) to ``maximum``."""
    try:
        number = int(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of {unit}, not {text!r}") from None
    if maximum is not None and not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum} {unit}, not {number}")
    if number < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise ConfigError(f"{name} must be {bound}, not {text!r}")
    return number


_DURATION = re.compile(r"\s*([+-]?\d+(?:\.\d*)?|\.\d+)\s*(s|m|h)?\s*", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_seconds(name: str, text: str) -> float:
    """A positive duration: a number of seconds (``90``, ``2.5``) or with a unit (``90s``, ``2m``, ``1h``)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ConfigError(f"{name} must be a number of seconds, not {text!r}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "").lower()]
    if not seconds > 0:
        raise ConfigError(f"{name} must be positive, not {text!r}")
    return seconds


def optional_seconds(values: Mapping[str, str], name: str) -> float | None:
    """:func:`parse_seconds` of ``values[name]``, or ``None`` when the variable is not set."""
    text = values.get(name)
    return None if text is None else parse_seconds(name, text)


def parse_host_port(text: str, what: str, *, default_port: int = 53, require_ip: bool = False) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address.

    IP addresses come back in their compressed form; a host name is kept as written
    unless ``require_ip`` rejects it. ``what`` names the setting in errors (a
    variable's name or e.g. ``DNS resolver``); the text as written is quoted after it.
    """
    spec = text.strip()
    what = f"{what} {text!r}"
    ipv6_form = "write IPv6 addresses as [::1] or [::1]:53"
    if not spec:
        raise ConfigError(f"{what}: empty; write HOST:PORT, e.g. 127.0.0.1:53 or [::1]:53")
    port_text: str | None = None
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{what}: {ipv6_form}")
        if rest:
            port_text = rest[1:]
        if not is_ip_address(host, 6):
            raise ConfigError(f"{what}: brackets are for IPv6 addresses only; {host!r} is not an IPv6 address")
    elif spec.count(":") > 1:
        host = spec
        if not is_ip_address(host, 6):
            raise ConfigError(f"{what}: {host!r} is not an IP address; {ipv6_form}")
    else:
        host, colon, port_text_or_empty = spec.partition(":")
        port_text = port_text_or_empty if colon else None
    if not host:
        raise ConfigError(f"{what} has no host")
    if is_ip_address(host):
        host = ipaddress.ip_address(host).compressed
    elif require_ip:
        raise ConfigError(f"{what}: {host!r} is not an IP address; give an address, e.g. 127.0.0.1:53 or [::1]:53")
    if port_text is None:
        return host, default_port
    if not port_text:
        raise ConfigError(f"{what}: the port after ':' is missing; it must be a number from 1 to 65535")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{what}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def is_ip_address(text: str, version: int | None = None) -> bool:
    """Whether ``text`` is an IP address (of ``version`` 4 or 6 when given)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version

def check_endpoint(variable: str, value: str, example: str) -> None:
    """Refuse an API endpoint that is not an http(s) URL, or plain http to anything but loopback.

    Endpoint overrides exist for private deployments and for tests; credentials never travel
    in clear text to another machine. ``example`` shows the expected form in the error.
    """
    try:
        url = urlsplit(value)
        host = url.hostname
        url.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{variable} {value!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{variable} {value!r} must look like {example}")
    if url.scheme == "http" and not _is_loopback(host):
        raise ConfigError(f"{variable} {value!r}: plain http is only allowed for loopback test servers; use https")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_BUILTINS: dict[str, str] = {
    "exec": "certsmith.dns.exec:ExecProvider",
    "manual": "certsmith.dns.manual:ManualProvider",
    "acme-dns": "certsmith.dns.acmedns:AcmeDnsProvider",
    "alidns": "certsmith.dns.alidns:AlidnsProvider",
    "cloudflare": "certsmith.dns.cloudflare:CloudflareProvider",
    "huaweicloud": "certsmith.dns.huaweicloud:HuaweiCloudProvider",
    "rfc2136": "certsmith.dns.rfc2136:Rfc2136Provider",
    "route53": "certsmith.dns.route53:Route53Provider",
    "tencentcloud": "certsmith.dns.tencentcloud:TencentCloudProvider",
}

ENTRY_POINT_GROUP = "certsmith.dns_providers"
#: ``lexicon:<provider>`` names a dns-lexicon provider (see :mod:`certsmith.dns.lexicon_bridge`).
LEXICON_PREFIX = "lexicon:"


_REGISTRY = _plugins.Registry(_BUILTINS, ENTRY_POINT_GROUP)


def builtin_providers() -> list[str]:
    """Names of the providers that ship with certsmith, sorted (what the README documents)."""
    return _REGISTRY.builtin_names()


def available_providers() -> list[str]:
    """Names of every provider, built-in or installed, sorted."""
    return _REGISTRY.available()


def provider_class(name: str) -> type[DnsProvider]:
    """The provider class registered as ``name``; imported on first use.

    ``lexicon:<provider>`` gives a class made for that dns-lexicon provider.
    """
    if name.startswith(LEXICON_PREFIX):
        from certsmith.dns.lexicon_bridge import lexicon_provider_class

        return lexicon_provider_class(name[len(LEXICON_PREFIX) :])
    target = _REGISTRY.ref(name)
    if target is None:
        known = ", ".join(available_providers())
        raise ConfigError(f"unknown DNS provider {name!r}; available: {known}, or lexicon:<provider> (dns-lexicon)")
    cls: type[DnsProvider] = _plugins.load(target)
    return cls


def load_provider(name: str, env: Mapping[str, str] | None = None) -> DnsProvider:
    """Instantiate provider ``name`` from ``env`` (default: the process environment)."""
    return provider_class(name).from_env(os.environ if env is None else env)
