"""Tencent Cloud API 3.0 request signing: TC3-HMAC-SHA256.

Pure functions, shared by the provider and (for recomputing what arrived) the test
emulator. The scheme, as the official SDKs implement it: the canonical request is

    METHOD \\n URI \\n QUERY \\n content-type:<ct>\\nhost:<host>\\n \\n content-type;host \\n hex(sha256(payload))

(for POST the query is empty and the payload is the JSON body; for GET the query is
the form-encoded parameters and the payload empty), the string to sign is

    TC3-HMAC-SHA256 \\n <timestamp> \\n <yyyy-mm-dd>/<service>/tc3_request \\n hex(sha256(canonical request))

and the key is derived as HMAC("TC3" + secret, date) -> HMAC(., service) -> HMAC(., "tc3_request").
The date is the UTC date of the ``X-TC-Timestamp``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def utc_date(timestamp: int) -> str:
    """``YYYY-MM-DD`` of a Unix timestamp, in UTC (the credential scope's date)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def credential_scope(date: str, service: str) -> str:
    return f"{date}/{service}/tc3_request"


def canonical_request(
    method: str, uri: str, query: str, content_type: str, host: str, payload: bytes
) -> str:
    """The canonical request of TC3 (only ``content-type`` and ``host`` are signed)."""
    headers = f"content-type:{content_type.lower()}\nhost:{host.lower()}\n"
    digest = hashlib.sha256(payload).hexdigest()
    return f"{method.upper()}\n{uri}\n{query}\n{headers}\n{SIGNED_HEADERS}\n{digest}"


def string_to_sign(timestamp: int, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def signature(secret_key: str, date: str, service: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``to_sign`` with the key derived from the secret, date and service."""

    def mac(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()

    key = mac(mac(mac(("TC3" + secret_key).encode("utf-8"), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(secret_id: str, scope: str, sig: str) -> str:
    return f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={sig}"


def sign_json_post(
    *,
    host: str,
    service: str,
    action: str,
    version: str,
    body: bytes,
    secret_id: str,
    secret_key: str,
    timestamp: int,
    region: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """The headers of a signed ``POST /`` with a JSON body (the SDKs' default request)."""
    date = utc_date(timestamp)
    scope = credential_scope(date, service)
    canonical = canonical_request("POST", "/", "", JSON_CONTENT_TYPE, host, body)
    sig = signature(secret_key, date, service, string_to_sign(timestamp, scope, canonical))
    headers = {
        "Authorization": authorization(secret_id, scope, sig),
        "Content-Type": JSON_CONTENT_TYPE,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": version,
    }
    if region:
        headers["X-TC-Region"] = region
    if token:
        headers["X-TC-Token"] = token
    return headers
