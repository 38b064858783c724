"""The deploy target contract, the target registry and the ``--deploy`` option syntax.

A deploy target takes a lineage's current certificate where it is served: files on
disk, a reload command, a cloud certificate service. It is the DNS providers' recipe
(:mod:`certsmith.dns.base`) applied to delivery:

* **Options** come from ``--deploy TARGET[:KEY=VALUE,...]`` and are stored with the
  lineage, so a renewal delivers the same way. They never hold secrets.
* **Secrets** (a PKCS#12 password, a cloud access key) come from environment
  variables -- the process environment or the env file -- with ``<NAME>_FILE``
  honoured, and are never stored.
* **Metadata** (:class:`TargetInfo`) feeds ``certsmith deploy list`` and the README.
* **Idempotent**: running a target twice for the same certificate changes nothing the
  second time, and every run reports what it changed.

Built-in targets are listed in ``_BUILTINS`` and imported only when used; other
packages register theirs under the ``certsmith.deploy_targets`` entry-point group
(the name is what ``--deploy`` takes, the value ``module:Class``).

The recipe
----------
One module per target (``certsmith/deploy/<name>.py``) holding:

1. ``OPTIONS``: a tuple of :class:`TargetOption` (every ``KEY`` the target accepts,
   ``required``, ``default``) and ``ENV``: a tuple of :class:`EnvVar` for secrets and
   other environment settings (``secret=True`` also reads ``<NAME>_FILE`` and masks the
   value in logs).
2. A frozen config dataclass with a classmethod ``from_options(options, env) -> Self``,
   the one place that validates. :func:`check_options` has already refused unknown and
   missing keys; use :func:`read_env` for the variables and :func:`parse_bool`,
   :func:`parse_seconds` for values -- every error is a :class:`ConfigError` of one line
   naming the option. Keep secrets out of ``repr`` (``field(repr=False)``).
3. The target class (subclass ``BaseTarget[Config]``, which keeps ``config``): ``info: ClassVar[TargetInfo]``,
   ``from_options`` returning ``cls(Config.from_options(...))``,
   and the async :meth:`DeployTarget.deploy`, returning a :class:`DeployOutcome`. A
   target that replaces something remote (an uploaded certificate) keeps its ID in
   ``context.state`` and removes the old one in :meth:`DeployTarget.retire`, which runs
   only after every target of the lineage succeeded (so nothing still uses it).
   Import heavy libraries (httpx, SDKs) inside the methods that use them.
4. An entry in ``_BUILTINS`` (or a ``certsmith.deploy_targets`` entry point).
5. Tests: options and config errors in ``tests/unit/test_deploy.py``, delivery against
   Pebble (or the service's emulator) in ``tests/e2e/test_deploy.py``.

Order: targets run in the order given, except that targets whose info says
``runs_first`` (``alicloud-cas``, whose upload the other Alibaba Cloud targets
reference) run before all others and those that say ``runs_last`` (``reload``) after
all others, seeing what those changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, runtime_checkable

from certsmith import _plugins
from certsmith._env import EnvVar, parse_bool, resolve
from certsmith.errors import ConfigError, DeployError
from certsmith.storage.base import CertificateFiles

__all__ = [
    "BaseTarget",
    "DeployContext",
    "DeployOutcome",
    "DeploySpec",
    "DeployTarget",
    "EnvVar",
    "TargetInfo",
    "TargetOption",
    "available_targets",
    "check_options",
    "load_target",
    "parse_bool",
    "parse_deploy_spec",
    "parse_seconds",
    "read_env",
    "target_class",
]


@dataclass(frozen=True)
class TargetOption:
    """One ``KEY`` of ``--deploy TARGET:KEY=VALUE``; stored with the lineage, so never a secret."""

    name: str
    description: str
    required: bool = False
    default: str | None = None


@dataclass(frozen=True)
class TargetInfo:
    """What ``certsmith deploy list`` and the README show about a target.

    ``required_one_of`` names options of which at least one must be given (``files``
    needs some path). ``runs_first`` targets run before every other target of the lineage
(they publish something in ``DeployContext.shared`` the others use), ``runs_last``
targets after every other one.
    """

    name: str
    title: str
    description: str
    options: tuple[TargetOption, ...] = ()
    env: tuple[EnvVar, ...] = ()
    example: str = ""
    links: tuple[str, ...] = ()
    required_one_of: tuple[str, ...] = ()
    runs_last: bool = False
    runs_first: bool = False
    #: Targets that must be configured for the same lineage too (``alicloud-alb`` uses ``alicloud-cas``'s upload).
    requires: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "options": [
                {"name": o.name, "description": o.description, "required": o.required, "secret": False,
                 "default": o.default}
                for o in self.options
            ],
            "env": [
                {"name": v.name, "description": v.description, "required": v.required, "secret": v.secret,
                 "default": v.default}
                for v in self.env
            ],
            "required_one_of": list(self.required_one_of),
            "runs_first": self.runs_first,
            "requires": list(self.requires),
            "runs_last": self.runs_last,
            "example": self.example,
            "links": list(self.links),
        }


@dataclass
class DeployContext:
    """What a target gets for one run: the lineage's current certificate as bytes, never paths.

    ``state`` is this target's own small JSON object, stored with the lineage between runs
    (e.g. the ID of an uploaded certificate, to delete it once replaced); change it in
    place and it is saved after the target returns, also when it fails. ``changed`` is
    what the targets before this one changed in this run (a ``runs_last`` target such as
    ``reload`` decides on it). ``shared`` is a scratch object common to the targets of
    one run and never stored (a certificate uploaded once and referenced by several
    services). ``location`` is where the store keeps the lineage (for hooks' variables).
    """

    lineage: str
    names: tuple[str, ...]
    version: int
    serial: str
    not_after: str
    files: CertificateFiles = field(repr=False)
    state: dict[str, Any]
    env: Mapping[str, str] = field(repr=False)
    location: str = ""
    changed: tuple[str, ...] = ()
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def cert_pem(self) -> bytes:
        return self.files.cert_pem

    @property
    def chain_pem(self) -> bytes:
        return self.files.chain_pem

    @property
    def fullchain_pem(self) -> bytes:
        return self.files.fullchain_pem

    @property
    def key_pem(self) -> bytes | None:
        """``None`` for a certificate issued for the user's own CSR: certsmith never had its key."""
        return self.files.key_pem


@dataclass(frozen=True)
class DeployOutcome:
    """What one target did: ``changed`` lists each thing it changed (``wrote /etc/ssl/a.pem``),
    ``unchanged`` what was already in place; ``skipped`` says why it did nothing at all."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: str = ""


ConfigT = TypeVar("ConfigT")


@runtime_checkable
class DeployTarget(Protocol):
    """Delivers a lineage's current certificate somewhere; idempotent."""

    info: ClassVar[TargetInfo]

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        """Build the target from its ``--deploy`` options and the environment (secrets); ConfigError if unusable."""
        ...

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        """Put ``context``'s certificate in place; raise :class:`DeployError` (one line) when that fails."""
        ...

    async def retire(self, context: DeployContext) -> list[str]:
        """After every target of the lineage succeeded: remove what the new certificate replaced."""
        ...


class BaseTarget(Generic[ConfigT]):
    """A target holding its validated ``config``, with defaults for the optional parts of :class:`DeployTarget`
    (nothing to retire). Subclass as ``BaseTarget[ExampleConfig]``; ``from_options`` returns
    ``cls(ExampleConfig.from_options(options, env))``."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    async def retire(self, context: DeployContext) -> list[str]:
        return []


# -- the --deploy syntax ----------------------------------------------------------------

_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_KEY = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True)
class DeploySpec:
    """One ``--deploy TARGET[:KEY=VALUE,...]`` as given and stored: a target name and its options."""

    target: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """The name its stored state goes by: target and sorted options, so two ``files`` targets differ
        and the options' order (stored settings are sorted) does not matter."""
        return DeploySpec(self.target, tuple(sorted(self.options))).text

    @property
    def text(self) -> str:
        """The spec written back in ``--deploy`` syntax (values with ``,``, quotes or spaces quoted)."""
        if not self.options:
            return self.target
        return self.target + ":" + ",".join(f"{k}={_quote(v)}" for k, v in self.options)

    def option_map(self) -> dict[str, str]:
        return dict(self.options)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: Any) -> DeploySpec:
        """Read a stored spec back; ``ValueError`` when it is not one."""
        if not isinstance(data, Mapping) or not isinstance(data.get("target"), str):
            raise ValueError("a stored deploy target must be an object with a 'target' name")
        options = data.get("options", {})
        if not isinstance(options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in options.items()
        ):
            raise ValueError(f"the options of deploy target {data['target']!r} must map names to strings")
        return cls(data["target"], tuple(options.items()))


def _quote(value: str) -> str:
    if value and not any(c in value for c in ",'\" \\"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_deploy_spec(text: str) -> DeploySpec:
    """Parse ``TARGET[:KEY=VALUE,KEY=VALUE...]``.

    A value containing ``,`` (or leading/trailing spaces) is quoted with ``'...'`` (taken
    literally) or ``"..."`` (where ``\\"`` and ``\\\\`` are escapes), e.g.
    ``reload:command='systemctl reload nginx'``. Only the syntax is checked here; whether
    the target and its options exist is :func:`check_options`' business.
    """
    where = f"--deploy {text!r}"
    target, colon, rest = text.partition(":")
    target = target.strip()
    if not _TARGET_NAME.fullmatch(target):
        raise ConfigError(f"{where}: start with a target name (see: certsmith deploy list), e.g. files:cert=/path")
    if colon and not rest.strip():
        raise ConfigError(f"{where}: nothing after ':'; give KEY=VALUE options or leave out the ':'")
    options: list[tuple[str, str]] = []
    i, n = 0, len(rest)
    while colon and i <= n:
        eq = rest.find("=", i)
        comma = rest.find(",", i)
        if eq < 0 or (0 <= comma < eq):
            piece = rest[i : comma if comma >= 0 else n].strip()
            raise ConfigError(f"{where}: {piece!r} is not KEY=VALUE")
        key = rest[i:eq].strip()
        if not _KEY.fullmatch(key):
            raise ConfigError(f"{where}: {key!r} is not an option name (lower-case letters, digits, '_', '-')")
        if any(k == key for k, _ in options):
            raise ConfigError(f"{where}: option {key!r} is given twice")
        j = eq + 1
        while j < n and rest[j] == " ":
            j += 1
        if j < n and rest[j] in "'\"":
            value, j = _quoted(rest, j, where)
            while j < n and rest[j] == " ":
                j += 1
            if j < n and rest[j] != ",":
                raise ConfigError(f"{where}: text after the closing quote of {key!r}; put a ',' between options")
        else:
            end = rest.find(",", j)
            end = n if end < 0 else end
            value = rest[j:end].strip()
            if "'" in value or '"' in value:
                raise ConfigError(f"{where}: quote the whole value of {key!r}, e.g. {key}='a b,c'")
            j = end
        options.append((key, value))
        if j >= n:
            break
        i = j + 1  # past the comma
        if i >= n or not rest[i:].strip():
            raise ConfigError(f"{where}: a ',' with no option after it")
    return DeploySpec(target, tuple(options))


def _quoted(text: str, start: int, where: str) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    j = start + 1
    while j < len(text):
        c = text[j]
        if c == quote:
            return "".join(out), j + 1
        if c == "\\" and quote == '"' and j + 1 < len(text) and text[j + 1] in '"\\':
            out.append(text[j + 1])
            j += 2
            continue
        out.append(c)
        j += 1
    raise ConfigError(f"{where}: the quote {quote} opened at position {start + 1} is never closed")


def check_options(info: TargetInfo, options: Mapping[str, str]) -> None:
    """Refuse unknown keys, missing required ones and an empty ``required_one_of`` set, in one line."""
    known = {o.name for o in info.options}
    unknown = sorted(set(options) - known)
    if unknown:
        listed = ", ".join(o.name for o in info.options) or "none"
        raise ConfigError(f"deploy target {info.name!r} has no option {', '.join(unknown)} (its options: {listed})")
    missing = [o.name for o in info.options if o.required and not options.get(o.name)]
    if missing:
        raise ConfigError(f"deploy target {info.name!r} needs {', '.join(f'{m}=...' for m in missing)}")
    if info.required_one_of and not any(options.get(name) for name in info.required_one_of):
        raise ConfigError(
            f"deploy target {info.name!r} needs at least one of {', '.join(info.required_one_of)}, "
            f"e.g. {info.example or info.name + ':' + info.required_one_of[0] + '=...'}"
        )


# -- reading the environment and values ---------------------------------------------------


def read_env(env: Mapping[str, str], variables: Sequence[EnvVar], target: str) -> dict[str, str]:
    """Resolve ``variables`` by name, alias or ``<NAME>_FILE`` (secrets); defaults applied; missing ones in one error.

    Secret values are registered for redaction, so they never show in a log line.
    """
    values, missing = resolve(env, variables, keep_spaces=True)
    if missing:
        names = [var.name + (f" (or {var.name}_FILE)" if var.secret else "") for var in missing]
        raise ConfigError(f"deploy target {target!r} needs the environment variable {', '.join(names)}")
    return values


def parse_seconds(name: str, text: str) -> float:
    """A positive number of seconds."""
    try:
        seconds = float(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {text!r}") from None
    if not 0 < seconds < 86400:
        raise ConfigError(f"{name} must be between 0 and 86400 seconds, not {text!r}")
    return seconds


def stored_list(value: Any) -> list[Any]:
    """A list kept in a target's stored state, or empty when the state is damaged (not a list)."""
    return list(value) if isinstance(value, list) else []


# -- the registry -------------------------------------------------------------------------

_BUILTINS: dict[str, str] = {
    "alicloud-alb": "certsmith.deploy.alicloud_alb:AlbTarget",
    "alicloud-cas": "certsmith.deploy.alicloud_cas:AliCloudCasTarget",
    "alicloud-cdn": "certsmith.deploy.alicloud_cdn:AliCloudCdnTarget",
    "alicloud-dcdn": "certsmith.deploy.alicloud_cdn:AliCloudDcdnTarget",
    "alicloud-slb": "certsmith.deploy.alicloud_slb:SlbTarget",
    "files": "certsmith.deploy.files:FilesTarget",
    "reload": "certsmith.deploy.reload:ReloadTarget",
}

ENTRY_POINT_GROUP = "certsmith.deploy_targets"


_REGISTRY = _plugins.Registry(_BUILTINS, ENTRY_POINT_GROUP)


def builtin_targets() -> list[str]:
    return _REGISTRY.builtin_names()


def available_targets() -> list[str]:
    """Every target, built-in or installed, sorted."""
    return _REGISTRY.available()


def target_class(name: str) -> type[DeployTarget]:
    """The class registered as ``name``; imported on first use."""
    ref = _REGISTRY.ref(name)
    if ref is None:
        raise ConfigError(f"unknown deploy target {name!r}; available: {', '.join(available_targets())}")
    try:
        cls: type[DeployTarget] = _plugins.load(ref)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"deploy target {name!r} cannot be loaded from {ref}: {exc}") from None
    return cls


def load_target(spec: DeploySpec, env: Mapping[str, str]) -> DeployTarget:
    """The target of ``spec`` with its options checked and its environment read (ConfigError otherwise)."""
    cls = target_class(spec.target)
    options = spec.option_map()
    check_options(cls.info, options)
    return cls.from_options(options, env)


def ordered(specs: Sequence[DeploySpec]) -> list[DeploySpec]:
    """``specs`` in the order they run: as given, except ``runs_first`` targets (alicloud-cas) before
    the others and ``runs_last`` targets (reload) after them."""
    infos = [target_class(s.target).info for s in specs]
    first = [s for s, info in zip(specs, infos, strict=True) if info.runs_first]
    middle = [s for s, info in zip(specs, infos, strict=True) if not info.runs_first and not info.runs_last]
    last = [s for s, info in zip(specs, infos, strict=True) if info.runs_last and not info.runs_first]
    return first + middle + last


def check_requirements(specs: Sequence[DeploySpec]) -> None:
    """Refuse, in one line, a target configured without a target it ``requires`` (see :class:`TargetInfo`)."""
    given = {spec.target for spec in specs}
    for spec in specs:
        for needed in target_class(spec.target).info.requires:
            if needed not in given:
                raise ConfigError(f"deploy target {spec.target!r} uses {needed}'s upload: add --deploy {needed} "
                                  f"before {spec.target}")


def failure_text(spec: DeploySpec, exc: BaseException) -> str:
    """One line naming the target and the cause."""
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"deploy target {spec.target} failed: {cause}"


__all__ += ["DeployError", "builtin_targets", "check_requirements", "failure_text", "ordered", "stored_list"]
