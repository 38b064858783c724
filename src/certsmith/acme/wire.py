"""The ACME exchange as a person debugging it wants to read it (logger ``certsmith.wire``).

Each request shows its method, URL, JWS protected header and decoded payload; each
response its status, the headers ACME gives meaning to and its body. What is long or
sensitive is cut down: a JWK becomes its RFC 7638 thumbprint, CSRs and certificates
their first characters and length, an external account binding only its protected
header (its HMAC key is never part of the request at all), and every secret registered
with :func:`certsmith._redact.add_secret` is masked. Nothing is formatted unless a
handler emits the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from certsmith._http11 import Reply
from certsmith._redact import redact
from certsmith.jose import b64u_decode, jwk_thumbprint

log = logging.getLogger("certsmith.wire")

SHOWN_HEADERS = ("content-type", "replay-nonce", "location", "retry-after", "link")
_KEY_MATERIAL_MEMBERS = frozenset({"csr", "certificate"})  # base64url DER in request payloads
_LONGEST_SHOWN = 256
_PREFIX_SHOWN = 16


class _Deferred:
    """Renders its text only when a handler formats the record."""

    __slots__ = ("_args", "_render")

    def __init__(self, render: Callable[..., str], *args: Any) -> None:
        self._render = render
        self._args = args

    def __str__(self) -> str:
        return redact(self._render(*self._args))


def log_request(number: int, method: str, url: str, content: bytes | None) -> None:
    log.debug("%s", _Deferred(render_request, number, method, url, content))


def log_response(number: int, method: str, url: str, response: Reply) -> None:
    log.debug("%s", _Deferred(render_response, number, method, url, response))


def log_failure(number: int, method: str, url: str, error: BaseException) -> None:
    log.debug("%s", _Deferred(lambda: f"<- #{number} {method} {url} failed: {error}"))


def shorten(text: str) -> str:
    """The first characters of ``text`` and its length: enough to recognise, too little to use."""
    return f"{text[:_PREFIX_SHOWN]}...({len(text)} chars)"


def render_request(number: int, method: str, url: str, content: bytes | None) -> str:
    lines = [f"-> #{number} {method} {url}"]
    if content:
        try:
            body = json.loads(content)
            protected = _decode_json(body["protected"])
            payload_b64 = body["payload"]
        except (ValueError, KeyError, TypeError):
            lines.append(f"   body: {_text(content.decode('utf-8', 'replace'))}")
        else:
            lines.append(f"   protected: {_dump(_header(protected))}")
            if payload_b64 == "":
                lines.append("   payload: (empty: POST-as-GET)")
            else:
                lines.append(f"   payload: {_dump(_payload(payload_b64))}")
    return "\n".join(lines)


def render_response(number: int, method: str, url: str, response: Reply) -> str:
    lines = [f"<- #{number} {response.status_code} {response.reason_phrase} {method} {url}"]
    for name in SHOWN_HEADERS:
        for value in response.headers.get_list(name):
            lines.append(f"   {name.title()}: {value}")
    if response.content:
        lines.append(f"   body: {_response_body(response)}")
    return "\n".join(lines)


def _response_body(response: Reply) -> str:
    content_type = response.headers.get("content-type", "")
    text = response.content.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            return _dump(_sanitise(json.loads(text), in_request=False))
        except ValueError:
            pass
    if "-----BEGIN " in text:
        return _pem_summary(text)
    return _text(text)


def _pem_summary(text: str) -> str:
    blocks = []
    for chunk in text.split("-----BEGIN ")[1:]:
        label, _, rest = chunk.partition("-----")
        blocks.append(f"{label} {shorten(''.join(rest.split('-----END ')[0].split()))}")
    return f"{len(blocks)} PEM blocks: " + "; ".join(blocks)


def _text(text: str) -> str:
    return json.dumps(text if len(text) <= _LONGEST_SHOWN else shorten(text))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _decode_json(b64u: Any) -> Any:
    if not isinstance(b64u, str):
        raise ValueError("not a base64url string")
    return json.loads(b64u_decode(b64u))


def _thumbprint(jwk: dict[str, Any]) -> str:
    try:
        return jwk_thumbprint(jwk)
    except (KeyError, TypeError):
        return f"(a {jwk.get('kty')!r} JWK)"


def _header(protected: Any) -> Any:
    """The protected header with its ``jwk`` replaced by the key's thumbprint."""
    if not isinstance(protected, dict):
        return protected
    header = dict(protected)
    jwk = header.pop("jwk", None)
    if isinstance(jwk, dict):
        header["jwk_thumbprint"] = _thumbprint(jwk)
    return header


def _payload(payload_b64: str) -> Any:
    try:
        return _sanitise(_decode_json(payload_b64), in_request=True)
    except ValueError:
        return shorten(payload_b64)


def _sanitise(value: Any, *, in_request: bool, member: str | None = None) -> Any:
    """``value`` with JWKs as thumbprints, nested JWSs decoded and key material or long strings shortened.

    In a response ``certificate`` is the download URL, so only request members count as key material.
    """
    if isinstance(value, dict):
        if isinstance(value.get("kty"), str):
            return {"jwk_thumbprint": _thumbprint(value)}
        if {"protected", "payload", "signature"} <= value.keys():
            return _nested_jws(value, member)
        return {key: _sanitise(item, in_request=in_request, member=key) for key, item in value.items()}
    if isinstance(value, list):
        return [_sanitise(item, in_request=in_request) for item in value]
    if isinstance(value, str) and (len(value) > _LONGEST_SHOWN or (in_request and member in _KEY_MATERIAL_MEMBERS)):
        return shorten(value)
    return value


def _nested_jws(value: dict[str, Any], member: str | None) -> Any:
    """A JWS inside a payload: the key change's inner JWS in full, an HMAC-signed one (EAB) by its header only."""
    try:
        header = _decode_json(value["protected"])
    except ValueError:
        return "(an undecodable JWS)"
    mac_signed = isinstance(header, dict) and str(header.get("alg", "")).startswith("HS")
    if member == "externalAccountBinding" or mac_signed:
        return {"protected": _header(header)}
    return {"protected": _header(header), "payload": _payload(str(value["payload"]))}
