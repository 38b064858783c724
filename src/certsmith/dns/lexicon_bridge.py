"""``--dns lexicon:PROVIDER``: any dns-lexicon provider as a certsmith DNS provider.

dns-lexicon (``pip install 'certsmith[lexicon]'``) knows some 90 DNS services. This
bridge builds, for one lexicon provider, a certsmith provider class whose metadata
comes from that provider's own options (its ``configure_parser``), so ``certsmith dns
list --lexicon``, the missing-variable errors and the renewal settings work as for a
built-in.

Variables are lexicon's own names, as ``ConfigResolver().with_env()`` reads them: option
``auth_token`` of provider ``cloudflare`` is ``LEXICON_CLOUDFLARE_AUTH_TOKEN`` (lexicon's
legacy ``LEXICON_CLOUDFLARE_TOKEN`` is accepted as an alias); ``LEXICON_TTL`` and
``LEXICON_DELEGATED`` (the zone, when the public-suffix guess is wrong) are global.
They are resolved from the mapping certsmith passes (the process environment plus the
settings stored for renewal) with the same naming rules and handed to lexicon through
``ConfigResolver().with_dict``, so ``_FILE`` variants and redaction work as everywhere.
Options named like a credential (token, key, secret, password) are secrets.

Lexicon's client is synchronous: each create/delete runs lexicon's ``Client`` in
``asyncio.to_thread``, one call at a time per provider instance (lexicon providers keep
state and often read-modify-write a name's records). ``cleanup`` deletes exactly the
value ``present`` created, by content. Anything lexicon raises becomes a one-line
:class:`DnsError` that names the provider's options still unset (and quotes the API's
answer when the exception carries one). Some providers log the cause and answer
``False`` (``route53`` on ``AccessDenied``): while the bridge calls lexicon, lexicon's
log records are relayed to this module's logger, tracebacks at DEBUG only, and the last
error logged becomes the reason of the :class:`DnsError`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import pkgutil
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from certsmith.dns.base import ConfiguredProvider, EnvVar, ProviderInfo, optional_seconds, parse_int, read_env
from certsmith.errors import ConfigError, DnsError, ProviderConfigError

log = logging.getLogger(__name__)

PREFIX = "lexicon:"
INSTALL_HINT = "pip install 'certsmith[lexicon]'"
_SECRET_WORDS = re.compile(r"token|key|secret|password|passwd|pass\b|credential|otp", re.IGNORECASE)
GLOBAL_ENV = (
    EnvVar("LEXICON_TTL", "TTL of the TXT record, seconds (the lexicon provider's default when unset)"),
    EnvVar("LEXICON_DELEGATED", "The zone the records go to, when lexicon's public-suffix guess is wrong"),
    EnvVar("LEXICON_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
)


def _lexicon_path() -> Path | None:
    try:
        spec = importlib.util.find_spec("lexicon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lexicon_installed() -> bool:
    """Whether dns-lexicon can be imported."""
    return _lexicon_path() is not None


def lexicon_provider_names() -> list[str]:
    """Names of lexicon's providers, found without importing lexicon or any provider."""
    root = _lexicon_path()
    if root is None:
        return []
    return sorted(m.name for m in pkgutil.iter_modules([str(root / "_private" / "providers")]) if m.name != "base")


def _env_name(provider: str, dest: str) -> str:
    return f"LEXICON_{provider.upper()}_{dest.upper()}"


def _provider_env(provider: str, module: Any) -> tuple[EnvVar, ...]:
    parser = argparse.ArgumentParser(add_help=False)
    module.Provider.configure_parser(parser)
    variables = []
    for action in parser._actions:  # argparse has no public accessor for the declared options
        if not action.option_strings or action.dest in ("help",):
            continue
        name = _env_name(provider, action.dest)
        legacy = re.sub(r"(.*)_AUTH_(.*)", r"\1_\2", name)  # lexicon's deprecated spelling
        variables.append(
            EnvVar(
                name,
                " ".join((action.help or action.dest).split()),
                required=bool(action.required),
                secret=bool(_SECRET_WORDS.search(action.dest)),
                default=None if action.default in (None, argparse.SUPPRESS) else str(action.default),
                aliases=(legacy,) if legacy != name else (),
            )
        )
    return tuple(variables)


def lexicon_provider_class(provider: str) -> type[LexiconProvider]:
    """A certsmith provider class driving lexicon's ``provider`` (imports that provider only)."""
    if not lexicon_installed():
        raise ConfigError(f"--dns {PREFIX}{provider} needs dns-lexicon, which is not installed: {INSTALL_HINT}")
    names = lexicon_provider_names()
    if provider not in names:
        close = [n for n in names if n.startswith(provider[:3])] if provider else []
        hint = f" (did you mean {', '.join(PREFIX + n for n in close)}?)" if close else ""
        raise ConfigError(f"unknown lexicon provider {provider!r}{hint}; see: certsmith dns list --lexicon")
    from lexicon._private.discovery import load_provider_module  # lexicon's own CLI loads providers this way

    try:
        module = load_provider_module(provider)
    except ImportError as exc:
        raise ConfigError(
            f"lexicon provider {provider!r} needs a package that is not installed ({exc.name or exc}); "
            f"install it with: pip install 'dns-lexicon[{provider}]'"
        ) from None
    env = (*_provider_env(provider, module), *GLOBAL_ENV)
    doc = (module.__doc__ or "").strip().splitlines()
    info = ProviderInfo(
        name=PREFIX + provider,
        title=f"{provider} through dns-lexicon",
        description=(doc[0] if doc else f"lexicon's {provider} provider") + " (via dns-lexicon).",
        env=env,
        example=f"certsmith issue -d example.com -d '*.example.com' --dns {PREFIX}{provider}",
        links=("https://dns-lexicon.github.io/dns-lexicon/",),
        default_propagation_timeout=180.0,
    )
    return type(f"Lexicon_{provider}_Provider", (LexiconProvider,), {"info": info, "lexicon_name": provider})


@dataclass(frozen=True, repr=False)
class LexiconConfig:
    """Settings for one lexicon provider: its options (by lexicon dest name) and the globals."""

    provider: str
    options: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    ttl: int | None = None
    delegated: str | None = None
    propagation_timeout: float | None = None

    def __repr__(self) -> str:
        return f"LexiconConfig(provider={self.provider!r}, options={sorted(self.options)}, ttl={self.ttl})"

    @classmethod
    def for_provider(cls, provider: str, info: ProviderInfo, env: Mapping[str, str]) -> Self:
        """Resolve ``info.env`` from ``env``; one error when no credential option is set at all."""
        values = read_env(env, info.env, info.name, hint="see: certsmith dns list --lexicon")
        prefix = f"LEXICON_{provider.upper()}_"
        own = [v for v in info.env if v.name.startswith(prefix)]
        options = {v.name[len(prefix) :].lower(): values[v.name] for v in own if v.name in values}
        unset = tuple(v.name for v in own if v.name not in values)
        auth = [v.name for v in own if v.name.startswith(prefix + "AUTH_")]
        if auth and not any(name in values for name in auth):
            raise ProviderConfigError(info.name, auth, "set the credentials lexicon's provider needs")
        ttl = values.get("LEXICON_TTL")
        return cls(
            provider=provider,
            options=options,
            unset=unset,
            ttl=parse_int("LEXICON_TTL", ttl) if ttl else None,
            delegated=values.get("LEXICON_DELEGATED", "").strip().rstrip(".") or None,
            propagation_timeout=optional_seconds(values, "LEXICON_PROPAGATION_TIMEOUT"),
        )


class _LogRelay(logging.Handler):
    """Takes lexicon's log records while a bridge call runs (``propagate`` off meanwhile).

    Records of a thread inside :meth:`capture` are relayed one line each -- errors are
    collected for the caller and logged at DEBUG with their traceback, warnings stay
    warnings; records of other threads pass through at their own level.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._local = threading.local()
        self._guard = threading.Lock()
        self._users = 0
        self._propagate = True

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        source = logging.getLogger("lexicon")
        with self._guard:
            if self._users == 0:
                self._propagate = source.propagate
                source.addHandler(self)
                source.propagate = False
            self._users += 1
        errors: list[str] = []
        self._local.errors = errors
        try:
            yield errors
        finally:
            self._local.errors = None
            with self._guard:
                self._users -= 1
                if self._users == 0:
                    source.removeHandler(self)
                    source.propagate = self._propagate

    def emit(self, record: logging.LogRecord) -> None:
        errors: list[str] | None = getattr(self._local, "errors", None)
        message = " ".join(record.getMessage().split())
        if errors is None:
            log.log(record.levelno, "%s: %s", record.name, message, exc_info=record.exc_info)
        elif record.levelno >= logging.ERROR:
            errors.append(message)
            log.debug("%s: %s", record.name, message, exc_info=record.exc_info)
        else:
            log.log(min(record.levelno, logging.WARNING), "%s: %s", record.name, message)


_RELAY = _LogRelay()


def _resolver(settings: Mapping[str, Any], provider: str, options: Mapping[str, str]) -> Any:
    """A lexicon ``ConfigResolver`` that resolves like lexicon's own CLI (one flat namespace).

    Lexicon's CLI answers ``lexicon:<provider>:<option>`` and ``lexicon:<option>`` from the
    same argparse namespace, and some providers rely on it (``ddns`` reads the zone as
    ``lexicon:ddns:domain``). So a provider-scoped key that is not one of the provider's
    options falls back to the global key, asked of the whole resolver -- where the Client
    puts the zone it worked out.
    """
    from lexicon.config import ConfigResolver, ConfigSource

    resolver_class: Any = ConfigResolver  # its __init__ is not annotated
    resolver = resolver_class()

    class FlatSource(ConfigSource):
        def resolve(self, config_key: str) -> Any:
            parts = config_key.split(":")
            if len(parts) == 3 and parts[1] == provider:
                if parts[2] in options:
                    return options[parts[2]]
                return resolver.resolve(f"lexicon:{parts[2]}")
            if len(parts) == 2:
                return settings.get(parts[1])
            return None

    resolver.with_config_source(FlatSource())
    return resolver


class LexiconProvider(ConfiguredProvider[LexiconConfig]):
    """Base of the classes :func:`lexicon_provider_class` makes; ``lexicon_name`` picks the provider."""

    info: ClassVar[ProviderInfo]
    lexicon_name: ClassVar[str]

    def __init__(self, config: LexiconConfig) -> None:
        import asyncio

        self.config = config
        self._lock = asyncio.Lock()
        self._ours: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"LexiconProvider({self.config!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build from ``LEXICON_<PROVIDER>_<OPTION>`` and the global ``LEXICON_*`` variables."""
        return cls(LexiconConfig.for_provider(cls.lexicon_name, cls.info, env))


    async def aclose(self) -> None:
        """Nothing to release: each call opens and closes its own lexicon client."""

    async def present(self, fqdn: str, value: str) -> None:
        """Create TXT ``fqdn`` = ``value`` through lexicon."""
        name = fqdn.strip().lower().rstrip(".")
        await self._run("create", name, value)
        self._ours.add((name, value))

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Delete exactly the TXT value ``present`` created (by content); others stay."""
        name = fqdn.strip().lower().rstrip(".")
        if (name, value) not in self._ours:
            return
        await self._run("delete", name, value)
        self._ours.discard((name, value))

    async def _run(self, action: str, name: str, value: str) -> None:
        import asyncio

        async with self._lock:
            try:
                await asyncio.to_thread(self._call, action, name, value)
            except DnsError:
                raise
            except Exception as exc:  # lexicon and its providers raise anything
                raise DnsError(self._describe(action, name, exc)) from None

    def _call(self, action: str, name: str, value: str) -> None:
        from lexicon.client import Client

        # tldextract (lexicon's zone guess) tries to download the public suffix list and logs a
        # traceback when it cannot; its bundled snapshot is used then, so keep that quiet.
        logging.getLogger("tldextract").setLevel(logging.CRITICAL)
        settings: dict[str, Any] = {"provider_name": self.config.provider, "domain": name}
        if self.config.ttl is not None:
            settings["ttl"] = self.config.ttl
        if self.config.delegated:
            settings["delegated"] = self.config.delegated
        resolver = _resolver(settings, self.config.provider, self.config.options)
        with _RELAY.capture() as errors, Client(resolver) as operations:
            if action == "create":
                ok = operations.create_record("TXT", name, value)
            else:
                ok = operations.delete_record(None, "TXT", name, value)
        if ok is False:
            why = errors[-1][:300] if errors else "lexicon answered False without a reason"
            raise DnsError(f"{self.info.name}: could not {action} TXT {name}: {why}")
        for error in errors:  # logged by lexicon, yet the record was written
            log.warning("%s: lexicon reported: %s", self.info.name, error[:300])

    def _describe(self, action: str, name: str, exc: Exception) -> str:
        text = " ".join(str(exc).split())[:300] or "no message"
        message = f"{self.info.name}: could not {action} TXT {name}: {type(exc).__name__}: {text}"
        body = getattr(getattr(exc, "response", None), "text", None)  # requests' HTTPError keeps the answer
        if isinstance(body, str) and body.strip():
            message += f" -- the API answered: {' '.join(body.split())[:200]}"
        if self.config.unset:
            message += f"; options not set: {', '.join(self.config.unset)}"
        return message
