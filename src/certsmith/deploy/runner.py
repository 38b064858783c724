"""Running a lineage's deploy targets for its current certificate.

Targets run one after another in the order given (``runs_first`` ones before the rest,
``runs_last`` ones after it);
one failing does not stop the others and never touches the stored certificate. Each
target's state is saved right after it ran, also when it failed, so an ID it recorded
before failing is not lost. When every target succeeded, their ``retire`` steps run (last target first)
(removing what the new certificate replaced).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from certsmith.deploy.base import DeployContext, DeploySpec, DeployTarget, failure_text, load_target, ordered
from certsmith.errors import CertsmithError, DeployError
from certsmith.storage.base import LineageMeta, Store

log = logging.getLogger("certsmith")


@dataclass(frozen=True)
class TargetResult:
    """One target's outcome in a run: ``error`` is a one-line text naming the target and the cause."""

    target: str
    spec: str
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    skipped: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": self.target,
            "spec": self.spec,
            "ok": self.ok,
            "changed": list(self.changed),
            "unchanged": list(self.unchanged),
        }
        if self.skipped:
            data["skipped"] = self.skipped
        if self.error is not None:
            data["error"] = self.error
        return data


async def run_targets(
    store: Store,
    specs: Sequence[DeploySpec],
    meta: LineageMeta,
    env: Mapping[str, str],
    *,
    location: str = "",
) -> list[TargetResult]:
    """Deliver ``meta``'s certificate (as stored) through every target of ``specs``."""
    files = store.load_files(meta.name, meta.version)
    if files is None:
        raise DeployError(f"the certificate of {meta.name!r} is missing from the store; issue it again")
    states = store.load_deploy_state(meta.name)
    shared: dict[str, Any] = {}
    changed: list[str] = []
    results: list[TargetResult] = []
    ran: list[tuple[int, DeploySpec, DeployTarget, DeployContext]] = []
    try:
        order = ordered(specs)
    except CertsmithError:
        order = list(specs)  # an unknown target fails below, in the order given
    for spec in order:
        stored = states.get(spec.key)
        context = DeployContext(
            lineage=meta.name,
            names=meta.names,
            version=meta.version,
            serial=meta.serial,
            not_after=meta.not_after,
            files=files,
            state=dict(stored) if isinstance(stored, dict) else {},
            env=env,
            location=location,
            changed=tuple(changed),
            shared=shared,
        )
        before = dict(context.state)
        try:
            target = load_target(spec, env)
            outcome = await target.deploy(context)
        except (CertsmithError, OSError, ValueError) as exc:
            results.append(TargetResult(spec.target, spec.text, error=failure_text(spec, exc)))
        else:
            changed.extend(outcome.changed)
            ran.append((len(results), spec, target, context))
            results.append(
                TargetResult(spec.target, spec.text, tuple(outcome.changed), tuple(outcome.unchanged), outcome.skipped)
            )
        finally:
            if context.state != before:
                _merge_state(store, meta.name, spec.key, context.state)
        log.info("%s: deploy target %s: %s", meta.name, spec.text, results[-1].to_json())
    if all(result.ok for result in results):
        # In reverse: a target that referenced another's upload (an SLB server certificate made from
        # the CAS certificate, an ALB additional certificate) lets go of it before that one is deleted.
        for index, spec, target, context in reversed(ran):
            before = dict(context.state)
            try:
                retired = await target.retire(context)
            except (CertsmithError, OSError, ValueError) as exc:
                results[index] = _with(results[index], error=failure_text(spec, exc))
            else:
                if retired:
                    results[index] = _with(results[index], changed=(*results[index].changed, *retired))
            finally:
                if context.state != before:
                    _merge_state(store, meta.name, spec.key, context.state)
    return results


def _with(result: TargetResult, **changes: Any) -> TargetResult:
    from dataclasses import replace

    return replace(result, **changes)


def failures(results: Sequence[TargetResult]) -> str | None:
    """The failed targets' errors in one line, or ``None`` when all succeeded."""
    errors = [result.error for result in results if result.error]
    return "; ".join(errors) if errors else None


def _merge_state(store: Store, name: str, key: str, state: Mapping[str, Any]) -> None:
    """Save one target's state into the lineage's deploy state as it is *now*.

    Deploy state is written outside the lineage's lock (deploy and sync run after it is
    released, and every host of a fleet syncs), so the state read when the run began may
    be stale: re-reading just before the write keeps what other targets or hosts saved
    meanwhile, and only this target's own entry is replaced.
    """
    fresh = store.load_deploy_state(name)
    fresh[key] = dict(state)
    store.save_deploy_state(name, fresh)
