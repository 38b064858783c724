"""ACME resources as frozen dataclasses (RFC 8555 §7.1).

``from_json`` tolerates unknown fields and unknown challenge types: a CA adding
fields must never break the client.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from certsmith.acme.errors import NotADirectory, Problem, UnexpectedResponse
from certsmith.crypto import Identifier, IdentifierType


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    return value if isinstance(value, str) else default


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _identifier(data: Any) -> Identifier:
    if not isinstance(data, dict) or not isinstance(data.get("value"), str):
        raise UnexpectedResponse(f"the CA sent an identifier that is not an object with a value: {data!r}")
    try:
        return Identifier(IdentifierType(str(data.get("type", "dns"))), data["value"])
    except ValueError:
        raise UnexpectedResponse(f"the CA sent an identifier of a type certsmith never asks for: {data!r}") from None


class _TolerantStatus(StrEnum):
    """A status enum in which values a CA invents later become ``unknown``."""

    @classmethod
    def parse(cls, value: Any) -> Self:
        try:
            return cls(value)
        except ValueError:
            return cls("unknown")


class AccountStatus(_TolerantStatus):
    VALID = "valid"
    DEACTIVATED = "deactivated"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class OrderStatus(_TolerantStatus):
    PENDING = "pending"
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"


class AuthorizationStatus(_TolerantStatus):
    PENDING = "pending"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class ChallengeStatus(_TolerantStatus):
    PENDING = "pending"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Directory:
    """The CA's directory (RFC 8555 §7.1.1) with the optional ARI and profiles extensions."""

    url: str
    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: str
    key_change: str
    new_authz: str | None = None
    renewal_info: str | None = None
    terms_of_service: str | None = None
    website: str | None = None
    caa_identities: tuple[str, ...] = ()
    external_account_required: bool = False
    profiles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, url: str, data: Any) -> Directory:
        if not isinstance(data, dict):
            raise NotADirectory(url, "the document is not a JSON object")
        missing = [k for k in ("newNonce", "newAccount", "newOrder") if not isinstance(data.get(k), str)]
        if missing:
            raise NotADirectory(url, f"it has no {', '.join(missing)}")
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        assert isinstance(meta, dict)
        profiles = meta.get("profiles")
        caa = meta.get("caaIdentities")
        return cls(
            url=url,
            new_nonce=data["newNonce"],
            new_account=data["newAccount"],
            new_order=data["newOrder"],
            revoke_cert=_str(data, "revokeCert"),
            key_change=_str(data, "keyChange"),
            new_authz=_opt_str(data, "newAuthz"),
            renewal_info=_opt_str(data, "renewalInfo"),
            terms_of_service=_opt_str(meta, "termsOfService"),
            website=_opt_str(meta, "website"),
            caa_identities=tuple(str(c) for c in caa) if isinstance(caa, list) else (),
            external_account_required=meta.get("externalAccountRequired") is True,
            profiles={str(k): str(v) for k, v in profiles.items()} if isinstance(profiles, dict) else {},
        )


@dataclass(frozen=True)
class Account:
    url: str
    status: AccountStatus
    contact: tuple[str, ...] = ()
    orders: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, url: str, data: Any) -> Account:
        data = data if isinstance(data, dict) else {}
        contact = data.get("contact")
        return cls(
            url=url,
            status=AccountStatus.parse(data.get("status", "valid")),
            contact=tuple(str(c) for c in contact) if isinstance(contact, list) else (),
            orders=_opt_str(data, "orders"),
            raw=data,
        )


@dataclass(frozen=True)
class Challenge:
    type: str
    url: str
    status: ChallengeStatus
    token: str | None = None
    error: Problem | None = None
    validated: str | None = None
    # dns-persist-01 (draft-ietf-acme-dns-persist): the names the CA accepts in the record.
    issuer_domain_names: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Challenge | None:
        """``None`` for entries that are not usable challenge objects."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return None
        error = data.get("error")
        return cls(
            type=_str(data, "type"),
            url=data["url"],
            status=ChallengeStatus.parse(data.get("status")),
            token=_opt_str(data, "token"),
            error=Problem.from_json(error) if error else None,
            validated=_opt_str(data, "validated"),
            issuer_domain_names=_str_list(data.get("issuer-domain-names")),
        )


@dataclass(frozen=True)
class Authorization:
    url: str
    identifier: Identifier
    status: AuthorizationStatus
    challenges: tuple[Challenge, ...] = ()
    wildcard: bool = False
    expires: str | None = None

    @classmethod
    def from_json(cls, url: str, data: Any) -> Authorization:
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"authorization {url} is not a JSON object")
        challenges = tuple(
            c for c in (Challenge.from_json(item) for item in data.get("challenges") or ()) if c is not None
        )
        return cls(
            url=url,
            identifier=_identifier(data.get("identifier")),
            status=AuthorizationStatus.parse(data.get("status")),
            challenges=challenges,
            wildcard=data.get("wildcard") is True,
            expires=_opt_str(data, "expires"),
        )

    @property
    def name(self) -> str:
        """The identifier as the user wrote it (``*.`` back for wildcards)."""
        return ("*." if self.wildcard else "") + self.identifier.value

    def challenge(self, challenge_type: str) -> Challenge | None:
        return next((c for c in self.challenges if c.type == challenge_type), None)

    @property
    def error(self) -> Problem | None:
        """The problem of the challenge that failed, if the CA says."""
        return next((c.error for c in self.challenges if c.error is not None), None)


@dataclass(frozen=True)
class Order:
    url: str
    status: OrderStatus
    identifiers: tuple[Identifier, ...]
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None = None
    expires: str | None = None
    not_before: str | None = None
    not_after: str | None = None
    error: Problem | None = None
    profile: str | None = None
    replaces: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, url: str, data: Any) -> Order:
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"order {url} is not a JSON object")
        if not isinstance(data.get("finalize"), str):
            raise UnexpectedResponse(f"order {url} has no finalize URL")
        error = data.get("error")
        authzs = data.get("authorizations") or ()
        return cls(
            url=url,
            status=OrderStatus.parse(data.get("status")),
            identifiers=tuple(_identifier(i) for i in data.get("identifiers") or ()),
            authorizations=tuple(a for a in authzs if isinstance(a, str)),
            finalize=data["finalize"],
            certificate=_opt_str(data, "certificate"),
            expires=_opt_str(data, "expires"),
            not_before=_opt_str(data, "notBefore"),
            not_after=_opt_str(data, "notAfter"),
            error=Problem.from_json(error) if error else None,
            profile=_opt_str(data, "profile"),
            replaces=_opt_str(data, "replaces"),
            raw=data,
        )


@dataclass(frozen=True)
class RenewalInfo:
    """The CA's renewal window for one certificate (RFC 9773 §4.2)."""

    window_start: datetime.datetime
    window_end: datetime.datetime
    explanation_url: str | None = None

    @classmethod
    def from_json(cls, url: str, data: Any) -> RenewalInfo:
        window = data.get("suggestedWindow") if isinstance(data, dict) else None
        if not isinstance(window, dict):
            raise UnexpectedResponse(f"{url} answered without a suggestedWindow object")
        try:
            start = _timestamp(window["start"])
            end = _timestamp(window["end"])
        except (KeyError, TypeError, ValueError):
            raise UnexpectedResponse(f"{url} answered with a suggestedWindow without valid times") from None
        if end < start:
            raise UnexpectedResponse(f"{url} answered with a suggestedWindow that ends before it starts")
        return cls(start, end, _opt_str(data, "explanationURL"))


def _timestamp(value: Any) -> datetime.datetime:
    if not isinstance(value, str):
        raise TypeError("not a string")
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment.astimezone(datetime.UTC)


@dataclass(frozen=True)
class CertificateChain:
    """One chain the CA offers: the PEM text and the issuer name of its top certificate."""

    url: str
    pem: bytes
    top_issuer: str

    @property
    def leaf_pem(self) -> bytes:
        end = self.pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
        return self.pem[:end].strip() + b"\n"

    @property
    def chain_pem(self) -> bytes:
        end = self.pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
        return self.pem[end:].strip() + b"\n"


def _str_list(value: Any) -> tuple[str, ...]:
    """The non-empty strings of a JSON list; anything else (absent, mistyped) is no list at all."""
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str) and item)
