"""The wire log (``certsmith.wire``): what a person debugging an exchange sees, and what they never see."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certsmith._redact import MASK, RedactingFormatter, add_secret, redact
from certsmith.acme.client import AcmeClient, RetryPolicy
from certsmith.acme.resources import Order, OrderStatus
from certsmith.crypto import Identifier, generate_key
from certsmith.jose import b64u_decode, b64u_encode, jwk_thumbprint, public_jwk
from certsmith.testing.pebble import write_test_ca
from tests.unit.test_acme_client import BASE, DIRECTORY, FakeCa, ok

EAB_KEY = b64u_encode(b"wire-log-test-hmac-key-32-bytes!")


@pytest.fixture
def wire(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="certsmith.wire")
    return caplog


def wire_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "certsmith.wire")


def sent(text: str, url: str) -> list[tuple[dict[str, Any], Any]]:
    """(protected header, payload) of every logged request to ``url``."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("-> #") and line.endswith(f" POST {url}"):
            protected = json.loads(lines[i + 1].removeprefix("   protected: "))
            payload_text = lines[i + 2].removeprefix("   payload: ")
            found.append((protected, payload_text if payload_text.startswith("(") else json.loads(payload_text)))
    return found


def private_scalar(key: ec.EllipticCurvePrivateKey) -> str:
    return b64u_encode(key.private_numbers().private_value.to_bytes(32, "big"))


def pem_body(key: ec.EllipticCurvePrivateKey) -> str:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return "".join(pem.decode().splitlines()[1:-1])


def test_new_account_with_eab_shows_thumbprints_and_the_binding_header_only(wire: pytest.LogCaptureFixture) -> None:
    def on_post(url: str, body: dict[str, Any], n: int) -> httpx.Response:
        return httpx.Response(
            201,
            json={"status": "valid", "contact": ["mailto:a@example.com"], "key": public_jwk(key)},
            headers={"Replay-Nonce": "after-acct", "Location": f"{BASE}/acct/7", "Link": f'<{BASE}/dir>;rel="index"'},
        )

    key = generate_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca = FakeCa(on_post)

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(ca.handler))
        async with AcmeClient(f"{BASE}/dir", key, http=http) as client:
            await client.register(
                contact=["mailto:a@example.com"], agree_tos=True, eab_kid="kid-9", eab_hmac_key=EAB_KEY
            )

    asyncio.run(run())
    text = wire_text(wire)
    [(protected, payload)] = sent(text, DIRECTORY["newAccount"])
    assert protected == {
        "alg": "ES256",
        "url": DIRECTORY["newAccount"],
        "nonce": "nonce1",
        "jwk_thumbprint": jwk_thumbprint(key),
    }
    assert payload["externalAccountBinding"] == {
        "protected": {"alg": "HS256", "kid": "kid-9", "url": DIRECTORY["newAccount"]}
    }
    assert payload["termsOfServiceAgreed"] is True and payload["contact"] == ["mailto:a@example.com"]
    assert f'"key": {{"jwk_thumbprint": "{jwk_thumbprint(key)}"}}' in text, "the account in the response too"
    assert "Location: https://ca.test/acct/7" in text and "Replay-Nonce: after-acct" in text
    assert 'Link: <https://ca.test/dir>;rel="index"' in text
    eab_signature = json.loads(b64u_decode(ca.posts[0][2]["payload"]))["externalAccountBinding"]["signature"]
    for secret in (EAB_KEY, eab_signature, public_jwk(key)["x"], private_scalar(key), pem_body(key)[:40]):
        assert secret not in text


def test_order_finalize_download_and_revoke_show_what_the_user_checks(
    wire: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    ca_pem, cert_pem, _ = write_test_ca(tmp_path)
    chain = cert_pem.read_bytes() + ca_pem.read_bytes()
    order_json = {
        "status": "valid",
        "identifiers": [{"type": "dns", "value": "x.test"}],
        "authorizations": [],
        "finalize": f"{BASE}/fin/1",
        "certificate": f"{BASE}/cert/1",
        "profile": "shortlived",
    }

    def on_post(url: str, body: dict[str, Any], n: int) -> httpx.Response:
        if url == f"{BASE}/cert/1":
            return httpx.Response(
                200,
                content=chain,
                headers={"Replay-Nonce": f"c{n}", "Content-Type": "application/pem-certificate-chain"},
            )
        headers = {"Location": f"{BASE}/order/1", "Retry-After": "2"} if url == DIRECTORY["newOrder"] else {}
        return ok(f"n{n}", order_json, **headers)

    directory = {**DIRECTORY, "renewalInfo": f"{BASE}/ari", "meta": {"profiles": {"shortlived": "short"}}}
    ca = FakeCa(on_post, directory=directory)
    csr_der = b"\x30\x82" + bytes(range(200))
    cert_der = b"\x30\x82" + bytes(range(100, 250))

    async def run() -> None:
        async with ca.client() as client:
            await client.new_order([Identifier("dns", "x.test")], profile="shortlived", replaces="aki.serial")
            order = Order(f"{BASE}/order/1", OrderStatus.READY, (), (), f"{BASE}/fin/1")
            await client.finalize(order, csr_der)
            await client.download_chain(f"{BASE}/cert/1")
            await client.revoke(cert_der, reason=4)

    asyncio.run(run())
    text = wire_text(wire)
    [(protected, payload)] = sent(text, DIRECTORY["newOrder"])
    assert protected["kid"] == f"{BASE}/acct/1" and "jwk_thumbprint" not in protected and "jwk" not in protected
    assert payload == {
        "identifiers": [{"type": "dns", "value": "x.test"}],
        "profile": "shortlived",
        "replaces": "aki.serial",
    }
    assert "Retry-After: 2" in text
    csr_b64 = b64u_encode(csr_der)
    [(_, finalize)] = sent(text, f"{BASE}/fin/1")
    assert finalize == {"csr": f"{csr_b64[:16]}...({len(csr_b64)} chars)"}
    assert csr_b64 not in text
    cert_b64 = b64u_encode(cert_der)
    [(_, revoke)] = sent(text, DIRECTORY["revokeCert"])
    assert revoke == {"certificate": f"{cert_b64[:16]}...({len(cert_b64)} chars)", "reason": 4}
    assert '"certificate": "https://ca.test/cert/1"' in text, "a certificate URL in an order is shown whole"
    [(_, download)] = sent(text, f"{BASE}/cert/1")
    assert download == "(empty: POST-as-GET)"
    assert "body: 2 PEM blocks: CERTIFICATE MII" in text
    leaf_body = "".join(cert_pem.read_text().splitlines()[1:-1])
    assert leaf_body[:40] not in text


def test_key_change_shows_both_keys_as_thumbprints(wire: pytest.LogCaptureFixture) -> None:
    ca = FakeCa(lambda url, body, n: ok(f"n{n}"))
    new_key = generate_key("ec384")

    async def run() -> str:
        async with ca.client() as client:
            old = jwk_thumbprint(client.account_key)
            await client.change_key(new_key)
            return old

    old_thumbprint = asyncio.run(run())
    [(protected, payload)] = sent(wire_text(wire), DIRECTORY["keyChange"])
    assert protected["kid"] == f"{BASE}/acct/1"
    assert payload == {
        "protected": {"alg": "ES384", "url": DIRECTORY["keyChange"], "jwk_thumbprint": jwk_thumbprint(new_key)},
        "payload": {"account": f"{BASE}/acct/1", "oldKey": {"jwk_thumbprint": old_thumbprint}},
    }


def test_registered_secrets_are_masked_in_the_wire_log(wire: pytest.LogCaptureFixture) -> None:
    secret = "provider-secret-value-0042"
    add_secret(secret)
    ca = FakeCa(
        lambda url, body, n: httpx.Response(
            400,
            json={"type": "urn:ietf:params:acme:error:malformed", "detail": f"bad token {secret}"},
            headers={"Replay-Nonce": "x", "Content-Type": "application/problem+json"},
        )
    )

    async def run() -> None:
        async with ca.client() as client:
            await client.update_account(contact=[f"mailto:{secret}@example.com"])

    with pytest.raises(Exception, match="malformed"):
        asyncio.run(run())
    text = wire_text(wire)
    assert secret not in text and f'"contact": ["mailto:{MASK}@example.com"]' in text
    assert f"bad token {MASK}" in text


def test_transport_failures_are_logged(wire: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
        async with AcmeClient(f"{BASE}/dir", generate_key(), http=http, retry=RetryPolicy(attempts=1)) as client:
            await client.directory()

    with pytest.raises(Exception, match="cannot reach"):
        asyncio.run(run())
    assert wire_text(wire).splitlines() == [
        f"-> #1 GET {BASE}/dir",
        f"<- #1 GET {BASE}/dir failed: cannot reach the CA at ca.test: connection refused",
    ]


def test_without_the_wire_level_only_a_summary_line_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="certsmith.acme")
    logging.getLogger("certsmith.wire").setLevel(logging.INFO)
    try:
        ca = FakeCa(lambda url, body, n: ok(f"n{n}"))

        async def run() -> None:
            async with ca.client() as client:
                await client.fetch_account()

        asyncio.run(run())
    finally:
        logging.getLogger("certsmith.wire").setLevel(logging.NOTSET)
    assert not [r for r in caplog.records if r.name == "certsmith.wire"]
    assert f"POST {BASE}/acct/1 -> 200" in [r.getMessage() for r in caplog.records if r.name == "certsmith.acme"]


def test_redaction_masks_longest_first_and_ignores_blanks() -> None:
    add_secret("abcd-1234-overlap")
    add_secret("abcd-1234")
    add_secret("   ")
    add_secret(None)
    assert redact("x abcd-1234-overlap y abcd-1234 z") == f"x {MASK} y {MASK} z"
    assert redact("nothing to hide") == "nothing to hide"


def test_redacting_formatter_masks_arguments_and_tracebacks() -> None:
    add_secret("formatter-secret-77")
    formatter = RedactingFormatter("%(message)s")
    try:
        raise RuntimeError("failed with formatter-secret-77")
    except RuntimeError:
        args = ("formatter-secret-77",)
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "token=%s", args, sys.exc_info())
    text = formatter.format(record)
    assert "formatter-secret-77" not in text and text.startswith(f"token={MASK}") and "RuntimeError" in text
