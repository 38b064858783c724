"""One ACME order, from new-order to the downloaded and checked certificate chain.

:class:`OrderFlow` places the order (marked as replacing the previous certificate for
ARI where it may, within the shared rate limits), solves every pending authorization
at once through one challenge solver, finalizes and downloads. It stores nothing:
the caller (:class:`certsmith.manager.Manager`) holds the lineage's lock and stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from certsmith._time import Clock, parse_time
from certsmith.accounts import EventSink
from certsmith.acme.client import AcmeClient
from certsmith.acme.errors import (
    AlreadyReplaced,
    Malformed,
    OrderNotReady,
    ServerInternal,
    Unauthorized,
    ValidationFailed,
)
from certsmith.acme.resources import Authorization, AuthorizationStatus, CertificateChain, Order, OrderStatus
from certsmith.challenges.base import ChallengeJob
from certsmith.crypto import Identifier, check_issued
from certsmith.errors import ConfigError, StorageError
from certsmith.jose import key_authorization
from certsmith.ratelimit import RateLimiter
from certsmith.settings import CertificateRequest, ChallengeSettings
from certsmith.solvers import SolverPool
from certsmith.storage.base import LineageMeta, Store


class OrderFlow:
    """Orders certificates with the manager's solvers, rate limiter, store (for ARI state), clock and events."""

    def __init__(
        self, solvers: SolverPool, limiter: RateLimiter, store: Store, clock: Clock, event: EventSink
    ) -> None:
        self.solvers = solvers
        self.limiter = limiter
        self.store = store
        self.clock = clock
        self.event = event

    async def obtain(
        self,
        client: AcmeClient,
        identifiers: Sequence[Identifier],
        csr_der: bytes,
        request: CertificateRequest,
        *,
        replaces: str = "",
        exempt: tuple[bool, bool] = (False, False),
    ) -> CertificateChain:
        label = identifiers[0].value + (f" (+{len(identifiers) - 1})" if len(identifiers) > 1 else "")
        order, exempt = await self._new_order(client, identifiers, request, replaces, label, exempt)
        if order.status == OrderStatus.PENDING:
            await self._authorize(client, order, request.challenge, label)
        elif order.status == OrderStatus.INVALID:
            raise ValidationFailed({label: order.error})
        assert request.directory_url is not None
        ari_renewal, same_names = exempt
        self.limiter.before_finalize(
            request.directory_url, [i.value for i in identifiers], self.clock(),
            ari_renewal=ari_renewal, same_names_renewal=same_names,
        )
        try:
            finalized = await client.finalize(order, csr_der)
        except OrderNotReady:
            order = await client.poll_order(order)
            finalized = await client.finalize(order, csr_der)
        self.event("finalized", f"{label}: certificate issued")
        assert finalized.certificate is not None
        chain = await client.download_certificate(finalized.certificate, preferred_chain=request.preferred_chain)
        check_issued(chain.pem, csr_der, identifiers)
        return chain

    async def _new_order(
        self,
        client: AcmeClient,
        identifiers: Sequence[Identifier],
        request: CertificateRequest,
        replaces: str,
        label: str,
        exempt: tuple[bool, bool] = (False, False),
    ) -> tuple[Order, tuple[bool, bool]]:
        """A new order, marked as replacing the previous certificate (ARI) when there is one.

        A CA that refuses the ``replaces`` (already replaced by another order, or not
        accepted) gets the same order once more without it -- no longer exempt from the rate
        limits as an ARI renewal. Returns the order and the exemptions that hold for it.
        """
        assert request.directory_url is not None
        names = [i.value for i in identifiers]
        ari_renewal, same_names = exempt
        self.limiter.before_new_order(
            request.directory_url, client.account_url or "", names, self.clock(),
            ari_renewal=ari_renewal and bool(replaces), same_names_renewal=same_names,
        )
        if replaces:
            try:
                order = await client.new_order(identifiers, profile=request.profile, replaces=replaces)
            except (AlreadyReplaced, Malformed, Unauthorized, ServerInternal) as exc:
                self.event("warning", f"{label}: the CA refused to mark this order as a replacement ({exc}); "
                           "ordering without it")
            else:
                self.event("order", f"{label}: order created (replacing {replaces})")
                return order, (ari_renewal, same_names)
            if ari_renewal:  # the order that follows is not an ARI renewal: it counts
                self.limiter.before_new_order(
                    request.directory_url, client.account_url or "", names, self.clock(), same_names_renewal=same_names
                )
        order = await client.new_order(identifiers, profile=request.profile)
        self.event("order", f"{label}: order created")
        return order, (False, same_names)

    def exemptions(
        self, name: str, previous: LineageMeta | None, identifiers: Sequence[Identifier], replaces: str
    ) -> tuple[bool, bool]:
        """Whether an order is an ARI renewal inside the CA's window, and whether it renews exactly the same names.

        What the CA exempts each from is described in :mod:`certsmith.ratelimit`.
        """
        if previous is None:
            return False, False
        same_names = {n.lower() for n in previous.names} == {i.value.lower() for i in identifiers}
        if not replaces:
            return False, same_names
        try:
            state = self.store.load_state(name)
        except StorageError:
            state = None
        in_window = False
        if state is not None and state.ari_window_start:
            try:
                in_window = parse_time(state.ari_window_start) <= self.clock()
            except ValueError:
                in_window = False
        return in_window, same_names

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
            # dns-persist-01 has no token: the CA reads the standing record, not a per-order value.
            tokenless = settings.challenge == "dns-persist-01"
            if challenge is None or (challenge.token is None and not tokenless):
                offered = ", ".join(sorted({c.type for c in authz.challenges})) or "none"
                raise ConfigError(
                    f"the CA offers no {settings.challenge} challenge for {authz.name} (it offers: {offered})"
                )
            job = ChallengeJob(
                identifier_type=authz.identifier.type,
                identifier=authz.identifier.value,
                token=challenge.token or "",
                key_authorization=key_authorization(challenge.token or "", client.account_key),
                wildcard=authz.wildcard,
            )
            jobs.append((authz, challenge.url, job))
        solver = await self.solvers.get(settings)
        job_list = [job for _, _, job in jobs]
        self.event("challenge", f"{label}: preparing {len(jobs)} {settings.challenge} challenge(s)")
        try:
            await solver.present(job_list)
            await asyncio.gather(*(client.answer_challenge(url) for _, url, _ in jobs))
            results = await asyncio.gather(*(client.poll_authorization(a.url) for a, _, _ in jobs))
        finally:
            await solver.cleanup(job_list)
        failed = {a.name: a.error for a in results if a.status != AuthorizationStatus.VALID}
        if failed:
            raise ValidationFailed(failed, challenge_type=settings.challenge)
        self.event("validated", f"{label}: {len(jobs)} authorization(s) valid")


def replaceable_cert_id(previous: LineageMeta | None, directory_url: str, identifiers: Sequence[Identifier]) -> str:
    """The ARI CertID a new order may claim to replace: same CA and at least one name in common (RFC 9773 §5)."""
    if previous is None or not previous.cert_id or previous.directory_url != directory_url:
        return ""
    return previous.cert_id if set(previous.names) & {i.value for i in identifiers} else ""
