"""The dns-01 solver (RFC 8555 §8.4): publish ``_acme-challenge`` TXT records through a provider.

``present`` derives the record names, follows CNAME delegation (acme-dns style: the
record is written where the CNAME points), has the provider create every record
concurrently and then waits once for all of them to propagate. The solver remembers
exactly which ``(name, value)`` pairs it created and ``cleanup`` deletes those and
nothing else -- also while the calling task is being cancelled (Ctrl-C), and also
when ``present`` itself failed half-way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import ClassVar, NamedTuple, TypeVar

from certsmith.challenges.base import ArtefactJournal, ChallengeJob, check_supported, prefixed_fqdn, run_to_completion
from certsmith.dns.base import DnsProvider
from certsmith.dns.zone import Resolver, follow_cname, wait_for_txt
from certsmith.errors import DnsError

log = logging.getLogger("certsmith.dns")

_T = TypeVar("_T")


class TxtRecord(NamedTuple):
    """One TXT value at one absolute name."""

    fqdn: str
    value: str


def challenge_fqdn(identifier: str) -> str:
    """``_acme-challenge.<identifier>.``: lower case, IDNA (2008, UTS #46) encoded.

    A leading ``*.`` is dropped: a wildcard is validated at its base name.
    """
    return prefixed_fqdn("_acme-challenge", identifier, challenge="dns-01", noun="identifier ")


class Dns01Solver:
    """Answers dns-01 challenges through ``provider``; owns it and closes it in :meth:`aclose`.

    ``propagation_timeout`` None means the provider's own (its variable, else its default).
    ``resolver`` None means the system resolver with checks at the authoritative
    servers.
    """

    challenge_type: ClassVar[str] = "dns-01"

    def __init__(
        self,
        provider: DnsProvider,
        resolver: Resolver | None = None,
        propagation_timeout: float | None = None,
        follow_cnames: bool = True,
        journal: ArtefactJournal | None = None,
    ) -> None:
        self.provider = provider
        self.journal = journal
        self.resolver = resolver if resolver is not None else Resolver()
        if propagation_timeout is None:
            propagation_timeout = provider.propagation_timeout
        self.propagation_timeout = propagation_timeout
        self.follow_cnames = follow_cnames
        # Reference counts, so that two orders sharing one authorization do not
        # delete each other's record.
        self._job_refs: dict[ChallengeJob, int] = {}
        self._job_record: dict[ChallengeJob, TxtRecord] = {}
        self._record_refs: dict[TxtRecord, int] = {}

    @property
    def records(self) -> frozenset[TxtRecord]:
        """The records this solver created and has not deleted yet."""
        return frozenset(self._record_refs)

    async def prepare(self) -> None:
        """The provider was configured when it was built; nothing more to check before an order."""

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        """Create the TXT records of all ``jobs`` and wait once until all are visible.

        On any failure, cancellation included, the records created so far are
        deleted before the error propagates.
        """
        jobs = list(jobs)
        if not jobs:
            return
        check_supported(self.challenge_type, jobs)
        names = {job: challenge_fqdn(job.identifier) for job in jobs}
        targets = await self._targets(set(names.values()))
        # A job presented again (two orders, one authorization) keeps its first record.
        plan = {job: self._job_record.get(job, TxtRecord(targets[names[job]], job.dns01_value)) for job in jobs}
        self._claim(plan)
        failed: set[TxtRecord] = set()
        try:
            await self._create(list(dict.fromkeys(plan.values())), failed)
            wanted: dict[str, set[str]] = {}
            for record in plan.values():
                wanted.setdefault(record.fqdn, set()).add(record.value)
            log.info(
                "waiting up to %gs for %d TXT record(s) to propagate, asking %s",
                self.propagation_timeout,
                len(set(plan.values())),
                "each zone's authoritative servers" if self.resolver.checks_authoritative else self.resolver,
            )
            await wait_for_txt(wanted, self.resolver, self.propagation_timeout)
        except BaseException:
            doomed = [r for r in self._unclaim(plan) if r not in failed]
            if doomed:
                log.info("removing the %d TXT record(s) created so far", len(doomed))
                await run_to_completion(self._delete(doomed))
            raise

    async def cleanup(self, jobs: Sequence[ChallengeJob]) -> None:
        """Delete the records this solver created for ``jobs``; errors are logged, not raised.

        Finishes even when the calling task is cancelled meanwhile.
        """
        plan = {job: self._job_record[job] for job in jobs if job in self._job_record}
        doomed = self._unclaim(plan)
        if doomed:
            await run_to_completion(self._delete(doomed))

    async def aclose(self) -> None:
        """Delete records still left (a caller that never cleaned up), then close the provider."""
        leftover = list(self._record_refs)
        self._job_refs.clear()
        self._job_record.clear()
        self._record_refs.clear()
        try:
            if leftover:
                log.warning("deleting %d TXT record(s) left behind", len(leftover))
                await run_to_completion(self._delete(leftover))
        finally:
            await self.provider.aclose()

    async def _targets(self, names: Iterable[str]) -> dict[str, str]:
        """Map each challenge name to where its record is written (the CNAME target, if any)."""
        names = sorted(names)
        if not self.follow_cnames:
            return {name: name for name in names}
        targets = await asyncio.gather(*(follow_cname(name, self.resolver) for name in names))
        for name, target in zip(names, targets, strict=True):
            if target != name:
                log.info("%s is delegated by CNAME to %s; writing the record there", name, target)
        return dict(zip(names, targets, strict=True))

    def _claim(self, plan: dict[ChallengeJob, TxtRecord]) -> None:
        for job, record in plan.items():
            self._job_refs[job] = self._job_refs.get(job, 0) + 1
            self._job_record[job] = record
            self._record_refs[record] = self._record_refs.get(record, 0) + 1

    def _unclaim(self, plan: dict[ChallengeJob, TxtRecord]) -> list[TxtRecord]:
        """Drop one reference per job; returns the records nobody needs any more."""
        doomed: list[TxtRecord] = []
        for job in plan:
            refs = self._job_refs.get(job, 0)
            if refs == 0:
                continue
            record = self._job_record[job]
            if refs == 1:
                del self._job_refs[job]
                del self._job_record[job]
            else:
                self._job_refs[job] = refs - 1
            left = self._record_refs.get(record, 0) - 1
            if left > 0:
                self._record_refs[record] = left
            else:
                self._record_refs.pop(record, None)
                if record not in doomed:
                    doomed.append(record)
        return doomed

    async def _create(self, records: list[TxtRecord], failed: set[TxtRecord]) -> None:
        """Have the provider create ``records`` concurrently; add the ones it refused to ``failed``.

        Raises the provider's error (or a summary of several) once all calls ended.
        A cancelled call counts as maybe-created: it is not put in ``failed``.
        """
        if self.journal is not None:
            for record in records:
                self.journal.created(_artefact(record))
        tasks = {asyncio.ensure_future(self.provider.present(*record)): record for record in records}
        try:
            await asyncio.wait(list(tasks))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await run_to_completion(asyncio.wait(list(tasks)))
            raise
        errors: list[tuple[TxtRecord, BaseException]] = []
        for task, record in tasks.items():
            if task.cancelled():
                errors.append((record, DnsError(f"creating TXT {record.fqdn} was cancelled")))
                continue
            exc = task.exception()
            if exc is None:
                log.info("created TXT %s %r", record.fqdn, record.value)
            else:
                failed.add(record)
                errors.append((record, exc))
                if self.journal is not None:  # the solver will not delete what the provider refused
                    self.journal.removed(_artefact(record))
        if len(errors) == 1:
            raise errors[0][1]
        if errors:
            details = "; ".join(f"{r.fqdn}: {e}" for r, e in errors)
            raise DnsError(f"the DNS provider failed to create {len(errors)} TXT records: {details}") from (
                errors[0][1]
            )

    async def _delete(self, records: list[TxtRecord]) -> None:
        results = await asyncio.gather(*(self.provider.cleanup(*record) for record in records), return_exceptions=True)
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "could not delete TXT %s %r (%s); delete it by hand",
                    record.fqdn,
                    record.value,
                    str(result) or type(result).__name__,
                )
            else:
                log.info("deleted TXT %s %r", record.fqdn, record.value)
                if self.journal is not None:
                    self.journal.removed(_artefact(record))


def _artefact(record: TxtRecord) -> dict[str, str]:
    return {"kind": "dns-01", "fqdn": record.fqdn, "value": record.value}
