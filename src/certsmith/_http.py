"""Helpers for HTTP responses shared by the ACME client and the cloud DNS providers.

Imports httpx only for type checking, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The response body when it is a JSON object; ``None`` when it is not JSON or another JSON value."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
