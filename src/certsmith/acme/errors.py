"""Errors of the ACME layer.

A problem document from the CA becomes a :class:`ProblemError` subclass chosen by
its ``type`` (never by the detail text). Transport failures, unexpected responses,
failed validations and time-outs have their own classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from certsmith.errors import CertsmithError

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"


class AcmeError(CertsmithError):
    """Something went wrong talking ACME to the CA."""


class TransportError(AcmeError):
    """The CA could not be reached, or its TLS certificate is not trusted."""


class UnexpectedResponse(AcmeError):
    """The CA answered with something RFC 8555 does not allow (bad JSON, missing header...)."""


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
        if not isinstance(data, dict):
            return cls(type="about:blank", detail=str(data)[:200])
        subs = []
        for sub in data.get("subproblems") or ():
            if isinstance(sub, dict):
                ident = sub.get("identifier")
                subs.append(
                    Subproblem(
                        type=str(sub.get("type", "")),
                        detail=str(sub.get("detail", "")),
                        identifier=ident if isinstance(ident, dict) else None,
                    )
                )
        status = data.get("status")
        ident = data.get("identifier")
        return cls(
            type=str(data.get("type") or "about:blank"),
            detail=str(data.get("detail") or ""),
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
    """The CA answered with a problem document."""

    hint = ""

    def __init__(self, problem: Problem, *, method: str = "", url: str = "", status: int | None = None) -> None:
        self.problem = problem
        self.method = method
        self.url = url
        self.status = status if status is not None else problem.status
        message = f"the CA refused {method} {url}: {problem.describe()}" if url else problem.describe()
        if self.hint:
            message += f" -- {self.hint}"
        super().__init__(message)

    @property
    def type(self) -> str:
        return self.problem.type


class AccountDoesNotExist(ProblemError):
    hint = "register an account first: certsmith account register --email you@example.com --agree-tos"


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
    hint = "this CA requires external account binding: pass --eab-kid and --eab-hmac-key"


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
    hint = "the CA requires you to act (often: accept new terms of service with --agree-tos)"


class AlreadyReplaced(ProblemError):
    pass


class InvalidProfile(ProblemError):
    hint = "choose one of the profiles the CA's directory advertises"


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


def problem_error(problem: Problem, *, method: str = "", url: str = "", status: int | None = None) -> ProblemError:
    """The :class:`ProblemError` subclass for ``problem.type``."""
    cls = ProblemError
    if problem.type.startswith(ACME_ERROR_PREFIX):
        cls = PROBLEM_CLASSES.get(problem.short_type, ProblemError)
    return cls(problem, method=method, url=url, status=status)


class ValidationFailed(AcmeError):
    """One or more authorizations became invalid; carries the CA's problem per name."""

    def __init__(self, failures: dict[str, Problem | None]) -> None:
        self.failures = failures
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
