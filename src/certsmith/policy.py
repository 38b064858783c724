"""When to renew, and what state a lineage is in: pure functions of its records and ``now``.

The CA decides first: when it offers ARI (RFC 9773), the lineage's renewal state holds
a moment chosen uniformly at random inside the CA's ``suggestedWindow`` and renewal
is due once that moment has passed. Without an ARI answer the lifetime rule decides:
renew with a third of the lifetime left, or half when the lifetime is under ten days
(6-day certificates renew after three days). A revoked or expired certificate is due
at once. Nothing here reads the clock, the disk or the network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from certsmith._time import format_time, parse_time
from certsmith.storage.base import LineageMeta, RenewalState

if TYPE_CHECKING:
    import random

SHORT_LIFETIME = timedelta(days=10)
# RFC 9773 §4.3: a client should clamp Retry-After to reasonable bounds.
ARI_DEFAULT_RECHECK = timedelta(hours=6)
ARI_MIN_RECHECK = timedelta(minutes=1)
ARI_MAX_RECHECK = timedelta(days=1)
ARI_ERROR_RECHECK = timedelta(hours=1)

STATUSES = ("valid", "renew-due", "expired", "revoked", "damaged")


@dataclass(frozen=True)
class Decision:
    """Whether a lineage is due for renewal, since when, and why.

    ``source`` is ``ari`` (the CA's window), ``lifetime`` (the fallback rule),
    ``revoked`` or ``expired``; ``reason`` says it in one line for people.
    """

    due: bool
    at: datetime
    source: str
    reason: str


def lifetime_renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """The moment the lifetime rule makes a certificate due."""
    lifetime = not_after - not_before
    left_when_due = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return not_after - left_when_due


def _duration(span: timedelta) -> str:
    """``45 days`` or, under three days, ``60 hours``."""
    if span >= timedelta(days=3):
        return f"{span.days} days"
    return f"{max(int(span.total_seconds() // 3600), 0)} hours"


def _left(not_after: datetime, now: datetime) -> str:
    return f"{_duration(not_after - now)} left"


def renewal_decision(meta: LineageMeta, state: RenewalState | None, now: datetime) -> Decision:
    """Decide for the current version described by ``meta``; ``ValueError`` if its times are unreadable."""
    not_before, not_after = parse_time(meta.not_before), parse_time(meta.not_after)
    if state is not None and state.revoked_at:
        return Decision(True, parse_time(state.revoked_at), "revoked", "the certificate was revoked")
    if now >= not_after:
        return Decision(True, not_after, "expired", f"expired at {meta.not_after}")
    if state is not None and state.ari_renew_at:
        at = parse_time(state.ari_renew_at)
        window = f"the CA's renewal window {state.ari_window_start} to {state.ari_window_end}"
        if at <= now:
            return Decision(True, at, "ari", f"{window} has begun ({_left(not_after, now)})")
        return Decision(False, at, "ari", f"not due: {window}, renewing at {state.ari_renew_at}")
    at = lifetime_renewal_time(not_before, not_after)
    of = f"of {_duration(not_after - not_before)}"
    if at <= now:
        return Decision(True, at, "lifetime", f"{_left(not_after, now)} {of}")
    return Decision(False, at, "lifetime", f"not due: {_left(not_after, now)} {of}, renewing after {format_time(at)}")


def ari_check_due(state: RenewalState | None, now: datetime) -> bool:
    """Whether to ask the CA's renewalInfo again: never asked, or the time it gave has passed."""
    if state is None or not state.ari_next_check:
        return True
    try:
        return parse_time(state.ari_next_check) <= now
    except ValueError:
        return True


def next_ari_check(now: datetime, retry_after: float | None) -> datetime:
    """When to ask again: the CA's Retry-After, clamped, or a default of a few hours."""
    if retry_after is None:
        return now + ARI_DEFAULT_RECHECK
    wait = timedelta(seconds=retry_after)
    return now + min(max(wait, ARI_MIN_RECHECK), ARI_MAX_RECHECK)


def state_from_ari(
    version: int,
    previous: RenewalState | None,
    *,
    window_start: datetime,
    window_end: datetime,
    explanation: str | None,
    retry_after: float | None,
    now: datetime,
    rng: random.Random | None = None,
) -> RenewalState:
    """The renewal state after an ARI answer.

    The random moment is kept while the CA's window stays the same, so repeated checks
    do not re-roll it; a new window (an incident, a revocation) chooses again.
    """
    start, end = format_time(window_start), format_time(window_end)
    base = previous if previous is not None and previous.version == version else RenewalState(version=version)
    renew_at = base.ari_renew_at
    if not renew_at or (base.ari_window_start, base.ari_window_end) != (start, end):
        span = max((window_end - window_start).total_seconds(), 0.0)
        if rng is None:
            import random  # only a renewal inside an ARI window draws a time; `list` does not

            rng = random.SystemRandom()
        offset = rng.uniform(0.0, span)
        renew_at = format_time(window_start + timedelta(seconds=offset))
    return replace(
        base,
        ari_window_start=start,
        ari_window_end=end,
        ari_renew_at=renew_at,
        ari_next_check=format_time(next_ari_check(now, retry_after)),
        ari_explanation=explanation or "",
        ari_error="",
    )


def state_after_ari_error(version: int, previous: RenewalState | None, error: str, now: datetime) -> RenewalState:
    """Keep what was known, remember the error, and ask again after a back-off."""
    base = previous if previous is not None and previous.version == version else RenewalState(version=version)
    return replace(base, ari_error=error, ari_next_check=format_time(now + ARI_ERROR_RECHECK))


def lineage_status(decision: Decision) -> str:
    """One of :data:`STATUSES` (except ``damaged``, which the caller decides when records are unreadable)."""
    if decision.source in ("revoked", "expired"):
        return decision.source
    return "renew-due" if decision.due else "valid"


def lineage_summary(meta: LineageMeta, state: RenewalState | None, now: datetime) -> dict[str, Any]:
    """The facts ``list`` and ``show`` print (and ``--json`` carries)."""
    decision = renewal_decision(meta, state, now)
    summary: dict[str, Any] = {
        "name": meta.name,
        "names": list(meta.names),
        "status": lineage_status(decision),
        "not_before": meta.not_before,
        "not_after": meta.not_after,
        "days_left": (parse_time(meta.not_after) - now).days,
        "renewal_at": format_time(decision.at),
        "renewal_source": decision.source,
        "renewal_reason": decision.reason,
        "issuer": meta.issuer,
        "key_type": meta.key_type,
        "serial": meta.serial,
        "directory": meta.directory_url,
        "profile": meta.settings.get("profile"),
        "version": meta.version,
    }
    if state is not None and state.ari_explanation:
        summary["explanation_url"] = state.ari_explanation
    if state is not None and state.ari_error:
        summary["ari_error"] = state.ari_error
    return summary
