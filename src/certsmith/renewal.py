"""A renew run: which lineages are due, asking their CAs for ARI windows, renewing with bounded workers.

:func:`renew` selects lineages, refreshes each one's ARI renewal window where the time
to ask has come (:func:`check_renewal_info`), lets :mod:`certsmith.policy` decide through
the manager, and renews the due ones through the manager's ``issue``, a bounded number at
once. It works on a :class:`RenewalHost` (the :class:`certsmith.manager.Manager`) and does
not import the manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

from certsmith._time import Clock, format_time
from certsmith.accounts import Accounts
from certsmith.errors import CertsmithError, ConfigError, LockedError, StorageError
from certsmith.outcomes import IssueResult, RenewOutcome
from certsmith.policy import Decision, ari_check_due, state_after_ari_error, state_from_ari
from certsmith.ratelimit import RateLimited
from certsmith.settings import CertificateRequest
from certsmith.storage.base import LineageMeta, RenewalState, Store


class RenewalHost(Protocol):
    """What a renew run needs from the manager that runs it."""

    @property
    def store(self) -> Store: ...

    @property
    def accounts(self) -> Accounts: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def renew_concurrency(self) -> int: ...

    def event(self, kind: str, message: str) -> None: ...

    def decide(self, meta: LineageMeta) -> Decision: ...

    def ca_of(self, request: CertificateRequest) -> tuple[str, str | None]: ...

    async def issue(
        self, request: CertificateRequest, *, force: bool = True, seen_version: int | None = None
    ) -> IssueResult: ...


async def renew(
    host: RenewalHost, names: Sequence[str] = (), *, force: bool = False, directory_url: str | None = None
) -> list[RenewOutcome]:
    """Renew due lineages (all, or ``names``) concurrently, each at the CA that issued it.

    ``directory_url`` narrows the set to the lineages of one CA.
    """
    selected = list(names) or host.store.lineage_names()
    outcomes: dict[str, RenewOutcome] = {}
    todo: list[tuple[str, CertificateRequest, str]] = []
    metas: list[LineageMeta] = []
    requests: dict[str, CertificateRequest] = {}
    for name in selected:
        try:
            meta = host.store.load_meta(name)
        except StorageError as exc:
            outcomes[name] = RenewOutcome(name, False, "damaged", error=str(exc))
            continue
        if meta is None:
            raise ConfigError(f"no certificate named {name!r}")
        if directory_url is not None and meta.directory_url != directory_url:
            continue
        try:
            requests[name] = CertificateRequest.from_lineage(meta)
        except ConfigError as exc:
            outcomes[name] = RenewOutcome(name, False, "damaged", error=str(exc))
            continue
        metas.append(meta)
    await check_renewal_info(host, metas)
    for meta in metas:
        name = meta.name
        request = requests[name]
        try:
            decision = host.decide(meta)
        except ValueError as exc:
            outcomes[name] = RenewOutcome(name, False, "damaged", error=str(exc))
            continue
        if force or decision.due:
            todo.append((name, request, "forced" if force and not decision.due else decision.reason))
        else:
            outcomes[name] = RenewOutcome(name, False, decision.reason)
    # issue() re-checks under each lineage's lock: another process may have just renewed it.
    versions = {meta.name: meta.version for meta in metas}
    results = await _renew_all(host, todo, versions, force)
    for (name, _, reason), result in zip(todo, results, strict=True):
        if isinstance(result, LockedError):
            outcomes[name] = RenewOutcome(name, False, f"left to another process, which holds it ({result})")
        elif isinstance(result, RateLimited):
            host.event("deferred", f"{name}: {result}")
            outcomes[name] = RenewOutcome(
                name, False, "deferred", deferred=str(result), retry_at=format_time(result.retry_at)
            )
        elif isinstance(result, CertsmithError):
            outcomes[name] = RenewOutcome(name, False, reason, error=str(result), exception=result)
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes[name] = RenewOutcome(name, result.issued, reason if result.issued else result.reason,
                                          result=result)
    return [outcomes[name] for name in selected if name in outcomes]

async def _renew_all(
    host: RenewalHost, todo: Sequence[tuple[str, CertificateRequest, str]], versions: Mapping[str, int], force: bool
) -> list[IssueResult | BaseException]:
    """Renew ``todo`` with at most ``host.renew_concurrency`` at once, in order.

    A lineage whose lock another process holds is not waited for (unless ``lock_wait``
    says so): its ``LockedError`` is its result and the worker moves on to the next one.
    Under the lock, ``issue`` re-reads the lineage and keeps it when its version moved
    (renewed elsewhere meanwhile) or, without ``force``, when it is no longer due.
    """
    results: list[IssueResult | BaseException] = [LockedError("not attempted")] * len(todo)
    queue = iter(range(len(todo)))

    async def worker() -> None:
        for index in queue:
            name, request, _ = todo[index]
            try:
                results[index] = await host.issue(request, force=force, seen_version=versions.get(name))
            except Exception as exc:  # kept as the lineage's result; the others go on (renew re-raises bugs)
                results[index] = exc

    await asyncio.gather(*(worker() for _ in range(max(1, min(host.renew_concurrency, len(todo))))))
    return results

async def check_renewal_info(host: RenewalHost, metas: Sequence[LineageMeta]) -> None:
    """Ask each lineage's CA for its renewal window (ARI) where the time to ask again has come.

    Lineages whose CA has no ARI, or whose next check lies ahead, cost no request.
    A failed check keeps what was known, says so, and is retried after a back-off;
    the lifetime rule decides meanwhile.
    """
    now = host.clock()
    due: list[tuple[LineageMeta, RenewalState | None]] = []
    for meta in metas:
        if not meta.cert_id:
            continue
        try:
            state = host.store.load_state(meta.name)
        except StorageError:
            state = None
        if ari_check_due(state, now):
            due.append((meta, state))
    if not due:
        return
    limit = asyncio.Semaphore(16)

    async def check(meta: LineageMeta, state: RenewalState | None) -> None:
        async with limit:
            await _check_one(host, meta, state)

    await asyncio.gather(*(check(meta, state) for meta, state in due))

async def _check_one(host: RenewalHost, meta: LineageMeta, state: RenewalState | None) -> None:
    _, ca_bundle = host.ca_of(CertificateRequest.from_lineage(meta))
    try:
        client = await host.accounts.client(meta.directory_url, ca_bundle)
        if not (await client.directory()).renewal_info:
            return
        info, retry_after = await client.renewal_info(meta.cert_id)
    except CertsmithError as exc:
        host.event("warning", f"{meta.name}: cannot get the CA's renewal window ({exc}); "
                   "the lifetime rule decides for now")
        host.store.save_state(meta.name, state_after_ari_error(meta.version, state, str(exc), host.clock()))
        return
    new_state = state_from_ari(
        meta.version,
        state,
        window_start=info.window_start,
        window_end=info.window_end,
        explanation=info.explanation_url,
        retry_after=retry_after,
        now=host.clock(),
    )
    if info.explanation_url and info.explanation_url != (state.ari_explanation if state else ""):
        host.event("ari", f"{meta.name}: the CA explains its renewal window at {info.explanation_url}")
    host.store.save_state(meta.name, new_state)

