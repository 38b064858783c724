"""The tls-alpn-01 solver: a real TLS handshake on loopback, certificate checked per RFC 8737."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certsmith.challenges.base import ChallengeJob
from certsmith.challenges.tlsalpn01 import (
    ACME_IDENTIFIER_OID,
    TlsAlpn01Solver,
    _client_hello_alpn,
    _client_hello_body,
    _sni_from_body,
    sni_name,
)
from certsmith.errors import ChallengeError, ListenError
from certsmith.testing.pebble import LOOPBACK, free_port

T = TypeVar("T")
ACME = ["acme-tls/1"]  # never mutated

THUMB = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
JOB_A = ChallengeJob("dns", "a.example.test", "tokenA", f"tokenA.{THUMB}")
JOB_B = ChallengeJob("dns", "b.example.test", "tokenB", f"tokenB.{THUMB}")
JOB_V4 = ChallengeJob("ip", "192.0.2.7", "tokenV4", f"tokenV4.{THUMB}")
JOB_V6 = ChallengeJob("ip", "2001:db8::1", "tokenV6", f"tokenV6.{THUMB}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


def handshake(
    port: int, sni: str | None, alpn: list[str] | None = ACME, **options: Any
) -> tuple[bytes, str | None, bytes]:
    """Connect like a CA: no trust (the CA inspects the certificate itself), ALPN, SNI.

    Returns the peer certificate (DER), the negotiated ALPN protocol and what the
    server sent after the handshake (it should close at once).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in options.items():
        setattr(context, name, value)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.settimeout(1)  # the server closes at once; a timeout here fails the test
        try:
            after = tls.recv(100)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            after = b""
        return der, tls.selected_alpn_protocol(), after


async def fetch(port: int, sni: str | None, alpn: list[str] | None = ACME, **options: Any) -> Any:
    return await asyncio.to_thread(handshake, port, sni, alpn, **options)


async def with_solver(body: Callable[[TlsAlpn01Solver, int], Awaitable[None]]) -> None:
    port = free_port()
    solver = TlsAlpn01Solver(port, LOOPBACK)
    try:
        await body(solver, port)
    finally:
        await solver.aclose()


def check_certificate(der: bytes, job: ChallengeJob) -> x509.Certificate:
    """Everything RFC 8737 §3 (and RFC 8738 §6) requires of the validation certificate."""
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if job.identifier_type == "dns":
        assert san.get_values_for_type(x509.DNSName) == [job.identifier]
        assert san.get_values_for_type(x509.IPAddress) == []
    else:
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(job.identifier)]
        assert san.get_values_for_type(x509.DNSName) == []
    assert len(list(san)) == 1
    extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    digest = hashlib.sha256(job.key_authorization.encode()).digest()
    assert extension.value.value == b"\x04\x20" + digest
    assert job.key_authorization_digest == digest
    # self-signed: its own key verifies its signature
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.issuer == cert.subject
    return cert


def test_dns_identifier_certificate() -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        der, protocol, after = await fetch(port, "a.example.test")
        check_certificate(der, JOB_A)
        assert protocol == "acme-tls/1"
        assert after == b""  # closed right after the handshake
        # SNI is case-insensitive; TLS 1.2 works too (RFC 8737 §4: 1.2 or higher)
        der, protocol, _ = await fetch(port, "A.Example.TEST", maximum_version=ssl.TLSVersion.TLSv1_2)
        check_certificate(der, JOB_A)
        assert protocol == "acme-tls/1"

    run(with_solver(body))


def test_ip_identifiers_use_reverse_dns_sni() -> None:
    assert sni_name(JOB_V4) == "7.2.0.192.in-addr.arpa"
    assert sni_name(JOB_V6) == ".".join(reversed("20010db8" + "0" * 23 + "1")) + ".ip6.arpa"

    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_V4, JOB_V6])
        check_certificate((await fetch(port, "7.2.0.192.in-addr.arpa"))[0], JOB_V4)
        check_certificate((await fetch(port, sni_name(JOB_V6)))[0], JOB_V6)
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, "192.0.2.7")  # the address itself is not a valid SNI

    run(with_solver(body))


def test_unknown_or_missing_sni_fails_the_handshake() -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, "b.example.test")
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, None)
        check_certificate((await fetch(port, "a.example.test"))[0], JOB_A)

    run(with_solver(body))


@pytest.mark.parametrize("alpn", [None, [], ["h2", "http/1.1"], ["acme-tls/2"]])
def test_handshake_without_acme_alpn_fails(alpn: list[str] | None) -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        with pytest.raises(ssl.SSLError, match="no application protocol"):
            await fetch(port, "a.example.test", alpn)

    run(with_solver(body))


def test_acme_alpn_among_others_is_chosen() -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        der, protocol, _ = await fetch(port, "a.example.test", ["h2", "acme-tls/1"])
        assert protocol == "acme-tls/1"
        check_certificate(der, JOB_A)

    run(with_solver(body))


def test_cleanup_and_concurrent_job_sets() -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await asyncio.gather(solver.present([JOB_A, JOB_V4]), solver.present([JOB_B]))
        check_certificate((await fetch(port, "a.example.test"))[0], JOB_A)
        check_certificate((await fetch(port, "b.example.test"))[0], JOB_B)
        await solver.cleanup([JOB_A, JOB_V4])
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, "a.example.test")
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, sni_name(JOB_V4))
        check_certificate((await fetch(port, "b.example.test"))[0], JOB_B)
        await solver.cleanup([JOB_B])
        await solver.cleanup([JOB_B, JOB_A])  # already gone: no error
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, "b.example.test")

    run(with_solver(body))


def test_shared_name_stays_until_last_cleanup_and_conflicts_are_refused() -> None:
    other = ChallengeJob("dns", "a.example.test", "tokenX", f"tokenX.{THUMB}")

    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        await solver.present([JOB_A])
        with pytest.raises(ChallengeError, match="already being presented"):
            await solver.present([JOB_B, other])
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, "b.example.test")  # nothing of the refused batch
        await solver.cleanup([other])  # not ours: ignored
        await solver.cleanup([JOB_A])
        check_certificate((await fetch(port, "a.example.test"))[0], JOB_A)
        await solver.cleanup([JOB_A])
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            await fetch(port, "a.example.test")

    run(with_solver(body))


def test_one_ephemeral_key_per_solver() -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A, JOB_B])
        key_a = check_certificate((await fetch(port, "a.example.test"))[0], JOB_A).public_key()
        key_b = check_certificate((await fetch(port, "b.example.test"))[0], JOB_B).public_key()
        assert key_a == key_b

        async def second(other: TlsAlpn01Solver, other_port: int) -> None:
            await other.present([JOB_A])
            cert = check_certificate((await fetch(other_port, "a.example.test"))[0], JOB_A)
            assert cert.public_key() != key_a

        await with_solver(second)

    run(with_solver(body))


def test_garbage_and_early_close_do_not_disturb_the_server() -> None:
    async def body(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00", b""):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(payload)
            if payload.startswith(b"GET"):
                assert await asyncio.wait_for(reader.read(), 2) == b""  # dropped
            writer.close()
            await writer.wait_closed()
        check_certificate((await fetch(port, "a.example.test"))[0], JOB_A)

    run(with_solver(body))


def test_client_hello_parser() -> None:
    # a ClientHello from the ssl module, captured through memory BIOs
    def hello(alpn: list[str] | None) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="a.example.test")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        return outgoing.read()

    data = hello(["h2", "acme-tls/1"])
    assert _client_hello_alpn(data) == [b"h2", b"acme-tls/1"]
    assert _client_hello_alpn(hello(None)) == []
    for cut in (1, 5, 40, len(data) - 1):
        assert _client_hello_alpn(data[:cut]) is None  # incomplete: read more
    # the same handshake message split over two records
    body = data[5:]
    split = data[:3] + len(body[:50]).to_bytes(2, "big") + body[:50]
    split += data[:3] + len(body[50:]).to_bytes(2, "big") + body[50:]
    assert _client_hello_alpn(split) == [b"h2", b"acme-tls/1"]


def test_present_validates_jobs() -> None:
    solver = TlsAlpn01Solver(free_port(), LOOPBACK)
    assert TlsAlpn01Solver.challenge_type == "tls-alpn-01"
    wildcard = ChallengeJob("dns", "example.test", "t", "t.x", wildcard=True)
    with pytest.raises(ChallengeError, match="wildcard"):
        run(solver.present([wildcard]))
    with pytest.raises(ChallengeError, match="not an IP address"):
        run(solver.present([ChallengeJob("ip", "example.test", "t", "t.x")]))
    with pytest.raises(ChallengeError, match="malformed"):
        run(solver.present([ChallengeJob("dns", "example.test", "t/..", "t.x")]))
    run(solver.aclose())


def test_port_in_use() -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind((LOOPBACK, port))
        busy.listen()
        solver = TlsAlpn01Solver(port, LOOPBACK)
        with pytest.raises(ListenError, match=f"port {port} on {LOOPBACK} is in use: another program") as info:
            run(solver.prepare())
        assert info.value.challenge_type == "tls-alpn-01" and info.value.cause == "in-use"
        run(solver.aclose())


def test_privileged_port_message(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(asyncio, "start_server", refuse)
    with pytest.raises(ChallengeError, match=r"no permission for the tls-alpn-01 server .*port 443: .*CAP_NET_BIND"):
        run(TlsAlpn01Solver().present([JOB_A]))


def test_aclose_frees_the_port() -> None:
    port = free_port()

    async def main() -> None:
        solver = TlsAlpn01Solver(port, LOOPBACK)
        await solver.present([JOB_A])
        check_certificate((await fetch(port, "a.example.test"))[0], JOB_A)
        await solver.aclose()
        with pytest.raises(ConnectionRefusedError):
            await fetch(port, "a.example.test")

    run(main())


def test_aclose_ends_a_stalled_handshake() -> None:
    port = free_port()

    async def main() -> None:
        solver = TlsAlpn01Solver(port, LOOPBACK)
        await solver.present([JOB_A])
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"\x16\x03\x01")  # the start of a record, then nothing
        await writer.drain()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(solver.aclose(), 1)
        assert await asyncio.wait_for(reader.read(), 1) == b""
        writer.close()

    run(main())


def _captured_hello(server_hostname: str) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["acme-tls/1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_non_ascii_sni_is_refused_before_the_tls_library_sees_it(capfd: pytest.CaptureFixture[str]) -> None:
    data = _captured_hello("a.example.test")
    body = _client_hello_body(data)
    assert body is not None and _sni_from_body(body) == b"a.example.test"
    hostile = data.replace(b"a.example.test", "\u2603xample.test".encode())  # same length in bytes
    assert len(hostile) == len(data)

    async def body_(solver: TlsAlpn01Solver, port: int) -> None:
        await solver.present([JOB_A])
        for _ in range(3):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(hostile)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer == bytes([21, 3, 3, 0, 2, 2, 112])  # unrecognized_name
            writer.close()
            await writer.wait_closed()

    run(with_solver(body_))
    assert "Traceback" not in capfd.readouterr().err


def test_a_trickled_client_hello_is_cut_off_at_the_handshake_timeout() -> None:
    """A slowloris client sending its hello a byte at a time holds a connection only as long as the timeout."""
    port = free_port()
    hello = _captured_hello("a.example.test")

    async def main() -> float:
        solver = TlsAlpn01Solver(port, LOOPBACK, handshake_timeout=0.5)
        try:
            await solver.present([JOB_A])
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            started = asyncio.get_running_loop().time()
            try:
                for byte in hello:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            except ConnectionError:
                pass  # cut off while still sending
            with contextlib.suppress(ConnectionError):  # the reset may reach the reading side first
                assert await asyncio.wait_for(reader.read(), 2) == b""
            elapsed = asyncio.get_running_loop().time() - started
            writer.close()
            check_certificate((await fetch(port, "a.example.test"))[0], JOB_A)  # others are still served
            return elapsed
        finally:
            await solver.aclose()

    elapsed = run(main())
    assert len(hello) * 0.05 > 3 and 0.4 < elapsed < 2.5, elapsed
