"""Errors of the ACME layer.

A problem document from the CA becomes a :class:`ProblemError` subclass chosen by
its ``type`` (never by the detail text). Transport failures, unexpected responses,
failed validations and time-outs have their own classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from certsmith._text import clean
from certsmith.errors import CertsmithError, ConfigError

_MAX_SUBPROBLEMS = 20

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"


class AcmeError(CertsmithError):
    """Something went wrong talking ACME to the CA."""


class TransportError(AcmeError):
    """The CA could not be reached: no connection, a failed TLS handshake, a time-out."""

    def __init__(self, message: str, *, method: str, url: str) -> None:
        self.method = method
        self.url = url
        super().__init__(message)

    @property
    def host(self) -> str:
        """``host[:port]`` of the request that failed."""
        return urlsplit(self.url).netloc


class RequestTimeout(TransportError):
    """The CA did not answer in time."""


class CertificateVerifyFailed(TransportError):
    """The CA's TLS certificate could not be verified.

    ``reason`` and ``verify_code`` are OpenSSL's message and ``X509_V_ERR_*`` code (the
    code is ``None`` when unknown); ``ca_bundle`` is the file of roots that was trusted,
    or ``None`` for the default roots.
    """

    def __init__(
        self, *, method: str, url: str, reason: str, verify_code: int | None = None, ca_bundle: str | None = None
    ) -> None:
        self.reason = reason
        self.verify_code = verify_code
        self.ca_bundle = ca_bundle
        trusted = f" with the roots in {ca_bundle}" if ca_bundle else ""
        message = f"cannot verify the TLS certificate of {urlsplit(url).netloc} ({reason}){trusted}"
        super().__init__(message, method=method, url=url)


class UnexpectedResponse(AcmeError):
    """The CA answered with something RFC 8555 does not allow (bad JSON, missing header...)."""


class NotADirectory(UnexpectedResponse):
    """The directory URL does not serve an ACME directory; ``status`` is its HTTP status."""

    def __init__(self, url: str, problem: str, *, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url} is not an ACME directory: {problem}")


class ProfileNotOffered(ConfigError):
    """A certificate profile was asked for that the CA's directory does not advertise.

    ``offered`` holds the profiles the CA does advertise (empty when it has none).
    """

    def __init__(self, profile: str, *, directory_url: str, offered: Iterable[str]) -> None:
        self.profile = profile
        self.directory_url = directory_url
        self.offered = tuple(sorted(offered))
        if self.offered:
            message = f"profile {profile!r} is not offered by the CA at {directory_url}; it offers: " + ", ".join(
                self.offered
            )
        else:
            message = f"the CA at {directory_url} advertises no profiles, so profile {profile!r} cannot be requested"
        super().__init__(message)


class IncompleteExternalAccountBinding(ConfigError):
    """External account binding needs both ``eab_kid`` and ``eab_hmac_key``; ``missing`` names the absent one."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        super().__init__(f"external account binding needs both eab_kid and eab_hmac_key; {missing} is missing")


class PollTimeout(AcmeError):
    """An order or authorization did not reach a final state in time."""


@dataclass(frozen=True)
class Subproblem:
    type: str
    detail: str
    identifier: dict[str, str] | None = None

    def describe(self) -> str:
        where = f"{self.identifier.get('value')}: " if self.identifier else ""
        return f"{where}{self.detail or self.type}"


@dataclass(frozen=True)
class Problem:
    """An RFC 7807 problem document as ACME uses it (RFC 8555 §6.7)."""

    type: str
    detail: str = ""
    status: int | None = None
    subproblems: tuple[Subproblem, ...] = ()
    identifier: dict[str, str] | None = None
    instance: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def short_type(self) -> str:
        """``badNonce`` for ``urn:ietf:params:acme:error:badNonce``."""
        return self.type.removeprefix(ACME_ERROR_PREFIX)

    @classmethod
    def from_json(cls, data: Any) -> Problem:
        """Read a problem document; every string is cleaned (:func:`certsmith._text.clean`)."""
        if not isinstance(data, dict):
            return cls(type="about:blank", detail=clean(str(data), 200))
        subs = []
        listed = data.get("subproblems")
        for sub in listed[:_MAX_SUBPROBLEMS] if isinstance(listed, list) else ():
            if isinstance(sub, dict):
                ident = sub.get("identifier")
                subs.append(
                    Subproblem(
                        type=clean(str(sub.get("type", "")), 100),
                        detail=clean(str(sub.get("detail", ""))),
                        identifier=ident if isinstance(ident, dict) else None,
                    )
                )
        status = data.get("status")
        ident = data.get("identifier")
        return cls(
            type=clean(str(data.get("type") or "about:blank"), 100),
            detail=clean(str(data.get("detail") or "")),
            status=status if isinstance(status, int) else None,
            subproblems=tuple(subs),
            identifier=ident if isinstance(ident, dict) else None,
            instance=data.get("instance") if isinstance(data.get("instance"), str) else None,
            raw=data,
        )

    def describe(self) -> str:
        text = f"{self.short_type}: {self.detail}" if self.detail else self.short_type
        if self.subproblems:
            text += " (" + "; ".join(sub.describe() for sub in self.subproblems) + ")"
        return text


class ProblemError(AcmeError):
    """The CA answered with a problem document.

    ``links`` are the response's ``Link`` entries as ``(absolute url, rel)``.
    """

    hint = ""

    def __init__(
        self,
        problem: Problem,
        *,
        method: str = "",
        url: str = "",
        status: int | None = None,
        links: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.problem = problem
        self.method = method
        self.url = url
        self.status = status if status is not None else problem.status
        self.links = tuple(links)
        message = f"the CA refused {method} {url}: {problem.describe()}" if url else problem.describe()
        hint = self.describe_hint()
        if hint:
            message += f" -- {hint}"
        super().__init__(message)

    def describe_hint(self) -> str:
        """What the problem type means, beyond the CA's own detail."""
        return self.hint

    @property
    def type(self) -> str:
        return self.problem.type

    @property
    def short_type(self) -> str:
        return self.problem.short_type

    def link(self, rel: str) -> str | None:
        """The first ``Link`` URL with relation ``rel``."""
        return next((target for target, link_rel in self.links if link_rel == rel), None)


class AccountDoesNotExist(ProblemError):
    hint = "the CA knows no account for this key"


class AlreadyRevoked(ProblemError):
    pass


class BadCsr(ProblemError):
    hint = "the CSR must name exactly the order's identifiers and use a key other than the account key"


class BadNonce(ProblemError):
    pass


class BadPublicKey(ProblemError):
    pass


class BadRevocationReason(ProblemError):
    pass


class BadSignatureAlgorithm(ProblemError):
    pass


class CaaError(ProblemError):
    hint = "a CAA record forbids this CA from issuing for the name"


class CompoundError(ProblemError):
    pass


class ConnectionProblem(ProblemError):
    hint = "the CA could not connect to your server to validate the challenge"


class DnsProblem(ProblemError):
    hint = "the CA's DNS lookups failed for the name"


class ExternalAccountRequired(ProblemError):
    hint = "this CA requires external account binding (eab_kid and eab_hmac_key from your account at the CA)"


class IncorrectResponse(ProblemError):
    pass


class InvalidContact(ProblemError):
    hint = "use a valid email address"


class Malformed(ProblemError):
    pass


class OrderNotReady(ProblemError):
    pass


class RateLimited(ProblemError):
    hint = "the CA's rate limit was reached; try again later"

    retry_after: float | None = None


class RejectedIdentifier(ProblemError):
    hint = "the CA will not issue for this name"


class ServerInternal(ProblemError):
    pass


class TlsProblem(ProblemError):
    pass


class Unauthorized(ProblemError):
    pass


class UnsupportedContact(ProblemError):
    hint = "use a mailto: contact"


class UnsupportedIdentifier(ProblemError):
    pass


class UserActionRequired(ProblemError):
    """The CA wants a person to act at ``instance``, often to accept new ``terms_of_service``."""

    @property
    def instance(self) -> str | None:
        return self.problem.instance

    @property
    def terms_of_service(self) -> str | None:
        """The terms the CA asks to accept (RFC 8555 §7.3.3: ``Link rel="terms-of-service"``)."""
        return self.link("terms-of-service")

    def describe_hint(self) -> str:
        parts = []
        if self.terms_of_service:
            parts.append(f"the CA's terms of service at {self.terms_of_service} must be agreed to")
        if self.instance:
            parts.append(f"instructions at {self.instance}")
        return "; ".join(parts) or "the CA requires you to act before it goes on"


class AlreadyReplaced(ProblemError):
    pass


class InvalidProfile(ProblemError):
    """The CA refused the order's profile; ``offered`` holds what its directory advertises."""

    hint = "choose one of the profiles the CA's directory advertises"

    offered: tuple[str, ...] = ()


PROBLEM_CLASSES: dict[str, type[ProblemError]] = {
    "accountDoesNotExist": AccountDoesNotExist,
    "alreadyRevoked": AlreadyRevoked,
    "badCSR": BadCsr,
    "badNonce": BadNonce,
    "badPublicKey": BadPublicKey,
    "badRevocationReason": BadRevocationReason,
    "badSignatureAlgorithm": BadSignatureAlgorithm,
    "caa": CaaError,
    "compound": CompoundError,
    "connection": ConnectionProblem,
    "dns": DnsProblem,
    "externalAccountRequired": ExternalAccountRequired,
    "incorrectResponse": IncorrectResponse,
    "invalidContact": InvalidContact,
    "malformed": Malformed,
    "orderNotReady": OrderNotReady,
    "rateLimited": RateLimited,
    "rejectedIdentifier": RejectedIdentifier,
    "serverInternal": ServerInternal,
    "tls": TlsProblem,
    "unauthorized": Unauthorized,
    "unsupportedContact": UnsupportedContact,
    "unsupportedIdentifier": UnsupportedIdentifier,
    "userActionRequired": UserActionRequired,
    "agreementRequired": UserActionRequired,  # Pebble 2.4's pre-RFC name
    "alreadyReplaced": AlreadyReplaced,
    "invalidProfile": InvalidProfile,
}


def problem_error(
    problem: Problem,
    *,
    method: str = "",
    url: str = "",
    status: int | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> ProblemError:
    """The :class:`ProblemError` subclass for ``problem.type``."""
    cls = ProblemError
    if problem.type.startswith(ACME_ERROR_PREFIX):
        cls = PROBLEM_CLASSES.get(problem.short_type, ProblemError)
    return cls(problem, method=method, url=url, status=status, links=links)


class ValidationFailed(AcmeError):
    """One or more authorizations became invalid; carries the CA's problem per name and,
    when known, the challenge type that was tried."""

    def __init__(self, failures: dict[str, Problem | None], *, challenge_type: str | None = None) -> None:
        self.failures = failures
        self.challenge_type = challenge_type
        parts = []
        for name, problem in failures.items():
            parts.append(f"{name}: {problem.describe() if problem else 'authorization is invalid'}")
        super().__init__("validation failed for " + "; ".join(parts))


class OrderFailed(AcmeError):
    """The order became invalid (or another final state that is not ``valid``)."""

    def __init__(self, url: str, status: str, problem: Problem | None) -> None:
        self.url = url
        self.status = status
        self.problem = problem
        detail = f": {problem.describe()}" if problem else ""
        super().__init__(f"order {url} is {status}{detail}")
