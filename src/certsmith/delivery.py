"""Delivering a stored certificate version: its deploy targets and deploy hook, and ``sync``.

:class:`Delivery` checks a request's deploy targets before anything is sent, runs them
(and the deploy hook) after a version is stored, runs them again on demand, and
delivers the shared store's current versions to this host (``sync``). The deploy
targets' machinery is imported only when a lineage has targets: an ``issue`` without
``--deploy`` does not load it (tests/unit/test_lazy_imports.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from certsmith._time import Clock, format_time
from certsmith.accounts import EventSink
from certsmith.errors import CertsmithError, ConfigError, StorageError
from certsmith.outcomes import SyncOutcome
from certsmith.settings import CertificateRequest
from certsmith.storage.base import LineageMeta, Store

if TYPE_CHECKING:
    from certsmith.deploy.base import DeploySpec
    from certsmith.deploy.runner import TargetResult


class Delivery:
    """Runs deploy targets and hooks for the versions in ``store``, with ``env`` and reporting to ``event``."""

    def __init__(self, store: Store, env: dict[str, str], clock: Clock, event: EventSink) -> None:
        self.store = store
        self.env = env
        self.clock = clock
        self.event = event

    def check(self, request: CertificateRequest) -> None:
        """Load every deploy target of ``request`` (options, environment): ConfigError before anything is sent."""
        if not request.deploy:
            return
        from certsmith.deploy.base import check_requirements, load_target

        for spec in request.deploy:
            load_target(spec, self.env)
        check_requirements(request.deploy)
        if request.csr_der is not None:
            for spec in request.deploy:
                if spec.target == "files" and {"key", "pkcs12"} & set(spec.option_map()):
                    raise ConfigError("a certificate for your own CSR has no private key certsmith could copy; "
                                      "drop key= and pkcs12= from the files deploy target")

    async def run_targets(
        self, request: CertificateRequest, meta: LineageMeta, location: str
    ) -> list[TargetResult]:
        """Run ``request``'s deploy targets for the stored version ``meta``, reporting each."""
        if not request.deploy:
            return []
        from certsmith.deploy.runner import run_targets  # the deploy machinery, only for a lineage with targets

        results = await run_targets(self.store, request.deploy, meta, self.env, location=location)
        self._report(meta.name, results)
        return results

    async def after_issue(
        self, request: CertificateRequest, meta: LineageMeta, location: str
    ) -> tuple[list[TargetResult], str | None]:
        """Run the targets, then the deploy hook, for a version just stored: their results and errors in one line."""
        deployed = await self.run_targets(request, meta, location)
        target_errors = deploy_failures(deployed)
        errors = [target_errors] if target_errors else []
        if request.deploy_hook:
            from certsmith.deploy.hook import run_deploy_hook  # only for a request with a hook

            self.event("deploy", f"{meta.name}: running deploy hook")
            hook_error = await run_deploy_hook(request.deploy_hook, meta, location, self.env)
            errors += [hook_error] if hook_error else []
        return deployed, "; ".join(errors) or None

    async def redeploy(self, name: str, *, lock_wait: float) -> tuple[LineageMeta, list[TargetResult]]:
        """Run lineage ``name``'s deploy targets again for its current certificate (under its lock)."""
        async with self.store.alock(name, wait=lock_wait):
            meta = self.store.load_meta(name)
            if meta is None:
                raise ConfigError(f"no certificate named {name!r}")
            request = CertificateRequest.from_lineage(meta)
            if not request.deploy:
                raise ConfigError(f"{name!r} has no deploy targets; give them with issue --deploy TARGET[:OPTIONS]")
            return meta, await self.run_targets(request, meta, self.store.location(name))

    # -- sync: every host serves what one host ordered -------------------------------

    async def sync(
        self, names: Sequence[str] = (), *, local_state: Path, deploy: Sequence[DeploySpec] = ()
    ) -> list[SyncOutcome]:
        """Deliver each lineage's current certificate (all, or ``names``) to this host's targets.

        The targets are ``deploy`` when given (this host's own), else the lineage's stored
        ones. A lineage is delivered only when this host's delivery log (under
        ``local_state``, see :mod:`certsmith.deploy.delivered`) does not show its current
        version through the same targets; a lineage whose targets all succeeded is noted
        there, so a second sync changes nothing. No lock is taken: a version is read whole.
        """
        from certsmith.deploy.base import load_target
        from certsmith.deploy.delivered import DeliveryLog
        from certsmith.deploy.runner import run_targets

        for spec in deploy:
            load_target(spec, self.env)
        ledger = DeliveryLog(local_state)
        entries = ledger.load()
        selected = list(names) or self.store.lineage_names()
        outcomes: list[SyncOutcome] = []
        for name in selected:
            try:
                meta = self.store.load_meta(name)
                if meta is None:
                    raise ConfigError(f"no certificate named {name!r}")
                specs = tuple(deploy) or CertificateRequest.from_lineage(meta).deploy
            except CertsmithError as exc:
                reason = "damaged" if isinstance(exc, StorageError) else "unusable"
                outcomes.append(SyncOutcome(name, 0, "", False, reason, error=str(exc)))
                continue
            if not specs:
                outcomes.append(SyncOutcome(name, meta.version, meta.serial, False, "no deploy targets"))
                continue
            wanted = DeliveryLog.entry(meta.version, meta.serial, specs)
            if ledger.delivered(entries, name, wanted):
                outcomes.append(SyncOutcome(name, meta.version, meta.serial, False,
                                            f"version {meta.version} already delivered here"))
                continue
            try:
                results = await run_targets(self.store, specs, meta, self.env, location=self.store.location(name))
            except CertsmithError as exc:  # one lineage's failure must not end the others' delivery
                outcomes.append(SyncOutcome(name, meta.version, meta.serial, False, "deploy failed", error=str(exc)))
                continue
            self._report(name, results)
            error = deploy_failures(results)
            if error is None:
                entries[name] = {**wanted, "at": format_time(self.clock())}
                ledger.save(entries)
            outcomes.append(SyncOutcome(name, meta.version, meta.serial, error is None,
                                        f"version {meta.version} delivered" if error is None else "deploy failed",
                                        error=error, deployed=tuple(results)))
        return outcomes

    def _report(self, name: str, results: Sequence[TargetResult]) -> None:
        """One event per target: its error, what it changed, why it skipped, or that nothing changed."""
        for result in results:
            what = result.error or (", ".join(result.changed) if result.changed else result.skipped or "unchanged")
            self.event("deploy", f"{name}: {result.target}: {what}")


def deploy_failures(results: Sequence[TargetResult]) -> str | None:
    """The failed deploy targets' errors in one line, or ``None``."""
    if not results:
        return None
    from certsmith.deploy.runner import failures

    return failures(results)
