"""The HTTP/1.1 transport against a scripted server on 127.0.0.1: framing, reuse, failures.

Each test's server answers raw bytes, so the responses a real CA (or a broken one)
could send are exact; the client is a real ``httpx.AsyncClient`` on the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certsmith._http11 import (
    MAX_HEAD_BYTES,
    BodyTooLarge,
    ConnectError,
    HttpClient,
    ReadTimeout,
    RemoteProtocolError,
    UnsupportedProtocol,
)
from certsmith._httpx_bridge import Http11Transport
from certsmith.acme.client import AcmeClient, RetryPolicy
from certsmith.acme.errors import TransportError
from certsmith.crypto import generate_key
from certsmith.testing.pebble import PebbleServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Runs ``handler(reader, writer, connection_number)`` for each connection; counts connections."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.context = context
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.context else 'http'}://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length framed, as the transport sends them)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answers(*responses: bytes, close_after: bool = False) -> Handler:
    """Answer each request on a connection with the next response (the last one repeats)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        index = 0
        while True:
            await read_request(reader)
            writer.write(responses[min(index, len(responses) - 1)])
            await writer.drain()
            index += 1
            if close_after:
                return

    return handler


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def client(**options: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http11Transport(), timeout=options.get("timeout", 5.0))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_a_connection_is_reused_for_the_next_requests() -> None:
    async def test() -> None:
        async with Server(answers(OK)) as server, client() as http:
            for _ in range(5):
                response = await http.post(server.url + "/x?y=1", content=b"{}")
                assert (response.status_code, response.content) == (200, b"hello")
            assert server.connections == 1
            assert response.http_version == "HTTP/1.1" and response.reason_phrase == "OK"

    run(test)


def test_concurrent_requests_open_connections_and_then_reuse_them() -> None:
    async def test() -> None:
        async with Server(answers(OK)) as server, client() as http:
            results = await asyncio.gather(*(http.get(server.url) for _ in range(8)))
            assert all(r.content == b"hello" for r in results)
            opened = server.connections
            assert 1 <= opened <= 8
            await asyncio.gather(*(http.get(server.url) for _ in range(opened)))
            assert server.connections == opened

    run(test)


def test_chunked_gzip_and_close_delimited_bodies_are_read_whole() -> None:
    packed = gzip.compress(b'{"status": "valid"}')
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
               + f"{len(packed[:7]):x};ext=1\r\n".encode() + packed[:7] + b"\r\n"
               + f"{len(packed[7:]):X}\r\n".encode() + packed[7:] + b"\r\n0\r\nTrailer: x\r\n\r\n")
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"

    async def test() -> None:
        async with Server(answers(chunked, OK)) as server, client() as http:
            assert (await http.get(server.url)).json() == {"status": "valid"}
            assert (await http.get(server.url)).content == b"hello"
            assert server.connections == 1  # the chunked body ended cleanly: the connection went on
        async with Server(answers(until_close, close_after=True)) as server, client() as http:
            assert (await http.get(server.url)).content == b"all of it"
            assert (await http.get(server.url)).content == b"all of it"
            assert server.connections == 2

    run(test)


def test_head_204_and_interim_responses_have_no_body() -> None:
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nReplay-Nonce: abc\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"

    async def test() -> None:
        async with Server(answers(head_answer, interim, no_content)) as server, client() as http:
            response = await http.head(server.url)
            assert response.headers["replay-nonce"] == "abc" and response.content == b""
            assert (await http.get(server.url)).content == b"hello"
            assert (await http.get(server.url)).status_code == 204
            assert server.connections == 1

    run(test)


def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    """Closed visibly before the next request, or silently dropped on it: both get a new connection."""

    async def closes_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        if number == 2:
            await read_request(reader)  # reads the next request and drops it unanswered

    async def test() -> None:
        async with Server(closes_after_one) as server, client() as http:
            assert (await http.get(server.url)).content == b"hello"
            await asyncio.sleep(0.05)  # the close reaches the idle connection
            assert (await http.get(server.url)).content == b"hello"
            assert (await http.get(server.url)).content == b"hello"  # sent on #2, dropped, sent again on #3
            assert server.connections == 3

    run(test)


def test_a_post_on_a_kept_connection_that_ends_unanswered_is_not_sent_again() -> None:
    """The server may have acted on it (an upload, a record): the caller decides, not the transport."""
    received: list[int] = []

    async def drops_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        received.append(number)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        received.append(number)  # acted on, then the connection ends without an answer

    async def test() -> None:
        async with Server(drops_the_second) as server, client() as http:
            assert (await http.post(server.url, content=b"1")).content == b"hello"
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await http.post(server.url, content=b"2")
            assert received == [1, 1] and server.connections == 1

    run(test)


@pytest.mark.parametrize("closes", [True, False])
def test_an_idle_connection_the_server_spoke_on_is_not_reused(closes: bool) -> None:
    """A server that times an idle connection out may say so ("408 Request Timeout") before closing it:
    that answer belongs to no request, and the next request must not take it for its own."""

    async def times_out_when_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        if number == 1:
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            if not closes:
                await asyncio.sleep(1)  # the close comes later: only the 408 has reached the client
            return
        await read_request(reader)

    async def test() -> None:
        async with Server(times_out_when_idle) as server, client() as http:
            assert (await http.get(server.url)).content == b"hello"
            await asyncio.sleep(0.2)  # the 408 (and the close) reach the idle connection
            response = await http.get(server.url)
            assert (response.status_code, response.content) == (200, b"hello")
            assert server.connections == 2

    run(test)


def test_a_response_finished_after_the_transport_closed_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def slow_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(0.2)
        writer.write(OK)
        await writer.drain()
        try:
            await read_request(reader)
        finally:
            closed.set()

    async def test() -> None:
        transport = Http11Transport()
        async with Server(slow_then_wait) as server:
            http = httpx.AsyncClient(transport=transport)
            pending = asyncio.create_task(http.get(server.url))
            await asyncio.sleep(0.05)
            await transport.aclose()
            assert (await pending).content == b"hello"
            await asyncio.wait_for(closed.wait(), 2)  # not left idle in a closed pool

    run(test)


def test_a_new_connection_closed_without_an_answer_is_an_error_not_a_retry() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)

    async def test() -> None:
        async with Server(hang_up) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="closed the connection without sending a response"):
                await http.post(server.url, content=b"{}")
            assert server.connections == 1

    run(test)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Content-Length is invalid"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "Content-Length is invalid"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "5 bytes before the end|45 bytes before"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size is not hexadecimal"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n", "longer than its size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "inside a chunk"),
        (b"HTTP/1.1 200 OK\r\nX: y", "inside the response head"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * MAX_HEAD_BYTES + b"\r\n\r\n", "longer than"),
    ],
)
def test_a_broken_answer_is_a_protocol_error(response: bytes, message: str) -> None:
    async def test() -> None:
        async with Server(answers(response, close_after=True)) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match=message):
                await http.get(server.url)

    run(test)


@pytest.mark.parametrize(
    "lengths",
    [b"Content-Length: 5, 5", b"Content-Length: 5, 5 , 5", b"Content-Length: 5\r\nContent-Length: 5 ,5"],
)
def test_a_content_length_repeated_with_the_same_value_is_that_length(lengths: bytes) -> None:
    """RFC 9110 section 8.6: "5, 5" is a list of one length; the white space after a comma is not part of it.
    (Once, which of " 5" and "5" was compared depended on the hash seed: "5, 5" failed in half the runs.)"""
    response = b"HTTP/1.1 200 OK\r\n" + lengths + b"\r\n\r\nhello"

    async def test() -> None:
        async with Server(answers(response, OK)) as server, client() as http:
            assert (await http.get(server.url)).content == b"hello"
            assert (await http.get(server.url)).content == b"hello"
            assert server.connections == 1

    run(test)


def test_a_broken_answer_never_returns_its_connection_for_reuse() -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"

    async def first_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await answers(short if number == 1 else OK)(reader, writer, number)

    async def test() -> None:
        async with Server(first_short) as server, client(timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url)  # the server keeps the connection open and sends no more
            assert (await http.get(server.url)).content == b"hello"
            assert server.connections == 2

    run(test)


def test_a_request_cancelled_inside_its_body_frees_its_slot_and_drops_its_connection() -> None:
    """The ACME client bounds each exchange with wait_for: a cancelled half-read answer must neither keep
    the only slot (the next request would wait for the pool) nor leave its rest for the next request."""

    async def half_then_whole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        if number == 1:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            await writer.drain()
            await asyncio.sleep(0.5)
            writer.write(b"HELLO")  # the rest, after the client gave up
            await read_request(reader)
            writer.write(OK)
            return
        await answers(OK)(reader, writer, number)

    async def test() -> None:
        async with Server(half_then_whole) as server, httpx.AsyncClient(
            transport=Http11Transport(max_requests=1), timeout=httpx.Timeout(5.0, pool=0.3)
        ) as http:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(http.get(server.url), 0.2)
            assert (await http.get(server.url)).content == b"hello"
            assert server.connections == 2

    run(test)


def test_time_outs_are_httpx_time_outs() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def test() -> None:
        async with Server(silent) as server, client(timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout, match="timed out waiting for the answer"):
                await http.get(server.url)

    run(test)


def test_a_slow_answer_that_keeps_coming_is_not_cut_by_the_read_time_out() -> None:
    """The read time-out is per read, as in httpx; the ACME client bounds the whole exchange itself."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        for byte in OK:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.01)

    async def test() -> None:
        async with Server(trickle) as server, client(timeout=0.2) as http:
            assert (await http.get(server.url)).content == b"hello"

    run(test)


def test_connection_refused_is_a_connect_error_with_its_cause() -> None:
    async def test() -> None:
        async with Server(answers(OK)) as server:
            url = server.url
        async with client() as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(url)
            assert isinstance(caught.value.__cause__, ConnectionRefusedError)

    run(test)


def test_a_pool_full_of_slow_requests_times_out_waiting() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(1)
        writer.write(OK)

    async def test() -> None:
        async with Server(slow) as server, httpx.AsyncClient(
            transport=Http11Transport(max_requests=1), timeout=httpx.Timeout(5.0, pool=0.2)
        ) as http:
            first = asyncio.create_task(http.get(server.url))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(server.url)
            assert (await first).content == b"hello"

    run(test)


def test_a_header_that_would_split_the_request_is_refused() -> None:
    async def test() -> None:
        async with Server(answers(OK)) as server, client() as http:
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(server.url, headers={"X-Evil": "a\r\nInjected: yes"})
            assert server.connections == 0

    run(test)


def test_a_chunked_request_body_is_sent_chunked() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readuntil(b"0\r\n\r\n")
        seen.append(head + body)
        writer.write(OK)
        await writer.drain()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async def test() -> None:
        async with Server(record) as server, client() as http:
            assert (await http.post(server.url, content=pieces())).content == b"hello"
        assert b"transfer-encoding: chunked" in seen[0].lower()
        assert seen[0].endswith(b"\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n")

    run(test)


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, cert_path


def test_tls_is_verified_against_the_given_roots(tmp_path: Path) -> None:
    server_context, cert_path = _tls_pair(tmp_path)

    async def test() -> None:
        async with Server(answers(OK), server_context) as server:
            trusting = httpx.AsyncClient(transport=Http11Transport(ssl.create_default_context(cafile=cert_path)))
            async with trusting:
                assert (await trusting.get(server.url)).content == b"hello"
            strangers = httpx.AsyncClient(transport=Http11Transport(ssl.create_default_context()))
            async with strangers:
                with pytest.raises(httpx.ConnectError) as caught:
                    await strangers.get(server.url)
                assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)

    run(test)


def _whole(**options: float) -> HttpClient:
    return HttpClient(None, timeout=options.get("timeout", 5.0))


def test_a_whole_answer_is_decoded_and_its_headers_read_without_regard_to_case() -> None:
    packed = gzip.compress(b"hello" * 100)
    response = (b"HTTP/1.1 201 Created\r\nLink: <a>;rel=up\r\nlink: <b>;rel=alternate\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed))

    async def test() -> None:
        async with Server(answers(response)) as server:
            http = _whole()
            reply = await http.request("GET", server.url + "/x?y=1", limit=1000)
            await http.aclose()
        assert (reply.status_code, reply.reason_phrase, reply.content) == (201, "Created", b"hello" * 100)
        assert reply.headers.get_list("LINK") == ["<a>;rel=up", "<b>;rel=alternate"]
        assert reply.headers.get("link") == "<a>;rel=up, <b>;rel=alternate"
        assert reply.headers.get("retry-after") is None and reply.headers.get("retry-after", "") == ""

    run(test)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000,  # said so in its Content-Length
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"  # small, but not unpacked
        % (len(gzip.compress(b"x" * 100_000)), gzip.compress(b"x" * 100_000)),
    ],
    ids=["declared", "chunked", "gzip-bomb"],
)
def test_an_answer_larger_than_the_limit_is_refused(response: bytes) -> None:
    async def test() -> None:
        async with Server(answers(response)) as server:
            http = _whole()
            with pytest.raises(BodyTooLarge, match="larger than 1000 bytes"):
                await http.request("GET", server.url, limit=1000)
            await http.aclose()

    run(test)


def test_a_damaged_compressed_body_is_a_protocol_error() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"

    async def test() -> None:
        async with Server(answers(response)) as server:
            http = _whole()
            with pytest.raises(RemoteProtocolError, match="compressed body is damaged"):
                await http.request("GET", server.url, limit=1000)
            await http.aclose()

    run(test)


def test_the_pool_raises_its_own_errors_with_their_causes() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def test() -> None:
        async with Server(silent) as server:
            url = server.url
            http = _whole(timeout=0.2)
            with pytest.raises(ReadTimeout, match="timed out waiting for the answer"):
                await http.request("GET", url, limit=1000)
            await http.aclose()
        http = _whole()
        with pytest.raises(ConnectError) as caught:
            await http.request("GET", url, limit=1000)
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)
        for url in ("ftp://127.0.0.1/x", "https:///nohost"):
            with pytest.raises(UnsupportedProtocol):
                await http.request("GET", url, limit=1000)
        await http.aclose()

    run(test)


def test_the_acme_client_sends_through_its_own_pool_with_its_headers(tmp_path: Path) -> None:
    """Without a proxy the ACME client needs no httpx: its requests carry certsmith's User-Agent, the
    JOSE content type on POSTs, an exact Content-Length, and ask for no compressed answers."""
    server_context, cert_path = _tls_pair(tmp_path)
    heads: list[bytes] = []

    async def ca(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head + body)
            path = head.split(b" ", 2)[1]
            if path == b"/dir":
                document = b'{"newNonce": "%s/nonce", "newAccount": "%s/acct", "newOrder": "%s/order"}' % (
                    (base.encode(),) * 3)
            else:
                document = b'{"status": "valid", "contact": []}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nReplay-Nonce: n%d\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(heads), len(document),
                                                             b"" if head.startswith(b"HEAD") else document))
            await writer.drain()

    base = ""

    async def test() -> None:
        nonlocal base
        async with Server(ca, server_context) as server:
            base = server.url
            async with AcmeClient(f"{base}/dir", generate_key(), account_url=f"{base}/acct/1",
                                  ca_bundle=cert_path) as client:
                account = await client.fetch_account()
            assert account.status == "valid" and server.connections == 1

    run(test)
    get, head, post = heads
    assert get.startswith(b"GET /dir HTTP/1.1\r\n") and head.startswith(b"HEAD /nonce HTTP/1.1\r\n")
    assert post.startswith(b"POST /acct/1 HTTP/1.1\r\n")
    for request in heads:
        lines = request.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
        assert b"host: 127.0.0.1:%s" % base.rsplit(":", 1)[1].encode() in lines
        assert any(line.startswith(b"user-agent: certsmith/") for line in lines)
        assert b"accept-language: en" in lines and not any(b"accept-encoding" in line for line in lines)
    post_head, post_body = post.split(b"\r\n\r\n", 1)
    assert b"content-type: application/jose+json" in post_head.lower().split(b"\r\n")
    assert b"content-length: %d" % len(post_body) in post_head.lower().split(b"\r\n")
    assert json.loads(post_body)["protected"]


def test_the_acme_client_reaches_the_ca_through_an_https_proxy(
    pebble: PebbleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY is honoured (through httpx's proxy transport): a CONNECT tunnel, TLS end to end to the CA."""
    connects: list[bytes] = []

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        connects.append(target)
        host, port = target.rsplit(b":", 1)
        if method != b"CONNECT" or host != b"127.0.0.1":
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def test() -> None:
        proxy = await asyncio.start_server(tunnel, "127.0.0.1", 0)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        try:
            async with AcmeClient(pebble.directory_url, generate_key(), ca_bundle=pebble.ca_bundle) as client:
                await client.register(agree_tos=True)
                assert client.account_url
        finally:
            proxy.close()

    run(test)
    port = pebble.directory_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    assert connects and set(connects) == {f"127.0.0.1:{port}".encode()}


def test_a_refusing_proxy_is_named_without_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY may carry a user and password: the error names the proxy by host and port only."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def test() -> None:
        proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://fleet:s3cret-pass@127.0.0.1:{port}")
        try:
            async with AcmeClient("https://127.0.0.1:1/dir", generate_key(),
                                  retry=RetryPolicy(attempts=1)) as client:
                with pytest.raises(TransportError) as caught:
                    await client.directory()
        finally:
            proxy.close()
        assert f"the proxy 127.0.0.1:{port} failed" in str(caught.value)
        assert "s3cret" not in str(caught.value) and "fleet" not in str(caught.value)

    run(test)
