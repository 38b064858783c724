"""Issue, renew and revoke certificates: the orchestrating facade.

The :class:`Manager` holds one store with its accounts, challenge solvers, shared rate
limiter and clock, and ties the parts together. To issue, it checks the request
(preflight), takes the lineage's lock, keeps a certificate that is still good, makes the
key and CSR, has :mod:`certsmith.ordering` run the ACME order (every authorization solved
at once through one solver, so dns-01 waits for propagation once), stores the result
atomically and has :mod:`certsmith.delivery` run the deploy targets and hook. A renew run
is :mod:`certsmith.renewal`; revoke and delete are here. It asks :mod:`certsmith.policy`
whether a lineage is due and never decides that itself. Each lineage is renewed at the CA
that issued it; many certificates can be issued at once from one manager, sharing one
ACME client per CA and one solver per challenge setting. The result records live in
:mod:`certsmith.outcomes` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certsmith._constants import REVOCATION_REASONS
from certsmith._time import Clock, format_time, utc_now
from certsmith.accounts import Accounts, EventSink
from certsmith.acme.client import AcmeClient, certificate_der
from certsmith.acme.errors import ProfileNotOffered
from certsmith.acme.resources import CertificateChain
from certsmith.crypto import (
    Identifier,
    ari_cert_id,
    generate_key_async,
    issuer_common_name,
    key_type_of,
    load_csr,
    load_private_key,
    make_csr,
    parse_identifiers,
    private_key_pem,
)
from certsmith.delivery import Delivery
from certsmith.errors import CertsmithError, ConfigError, StorageError
from certsmith.jose import PrivateKey
from certsmith.leftovers import StoreJournal, clean_leftovers
from certsmith.ordering import OrderFlow, replaceable_cert_id
from certsmith.outcomes import IssueResult, RenewOutcome, SyncOutcome
from certsmith.ratelimit import Limit, RateLimiter
from certsmith.settings import CertificateRequest, lineage_name_for
from certsmith.solvers import SolverPool
from certsmith.storage.base import CertificateFiles, LineageMeta, RenewalState, Store, validate_lineage_name

if TYPE_CHECKING:
    import httpx

    from certsmith.deploy.base import DeploySpec
    from certsmith.deploy.runner import TargetResult
    from certsmith.policy import Decision

__all__ = ["IssueResult", "Manager", "RenewOutcome", "SyncOutcome"]

log = logging.getLogger("certsmith")


class Manager:
    """Issue, renew and revoke with one store; new lineages go to ``directory_url``.

    ``clock`` gives "now" for every decision (tests pass a fixed one); ``http`` is an
    ``httpx.AsyncClient`` shared by the ACME clients (a proxy, a test transport).
    """

    def __init__(
        self,
        store: Store,
        directory_url: str,
        *,
        ca_bundle: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        on_event: EventSink | None = None,
        clock: Clock = utc_now,
        http: httpx.AsyncClient | None = None,
        lock_wait: float = 0.0,
        rate_limits: Mapping[str, Mapping[str, Limit | None]] | None = None,
    ) -> None:
        self.store = store
        # The shared rate limiter: Let's Encrypt's defaults, ``rate_limits`` overriding them by directory URL.
        self.limiter = RateLimiter(store, rate_limits)
        self.lock_wait = lock_wait  # seconds to wait for a lineage another process is working on
        self.directory_url = directory_url
        self.ca_bundle = str(ca_bundle) if ca_bundle else None
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self._on_event = on_event
        self.accounts = Accounts(store, on_event=on_event, http=http, limiter=self.limiter)
        self.accounts.trust(directory_url, self.ca_bundle)
        self.solvers = SolverPool(self.env, journal=lambda settings: StoreJournal(store, settings), board=store)
        self.orders = OrderFlow(self.solvers, self.limiter, store, clock, self.event)
        self.delivery = Delivery(store, self.env, clock, self.event)
        self._warned: set[str] = set()

    async def __aenter__(self) -> Manager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.solvers.aclose()
        await self.accounts.aclose()

    def event(self, kind: str, message: str) -> None:
        log.info("%s", message)
        if self._on_event is not None:
            self._on_event(kind, message)

    # -- issuance --------------------------------------------------------------------

    def identifiers_for(self, request: CertificateRequest) -> list[Identifier]:
        """The validated identifiers of ``request``; raises ConfigError before anything is sent or written."""
        if request.csr_der is not None:
            _, identifiers = load_csr(request.csr_der)
            if request.names:
                wanted = parse_identifiers(request.names)
                if set(wanted) != set(identifiers):
                    raise ConfigError("the names given differ from the names in the CSR; give one or the other")
        else:
            identifiers = parse_identifiers(request.names)
        request.challenge.check_identifiers(identifiers)
        return identifiers

    def lineage_name(self, request: CertificateRequest) -> str:
        """The lineage ``request`` stores into (validated)."""
        identifiers = self.identifiers_for(request)
        return validate_lineage_name(request.lineage or lineage_name_for([i.value for i in identifiers]))

    def ca_of(self, request: CertificateRequest) -> tuple[str, str | None]:
        """The CA a request goes to: its own (a lineage's) or the manager's, with its TLS roots."""
        url = request.directory_url or self.directory_url
        bundle = request.ca_bundle or (self.ca_bundle if url == self.directory_url else None)
        return url, str(Path(bundle).resolve()) if bundle else None

    def _load_meta(self, name: str) -> LineageMeta | None:
        """The lineage's metadata; a damaged one is reported and treated as absent so it can be replaced."""
        try:
            return self.store.load_meta(name)
        except StorageError as exc:
            self.event("warning", f"{name}: replacing a damaged lineage ({exc})")
            return None

    async def preflight(self, request: CertificateRequest) -> CertificateRequest:
        """Check everything that can be checked before an account is registered or an order sent.

        Loads the challenge solver's settings (a DNS provider's configuration, a port to
        bind, a web root to write), and resolves the profile against what the CA offers.
        Returns the request as it will be sent: with its CA, and with ``profile`` set
        from ``preferred_profile`` when the CA offers it.
        """
        self.identifiers_for(request)
        directory_url, ca_bundle = self.ca_of(request)
        request = replace(request, directory_url=directory_url, ca_bundle=ca_bundle)
        if request.challenge.dns_provider and not request.challenge.dns_env:
            request = replace(request, challenge=replace(request.challenge, dns_env=self._public_dns_env(request)))
        self.delivery.check(request)
        await (await self.solvers.get(request.challenge)).prepare()
        if not (request.profile or request.preferred_profile):
            return request
        offered = (await self.accounts.directory(directory_url, ca_bundle)).profiles
        if request.profile and request.profile not in offered:
            raise ProfileNotOffered(request.profile, directory_url=directory_url, offered=offered)
        if request.preferred_profile and not request.profile:
            if request.preferred_profile in offered:
                return replace(request, profile=request.preferred_profile)
            listed = ", ".join(sorted(offered)) or "none"
            warning = (
                f"the CA does not offer the profile {request.preferred_profile!r} (it offers: {listed}); "
                "using its default"
            )
            if warning not in self._warned:  # preflight runs again inside issue()
                self._warned.add(warning)
                self.event("warning", warning)
        return request

    def _public_dns_env(self, request: CertificateRequest) -> tuple[tuple[str, str], ...]:
        """The DNS provider's non-secret variables set now, to be stored with the lineage for renewal."""
        from certsmith.dns.base import provider_class

        assert request.challenge.dns_provider is not None
        public: dict[str, str] = {}
        for var in provider_class(request.challenge.dns_provider).info.env:
            if var.secret:
                continue
            for name in (var.name, *var.aliases):
                if self.env.get(name):
                    public[name] = self.env[name]
        return tuple(sorted(public.items()))

    async def clean_leftovers(self) -> list[str]:
        """Remove the DNS records and web-root files that killed runs left behind (see :mod:`certsmith.leftovers`)."""
        return await clean_leftovers(self.store, self.env, self.event)

    async def issue(
        self, request: CertificateRequest, *, force: bool = True, seen_version: int | None = None
    ) -> IssueResult:
        """Obtain a certificate for ``request`` and store it as its lineage.

        With ``force=False`` a lineage that already has a valid, not yet due certificate
        for the same names, key type, profile and CA is kept and nothing is ordered.
        ``seen_version`` is the version the caller decided on (renew): when the lineage has
        another one by the time its lock is held, another process renewed it meanwhile and
        it is kept, even with ``force``.
        """
        identifiers = self.identifiers_for(request)
        name = validate_lineage_name(request.lineage or lineage_name_for([i.value for i in identifiers]))
        request = await self.preflight(request)
        assert request.directory_url is not None
        directory_url = request.directory_url
        client = await self.accounts.client(directory_url, request.ca_bundle)
        async with self.store.alock(name, wait=self.lock_wait):
            previous = self._load_meta(name)
            if seen_version is not None and previous is not None and previous.version != seen_version:
                return self._kept(previous, f"renewed meanwhile by another process (now version {previous.version})")
            if not force and previous is not None:
                keep = self._keep_reason(previous, request, identifiers, directory_url)
                if keep is not None:
                    return self._kept(previous, keep)
            wanted = [i.value for i in identifiers]
            if previous is not None and set(previous.names) != set(wanted):
                self.event("names", f"{name}: replacing the certificate for {', '.join(previous.names)} "
                           f"with one for {', '.join(wanted)}")
            key: PrivateKey | None = None
            if request.csr_der is not None:
                csr_der = request.csr_der
            else:
                key = await self._certificate_key(name, previous, request)
                csr_der = make_csr(key, identifiers)
            replaces = replaceable_cert_id(previous, directory_url, identifiers)
            exempt = self.orders.exemptions(name, previous, identifiers, replaces)
            chain = await self.orders.obtain(client, identifiers, csr_der, request, replaces=replaces, exempt=exempt)
            meta = self._store(name, identifiers, request, directory_url, key, chain, previous)
        location = self.store.location(name)
        self.event("stored", f"{name}: certificate stored in {location}")
        deployed, deploy_error = await self.delivery.after_issue(request, meta, location)
        return IssueResult(
            name=name,
            location=location,
            names=meta.names,
            not_after=meta.not_after,
            issuer=meta.issuer,
            serial=meta.serial,
            deploy_error=deploy_error,
            deployed=tuple(deployed),
        )

    def _keep_reason(
        self, previous: LineageMeta, request: CertificateRequest, identifiers: Sequence[Identifier], directory_url: str
    ) -> str | None:
        """Why the stored certificate already is what ``request`` asks for, or ``None`` when it is not."""
        same = (
            set(previous.names) == {i.value for i in identifiers}
            and previous.directory_url == directory_url
            and (request.csr_der is not None or previous.key_type == request.key_type)
            and previous.settings.get("profile") == request.profile
        )
        if not same:
            return None
        decision = self.decide(previous)
        if decision.due:
            return None
        stored = previous.settings.get("deploy") or []
        if [spec.to_json() for spec in request.deploy] != stored and request.deploy:
            self.event("warning", f"{previous.name}: the new deploy targets are stored with the next certificate; "
                       "force a new one now to use them")
        return f"valid until {previous.not_after}; {decision.reason}"

    def _kept(self, meta: LineageMeta, reason: str) -> IssueResult:
        return IssueResult(
            name=meta.name,
            location=self.store.location(meta.name),
            names=meta.names,
            not_after=meta.not_after,
            issuer=meta.issuer,
            serial=meta.serial,
            issued=False,
            reason=reason,
        )

    async def _certificate_key(
        self, name: str, previous: LineageMeta | None, request: CertificateRequest
    ) -> PrivateKey:
        if request.reuse_key and previous is not None:
            files = self.store.load_files(name, previous.version)
            if files is not None and files.key_pem is not None:
                return load_private_key(files.key_pem, f"the key of {name}")
        return await generate_key_async(request.key_type)

    def _store(
        self,
        name: str,
        identifiers: Sequence[Identifier],
        request: CertificateRequest,
        directory_url: str,
        key: PrivateKey | None,
        chain: CertificateChain,
        previous: LineageMeta | None,
    ) -> LineageMeta:
        from cryptography import x509

        leaf = x509.load_pem_x509_certificate(chain.leaf_pem)
        try:
            cert_id = ari_cert_id(leaf)
        except ValueError:
            cert_id = ""
        now = format_time(self.clock())
        meta = LineageMeta(
            name=name,
            names=tuple(i.value for i in identifiers),
            key_type=key_type_of(key) if key is not None else "csr",
            directory_url=directory_url,
            settings=request.settings_json(),
            not_before=format_time(leaf.not_valid_before_utc),
            not_after=format_time(leaf.not_valid_after_utc),
            serial=format(leaf.serial_number, "x"),
            issuer=issuer_common_name(leaf),
            version=(previous.version if previous else 0) + 1,
            created_at=previous.created_at if previous else now,
            updated_at=now,
            cert_id=cert_id,
        )
        files = CertificateFiles(
            cert_pem=chain.leaf_pem,
            chain_pem=chain.chain_pem,
            fullchain_pem=chain.pem,
            key_pem=private_key_pem(key) if key is not None else None,
        )
        return self.store.save_certificate(meta, files)

    async def issue_many(
        self, requests: Sequence[CertificateRequest], *, force: bool = True
    ) -> list[IssueResult | CertsmithError]:
        """Issue several certificates concurrently; each result is a result or its error."""
        results = await asyncio.gather(*(self.issue(r, force=force) for r in requests), return_exceptions=True)
        out: list[IssueResult | CertsmithError] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, CertsmithError):
                raise result
            out.append(result)
        return out

    # -- renewal and revocation ------------------------------------------------------

    def decide(self, meta: LineageMeta) -> Decision:
        """The policy's decision for ``meta`` now, from what the store knows."""
        from certsmith.policy import renewal_decision  # not needed by a first issue

        try:
            state = self.store.load_state(meta.name)
        except StorageError:
            state = None
        return renewal_decision(meta, state, self.clock())

    async def renew(
        self, names: Sequence[str] = (), *, force: bool = False, directory_url: str | None = None
    ) -> list[RenewOutcome]:
        """Renew due lineages (all, or ``names``) concurrently, each at the CA that issued it.

        ``directory_url`` narrows the set to the lineages of one CA. See :func:`certsmith.renewal.renew`.
        """
        from certsmith import renewal  # imported by renew runs only, not by every issue

        return await renewal.renew(self, names, force=force, directory_url=directory_url)

    #: Lineages one renew run works on at once. Each worker takes the next due lineage
    #: whose lock is free, so several processes (hosts) sharing a store split the work.
    renew_concurrency = 32

    async def check_renewal_info(self, metas: Sequence[LineageMeta]) -> None:
        """Ask each lineage's CA for its renewal window (ARI) where the time to ask again has come.

        See :func:`certsmith.renewal.check_renewal_info`.
        """
        from certsmith import renewal

        await renewal.check_renewal_info(self, metas)

    async def revoke(self, name: str, *, reason: str = "unspecified") -> dict[str, Any]:
        """Revoke the current certificate of lineage ``name``."""
        if reason not in REVOCATION_REASONS:
            raise ConfigError(f"the revocation reason must be one of {', '.join(REVOCATION_REASONS)}, not {reason!r}")
        meta = self.store.load_meta(name)
        if meta is None:
            raise ConfigError(f"no certificate named {name!r}")
        files = self.store.load_files(name, meta.version)
        if files is None:
            raise ConfigError(f"the certificate of {name!r} is missing from the store")
        cert_der = certificate_der(files.cert_pem)
        _, ca_bundle = self.ca_of(CertificateRequest.from_lineage(meta))
        if self.accounts.stored(meta.directory_url) is not None:
            client = await self.accounts.client(meta.directory_url, ca_bundle)
            await client.revoke(cert_der, reason=REVOCATION_REASONS[reason])
        elif files.key_pem is not None:
            key = load_private_key(files.key_pem, f"the key of {name}")
            async with AcmeClient(meta.directory_url, key, ca_bundle=ca_bundle) as client:
                await client.revoke(cert_der, reason=REVOCATION_REASONS[reason], certificate_key=key)
        else:
            raise ConfigError(f"neither an account nor the certificate key is available to revoke {name!r}")
        try:
            state = self.store.load_state(name)
        except StorageError:
            state = None
        revoked_at = format_time(self.clock())
        self.store.save_state(name, replace(state or RenewalState(version=meta.version), revoked_at=revoked_at))
        self.event("revoked", f"{name}: certificate {meta.serial} revoked ({reason})")
        return {"name": name, "serial": meta.serial, "reason": reason, "revoked": True}

    async def delete(self, name: str, *, revoke: bool = False, reason: str = "unspecified") -> dict[str, Any]:
        """Remove lineage ``name`` with every version, revoking its certificate first when asked.

        Refused while another process holds the lineage (it may be renewing it).
        """
        if self.store.load_meta(name) is None:
            raise ConfigError(f"no certificate named {name!r}")
        async with self.store.alock(name, wait=self.lock_wait):
            revoked = await self.revoke(name, reason=reason) if revoke else None
            location = self.store.location(name)
            self.store.delete_lineage(name)
        self.event("deleted", f"{name}: deleted {location}")
        return {"name": name, "deleted": True, "revoked": revoked is not None}

    # -- delivery (certsmith.delivery) ---------------------------------------------------

    async def deploy(self, name: str) -> tuple[LineageMeta, list[TargetResult]]:
        """Run lineage ``name``'s deploy targets again for its current certificate (under its lock)."""
        return await self.delivery.redeploy(name, lock_wait=self.lock_wait)

    async def sync(
        self, names: Sequence[str] = (), *, local_state: Path, deploy: Sequence[DeploySpec] = ()
    ) -> list[SyncOutcome]:
        """Deliver each lineage's current certificate (all, or ``names``) to this host's targets.

        See :meth:`certsmith.delivery.Delivery.sync`.
        """
        return await self.delivery.sync(names, local_state=local_state, deploy=deploy)
