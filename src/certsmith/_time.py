"""The one clock and the one timestamp format (RFC 3339, UTC, whole seconds).

Code that decides *when* takes ``now`` as a parameter; only the outermost callers
read the clock, through :func:`utc_now`, so tests can pass a fixed moment instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: What gives "now": :func:`utc_now`, or a fixed moment in tests.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current moment, timezone-aware in UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``2025-01-31T12:00:00Z`` for an aware ``datetime``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset); ``ValueError`` when it is not one."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)
