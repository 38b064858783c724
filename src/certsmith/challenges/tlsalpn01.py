"""The tls-alpn-01 solver (RFC 8737, RFC 8738 §6 for IP identifiers).

The CA opens a TLS connection with ALPN ``acme-tls/1`` and SNI set to the name
being validated (for an IP address: its ``in-addr.arpa`` / ``ip6.arpa`` name) and
inspects the certificate it gets: self-signed, a single SAN for the identifier and
the critical ``id-pe-acmeIdentifier`` extension holding SHA-256 of the key
authorization. No application data follows; the connection is closed after the
handshake.

Python's ALPN callback lets a handshake go on without ALPN when the client offers
no protocol we know, so the ClientHello is read first and a connection that does
not offer ``acme-tls/1`` gets the fatal ``no_application_protocol`` alert (RFC 7301
§3.2) without ever seeing a validation certificate. The TLS handshake itself runs
on memory BIOs, so the bytes already read can be fed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

from certsmith.challenges.base import ChallengeJob
from certsmith.challenges.serving import ActiveAnswers, ChallengeListener, check_jobs
from certsmith.errors import ChallengeError

__all__ = ["ACME_IDENTIFIER_OID", "ACME_TLS_ALPN", "TlsAlpn01Solver", "sni_name"]

log = logging.getLogger(__name__)

ACME_TLS_ALPN = "acme-tls/1"
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier

_READ_SIZE = 4096
_MAX_CLIENT_HELLO = 65536
_MAX_RECORD = 2**14 + 256
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_ALPN = 16
_EXT_SERVER_NAME = 0
# A fatal no_application_protocol alert in a TLS 1.2-versioned record (RFC 7301 §3.2).
_NO_APPLICATION_PROTOCOL_ALERT = bytes([21, 3, 3, 0, 2, 2, 120])
# A fatal unrecognized_name alert (RFC 6066 §3).
_UNRECOGNIZED_NAME_ALERT = bytes([21, 3, 3, 0, 2, 2, 112])


def sni_name(job: ChallengeJob) -> str:
    """The SNI the CA sends for ``job``: the DNS name, or the reverse-DNS name of an IP (RFC 8738 §6)."""
    if job.identifier_type == "ip":
        try:
            address = ipaddress.ip_address(job.identifier)
        except ValueError:
            raise ChallengeError(f"{job.identifier!r} is not an IP address") from None
        return address.reverse_pointer
    name = job.identifier.rstrip(".").lower()
    if not name or not name.isascii() or any(c.isspace() for c in name):
        raise ChallengeError(f"{job.identifier!r} is not a DNS name in ASCII (A-label) form")
    return name


class _BadHello(Exception):
    """The bytes are not a TLS ClientHello we can read."""


class TlsAlpn01Solver:
    """Answers tls-alpn-01 challenges with a built-in TLS server (``host=""``: all addresses).

    One ephemeral P-256 key per solver signs every validation certificate.
    ``handshake_timeout`` bounds the time a client has for the whole handshake.
    """

    challenge_type: ClassVar[str] = "tls-alpn-01"

    def __init__(self, port: int = 443, host: str = "", *, handshake_timeout: float = 10.0) -> None:
        self.port = port
        self.host = host
        self.handshake_timeout = handshake_timeout
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._active: ActiveAnswers[ssl.SSLContext] = ActiveAnswers(
            "a tls-alpn-01 challenge for {identifier} is already being presented with another key "
            "authorization; only one certificate can be served per name at a time"
        )
        self._lock = asyncio.Lock()
        self._base_context = _server_context()
        self._base_context.sni_callback = self._select_certificate
        self._listener = ChallengeListener(
            self._handle_connection,
            host=host,
            port=port,
            challenge_type=self.challenge_type,
        )

    # -- the solver protocol -------------------------------------------------------

    async def prepare(self) -> None:
        """Listen on the port now, so a busy port is reported before any order."""
        await self._listener.start()

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        """Serve a validation certificate for every job's name."""
        check_jobs(jobs, self.challenge_type)
        named = [(sni_name(job), job) for job in jobs]
        if not named:
            return
        async with self._lock:
            self._active.check(named)
            await self._listener.start()
            fresh = {name: job for name, job in named if name not in self._active}
            contexts = await asyncio.to_thread(self._build_contexts, list(fresh.items()))
            self._active.add(named, contexts)
            for name, job in named:
                log.debug("presenting tls-alpn-01 for %s (SNI %s)", job.identifier, name)

    async def cleanup(self, jobs: Sequence[ChallengeJob]) -> None:
        """Stop serving these jobs; names still presented by another order stay."""
        async with self._lock:
            named = []
            for job in jobs:
                with contextlib.suppress(ChallengeError):
                    named.append((sni_name(job), job))
            self._active.release(named)

    async def aclose(self) -> None:
        """Stop the server and forget every presented name."""
        await self._listener.aclose()
        self._active.clear()

    # -- certificates ----------------------------------------------------------------

    def _build_contexts(self, items: Sequence[tuple[str, ChallengeJob]]) -> dict[str, ssl.SSLContext]:
        """One TLS context per name (runs in a worker thread: it signs and loads certificates)."""
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        contexts: dict[str, ssl.SSLContext] = {}
        # The ssl module loads certificates only from files: use a private directory
        # (mode 0700) that lives only for the time it takes to load them.
        with tempfile.TemporaryDirectory(prefix="certsmith-tls-alpn-") as directory:
            path = Path(directory) / "validation.pem"
            for name, job in items:
                cert = self._validation_certificate(job)
                path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
                context = _server_context()
                context.load_cert_chain(path)
                contexts[name] = context
        return contexts

    def _validation_certificate(self, job: ChallengeJob) -> x509.Certificate:
        """The RFC 8737 §3 certificate: self-signed, one SAN, critical acmeIdentifier."""
        san: x509.GeneralName
        if job.identifier_type == "ip":
            san = x509.IPAddress(ipaddress.ip_address(job.identifier))
        else:
            san = x509.DNSName(job.identifier.rstrip(".").lower())
        now = datetime.datetime.now(datetime.UTC)
        empty = x509.Name([])  # the SAN carries the identity, so it is marked critical (RFC 5280 §4.2.1.6)
        return (
            x509.CertificateBuilder()
            .subject_name(empty)
            .issuer_name(empty)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + job.key_authorization_digest),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    def _select_certificate(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        """SNI callback: switch to the name's context, or fail the handshake for unknown names."""
        active = self._active.get(server_name.lower()) if server_name else None
        if active is None:
            log.debug("tls-alpn-01 handshake for unknown name %r refused", server_name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = active.payload
        return None

    # -- connections -----------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.handshake_timeout):
            hello = await _read_client_hello(reader)
            if hello is None:
                return
            data, protocols, server_name = hello
            if not acceptable_sni(server_name):
                log.debug("tls-alpn-01 handshake with an unusable SNI refused")
                writer.write(_UNRECOGNIZED_NAME_ALERT)
                await writer.drain()
                return
            if ACME_TLS_ALPN.encode() not in protocols:
                writer.write(_NO_APPLICATION_PROTOCOL_ALERT)
                await writer.drain()
                return
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self._base_context.wrap_bio(incoming, outgoing, server_side=True)
            incoming.write(data)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await _flush(writer, outgoing)
                    chunk = await reader.read(_READ_SIZE)
                    if not chunk:
                        return
                    incoming.write(chunk)
                except ssl.SSLError as exc:
                    await _flush(writer, outgoing)  # the alert, if OpenSSL produced one
                    log.debug("tls-alpn-01 handshake failed: %s", exc)
                    return
            if tls.selected_alpn_protocol() != ACME_TLS_ALPN:
                return
            log.debug("served a tls-alpn-01 certificate")
            with contextlib.suppress(ssl.SSLError):
                tls.unwrap()  # close_notify; the CA sends no application data
            await _flush(writer, outgoing)


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8737 §4
    context.set_alpn_protocols([ACME_TLS_ALPN])
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    return context


async def _flush(writer: asyncio.StreamWriter, outgoing: ssl.MemoryBIO) -> None:
    pending = outgoing.read()
    if pending:
        writer.write(pending)
        await writer.drain()


async def _read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes], bytes | None] | None:
    """Read until a whole ClientHello is buffered; the raw bytes, the ALPN protocols offered and the SNI.

    ``None`` when the peer closes early or sends something that is not a ClientHello.
    """
    data = b""
    while len(data) <= _MAX_CLIENT_HELLO:
        chunk = await reader.read(_READ_SIZE)
        if not chunk:
            return None
        data += chunk
        try:
            body = _client_hello_body(data)
            if body is not None:
                return data, _alpn_from_body(body), _sni_from_body(body)
        except _BadHello as exc:
            log.debug("not a TLS ClientHello: %s", exc)
            return None
    return None


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise _BadHello("truncated ClientHello")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))


def _client_hello_alpn(data: bytes) -> list[bytes] | None:
    """The ALPN names a complete ClientHello in ``data`` offers (empty: no ALPN); ``None`` if incomplete."""
    body = _client_hello_body(data)
    return None if body is None else _alpn_from_body(body)


def _client_hello_body(data: bytes) -> bytes | None:
    """The body of a complete ClientHello in ``data``; ``None`` if incomplete.

    Handles a ClientHello split over several handshake records (RFC 8446 §5.1).
    """
    message = b""
    pos = 0
    while pos + 5 <= len(data):
        content_type, length = data[pos], int.from_bytes(data[pos + 3 : pos + 5], "big")
        if content_type != _HANDSHAKE or data[pos + 1] != 3 or not 0 < length <= _MAX_RECORD:
            raise _BadHello("not a TLS handshake record")
        if pos + 5 + length > len(data):
            return None
        message += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                raise _BadHello("the first handshake message is not a ClientHello")
            size = int.from_bytes(message[1:4], "big")
            if len(message) >= 4 + size:
                return message[4 : 4 + size]
    return None


def _extensions(body: bytes) -> dict[int, bytes]:
    """The ClientHello body's extensions by type (the first of each)."""
    cursor = _Cursor(body)
    cursor.take(2 + 32)  # legacy_version, random
    cursor.vector(1)  # legacy_session_id
    cursor.vector(2)  # cipher_suites
    cursor.vector(1)  # legacy_compression_methods
    found: dict[int, bytes] = {}
    if cursor.pos == len(body):
        return found  # no extensions at all
    extensions = _Cursor(cursor.vector(2))
    while extensions.pos < len(extensions.data):
        kind = extensions.number(2)
        found.setdefault(kind, extensions.vector(2))
    return found


def _alpn_from_body(body: bytes) -> list[bytes]:
    value = _extensions(body).get(_EXT_ALPN)
    if value is None:
        return []
    names = _Cursor(_Cursor(value).vector(2))
    protocols: list[bytes] = []
    while names.pos < len(names.data):
        protocols.append(names.vector(1))
    return protocols


def _sni_from_body(body: bytes) -> bytes | None:
    """The host_name of the server_name extension (RFC 6066 §3), ``None`` without one."""
    value = _extensions(body).get(_EXT_SERVER_NAME)
    if value is None:
        return None
    names = _Cursor(_Cursor(value).vector(2))
    while names.pos < len(names.data):
        kind = names.number(1)
        name = names.vector(2)
        if kind == 0:
            return name
    return None


def acceptable_sni(name: bytes | None) -> bool:
    """Whether the TLS library may see this SNI: absent, or a plain ASCII host name.

    Python's SNI callback decodes the name as IDNA and prints a traceback per connection for
    bytes it cannot decode; such names are refused before the handshake reaches it.
    """
    if name is None:
        return True
    return 0 < len(name) <= 253 and all(0x21 <= byte < 0x7F for byte in name)
