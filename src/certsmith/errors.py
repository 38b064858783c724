"""The root of certsmith's error tree.

Every error certsmith raises derives from :class:`CertsmithError`. Messages say what
failed and what to do about it; they never contain key material or API secrets.
The ACME protocol errors live in :mod:`certsmith.acme.errors` and derive from here.
"""

from __future__ import annotations


class CertsmithError(Exception):
    """Base class of every error certsmith raises on purpose."""


class ConfigError(CertsmithError):
    """The user's input or configuration cannot be used as given."""


class ProviderConfigError(ConfigError):
    """A DNS provider is missing settings; lists every missing variable at once."""

    def __init__(self, provider: str, missing: list[str], hint: str = "") -> None:
        self.provider = provider
        self.missing = list(missing)
        message = f"DNS provider {provider!r} is not configured: missing " + ", ".join(missing)
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class DnsError(CertsmithError):
    """A DNS provider or DNS lookup failed."""


class PropagationTimeout(DnsError):
    """TXT records did not become visible at the checked servers in time."""


class ChallengeError(CertsmithError):
    """A challenge could not be set up (port in use, unwritable webroot, ...)."""


class ListenError(ChallengeError):
    """A built-in challenge server could not listen.

    ``cause`` is ``in-use``, ``permission``, ``address`` (not one of this machine's) or
    ``other``, so that callers can say which setting to change.
    """

    def __init__(self, message: str, *, challenge_type: str, host: str, port: int, cause: str) -> None:
        super().__init__(message)
        self.challenge_type = challenge_type
        self.host = host
        self.port = port
        self.cause = cause


class UnexpectedCertificate(CertsmithError):
    """The CA returned a certificate that is not the one ordered (another key or other names,
    or a chain that does not certify it); nothing was stored."""


class DeployError(CertsmithError):
    """A deploy target could not deliver the certificate (the stored certificate is kept)."""


class StorageError(CertsmithError):
    """The state directory could not be read or written."""


class LockedError(StorageError):
    """Another process holds the lock of this certificate lineage."""


class StoreKeyMissing(ConfigError):
    """A shared store needs its store key (to seal or open a private key) and none was given."""


class LeaseLostError(StorageError):
    """A write was refused: this process's lease on the lock expired and another process took it since.

    Raised by a shared store (Redis) whose locks are leases with fencing numbers, so that a
    process that stalled past its lease never overwrites the newer work of the next holder.
    """


class AccountError(ConfigError):
    """The ACME account needed for a step is missing, unusable, or cannot be registered as asked.

    ``directory_url`` names the CA; ``reason`` is one of ``missing``, ``not-valid``,
    ``terms-not-agreed``, ``eab-required`` so that callers can give advice.
    """

    def __init__(self, message: str, *, directory_url: str, reason: str, terms_of_service: str | None = None) -> None:
        super().__init__(message)
        self.directory_url = directory_url
        self.reason = reason
        self.terms_of_service = terms_of_service

