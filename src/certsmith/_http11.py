"""HTTP/1.1 on asyncio streams with keep-alive connections: the ACME client's own HTTP.

An ACME client needs little of HTTP: HTTPS requests with small bodies, persistent
connections, and strict framing. Importing and setting up a general HTTP library (httpx
with the standard-library modules it loads) costs about a fifth of a whole
``certsmith issue`` process, so the ACME client sends through :class:`HttpClient` here
and uses httpx only where it is needed: behind a proxy, or on a client the caller gives
(:mod:`certsmith._httpx_bridge`, which also puts :class:`Http11Pool` under httpx for the
DNS API providers).

Failures are :class:`HttpError` subclasses named as httpx names them (``ConnectError``,
``ReadTimeout``...), with the socket or TLS error as their cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, NamedTuple, TypedDict, overload
from urllib.parse import urlsplit

#: The largest response head (status line and headers) accepted; ACME answers have a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Bytes read from the socket at a time for a body.
READ_SIZE = 64 * 1024
_DEFAULT_PORTS = {"https": 443, "http": 80}
#: Methods sent once more on a new connection when a kept one ends without an answer (RFC 9110 §9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})

Origin = tuple[str, str, int]
_Head = tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]  # status, reason, version, headers


class HttpError(Exception):
    """A request that got no complete, well-formed answer."""


class HttpTimeout(HttpError):
    """A phase of the exchange took longer than its time-out."""


class ConnectTimeout(HttpTimeout):
    pass


class ReadTimeout(HttpTimeout):
    pass


class WriteTimeout(HttpTimeout):
    pass


class PoolTimeout(HttpTimeout):
    pass


class ConnectError(HttpError):
    pass


class ReadError(HttpError):
    pass


class WriteError(HttpError):
    pass


class ProxyError(HttpError):
    """The proxy refused or failed the tunnel (raised by the httpx path only)."""


class RemoteProtocolError(HttpError):
    """The server's answer breaks HTTP/1.1 (framing, status line, headers) or stops in the middle."""


class LocalProtocolError(HttpError):
    """The request cannot be sent as given (a header that would split it)."""


class UnsupportedProtocol(HttpError):
    """The URL's scheme is neither http nor https."""


class BodyTooLarge(HttpError):
    """The answer's body is larger than the caller accepts; ``declared`` when its Content-Length said so."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.limit = limit
        self.declared = declared


class PoolOptions(TypedDict, total=False):
    """:class:`Http11Pool`'s options, for the classes that make one."""

    max_requests: int
    max_idle_per_origin: int
    keepalive_expiry: float


class Timeouts(NamedTuple):
    """Seconds allowed for each phase; ``None`` waits for ever. Reads and writes are timed one at a time."""

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None

    @classmethod
    def all(cls, seconds: float | None) -> Timeouts:
        return cls(seconds, seconds, seconds, seconds)


def proxy_configured() -> bool:
    """Whether a proxy variable (``HTTPS_PROXY``, ``ALL_PROXY``...; any case) is set: then httpx, which
    implements proxies, carries the requests instead of this module."""
    return any(value and name.lower() in _PROXY_VARIABLES for name, value in os.environ.items())


class _NothingReceived(Exception):
    """The connection ended before the first byte of a response: on a reused one, an idempotent request is resent."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection:
    """One open connection to one origin, with the bytes received and not yet used."""

    __slots__ = ("buffer", "idle_since", "origin", "reader", "writer")

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """Whether an idle connection can carry another request (not closed by the server, not too old)."""
        return (
            now - self.idle_since < expiry
            and not self.buffer
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    async def quiet(self) -> bool:
        """Whether nothing has come on this idle connection since its last response, checked in one turn of
        the event loop: a server that times an idle connection out may answer "408 Request Timeout" before
        it closes, and that answer belongs to no request of ours."""
        try:
            async with asyncio.timeout(0):
                await self.reader.read(1)  # returns at once only with a byte already received, or at the end
        except TimeoutError:
            return True
        except OSError:
            return False  # reset while idle (usable() sees that first, as the transport is closing then)
        return False

    async def receive(self, timeout: float | None) -> bool:
        """Add what the socket has to the buffer, waiting at most ``timeout`` for it; false at its end."""
        async with asyncio.timeout(timeout):
            data = await self.reader.read(READ_SIZE)
        self.buffer += data
        return bool(data)

    async def read(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes (fewer when fewer have come); empty at the end of the connection."""
        if not self.buffer and not await self.receive(timeout):
            return b""
        piece = bytes(self.buffer[:size])
        del self.buffer[:size]
        return piece

    async def read_until(self, end: bytes, limit: int, timeout: float | None) -> bytes | None:
        """The bytes up to and including ``end``; ``None`` when the connection ends first.

        Each read waits at most ``timeout`` (as httpx's read time-out: a slow answer that keeps
        coming is not cut; the ACME client bounds the whole exchange).
        """
        searched = 0
        while (found := self.buffer.find(end, searched, limit + len(end))) < 0:
            if len(self.buffer) >= limit + len(end):
                raise RemoteProtocolError(f"a response line or head is longer than {limit} bytes")
            searched = max(0, len(self.buffer) - len(end) + 1)
            if not await self.receive(timeout):
                return None
        line = bytes(self.buffer[: found + len(end)])
        del self.buffer[: found + len(end)]
        return line

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def _mapped(timeout_error: type[HttpTimeout], error: type[HttpError], what: str) -> Iterator[None]:
    """Raise socket and TLS failures as the error for this phase, keeping the cause."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(f"timed out {what}") from exc
    except OSError as exc:
        raise error(str(exc) or type(exc).__name__) from exc


class Response:
    """A response whose body is read from its connection as it is consumed.

    Iterate over it for the body (de-framed, still content-encoded) and close it, read to
    its end or not: that frees its connection, for reuse when the body was read whole.
    """

    def __init__(
        self, pool: Http11Pool, connection: _Connection, head: _Head, framing: str | int, keep_alive: bool,
        read_timeout: float | None,
    ) -> None:
        self.status, self.reason, self.version, self.headers = head
        self._pool = pool
        self._connection = connection
        self._framing = framing
        self._keep_alive = keep_alive
        self._read_timeout = read_timeout
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        timeout = self._read_timeout
        with _mapped(ReadTimeout, ReadError, "waiting for the answer"):
            if self._framing == "chunked":
                async for piece in _chunked(connection, timeout):
                    yield piece
            elif self._framing == "close":
                while piece := await connection.read(READ_SIZE, timeout):
                    yield piece
            else:
                assert isinstance(self._framing, int)
                remaining = self._framing
                while remaining:
                    piece = await connection.read(min(remaining, READ_SIZE), timeout)
                    if not piece:
                        raise RemoteProtocolError(
                            f"the server closed the connection {remaining} bytes before the end of the body"
                        )
                    remaining -= len(piece)
                    yield piece
        self._complete = True

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool._finished(self._connection, self._complete and self._keep_alive)


class Http11Pool:
    """HTTP/1.1 over TCP or TLS (``ssl_context``), reusing idle connections per origin.

    ``max_requests`` requests are in flight at once (more wait, up to the pool time-out);
    an idle connection is kept ``keepalive_expiry`` seconds. An idempotent request sent on a
    reused connection that the server had already closed is sent once more on a new one; a
    POST is not (the server may have acted on it): its caller gets the error.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_requests: int = 100,
        max_idle_per_origin: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_requests)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._expiry = keepalive_expiry
        self._closed = False

    async def open(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, timeouts: Timeouts
    ) -> Response:
        """Send a request and return its response once the head has come; ``Host`` is added when absent."""
        origin, target = _origin_and_target(url)
        if not any(name.lower() == b"host" for name, _ in headers):
            host = origin[1] if ":" not in origin[1] else f"[{origin[1]}]"
            default = _DEFAULT_PORTS[origin[0]] == origin[2]
            headers = [(b"Host", (host if default else f"{host}:{origin[2]}").encode("ascii")), *headers]
        message = _serialize(method, target, headers, body)
        try:
            async with asyncio.timeout(timeouts.pool):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise PoolTimeout("timed out waiting for a free connection") from exc
        try:
            return await self._exchange(method, origin, message, headers, timeouts)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self, method: str, origin: Origin, message: bytes, headers: list[tuple[bytes, bytes]], timeouts: Timeouts
    ) -> Response:
        connection = await self._take_idle(origin)
        try:
            head = await self._send(connection, message, timeouts, method) if connection else None
        except _NothingReceived as nothing:
            if method not in _IDEMPOTENT:
                raise nothing.error from nothing.__cause__  # the server may have acted: the caller decides
            head = None  # the server had closed the idle connection: once more on a new one
        if head is None:
            connection = await self._connect(origin, timeouts.connect)
            try:
                head = await self._send(connection, message, timeouts, method)
            except _NothingReceived as nothing:
                raise nothing.error from nothing.__cause__
        assert connection is not None
        status, _, version, response_headers = head
        try:
            framing = _framing(method, status, response_headers)
        except RemoteProtocolError:
            connection.close()
            raise
        keep_alive = version == b"HTTP/1.1" and framing != "close" and not _says_close(headers, response_headers)
        return Response(self, connection, head, framing, keep_alive, timeouts.read)

    @staticmethod
    async def _send(connection: _Connection, message: bytes, timeouts: Timeouts, method: str) -> _Head:
        """Write the request and read the response head; the connection is closed when either fails."""
        try:
            try:
                with _mapped(WriteTimeout, WriteError, "sending the request"):
                    connection.writer.write(message)
                    async with asyncio.timeout(timeouts.write):
                        await connection.writer.drain()
            except WriteError as exc:
                raise _NothingReceived(exc) from exc.__cause__
            return await _read_head(connection, timeouts.read, method)
        except BaseException:
            connection.close()
            raise

    async def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            usable = False
            try:
                usable = connection.usable(now, self._expiry) and await connection.quiet()
            finally:
                if not usable:
                    connection.close()
            if usable:
                return connection
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context = (self._ssl_context or ssl.create_default_context()) if scheme == "https" else None
        with _mapped(ConnectTimeout, ConnectError, f"connecting to {host}:{port}"):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None
                )
        return _Connection(origin, reader, writer)

    def _finished(self, connection: _Connection, reusable: bool) -> None:
        """A response's body was read to its end (``reusable``) or abandoned: free its slot."""
        self._slots.release()
        if not reusable or self._closed:  # a response read to its end after aclose: nobody will reuse it
            connection.close()
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class Headers:
    """A response's headers, looked up without regard to case."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get_list(self, name: str) -> list[str]:
        """Every value of the header ``name``, in order."""
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self.raw if key.lower() == wanted]

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        """The header's values joined by ``", "`` (RFC 9110 §5.3), or ``default`` when it is absent."""
        values = self.get_list(name)
        return ", ".join(values) if values else default


class Reply:
    """A whole response: status, headers as received, and the body decoded from its content coding."""

    def __init__(
        self, method: str, url: str, status: int, reason: str, headers: Headers, content: bytes
    ) -> None:
        self.method = method
        self.url = url
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` (a ``json.JSONDecodeError``) when it is not."""
        return json.loads(self.content)


class HttpClient:
    """Whole requests and answers on an :class:`Http11Pool`, with default headers and time-outs.

    It does not ask for compressed answers; a server that sends gzip or deflate anyway is
    decoded, within the size the caller accepts.
    """

    def __init__(
        self, ssl_context: ssl.SSLContext | None, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self._pool = Http11Pool(ssl_context)
        self._timeouts = Timeouts.all(timeout)
        self._headers = [(b"Accept", b"*/*"), *_encoded(headers or {})]

    async def request(
        self, method: str, url: str, *, content: bytes | None = None, headers: Mapping[str, str] | None = None,
        limit: int,
    ) -> Reply:
        """Send a request and read its whole answer; :class:`BodyTooLarge` past ``limit`` bytes."""
        own = _encoded(headers or {})
        names = {name.lower() for name, _ in own}
        sent = [*(pair for pair in self._headers if pair[0].lower() not in names), *own]
        body = content or b""
        if body or method in ("POST", "PUT", "PATCH"):
            sent.append((b"Content-Length", str(len(body)).encode("ascii")))
        response = await self._pool.open(method, url, sent, body, self._timeouts)
        try:
            declared = _values(response.headers, b"content-length")
            if declared and declared[0].strip().isdigit() and int(declared[0]) > limit:
                raise BodyTooLarge(limit, int(declared[0]))
            decoder = _decoder(response.headers)
            received = bytearray()
            async for piece in response:
                received += decoder.decompress(piece, limit + 1 - len(received)) if decoder else piece
                if len(received) > limit or (decoder is not None and decoder.unconsumed_tail):
                    raise BodyTooLarge(limit)
            if decoder is not None:
                received += decoder.flush()
                if len(received) > limit:
                    raise BodyTooLarge(limit)
        except zlib.error as exc:
            raise RemoteProtocolError(f"the answer's compressed body is damaged ({exc})") from exc
        finally:
            await response.aclose()
        return Reply(method, url, response.status, response.reason.decode("latin-1"), Headers(response.headers),
                     bytes(received))

    async def aclose(self) -> None:
        await self._pool.aclose()


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("ascii"), value.encode("latin-1")) for name, value in headers.items()]


def _decoder(headers: list[tuple[bytes, bytes]]) -> Any:
    """A zlib decompressor for a gzip or deflate body, ``None`` for identity (other codings pass as they are)."""
    coding = b",".join(_values(headers, b"content-encoding")).strip().lower()
    if coding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == b"deflate":
        return zlib.decompressobj()
    return None


async def _read_line(connection: _Connection, timeout: float | None) -> bytes:
    line = await connection.read_until(b"\r\n", 4096, timeout)
    if line is None:
        raise RemoteProtocolError("the server closed the connection inside a chunked body")
    return line[:-2]


async def _chunked(connection: _Connection, timeout: float | None) -> AsyncIterator[bytes]:
    """The data of a chunked body (RFC 9112 §7.1); extensions and trailers are read and dropped."""
    while True:
        size_text = (await _read_line(connection, timeout)).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = -1
        if size < 0 or not size_text or len(size_text) > 16:
            raise RemoteProtocolError(f"a chunk size is not hexadecimal: {size_text[:40]!r}")
        if size == 0:
            while await _read_line(connection, timeout):
                pass
            return
        while size:
            piece = await connection.read(min(size, READ_SIZE), timeout)
            if not piece:
                raise RemoteProtocolError("the server closed the connection inside a chunk")
            size -= len(piece)
            yield piece
        if await _read_line(connection, timeout):
            raise RemoteProtocolError("a chunk is longer than its size says")


async def _read_head(connection: _Connection, timeout: float | None, method: str) -> _Head:
    """The status, reason, version and headers of the final response; interim (1xx) ones are skipped."""
    first = True
    while True:
        try:
            with _mapped(ReadTimeout, ReadError, "waiting for the answer"):
                head = await connection.read_until(b"\r\n\r\n", MAX_HEAD_BYTES, timeout)
        except ReadError as exc:
            if first and not connection.buffer and isinstance(exc.__cause__, ConnectionResetError):
                raise _NothingReceived(exc) from exc.__cause__
            raise
        if head is None:
            if first and not connection.buffer:
                raise _NothingReceived(
                    RemoteProtocolError("the server closed the connection without sending a response")
                )
            raise RemoteProtocolError("the server closed the connection inside the response head")
        first = False
        status, reason, version, headers = _parse_head(head)
        if not 100 <= status < 200 or status == 101:
            return status, reason, version, headers


def _parse_head(head: bytes) -> _Head:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:60]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise RemoteProtocolError(f"a malformed response header line: {line[:60]!r}")
        headers.append((name, value.strip(b" \t")))
    return int(code), reason, version, headers


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> str | int:
    """How the body ends (RFC 9112 §6.3): a length, ``"chunked"``, or ``"close"`` of the connection."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    codings = b",".join(_values(headers, b"transfer-encoding"))
    if codings:
        return "chunked" if codings.rsplit(b",", 1)[-1].strip().lower() == b"chunked" else "close"
    lengths = {value.strip() for field in _values(headers, b"content-length") for value in field.split(b",")}
    if not lengths:
        return "close"
    length = lengths.pop()
    if lengths or not length.isdigit() or len(length) > 18:
        raise RemoteProtocolError("the response's Content-Length is invalid or given twice differently")
    return int(length)


def _says_close(*header_lists: list[tuple[bytes, bytes]]) -> bool:
    return any(
        b"close" in (token.strip().lower() for token in value.split(b","))
        for headers in header_lists
        for value in _values(headers, b"connection")
    )


def _origin_and_target(url: str) -> tuple[Origin, bytes]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsupportedProtocol(f"cannot send to a {scheme!r} URL")
    host = parts.hostname
    if not host:
        raise UnsupportedProtocol(f"the URL {url[:100]!r} names no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
        host.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        raise UnsupportedProtocol(f"the URL {url[:100]!r} has an invalid host or port") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        return (scheme, host, port), target.encode("ascii")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"the URL {url[:100]!r} is not ASCII (percent-encode it)") from None


def _serialize(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request as it goes on the wire; a header that would break the framing is refused."""
    lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    chunked = False
    for name, value in headers:
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value or b":" in name:
            raise LocalProtocolError(f"an invalid request header: {name[:40]!r}")
        chunked = chunked or (name.lower() == b"transfer-encoding" and value.lower() == b"chunked")
        lines.append(name + b": " + value)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if chunked:
        return head + (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return head + body
