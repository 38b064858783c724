"""Issue, renew and revoke certificates: the orchestration and policy layer.

The :class:`Manager` plans an order, solves every authorization of it concurrently
through one challenge solver (so dns-01 waits for propagation once), finalizes,
stores the result atomically under a per-lineage lock and runs the deploy hook.
Many certificates can be issued at once from one manager: they share one ACME
client (one connection pool, one nonce pool) and one solver per challenge setting.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from certsmith.acme.client import REVOCATION_REASONS, AcmeClient, certificate_der
from certsmith.acme.errors import OrderNotReady, ValidationFailed
from certsmith.acme.resources import Authorization, AuthorizationStatus, CertificateChain, Order, OrderStatus
from certsmith.challenges.base import ChallengeJob, ChallengeSolver
from certsmith.crypto import (
    DEFAULT_KEY_TYPE,
    KEY_TYPES,
    Identifier,
    generate_key,
    issuer_common_name,
    key_type_of,
    load_csr,
    load_private_key,
    make_csr,
    parse_identifiers,
    private_key_pem,
)
from certsmith.errors import CertsmithError, ConfigError
from certsmith.jose import PrivateKey, key_authorization
from certsmith.storage.base import LineageMeta, StoredAccount, validate_lineage_name
from certsmith.storage.files import FileStore

log = logging.getLogger("certsmith")

DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "zerossl": "https://acme.zerossl.com/v2/DV90",
    "google": "https://dv.acme-v02.api.pki.goog/directory",
    "buypass": "https://api.buypass.com/acme/directory",
}
CHALLENGE_TYPES = ("http-01", "tls-alpn-01", "dns-01")

EventSink = Callable[[str, str], None]


def resolve_directory(value: str | None) -> str:
    """A directory URL from a URL or one of the :data:`DIRECTORIES` names."""
    if not value:
        return DIRECTORIES["letsencrypt"]
    if value in DIRECTORIES:
        return DIRECTORIES[value]
    if value.startswith("https://"):
        return value
    raise ConfigError(f"--directory must be an https:// URL or one of: {', '.join(DIRECTORIES)}; got {value!r}")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class ChallengeSettings:
    """How to prove control of the names; stored with the lineage so renewal repeats it."""

    challenge: str = "http-01"
    http_port: int = 80
    http_host: str = ""
    webroot: str | None = None
    tls_port: int = 443
    tls_host: str = ""
    dns_provider: str | None = None
    dns_resolvers: tuple[str, ...] = ()
    propagation_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.challenge not in CHALLENGE_TYPES:
            raise ConfigError(f"--challenge must be one of {', '.join(CHALLENGE_TYPES)}, not {self.challenge!r}")
        if self.challenge == "dns-01" and not self.dns_provider:
            raise ConfigError("dns-01 needs a DNS provider: add --dns PROVIDER (see: certsmith dns list)")
        for port in (self.http_port, self.tls_port):
            if not 0 < port < 65536:
                raise ConfigError(f"port {port} is not between 1 and 65535")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dns_resolvers"] = list(self.dns_resolvers)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChallengeSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "dns_resolvers" in known:
            known["dns_resolvers"] = tuple(known["dns_resolvers"])
        return cls(**known)

    def check_identifiers(self, identifiers: Sequence[Identifier]) -> None:
        """Refuse combinations the CA would reject, before anything is ordered."""
        for ident in identifiers:
            if ident.wildcard and self.challenge != "dns-01":
                raise ConfigError(
                    f"{ident.value} is a wildcard: wildcards can only be validated with --challenge dns-01"
                )
            if ident.type == "ip" and self.challenge == "dns-01":
                raise ConfigError(f"{ident.value} is an IP address: use http-01 or tls-alpn-01, not dns-01")


@dataclass(frozen=True)
class CertificateRequest:
    """Everything needed to obtain (and later renew) one certificate lineage."""

    names: tuple[str, ...]
    lineage: str | None = None
    challenge: ChallengeSettings = field(default_factory=ChallengeSettings)
    key_type: str = DEFAULT_KEY_TYPE
    csr_der: bytes | None = None
    reuse_key: bool = False
    preferred_chain: str | None = None
    profile: str | None = None
    deploy_hook: str | None = None

    def settings_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"challenge": self.challenge.to_json(), "reuse_key": self.reuse_key}
        for name in ("preferred_chain", "profile", "deploy_hook"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.csr_der is not None:
            data["csr"] = base64.b64encode(self.csr_der).decode()
        return data

    @classmethod
    def from_lineage(cls, meta: LineageMeta) -> CertificateRequest:
        settings = meta.settings
        csr = settings.get("csr")
        return cls(
            names=meta.names,
            lineage=meta.name,
            challenge=ChallengeSettings.from_json(settings.get("challenge") or {}),
            key_type=meta.key_type if meta.key_type in KEY_TYPES else DEFAULT_KEY_TYPE,
            csr_der=base64.b64decode(csr) if csr else None,
            reuse_key=bool(settings.get("reuse_key")),
            preferred_chain=settings.get("preferred_chain"),
            profile=settings.get("profile"),
            deploy_hook=settings.get("deploy_hook"),
        )


def lineage_name_for(names: Sequence[str]) -> str:
    """The default lineage name: the first name, ``*.`` written as ``_.``."""
    first = names[0]
    return "_." + first[2:] if first.startswith("*.") else first


@dataclass(frozen=True)
class IssueResult:
    name: str
    directory: Path
    names: tuple[str, ...]
    not_after: str
    issuer: str
    serial: str
    deploy_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["names"] = list(self.names)
        return data


def renewal_due(meta: LineageMeta, now: datetime.datetime) -> tuple[bool, str]:
    """Renew when less than a third of the certificate's lifetime is left."""
    start, end = parse_rfc3339(meta.not_before), parse_rfc3339(meta.not_after)
    remaining = end - now
    if remaining <= (end - start) / 3:
        return True, f"{max(remaining.days, 0)} days left of {(end - start).days}"
    return False, f"not due: {remaining.days} days left of {(end - start).days}"


class Manager:
    """Issue, renew and revoke against one directory, with one state directory."""

    def __init__(
        self,
        store: FileStore,
        directory_url: str,
        *,
        ca_bundle: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        self.store = store
        self.directory_url = directory_url
        self.ca_bundle = ca_bundle
        self.env = dict(os.environ if env is None else env)
        self._on_event = on_event
        self._client: AcmeClient | None = None
        self._client_lock = asyncio.Lock()
        self._solvers: dict[tuple[Any, ...], ChallengeSolver] = {}
        self._solver_lock = asyncio.Lock()

    async def __aenter__(self) -> Manager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        solvers, self._solvers = list(self._solvers.values()), {}
        await asyncio.gather(*(solver.aclose() for solver in solvers), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def event(self, kind: str, message: str) -> None:
        log.info("%s", message)
        if self._on_event is not None:
            self._on_event(kind, message)

    # -- accounts --------------------------------------------------------------------

    def stored_account(self) -> StoredAccount | None:
        return self.store.load_account(self.directory_url)

    async def client(self) -> AcmeClient:
        """The ACME client for the stored account of this directory."""
        async with self._client_lock:
            if self._client is None:
                account = self.stored_account()
                if account is None:
                    raise ConfigError(
                        f"no account for {self.directory_url}; run "
                        "'certsmith account register --email you@example.com --agree-tos' "
                        "or add --email and --agree-tos to this command"
                    )
                if account.status != "valid":
                    raise ConfigError(f"the account for {self.directory_url} is {account.status}; register a new one")
                key = load_private_key(account.key_pem, "the stored account key")
                self._client = AcmeClient(
                    self.directory_url, key, account_url=account.url, ca_bundle=self.ca_bundle
                )
            return self._client

    async def register(
        self,
        *,
        email: Sequence[str] = (),
        agree_tos: bool = False,
        key_type: str = DEFAULT_KEY_TYPE,
        eab_kid: str | None = None,
        eab_hmac_key: str | None = None,
    ) -> StoredAccount:
        """Register a new account (or find the existing one of a stored key) and store it."""
        existing = self.stored_account()
        if existing is not None and existing.status == "valid":
            return existing
        contact = [_mailto(e) for e in email]
        key = await asyncio.to_thread(generate_key, key_type)
        client = AcmeClient(self.directory_url, key, ca_bundle=self.ca_bundle)
        try:
            directory = await client.directory()
            if directory.external_account_required and not eab_kid:
                raise ConfigError(
                    f"the CA at {self.directory_url} requires external account binding: "
                    "pass --eab-kid and --eab-hmac-key from your CA account"
                )
            if directory.terms_of_service and not agree_tos:
                raise ConfigError(
                    f"the CA's terms of service must be accepted ({directory.terms_of_service}); add --agree-tos"
                )
            account = await client.register(
                contact=contact, agree_tos=agree_tos, eab_kid=eab_kid, eab_hmac_key=eab_hmac_key
            )
        except BaseException:
            await client.aclose()
            raise
        stored = StoredAccount(
            directory_url=self.directory_url,
            url=account.url,
            key_pem=private_key_pem(key),
            contact=account.contact or tuple(contact),
            status=account.status,
            created_at=_rfc3339(utc_now()),
        )
        self.store.save_account(stored)
        async with self._client_lock:
            if self._client is None:
                self._client = client  # keep its directory, connection and nonces for what follows
            else:
                await client.aclose()
        self.event("account", f"registered account {account.url}")
        return stored

    async def ensure_account(self, *, email: Sequence[str], agree_tos: bool, key_type: str = DEFAULT_KEY_TYPE) -> None:
        if self.stored_account() is None:
            if not email and not agree_tos:
                await self.client()  # raises the "no account" guidance
            await self.register(email=email, agree_tos=agree_tos, key_type=key_type)

    async def account_info(self) -> dict[str, Any]:
        client = await self.client()
        account = await client.fetch_account()
        stored = self.stored_account()
        assert stored is not None
        return {
            "directory": self.directory_url,
            "url": account.url,
            "status": account.status,
            "contact": list(account.contact),
            "key_type": key_type_of(client.account_key),
            "created_at": stored.created_at,
        }

    async def update_account(self, *, email: Sequence[str]) -> StoredAccount:
        client = await self.client()
        account = await client.update_account(contact=[_mailto(e) for e in email])
        stored = self.stored_account()
        assert stored is not None
        updated = replace(stored, contact=account.contact, status=account.status)
        self.store.save_account(updated)
        return updated

    async def rollover_account(self, *, key_type: str | None = None) -> StoredAccount:
        """Replace the account key at the CA, keeping the old key in an archive file."""
        client = await self.client()
        stored = self.stored_account()
        assert stored is not None
        new_key = await asyncio.to_thread(generate_key, key_type or key_type_of(client.account_key))
        self.store.archive_account_key(self.directory_url)
        await client.change_key(new_key)
        updated = replace(stored, key_pem=private_key_pem(new_key))
        self.store.save_account(updated)
        self.event("account", "account key rolled over")
        return updated

    async def deactivate_account(self) -> StoredAccount:
        client = await self.client()
        account = await client.deactivate_account()
        stored = self.stored_account()
        assert stored is not None
        updated = replace(stored, status=account.status)
        self.store.save_account(updated)
        return updated

    # -- issuance --------------------------------------------------------------------

    async def issue(self, request: CertificateRequest) -> IssueResult:
        """Obtain a certificate for ``request`` and store it as its lineage."""
        identifiers = self.identifiers_for(request)
        name = request.lineage or lineage_name_for([i.value for i in identifiers])
        validate_lineage_name(name)
        await self._solver(request.challenge)  # provider settings are checked before anything is written
        client = await self.client()
        async with self.store.alock(name, wait=0.0):
            previous = self.store.load_lineage(name)
            key: PrivateKey | None = None
            if request.csr_der is not None:
                csr_der = request.csr_der
            else:
                if request.reuse_key and previous is not None and previous.key_path.exists():
                    key = load_private_key(previous.key_path.read_bytes(), f"the key of {name}")
                else:
                    key = await asyncio.to_thread(generate_key, request.key_type)
                csr_der = make_csr(key, identifiers)
            chain = await self._obtain(client, identifiers, csr_der, request)
            leaf = x509.load_pem_x509_certificate(chain.leaf_pem)
            now = _rfc3339(utc_now())
            meta = LineageMeta(
                name=name,
                names=tuple(i.value for i in identifiers),
                key_type=key_type_of(key) if key is not None else "csr",
                directory_url=self.directory_url,
                settings=request.settings_json(),
                not_before=_rfc3339(leaf.not_valid_before_utc),
                not_after=_rfc3339(leaf.not_valid_after_utc),
                serial=format(leaf.serial_number, "x"),
                issuer=issuer_common_name(leaf),
                version=(previous.meta.version if previous else 0) + 1,
                created_at=previous.meta.created_at if previous else now,
                updated_at=now,
            )
            lineage = self.store.save_certificate(
                meta,
                key_pem=private_key_pem(key) if key is not None else None,
                cert_pem=chain.leaf_pem,
                chain_pem=chain.chain_pem,
                fullchain_pem=chain.pem,
            )
        meta = lineage.meta
        self.event("stored", f"{name}: certificate stored in {lineage.directory}")
        deploy_error = await self._deploy(request, lineage.directory, meta) if request.deploy_hook else None
        return IssueResult(
            name=name,
            directory=lineage.directory,
            names=meta.names,
            not_after=meta.not_after,
            issuer=meta.issuer,
            serial=meta.serial,
            deploy_error=deploy_error,
        )

    async def issue_many(self, requests: Sequence[CertificateRequest]) -> list[IssueResult | CertsmithError]:
        """Issue several certificates concurrently; each result is a result or its error."""
        results = await asyncio.gather(*(self.issue(r) for r in requests), return_exceptions=True)
        out: list[IssueResult | CertsmithError] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, CertsmithError):
                raise result
            out.append(result)
        return out

    def identifiers_for(self, request: CertificateRequest) -> list[Identifier]:
        """The validated identifiers of ``request``; raises ConfigError before anything is sent or written."""
        if request.csr_der is not None:
            _, identifiers = load_csr(request.csr_der)
            if request.names:
                wanted = parse_identifiers(request.names)
                if set(wanted) != set(identifiers):
                    raise ConfigError("the names given with -d differ from the names in the CSR; give one or the other")
        else:
            identifiers = parse_identifiers(request.names)
        request.challenge.check_identifiers(identifiers)
        return identifiers

    async def _obtain(
        self, client: AcmeClient, identifiers: Sequence[Identifier], csr_der: bytes, request: CertificateRequest
    ) -> CertificateChain:
        label = identifiers[0].value + (f" (+{len(identifiers) - 1})" if len(identifiers) > 1 else "")
        order = await client.new_order(identifiers, profile=request.profile)
        self.event("order", f"{label}: order created")
        if order.status == OrderStatus.PENDING:
            await self._authorize(client, order, request.challenge, label)
        elif order.status == OrderStatus.INVALID:
            raise ValidationFailed({label: order.error})
        try:
            finalized = await client.finalize(order, csr_der)
        except OrderNotReady:
            order = await client.poll_order(order)
            finalized = await client.finalize(order, csr_der)
        self.event("finalized", f"{label}: certificate issued")
        assert finalized.certificate is not None
        return await client.download_certificate(finalized.certificate, preferred_chain=request.preferred_chain)

    async def _authorize(self, client: AcmeClient, order: Order, settings: ChallengeSettings, label: str) -> None:
        fetched = await asyncio.gather(*(client.get_authorization(url) for url in order.authorizations))
        authzs = [authz for authz, _ in fetched]
        usable = (AuthorizationStatus.PENDING, AuthorizationStatus.VALID)
        failed = {a.name: a.error for a in authzs if a.status not in usable}
        if failed:
            raise ValidationFailed(failed)
        pending = [a for a in authzs if a.status == AuthorizationStatus.PENDING]
        if not pending:
            return
        jobs: list[tuple[Authorization, str, ChallengeJob]] = []
        for authz in pending:
            challenge = authz.challenge(settings.challenge)
            if challenge is None or challenge.token is None:
                offered = ", ".join(sorted({c.type for c in authz.challenges})) or "none"
                raise ConfigError(
                    f"the CA offers no {settings.challenge} challenge for {authz.name} (it offers: {offered})"
                )
            job = ChallengeJob(
                identifier_type=authz.identifier.type,
                identifier=authz.identifier.value,
                token=challenge.token,
                key_authorization=key_authorization(challenge.token, client.account_key),
                wildcard=authz.wildcard,
            )
            jobs.append((authz, challenge.url, job))
        solver = await self._solver(settings)
        job_list = [job for _, _, job in jobs]
        self.event("challenge", f"{label}: preparing {len(jobs)} {settings.challenge} challenge(s)")
        try:
            await solver.present(job_list)
            await asyncio.gather(*(client.answer_challenge(url) for _, url, _ in jobs))
            results = await asyncio.gather(*(client.poll_authorization(a.url, first_wait=0.02) for a, _, _ in jobs))
        finally:
            await solver.cleanup(job_list)
        failed = {a.name: a.error for a in results if a.status != AuthorizationStatus.VALID}
        if failed:
            raise ValidationFailed(failed)
        self.event("validated", f"{label}: {len(jobs)} authorization(s) valid")

    async def _solver(self, settings: ChallengeSettings) -> ChallengeSolver:
        key: tuple[Any, ...]
        async with self._solver_lock:
            if settings.challenge == "http-01":
                key = ("http-01", settings.http_port, settings.http_host, settings.webroot)
            elif settings.challenge == "tls-alpn-01":
                key = ("tls-alpn-01", settings.tls_port, settings.tls_host)
            else:
                key = ("dns-01", settings.dns_provider, settings.dns_resolvers, settings.propagation_timeout)
            solver = self._solvers.get(key)
            if solver is None:
                solver = self._make_solver(settings)
                self._solvers[key] = solver
            return solver

    def _make_solver(self, settings: ChallengeSettings) -> ChallengeSolver:
        if settings.challenge == "http-01":
            from certsmith.challenges.http01 import Http01Solver

            webroot = Path(settings.webroot) if settings.webroot else None
            return Http01Solver(port=settings.http_port, host=settings.http_host, webroot=webroot)
        if settings.challenge == "tls-alpn-01":
            from certsmith.challenges.tlsalpn01 import TlsAlpn01Solver

            return TlsAlpn01Solver(port=settings.tls_port, host=settings.tls_host)
        from certsmith.challenges.dns01 import Dns01Solver
        from certsmith.dns.base import load_provider
        from certsmith.dns.zone import Resolver

        assert settings.dns_provider is not None
        provider = load_provider(settings.dns_provider, self.env)
        resolver = Resolver.from_cli(settings.dns_resolvers)
        return Dns01Solver(provider, resolver, propagation_timeout=settings.propagation_timeout)

    async def _deploy(self, request: CertificateRequest, directory: Path, meta: LineageMeta) -> str | None:
        """Run the deploy hook through the shell; returns an error text when it fails."""
        assert request.deploy_hook is not None
        env = dict(self.env)
        domains = " ".join(meta.names)
        env.update(
            CERTSMITH_LINEAGE=str(directory),
            CERTSMITH_NAME=meta.name,
            CERTSMITH_DOMAINS=domains,
            RENEWED_LINEAGE=str(directory),
            RENEWED_DOMAINS=domains,
        )
        self.event("deploy", f"{meta.name}: running deploy hook")
        process = await asyncio.create_subprocess_shell(
            request.deploy_hook,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await process.communicate()
        if stdout:
            log.info("deploy hook output: %s", stdout.decode(errors="replace").strip())
        if process.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
            return f"deploy hook exited with status {process.returncode}" + (f": {' / '.join(tail)}" if tail else "")
        return None

    # -- renewal and revocation ------------------------------------------------------

    async def renew(
        self, names: Sequence[str] = (), *, force: bool = False, now: datetime.datetime | None = None
    ) -> list[dict[str, Any]]:
        """Renew due lineages (all, or ``names``) concurrently; one outcome per lineage."""
        current = now or utc_now()
        selected = list(names) or self.store.lineage_names()
        plans: list[tuple[str, CertificateRequest | None, str]] = []
        for name in selected:
            lineage = self.store.load_lineage(name)
            if lineage is None:
                raise ConfigError(f"no certificate named {name!r}; see: certsmith list")
            if lineage.meta.directory_url != self.directory_url:
                plans.append((name, None, f"skipped: issued by {lineage.meta.directory_url}"))
                continue
            due, reason = renewal_due(lineage.meta, current)
            if force or due:
                why = "forced" if force and not due else reason
                plans.append((name, CertificateRequest.from_lineage(lineage.meta), why))
            else:
                plans.append((name, None, reason))
        todo = [(name, req, why) for name, req, why in plans if req is not None]
        results = await self.issue_many([req for _, req, _ in todo if req is not None])
        by_name = {name: result for (name, _, _), result in zip(todo, results, strict=True)}
        outcomes: list[dict[str, Any]] = []
        for name, request, reason in plans:
            if request is None:
                outcomes.append({"name": name, "renewed": False, "reason": reason})
                continue
            result = by_name[name]
            if isinstance(result, CertsmithError):
                outcomes.append({"name": name, "renewed": False, "reason": reason, "error": str(result)})
            else:
                outcomes.append({"name": name, "renewed": True, "reason": reason, **result.to_json()})
        return outcomes

    async def revoke(self, name: str, *, reason: str = "unspecified") -> dict[str, Any]:
        """Revoke the current certificate of lineage ``name``."""
        if reason not in REVOCATION_REASONS:
            raise ConfigError(f"--reason must be one of {', '.join(REVOCATION_REASONS)}, not {reason!r}")
        lineage = self.store.load_lineage(name)
        if lineage is None:
            raise ConfigError(f"no certificate named {name!r}; see: certsmith list")
        cert_der = certificate_der(lineage.cert_path.read_bytes())
        if self.stored_account() is not None:
            client = await self.client()
            await client.revoke(cert_der, reason=REVOCATION_REASONS[reason])
        elif lineage.key_path.exists():
            key = load_private_key(lineage.key_path.read_bytes(), f"the key of {name}")
            async with AcmeClient(self.directory_url, key, ca_bundle=self.ca_bundle) as client:
                await client.revoke(cert_der, reason=REVOCATION_REASONS[reason], certificate_key=key)
        else:
            raise ConfigError(f"neither an account nor the certificate key is available to revoke {name!r}")
        self.event("revoked", f"{name}: certificate {lineage.meta.serial} revoked ({reason})")
        return {"name": name, "serial": lineage.meta.serial, "reason": reason, "revoked": True}


def describe_lineage(meta: LineageMeta, now: datetime.datetime) -> dict[str, Any]:
    """The facts ``list`` and ``show`` print."""
    end = parse_rfc3339(meta.not_after)
    return {
        "name": meta.name,
        "names": list(meta.names),
        "not_after": meta.not_after,
        "days_left": (end - now).days,
        "issuer": meta.issuer,
        "key_type": meta.key_type,
        "serial": meta.serial,
        "directory": meta.directory_url,
        "version": meta.version,
    }


def _mailto(email: str) -> str:
    address = email.strip().removeprefix("mailto:")
    if "@" not in address or "," in address or "?" in address or " " in address:
        raise ConfigError(f"{email!r} is not a single email address")
    return "mailto:" + address
