"""The DNS provider contract and the provider registry.

A provider only creates and deletes TXT records at absolute names (with the trailing
dot). Everything else about dns-01 -- deriving ``_acme-challenge`` names, following
CNAMEs, waiting for propagation -- belongs to :mod:`certsmith.challenges.dns01` and
:mod:`certsmith.dns.zone`, so a new provider stays small.

Built-in providers are listed in ``_BUILTINS`` and imported only when used; third
parties register theirs under the ``certsmith.dns_providers`` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, Self, runtime_checkable

from certsmith.errors import ConfigError, ProviderConfigError


@dataclass(frozen=True)
class EnvVar:
    """One environment variable a provider reads.

    ``aliases`` are the names other tools use for the same setting (lego, acme.sh);
    a ``secret`` variable may also be given as ``<NAME>_FILE`` pointing to a file.
    """

    name: str
    description: str
    required: bool = False
    secret: bool = False
    default: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderInfo:
    """What ``certsmith dns list`` and the README show about a provider."""

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

    async def present(self, fqdn: str, value: str) -> None:
        """Create the TXT record ``fqdn`` = ``value``."""
        ...

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Delete the TXT record ``fqdn`` = ``value`` that ``present`` created."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the provider is no longer needed."""
        ...


def read_env(
    env: Mapping[str, str], variables: tuple[EnvVar, ...], provider: str, hint: str = ""
) -> dict[str, str]:
    """Resolve ``variables`` from ``env`` by name, alias or ``<NAME>_FILE``.

    Returns a mapping from each variable's primary name to its value (defaults
    applied, absent optional variables left out). Raises one
    :class:`ProviderConfigError` naming every missing required variable.
    """
    values: dict[str, str] = {}
    missing: list[str] = []
    for var in variables:
        value = _lookup(env, var)
        if value is None:
            if var.required:
                names = " or ".join((var.name, *var.aliases))
                missing.append(names)
            elif var.default is not None:
                values[var.name] = var.default
            continue
        values[var.name] = value
    if missing:
        raise ProviderConfigError(provider, missing, hint)
    return values


def _lookup(env: Mapping[str, str], var: EnvVar) -> str | None:
    for name in (var.name, *var.aliases):
        value = env.get(name)
        if value:
            return value
        if var.secret and env.get(name + "_FILE"):
            path = Path(env[name + "_FILE"])
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {name}_FILE ({path}): {exc.strerror}") from None
    return None


_BUILTINS: dict[str, str] = {
    "exec": "certsmith.dns.exec:ExecProvider",
    "manual": "certsmith.dns.manual:ManualProvider",
    "alidns": "certsmith.dns.alidns:AlidnsProvider",
    "rfc2136": "certsmith.dns.rfc2136:Rfc2136Provider",
}

ENTRY_POINT_GROUP = "certsmith.dns_providers"


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _all_targets() -> dict[str, str]:
    targets = dict(_entry_points())
    targets.update(_BUILTINS)
    return targets


def available_providers() -> list[str]:
    """Names of every provider, built-in or installed, sorted."""
    return sorted(name for name, target in _all_targets().items() if _importable(target))


def _importable(target: str) -> bool:
    module = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def provider_class(name: str) -> type[DnsProvider]:
    """The provider class registered as ``name``; imported on first use."""
    target = _all_targets().get(name)
    if target is None:
        known = ", ".join(available_providers())
        raise ConfigError(f"unknown DNS provider {name!r}; available: {known}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[DnsProvider] = getattr(module, attr)
    return cls


def load_provider(name: str, env: Mapping[str, str] | None = None) -> DnsProvider:
    """Instantiate provider ``name`` from ``env`` (default: the process environment)."""
    return provider_class(name).from_env(os.environ if env is None else env)
