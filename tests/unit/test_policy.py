"""The renewal policy with a fixed clock: ARI windows first, then the lifetime rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from certsmith._time import format_time, parse_time
from certsmith.policy import (
    ARI_ERROR_RECHECK,
    ari_check_due,
    lifetime_renewal_time,
    lineage_status,
    lineage_summary,
    next_ari_check,
    renewal_decision,
    state_after_ari_error,
    state_from_ari,
)
from certsmith.storage.base import LineageMeta, RenewalState

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)


def meta(lifetime: timedelta, **changes: object) -> LineageMeta:
    values: dict[str, object] = {
        "name": "example.com",
        "names": ("example.com",),
        "key_type": "ec256",
        "directory_url": "https://ca.test/dir",
        "settings": {"profile": "tlsserver"},
        "not_before": format_time(ISSUED),
        "not_after": format_time(ISSUED + lifetime),
        "serial": "1",
        "issuer": "CA",
        "version": 3,
        "created_at": "",
        "updated_at": "",
        "cert_id": "aki.serial",
    }
    values.update(changes)
    return LineageMeta(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lifetime", "due_after"),
    [
        (timedelta(days=90), timedelta(days=60)),  # a third left
        (timedelta(days=45), timedelta(days=30)),
        (timedelta(hours=160), timedelta(hours=80)),  # under ten days: half left
        (timedelta(days=10), timedelta(days=10) * 2 / 3),  # exactly ten days is not "under"
    ],
)
def test_lifetime_rule(lifetime: timedelta, due_after: timedelta) -> None:
    lineage = meta(lifetime)
    moment = ISSUED + due_after
    assert lifetime_renewal_time(ISSUED, ISSUED + lifetime) == moment
    before = renewal_decision(lineage, None, moment - timedelta(seconds=1))
    at = renewal_decision(lineage, None, moment)
    assert (before.due, at.due) == (False, True)
    assert before.source == at.source == "lifetime"
    assert before.reason.startswith("not due") and "left of" in at.reason


def test_six_day_certificate_says_hours() -> None:
    decision = renewal_decision(meta(timedelta(hours=160)), None, ISSUED + timedelta(hours=100))
    assert decision.due and decision.reason == "60 hours left of 6 days"


def test_ari_window_decides_before_the_lifetime_rule() -> None:
    lineage = meta(timedelta(days=90))
    start, end = ISSUED + timedelta(days=10), ISSUED + timedelta(days=12)
    state = state_from_ari(
        3, None, window_start=start, window_end=end, explanation=None, retry_after=21600,
        now=ISSUED + timedelta(days=5), rng=random.Random(7),
    )
    renew_at = parse_time(state.ari_renew_at)
    assert start <= renew_at <= end
    assert not renewal_decision(lineage, state, renew_at - timedelta(seconds=1)).due
    decision = renewal_decision(lineage, state, renew_at)
    assert decision.due and decision.source == "ari" and decision.at == renew_at
    # well before the lifetime rule would have said so
    assert renew_at < lifetime_renewal_time(ISSUED, ISSUED + timedelta(days=90))


def test_the_random_moment_is_uniform_inside_the_window() -> None:
    start, end = ISSUED, ISSUED + timedelta(hours=100)
    rng = random.Random(1)
    moments = [
        parse_time(
            state_from_ari(1, None, window_start=start, window_end=end, explanation=None, retry_after=None,
                           now=ISSUED, rng=rng).ari_renew_at
        )
        for _ in range(400)
    ]
    hours = [(m - start).total_seconds() / 3600 for m in moments]
    assert min(hours) >= 0 and max(hours) <= 100
    assert sum(1 for h in hours if h < 50) in range(160, 241)  # neither end is favoured


def test_a_window_already_past_means_renew_now() -> None:
    lineage = meta(timedelta(days=90))
    now = ISSUED + timedelta(days=20)
    state = state_from_ari(
        3, None, window_start=ISSUED - timedelta(days=2), window_end=ISSUED - timedelta(days=1),
        explanation="https://ca.test/incident", retry_after=None, now=now,
    )
    decision = renewal_decision(lineage, state, now)
    assert decision.due and decision.source == "ari"
    assert lineage_summary(lineage, state, now)["explanation_url"] == "https://ca.test/incident"


def test_the_same_window_keeps_its_moment_and_a_new_window_rolls_again() -> None:
    start, end = ISSUED + timedelta(days=50), ISSUED + timedelta(days=60)
    first = state_from_ari(3, None, window_start=start, window_end=end, explanation=None, retry_after=None,
                           now=ISSUED, rng=random.Random(1))
    again = state_from_ari(3, first, window_start=start, window_end=end, explanation=None, retry_after=None,
                           now=ISSUED + timedelta(hours=7), rng=random.Random(2))
    assert again.ari_renew_at == first.ari_renew_at and again.ari_next_check != first.ari_next_check
    moved = state_from_ari(3, first, window_start=ISSUED, window_end=ISSUED + timedelta(seconds=1),
                           explanation=None, retry_after=None, now=ISSUED, rng=random.Random(2))
    assert moved.ari_renew_at != first.ari_renew_at


def test_a_state_of_an_older_version_is_not_reused() -> None:
    old = RenewalState(version=2, ari_renew_at="2026-01-01T00:00:00Z", revoked_at="2026-01-02T00:00:00Z")
    new = state_from_ari(3, old, window_start=ISSUED, window_end=ISSUED, explanation=None, retry_after=None, now=ISSUED)
    assert new.version == 3 and new.revoked_at == ""


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        (21600.0, timedelta(hours=6)),
        (None, timedelta(hours=6)),
        (0.0, timedelta(minutes=1)),  # clamped up: never hammer the CA
        (10 * 86400.0, timedelta(days=1)),  # clamped down: never sleep through a window
    ],
)
def test_retry_after_is_respected_within_bounds(retry_after: float | None, wait: timedelta) -> None:
    assert next_ari_check(ISSUED, retry_after) == ISSUED + wait


def test_the_next_check_time_gates_the_request() -> None:
    state = state_from_ari(3, None, window_start=ISSUED, window_end=ISSUED, explanation=None, retry_after=3600,
                           now=ISSUED)
    assert ari_check_due(None, ISSUED)
    assert not ari_check_due(state, ISSUED + timedelta(minutes=59))
    assert ari_check_due(state, ISSUED + timedelta(hours=1))
    assert ari_check_due(RenewalState(version=3, ari_next_check="garbage"), ISSUED)


def test_an_ari_error_keeps_the_window_and_backs_off() -> None:
    known = state_from_ari(3, None, window_start=ISSUED, window_end=ISSUED + timedelta(days=1), explanation=None,
                           retry_after=None, now=ISSUED)
    failed = state_after_ari_error(3, known, "the CA sent garbage", ISSUED + timedelta(days=2))
    assert failed.ari_renew_at == known.ari_renew_at and failed.ari_error == "the CA sent garbage"
    assert parse_time(failed.ari_next_check) == ISSUED + timedelta(days=2) + ARI_ERROR_RECHECK
    fresh = state_after_ari_error(3, None, "unreachable", ISSUED)
    assert not fresh.ari_renew_at
    assert renewal_decision(meta(timedelta(days=90)), fresh, ISSUED).source == "lifetime"


def test_revoked_and_expired_are_due_at_once() -> None:
    lineage = meta(timedelta(days=90))
    revoked = RenewalState(version=3, revoked_at=format_time(ISSUED + timedelta(days=1)))
    decision = renewal_decision(lineage, revoked, ISSUED + timedelta(days=2))
    assert decision.due and lineage_status(decision) == "revoked"
    expired = renewal_decision(lineage, None, ISSUED + timedelta(days=91))
    assert expired.due and lineage_status(expired) == "expired"
    assert lineage_status(renewal_decision(lineage, None, ISSUED + timedelta(days=61))) == "renew-due"
    assert lineage_status(renewal_decision(lineage, None, ISSUED)) == "valid"


def test_summary_carries_status_and_next_renewal() -> None:
    summary = lineage_summary(meta(timedelta(days=90)), None, ISSUED + timedelta(days=1))
    assert summary["status"] == "valid" and summary["renewal_source"] == "lifetime"
    assert summary["renewal_at"] == "2026-03-02T00:00:00Z" and summary["profile"] == "tlsserver"
    assert summary["days_left"] == 89


def test_unreadable_times_raise_value_error() -> None:
    with pytest.raises(ValueError):
        renewal_decision(meta(timedelta(days=1), not_after="soon"), None, ISSUED)


def test_without_an_rng_the_moment_comes_from_the_system_random_source() -> None:
    start, end = ISSUED, ISSUED + timedelta(hours=100)
    moments = {
        state_from_ari(1, None, window_start=start, window_end=end, explanation=None, retry_after=None,
                       now=ISSUED).ari_renew_at
        for _ in range(5)
    }
    assert all(start <= parse_time(m) <= end for m in moments)
    assert len(moments) > 1  # drawn each time, not fixed
