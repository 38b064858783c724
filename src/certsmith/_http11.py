"""An httpx transport speaking HTTP/1.1 on asyncio streams, with keep-alive connections.

httpx's default transport (httpcore on anyio, with h11) costs about a fifth of a whole
``certsmith issue`` process to import and set up, and 3 MiB. The ACME client only needs
HTTP/1.1 with persistent connections, so it (and the DNS API providers) send through this
transport; httpx still builds the requests and decodes the bodies, and with a proxy
configured the client is httpx's own (:func:`transport_for`). Failures are raised as
httpx's exception types, with the socket or TLS error as their cause, as httpx's own
transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Iterator

import httpx

#: The largest response head (status line and headers) accepted; ACME answers have a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Bytes read from the socket at a time for a body.
READ_SIZE = 64 * 1024
_DEFAULT_PORTS = {"https": 443, "http": 80}
#: Methods sent once more on a new connection when a kept one ends without an answer (RFC 9110 §9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

Origin = tuple[str, str, int]
_Head = tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]  # status, reason, version, headers


class _NothingReceived(Exception):
    """The connection ended before the first byte of a response: on a reused one, an idempotent request is resent."""

    def __init__(self, error: httpx.TransportError) -> None:
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
                raise httpx.RemoteProtocolError(f"a response line or head is longer than {limit} bytes")
            searched = max(0, len(self.buffer) - len(end) + 1)
            if not await self.receive(timeout):
                return None
        line = bytes(self.buffer[: found + len(end)])
        del self.buffer[: found + len(end)]
        return line

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def _mapped(
    timeout_error: type[httpx.TimeoutException], error: type[httpx.TransportError], what: str
) -> Iterator[None]:
    """Raise socket and TLS failures as the httpx exception for this phase, keeping the cause."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(f"timed out {what}") from exc
    except OSError as exc:
        raise error(str(exc) or type(exc).__name__) from exc


def transport_for(ssl_context: ssl.SSLContext | None) -> Http11Transport | None:
    """The transport for a new client: this one, or ``None`` (httpx's own) when a proxy is configured.

    httpx reads the proxy variables (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``...) only
    for a client without a transport of the caller's, and reaches proxies through its own.
    """
    from urllib.request import getproxies  # imported by httpx already

    return None if {"http", "https", "all"} & set(getproxies()) else Http11Transport(ssl_context)


class Http11Transport(httpx.AsyncBaseTransport):
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

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        message = _serialize(request, await request.aread())
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("timed out waiting for a free connection", request=request) from exc
        try:
            return await self._exchange(request, origin, message, timeouts)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self, request: httpx.Request, origin: Origin, message: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        read_timeout = timeouts.get("read")
        connection = await self._take_idle(origin)
        try:
            head = await self._send(connection, message, timeouts, request.method) if connection else None
        except _NothingReceived as nothing:
            if request.method not in _IDEMPOTENT:
                raise nothing.error from nothing.__cause__  # the server may have acted: the caller decides
            head = None  # the server had closed the idle connection: once more on a new one
        if head is None:
            connection = await self._connect(origin, timeouts.get("connect"))
            try:
                head = await self._send(connection, message, timeouts, request.method)
            except _NothingReceived as nothing:
                raise nothing.error from nothing.__cause__
        assert connection is not None
        status, reason, version, headers = head
        try:
            framing = _framing(request.method, status, headers)
        except httpx.RemoteProtocolError:
            connection.close()
            raise
        keep_alive = version == b"HTTP/1.1" and framing != "close" and not _says_close(request.headers.raw, headers)
        body = _Body(self, connection, framing, keep_alive, read_timeout)
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    @staticmethod
    async def _send(
        connection: _Connection, message: bytes, timeouts: dict[str, float | None], method: str
    ) -> _Head:
        """Write the request and read the response head; the connection is closed when either fails."""
        try:
            try:
                with _mapped(httpx.WriteTimeout, httpx.WriteError, "sending the request"):
                    connection.writer.write(message)
                    async with asyncio.timeout(timeouts.get("write")):
                        await connection.writer.drain()
            except httpx.WriteError as exc:
                raise _NothingReceived(exc) from exc.__cause__
            return await _read_head(connection, timeouts.get("read"), method)
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
        with _mapped(httpx.ConnectTimeout, httpx.ConnectError, f"connecting to {host}:{port}"):
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


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection as it is consumed; the connection is freed at its end."""

    def __init__(
        self, transport: Http11Transport, connection: _Connection, framing: str | int, keep_alive: bool,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._framing = framing
        self._keep_alive = keep_alive
        self._read_timeout = read_timeout
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        timeout = self._read_timeout
        with _mapped(httpx.ReadTimeout, httpx.ReadError, "waiting for the answer"):
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
                        raise httpx.RemoteProtocolError(
                            f"the server closed the connection {remaining} bytes before the end of the body"
                        )
                    remaining -= len(piece)
                    yield piece
        self._complete = True

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport._finished(self._connection, self._complete and self._keep_alive)


async def _read_line(connection: _Connection, timeout: float | None) -> bytes:
    line = await connection.read_until(b"\r\n", 4096, timeout)
    if line is None:
        raise httpx.RemoteProtocolError("the server closed the connection inside a chunked body")
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
            raise httpx.RemoteProtocolError(f"a chunk size is not hexadecimal: {size_text[:40]!r}")
        if size == 0:
            while await _read_line(connection, timeout):
                pass
            return
        while size:
            piece = await connection.read(min(size, READ_SIZE), timeout)
            if not piece:
                raise httpx.RemoteProtocolError("the server closed the connection inside a chunk")
            size -= len(piece)
            yield piece
        if await _read_line(connection, timeout):
            raise httpx.RemoteProtocolError("a chunk is longer than its size says")


async def _read_head(connection: _Connection, timeout: float | None, method: str) -> _Head:
    """The status, reason, version and headers of the final response; interim (1xx) ones are skipped."""
    first = True
    while True:
        try:
            with _mapped(httpx.ReadTimeout, httpx.ReadError, "waiting for the answer"):
                head = await connection.read_until(b"\r\n\r\n", MAX_HEAD_BYTES, timeout)
        except httpx.ReadError as exc:
            if first and not connection.buffer and isinstance(exc.__cause__, ConnectionResetError):
                raise _NothingReceived(exc) from exc.__cause__
            raise
        if head is None:
            if first and not connection.buffer:
                raise _NothingReceived(
                    httpx.RemoteProtocolError("the server closed the connection without sending a response")
                )
            raise httpx.RemoteProtocolError("the server closed the connection inside the response head")
        first = False
        status, reason, version, headers = _parse_head(head)
        if not 100 <= status < 200 or status == 101:
            return status, reason, version, headers


def _parse_head(head: bytes) -> _Head:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:60]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError(f"a malformed response header line: {line[:60]!r}")
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
        raise httpx.RemoteProtocolError("the response's Content-Length is invalid or given twice differently")
    return int(length)


def _says_close(*header_lists: list[tuple[bytes, bytes]]) -> bool:
    return any(
        b"close" in (token.strip().lower() for token in value.split(b","))
        for headers in header_lists
        for value in _values(headers, b"connection")
    )


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"cannot send to a {scheme!r} URL")
    return scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme]


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request as it goes on the wire; a header that would break the framing is refused."""
    lines = [request.method.encode("ascii") + b" " + request.url.raw_path + b" HTTP/1.1"]
    chunked = False
    for name, value in request.headers.raw:
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value or b":" in name:
            raise httpx.LocalProtocolError(f"an invalid request header: {name[:40]!r}")
        chunked = chunked or (name.lower() == b"transfer-encoding" and value.lower() == b"chunked")
        lines.append(name + b": " + value)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if chunked:
        return head + (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return head + body
