"""What a user asks for: the certificate request and how its names are proven.

These records are stored with each lineage (without secrets) so that a renewal
repeats exactly what the first issuance did, against the CA that issued it.
Messages here speak in parameter names; the CLI translates them into flags.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from certsmith._constants import CHALLENGE_TYPES, DEFAULT_DIRECTORY, DEFAULT_KEY_TYPE, DIRECTORIES, KEY_TYPES
from certsmith.errors import ConfigError
from certsmith.storage.base import MAX_LINEAGE_NAME, LineageMeta

if TYPE_CHECKING:
    from certsmith.crypto import Identifier
    from certsmith.deploy.base import DeploySpec


def resolve_directory(value: str | None) -> str:
    """A directory URL from a URL or one of the :data:`~certsmith._constants.DIRECTORIES` names."""
    if not value:
        return DEFAULT_DIRECTORY
    if value in DIRECTORIES:
        return DIRECTORIES[value]
    if value.startswith("https://"):
        return value
    raise ConfigError(f"the ACME directory must be an https:// URL or one of: {', '.join(DIRECTORIES)}; got {value!r}")


_NONE = type(None)
# The JSON types each stored challenge setting may have.
_FIELD_KINDS: dict[str, tuple[type, ...]] = {
    "challenge": (str,),
    "http_port": (int,),
    "http_host": (str,),
    "http_shared": (bool,),
    "webroot": (str, _NONE),
    "tls_port": (int,),
    "tls_host": (str,),
    "dns_provider": (str, _NONE),
    "dns_resolvers": (list,),
    "propagation_timeout": (int, float, _NONE),
    "dns_env": (dict,),
}


@dataclass(frozen=True)
class ChallengeSettings:
    """How to prove control of the names; stored with the lineage so renewal repeats it.

    ``dns_env`` holds the DNS provider's non-secret variables (e.g. ``EXEC_PATH``) as they
    were at issue time, so a renewal run needs only the secrets from its environment.
    """

    challenge: str = "http-01"
    http_port: int = 80
    http_host: str = ""
    webroot: str | None = None
    tls_port: int = 443
    tls_host: str = ""
    dns_provider: str | None = None
    dns_resolvers: tuple[str, ...] = ()
    propagation_timeout: float | None = None
    dns_env: tuple[tuple[str, str], ...] = ()
    #: http-01 answers are also published in the shared store for ``certsmith serve-challenges``.
    http_shared: bool = False

    def __post_init__(self) -> None:
        if self.challenge not in CHALLENGE_TYPES:
            raise ConfigError(f"challenge must be one of {', '.join(CHALLENGE_TYPES)}, not {self.challenge!r}")
        if self.challenge == "dns-01" and not self.dns_provider:
            raise ConfigError("dns-01 needs a DNS provider (dns_provider); see: certsmith dns list")
        if self.challenge == "dns-persist-01" and self.dns_provider:
            raise ConfigError(
                "dns-persist-01 uses no DNS provider: the CA reads the standing _validation-persist record "
                "(create it once with: certsmith persist create)"
            )
        if self.http_shared and self.challenge != "http-01":
            raise ConfigError(f"http_shared publishes http-01 answers; it does not apply to {self.challenge}")
        for port in (self.http_port, self.tls_port):
            if not 0 < port < 65536:
                raise ConfigError(f"port {port} is not between 1 and 65535")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dns_resolvers"] = list(self.dns_resolvers)
        data["dns_env"] = dict(self.dns_env)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChallengeSettings:
        """Read stored settings back; ``ValueError`` names the field that is missing its type."""
        if not isinstance(data, Mapping):
            raise ValueError(f"the challenge settings are a JSON {type(data).__name__}, not an object")
        known: dict[str, Any] = {}
        for key, value in data.items():
            kinds = _FIELD_KINDS.get(key)
            if kinds is None:
                continue  # a field of a newer certsmith
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"challenge setting {key!r} has the wrong type ({type(value).__name__})")
            known[key] = value
        if "dns_resolvers" in known:
            if not all(isinstance(server, str) for server in known["dns_resolvers"]):
                raise ValueError("challenge setting 'dns_resolvers' must be a list of strings")
            known["dns_resolvers"] = tuple(known["dns_resolvers"])
        if "dns_env" in known:
            if not all(isinstance(v, str) for v in known["dns_env"].values()):
                raise ValueError("challenge setting 'dns_env' must map names to strings")
            known["dns_env"] = tuple(sorted(known["dns_env"].items()))
        timeout = known.get("propagation_timeout")
        if timeout is not None and not 0 < timeout < 86400:
            raise ValueError(f"challenge setting 'propagation_timeout' is out of range ({timeout})")
        return cls(**known)

    def check_identifiers(self, identifiers: Sequence[Identifier]) -> None:
        """Refuse combinations the CA would reject, before anything is ordered."""
        from certsmith.challenges.base import unsupported_reason

        for ident in identifiers:
            reason = unsupported_reason(self.challenge, ident.type, ident.value, wildcard=ident.wildcard)
            if reason is not None:
                raise ConfigError(reason)


@dataclass(frozen=True)
class CertificateRequest:
    """Everything needed to obtain (and later renew) one certificate lineage.

    ``directory_url``/``ca_bundle`` name the CA; ``None`` means the manager's default
    CA for a new lineage. ``profile`` must be offered by the CA; ``preferred_profile``
    is used when offered and otherwise dropped with a warning. ``deploy`` lists the
    deploy targets run after every issuance and renewal (options only; secrets come
    from the environment each time).
    """

    names: tuple[str, ...]
    lineage: str | None = None
    challenge: ChallengeSettings = field(default_factory=ChallengeSettings)
    key_type: str = DEFAULT_KEY_TYPE
    csr_der: bytes | None = None
    reuse_key: bool = False
    preferred_chain: str | None = None
    profile: str | None = None
    preferred_profile: str | None = None
    deploy_hook: str | None = None
    directory_url: str | None = None
    ca_bundle: str | None = None
    deploy: tuple[DeploySpec, ...] = ()

    def settings_json(self) -> dict[str, Any]:
        """The lineage's stored settings: everything but the names and the key type."""
        data: dict[str, Any] = {"challenge": self.challenge.to_json(), "reuse_key": self.reuse_key}
        for name in ("preferred_chain", "profile", "preferred_profile", "deploy_hook", "ca_bundle"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.deploy:
            data["deploy"] = [spec.to_json() for spec in self.deploy]
        if self.csr_der is not None:
            data["csr"] = base64.b64encode(self.csr_der).decode()
        return data

    @classmethod
    def from_lineage(cls, meta: LineageMeta) -> CertificateRequest:
        """The request that renews ``meta``'s lineage at the CA that issued it."""
        settings = meta.settings
        csr = settings.get("csr")
        try:
            return cls(
                names=meta.names,
                lineage=meta.name,
                challenge=ChallengeSettings.from_json(settings.get("challenge") or {}),
                key_type=meta.key_type if meta.key_type in KEY_TYPES else DEFAULT_KEY_TYPE,
                csr_der=base64.b64decode(csr, validate=True) if csr else None,
                reuse_key=bool(settings.get("reuse_key")),
                preferred_chain=_optional_str(settings, "preferred_chain"),
                profile=_optional_str(settings, "profile"),
                preferred_profile=_optional_str(settings, "preferred_profile"),
                deploy_hook=_optional_str(settings, "deploy_hook"),
                directory_url=meta.directory_url,
                ca_bundle=_optional_str(settings, "ca_bundle"),
                deploy=_deploy_specs(settings.get("deploy")),
            )
        except (TypeError, ValueError, ConfigError) as exc:
            raise ConfigError(
                f"the stored settings of {meta.name!r} are damaged ({exc}); issue the certificate again to replace them"
            ) from None


def _deploy_specs(data: Any) -> tuple[DeploySpec, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ValueError("deploy must be a list of targets")
    # Only a lineage with deploy targets loads their machinery: `list` and `show` read
    # every lineage's settings and stay light (tests/unit/test_lazy_imports.py).
    from certsmith.deploy.base import DeploySpec

    return tuple(DeploySpec.from_json(item) for item in data)


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value or None


def lineage_name_for(names: Sequence[str]) -> str:
    """The default lineage name: the first name, ``*.`` written as ``_.``, ``:`` of IPv6 as ``-``.

    A name longer than the store allows keeps its start and gets a short stable suffix
    (the same names always give the same lineage).
    """
    first = names[0]
    name = "_." + first[2:] if first.startswith("*.") else first.replace(":", "-")
    if name.startswith("-"):  # "::1" is also "0::1"; a name never starts with "-"
        name = "0" + name
    if len(name) <= MAX_LINEAGE_NAME:
        return name
    import hashlib  # loads OpenSSL's libcrypto: only for the rare over-long name, not for `list`

    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_LINEAGE_NAME - 9].rstrip('.-')}-{digest}"
