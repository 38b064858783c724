"""Huawei Cloud API Gateway AK/SK signatures (``SDK-HMAC-SHA256``).

The scheme is SigV4-like with Huawei's own details, as implemented by the official
``huaweicloudsdkcore`` signer:

* the timestamp travels in ``X-Sdk-Date`` as ``YYYYMMDDTHHMMSSZ`` (UTC);
* the canonical request is ``METHOD``, the canonical URI (every path segment
  percent-encoded with only ``~`` kept, and *always* a trailing ``/``), the canonical
  query (pairs sorted by key then value, both encoded the same way, ``%20`` for a
  space), the canonical headers (``name:value`` lower-case names, trimmed values, one
  per line plus a final newline), the signed header names joined by ``;`` and the hex
  SHA-256 of the body (of the empty string when there is none);
* the string to sign is ``SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256(canonical request)>``
  -- no credential scope, no key derivation: the signature is
  ``hex(HMAC-SHA256(SK, string to sign))``;
* ``Authorization: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<names>, Signature=<hex>``.

Only pure functions live here, so the test emulator verifies with the same
canonicalisation while the official SDK checks both independently.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def encode(text: str) -> str:
    """Percent-encode everything but unreserved characters (``~`` kept, space as ``%20``)."""
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each segment of the (decoded) path encoded, with a trailing ``/`` always added."""
    uri = "/".join(encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """``k=v`` pairs sorted by key, then value, both encoded, joined by ``&``."""
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(pairs))


def canonical_headers(headers: Mapping[str, str], signed: list[str]) -> str:
    """``name:value\\n`` for each signed header (lower-case name, trimmed value)."""
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    return "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed)


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Every header name, lower case and sorted; names with ``_`` are never signed."""
    return sorted(k.lower() for k in headers if "_" not in k)


def canonical_request(
    method: str, path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str], signed: list[str], body: bytes
) -> str:
    """The canonical request the signature covers."""
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers(headers, signed),
            ";".join(signed),
            payload,
        )
    )


def string_to_sign(canonical: str, date: str) -> str:
    """``SDK-HMAC-SHA256``, the ``X-Sdk-Date`` value and the hash of the canonical request."""
    return f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of the string to sign with the secret access key."""
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def format_date(moment: datetime) -> str:
    """``moment`` (UTC) in the ``X-Sdk-Date`` form."""
    return moment.strftime(DATE_FORMAT)


def sign(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    access_key_id: str,
    secret: str,
    moment: datetime,
) -> dict[str, str]:
    """``headers`` plus ``X-Sdk-Date`` and ``Authorization`` for one request.

    ``headers`` must already hold every header to sign, ``Host`` included.
    """
    out = dict(headers)
    out[DATE_HEADER] = format_date(moment)
    signed = signed_header_names(out)
    canonical = canonical_request(method, path, list(query), out, signed, body)
    value = signature(secret, string_to_sign(canonical, out[DATE_HEADER]))
    out["Authorization"] = f"{ALGORITHM} Access={access_key_id}, SignedHeaders={';'.join(signed)}, Signature={value}"
    return out


def parse_authorization(header: str) -> dict[str, str] | None:
    """``Access``, ``SignedHeaders`` and ``Signature`` of an ``SDK-HMAC-SHA256`` header, or ``None``."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.strip().partition("=")
        if eq:
            fields[key] = value
    return fields if {"Access", "SignedHeaders", "Signature"} <= fields.keys() else None
