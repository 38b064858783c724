"""Helpers for HTTP responses shared by the ACME client and the cloud DNS providers.

It does not import httpx, so importing this module stays cheap.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol

_MAX_RETRY_AFTER = 366 * 86400  # a year; more is a broken server, and a float overflow waiting to happen


class _JsonAnswer(Protocol):
    def json(self) -> Any: ...


def json_object(response: _JsonAnswer) -> dict[str, Any] | None:
    """The response body when it is a JSON object; ``None`` when it is not JSON or another JSON value."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def parse_retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Returns ``None`` when the header is absent or unparsable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if len(text) > 64:
        return None  # neither a sane number of seconds nor a date
    if text.isascii() and text.isdigit():  # RFC 9110 delay-seconds: ASCII digits ('²'.isdigit() too)
        return float(min(int(text), _MAX_RETRY_AFTER))
    import email.utils  # only for the rare HTTP-date form; the package costs milliseconds to import

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    current = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - current).total_seconds())
