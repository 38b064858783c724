"""JOSE for ACME: base64url, JWK and RFC 7638 thumbprints, flattened JWS, EAB.

Only what RFC 8555 needs: RS256, ES256, ES384 signatures (EC signatures are the raw
``R || S`` concatenation of RFC 7518 §3.4, not DER) and HS256 for external account
binding. Private keys are never part of any string this module produces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from certsmith.errors import ConfigError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[str, tuple[str, int, hashes.HashAlgorithm, str]] = {
    # curve name -> (JWK crv, coordinate size in bytes, hash, JWS alg)
    "secp256r1": ("P-256", 32, hashes.SHA256(), "ES256"),
    "secp384r1": ("P-384", 48, hashes.SHA384(), "ES384"),
}


def b64u_encode(data: bytes) -> str:
    """base64url without padding (RFC 8555 §6.1)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Decode unpadded base64url; padding or foreign characters are rejected."""
    if "=" in text or any(c in text for c in "+/ \n"):
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64url") from None


def _int_bytes(value: int, length: int | None = None) -> bytes:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, str]:
    """The public JWK with only the members RFC 7638 requires."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else key
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"e": b64u_encode(_int_bytes(numbers.e)), "kty": "RSA", "n": b64u_encode(_int_bytes(numbers.n))}
    curve = _CURVES.get(public.curve.name)
    if curve is None:
        raise ConfigError(f"unsupported EC curve {public.curve.name}; use P-256 or P-384")
    crv, size, _, _ = curve
    point = public.public_numbers()
    return {
        "crv": crv,
        "kty": "EC",
        "x": b64u_encode(_int_bytes(point.x, size)),
        "y": b64u_encode(_int_bytes(point.y, size)),
    }


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys, as RFC 7638 demands for thumbprints."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def jwk_thumbprint(key: PrivateKey | PublicKey | dict[str, str]) -> str:
    """base64url SHA-256 JWK thumbprint (RFC 7638)."""
    jwk = key if isinstance(key, dict) else public_jwk(key)
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    members = {name: jwk[name] for name in required}
    return b64u_encode(hashlib.sha256(canonical_json(members)).digest())


def key_authorization(token: str, account_key: PrivateKey) -> str:
    """``token.thumbprint`` (RFC 8555 §8.1)."""
    return f"{token}.{jwk_thumbprint(account_key)}"


def jws_algorithm(key: PrivateKey) -> str:
    """RS256 for RSA keys; ES256 or ES384 by curve for EC keys."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    curve = _CURVES.get(key.curve.name)
    if curve is None:
        raise ConfigError(f"unsupported EC curve {key.curve.name}; use P-256 or P-384")
    return curve[3]


def sign(key: PrivateKey, data: bytes) -> bytes:
    """Signature bytes as JWS carries them (EC: raw R || S)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    _, size, digest, _ = _CURVES[key.curve.name]
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    return _int_bytes(r, size) + _int_bytes(s, size)


def _encode_payload(payload: Any | None) -> str:
    """``None`` is POST-as-GET: the empty string payload (RFC 8555 §6.3)."""
    if payload is None:
        return ""
    return b64u_encode(json.dumps(payload, separators=(",", ":")).encode())


def jws(
    key: PrivateKey,
    payload: Any | None,
    *,
    url: str,
    nonce: str | None,
    kid: str | None = None,
) -> dict[str, str]:
    """A flattened JWS. With ``kid`` the header names the account; without it, it
    carries the public ``jwk`` -- never both. ``nonce`` is omitted only for the inner
    JWS of a key change."""
    protected: dict[str, Any] = {"alg": jws_algorithm(key), "url": url}
    if nonce is not None:
        protected["nonce"] = nonce
    if kid is not None:
        protected["kid"] = kid
    else:
        protected["jwk"] = public_jwk(key)
    protected_b64 = b64u_encode(json.dumps(protected, separators=(",", ":")).encode())
    payload_b64 = _encode_payload(payload)
    signature = sign(key, f"{protected_b64}.{payload_b64}".encode("ascii"))
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64u_encode(signature)}


def eab_jws(account_key: PrivateKey, *, kid: str, hmac_key_b64u: str, url: str) -> dict[str, str]:
    """The ``externalAccountBinding`` object (RFC 8555 §7.3.4): HS256 over the account JWK."""
    try:
        mac_key = b64u_decode(hmac_key_b64u.strip().rstrip("="))
    except ValueError:
        raise ConfigError("the EAB HMAC key is not base64url; copy it exactly as the CA shows it") from None
    protected = {"alg": "HS256", "kid": kid, "url": url}
    protected_b64 = b64u_encode(json.dumps(protected, separators=(",", ":")).encode())
    payload_b64 = b64u_encode(json.dumps(public_jwk(account_key), separators=(",", ":")).encode())
    mac = hmac.new(mac_key, f"{protected_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64u_encode(mac)}
