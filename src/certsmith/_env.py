"""Environment variables of pluggable parts: their description and how they are read.

DNS providers and deploy targets both take their secrets and settings from the
environment (the process environment or the env file), both honour ``<NAME>_FILE``
for secrets and both mask secret values in logs. The one implementation is here;
:mod:`certsmith.dns.base` and :mod:`certsmith.deploy.base` only word their errors.
Depends on the standard library, :mod:`certsmith._redact` and :mod:`certsmith.errors`,
so listing providers or targets stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from certsmith._redact import add_secret
from certsmith.errors import ConfigError

__all__ = ["EnvVar", "parse_bool", "resolve"]


@dataclass(frozen=True)
class EnvVar:
    """One environment variable a provider or target reads.

    ``aliases`` are the names other tools use for the same setting (lego, acme.sh);
    a ``secret`` variable may also be given as ``<NAME>_FILE`` pointing to a file, and
    its value is masked in every log line (see :mod:`certsmith._redact`).
    """

    name: str
    description: str
    required: bool = False
    secret: bool = False
    default: str | None = None
    aliases: tuple[str, ...] = ()


def resolve(
    env: Mapping[str, str], variables: Iterable[EnvVar], *, keep_spaces: bool = False
) -> tuple[dict[str, str], list[EnvVar]]:
    """The value of each of ``variables`` by name, alias or ``<NAME>_FILE``, and the required ones missing.

    Values are keyed by each variable's primary name, defaults applied, absent optional
    variables left out; every secret value is registered for redaction. A ``_FILE``'s
    text loses its surrounding white space, or with ``keep_spaces`` only its line end
    (a password may begin or end with a space).
    """
    values: dict[str, str] = {}
    missing: list[EnvVar] = []
    for var in variables:
        value = _lookup(env, var, keep_spaces)
        if value is None:
            if var.required:
                missing.append(var)
            elif var.default is not None:
                values[var.name] = var.default
            continue
        if var.secret:
            add_secret(value)
        values[var.name] = value
    return values, missing


def _lookup(env: Mapping[str, str], var: EnvVar, keep_spaces: bool) -> str | None:
    for name in (var.name, *var.aliases):
        value = env.get(name)
        if value:
            return value
        if var.secret and env.get(name + "_FILE"):
            path = Path(env[name + "_FILE"])
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read {name}_FILE ({path}): {exc.strerror}") from None
            return text.rstrip("\r\n") if keep_spaces else text.strip()
    return None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(name: str, text: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case); the error names ``name``."""
    key = text.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off), not {text!r}")
