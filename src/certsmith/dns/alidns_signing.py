"""Request signing for the Alibaba Cloud RPC APIs (Alidns 2015-01-09, and CAS, CDN, SLB... alike).

Two schemes exist and both are pure functions here, so the provider that signs and
the emulator in :mod:`tests.support.alidns_emulator` that verifies share one canonical
form (the emulator recomputes every signature from what it received):

* **V1** (``SignatureMethod=HMAC-SHA1``, ``SignatureVersion=1.0``): all parameters
  except ``Signature`` are sorted, percent-encoded and joined; the string to sign is
  ``METHOD&%2F&pe(query)``, the key is ``secret + "&"``, the result base64.
* **V3** (``ACS3-HMAC-SHA256``): a canonical request of method, path, query, the
  signed headers and the body hash; the key is the raw secret, the result hex.

See ``shared/reference/alidns-api.md`` sections 2 and 3 for the worked examples the
unit tests reproduce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

API_VERSION = "2015-01-09"
V1_SIGNATURE_METHOD = "HMAC-SHA1"
V1_SIGNATURE_VERSION = "1.0"
V3_ALGORITHM = "ACS3-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def percent_encode(text: str) -> str:
    """Encode ``text`` as UTF-8 and escape every byte outside ``A-Z a-z 0-9 - _ . ~``.

    Hex digits are upper case, a space becomes ``%20`` (never ``+``), ``*`` becomes
    ``%2A`` and ``~`` stays literal -- the encoding both signature schemes require.
    """
    return quote(text, safe="-_.~", encoding="utf-8", errors="strict")


def canonical_query(params: Mapping[str, str]) -> str:
    """Sort ``params`` by name (byte order, case-sensitive) and join ``pe(k)=pe(v)`` with ``&``.

    Empty values are kept as ``k=``. Code-point order equals UTF-8 byte order, so a
    plain sort of the names is the byte order the service uses.
    """
    return "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))


def utc_timestamp(moment: datetime) -> str:
    """``moment`` in UTC as ``yyyy-MM-ddTHH:mm:ssZ``, the form both schemes expect."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


# --- V1: HMAC-SHA1 -------------------------------------------------------------------


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&pe(CanonicalizedQueryString)``; ``Signature`` itself is left out."""
    signed = {k: v for k, v in params.items() if k != "Signature"}
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(signed))}"


def v1_signature(secret: str, string_to_sign: str) -> str:
    """Base64 of HMAC-SHA1 keyed with ``secret + "&"``."""
    digest = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_v1(method: str, params: Mapping[str, str], secret: str) -> str:
    """The V1 ``Signature`` of ``params`` sent with HTTP ``method``."""
    return v1_signature(secret, v1_string_to_sign(method, params))


def v1_common_params(
    action: str,
    access_key_id: str,
    nonce: str,
    moment: datetime,
    security_token: str | None = None,
    *,
    version: str = API_VERSION,
) -> dict[str, str]:
    """The common parameters of a V1 call (``Format=JSON``) without ``Signature``.

    ``version`` is the product's API version (Alidns' by default; CAS, CDN, SLB... have their own).
    """
    params = {
        "Action": action,
        "Version": version,
        "Format": "JSON",
        "AccessKeyId": access_key_id,
        "SignatureMethod": V1_SIGNATURE_METHOD,
        "SignatureVersion": V1_SIGNATURE_VERSION,
        "SignatureNonce": nonce,
        "Timestamp": utc_timestamp(moment),
    }
    if security_token:
        params["SecurityToken"] = security_token
    return params


# --- V3: ACS3-HMAC-SHA256 ------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256, the ``x-acs-content-sha256`` of a body."""
    return hashlib.sha256(data).hexdigest()


def canonical_headers(headers: Mapping[str, str | Iterable[str]], signed: Iterable[str]) -> str:
    """``name:value\\n`` for each signed header in sorted order.

    Names are lower-cased and values trimmed; a header sent several times has its
    trimmed values sorted and joined with ``,`` (as the Tea SDK does). Raises
    ``KeyError`` when a signed header is absent.
    """
    lowered: dict[str, list[str]] = {}
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        lowered.setdefault(name.lower(), []).extend(v.strip() for v in values)
    lines = []
    for name in sorted({n.lower() for n in signed}):
        lines.append(f"{name}:{','.join(sorted(lowered[name]))}\n")
    return "".join(lines)


def signed_headers_list(names: Iterable[str]) -> str:
    """The ``SignedHeaders`` value: lower-cased names, sorted, joined with ``;``."""
    return ";".join(sorted({n.lower() for n in names}))


def v3_canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str | Iterable[str]],
    signed: Iterable[str],
    hashed_payload: str,
) -> str:
    """The V3 CanonicalRequest (method, path, query, headers, signed names, body hash)."""
    signed = list(signed)
    return "\n".join(
        (
            method.upper(),
            path or "/",
            canonical_query(query),
            canonical_headers(headers, signed),
            signed_headers_list(signed),
            hashed_payload,
        )
    )


def v3_string_to_sign(canonical_request: str) -> str:
    """``ACS3-HMAC-SHA256\\n`` + hex SHA-256 of the canonical request."""
    return f"{V3_ALGORITHM}\n{sha256_hex(canonical_request.encode())}"


def v3_signature(secret: str, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 keyed with the raw secret (no ``&``)."""
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def v3_authorization(access_key_id: str, signed: Iterable[str], signature: str) -> str:
    """The ``Authorization`` header value."""
    names = signed_headers_list(signed)
    return f"{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={names},Signature={signature}"


def sign_v3(
    *,
    method: str,
    host: str,
    action: str,
    query: Mapping[str, str],
    access_key_id: str,
    secret: str,
    nonce: str,
    moment: datetime,
    security_token: str | None = None,
    body: bytes = b"",
    path: str = "/",
    version: str = API_VERSION,
) -> dict[str, str]:
    """Every header of a V3 call, ``Authorization`` included; all of them are signed.

    ``version`` is the product's API version: the scheme is the same for every RPC product.
    """
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": utc_timestamp(moment),
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": sha256_hex(body),
    }
    if security_token:
        headers["x-acs-security-token"] = security_token
        headers["x-acs-accesskey-id"] = access_key_id
    request = v3_canonical_request(method, path, query, headers, headers, headers["x-acs-content-sha256"])
    signature = v3_signature(secret, v3_string_to_sign(request))
    headers["Authorization"] = v3_authorization(access_key_id, headers, signature)
    return headers
