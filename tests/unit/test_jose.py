"""JOSE details the server never shows us: vectors, encodings, header rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from certsmith.crypto import generate_key
from certsmith.errors import ConfigError
from certsmith.jose import b64u_decode, b64u_encode, eab_jws, jwk_thumbprint, jws, key_authorization, public_jwk

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknj"
    "hMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
    "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
    "apJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def decode_part(part: str) -> dict[str, object]:
    value = json.loads(b64u_decode(part))
    assert isinstance(value, dict)
    return value


def test_rfc7638_thumbprint_of_the_example_key() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == RFC7638_THUMBPRINT
    numbers = rsa.RSAPublicNumbers(65537, int.from_bytes(b64u_decode(RFC7638_N), "big"))
    assert jwk_thumbprint(numbers.public_key()) == RFC7638_THUMBPRINT


def test_base64url_has_no_padding_and_rejects_padding() -> None:
    assert b64u_encode(b"\xfb\xff") == "-_8"
    assert b64u_decode("-_8") == b"\xfb\xff"
    for bad in ("-_8=", "+/8", "ab cd"):
        with pytest.raises(ValueError):
            b64u_decode(bad)


@pytest.mark.parametrize(("key_type", "alg", "size"), [("ec256", "ES256", 64), ("ec384", "ES384", 96)])
def test_ec_signatures_are_raw_r_s(key_type: str, alg: str, size: int) -> None:
    key = generate_key(key_type)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    token = jws(key, {"a": 1}, url="https://ca/x", nonce="n0", kid="https://ca/acct/1")
    header = decode_part(token["protected"])
    assert header["alg"] == alg
    signature = b64u_decode(token["signature"])
    assert len(signature) == size, "ES signatures are R||S of fixed length, not DER"
    half = size // 2
    der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
    digest = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
    key.public_key().verify(der, f"{token['protected']}.{token['payload']}".encode(), ec.ECDSA(digest))


def test_rs256_signature_verifies() -> None:
    key = generate_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    token = jws(key, None, url="https://ca/x", nonce="n0", kid="https://ca/acct/1")
    assert token["payload"] == "", "POST-as-GET has an empty payload"
    key.public_key().verify(
        b64u_decode(token["signature"]),
        f"{token['protected']}.".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_kid_and_jwk_are_exclusive() -> None:
    key = generate_key()
    with_kid = decode_part(jws(key, {}, url="u", nonce="n", kid="https://ca/acct/7")["protected"])
    assert with_kid["kid"] == "https://ca/acct/7" and "jwk" not in with_kid
    with_jwk = decode_part(jws(key, {}, url="u", nonce="n")["protected"])
    assert with_jwk["jwk"] == public_jwk(key) and "kid" not in with_jwk
    assert set(with_jwk) == {"alg", "jwk", "nonce", "url"}


def test_ec_jwk_coordinates_keep_leading_zeros() -> None:
    for _ in range(64):
        key = generate_key("ec256")
        jwk = public_jwk(key)
        assert len(b64u_decode(jwk["x"])) == 32 and len(b64u_decode(jwk["y"])) == 32


def test_key_authorization() -> None:
    key = generate_key()
    assert key_authorization("tok", key) == f"tok.{jwk_thumbprint(key)}"


def test_eab_is_hs256_over_the_account_jwk_without_nonce() -> None:
    key = generate_key()
    mac_key = b"0123456789abcdef0123456789abcdef"
    token = eab_jws(key, kid="kid-1", hmac_key_b64u=b64u_encode(mac_key), url="https://ca/new-acct")
    header = decode_part(token["protected"])
    assert header == {"alg": "HS256", "kid": "kid-1", "url": "https://ca/new-acct"}
    assert decode_part(token["payload"]) == public_jwk(key)
    expected = hmac.new(mac_key, f"{token['protected']}.{token['payload']}".encode(), hashlib.sha256).digest()
    assert b64u_decode(token["signature"]) == expected
    # keys copied with padding are accepted too
    padded = base64.urlsafe_b64encode(mac_key).decode()
    assert eab_jws(key, kid="kid-1", hmac_key_b64u=padded, url="https://ca/new-acct")["signature"] == token["signature"]


def test_eab_rejects_a_key_that_is_not_base64url() -> None:
    with pytest.raises(ConfigError, match="not base64url"):
        eab_jws(generate_key(), kid="k", hmac_key_b64u="not base64!", url="u")
