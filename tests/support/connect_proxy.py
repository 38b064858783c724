"""An intercepting HTTPS proxy: sends a real service's hostname to a loopback emulator.

Some clients cannot be pointed at another API address: lexicon's Cloudflare provider,
for one, always calls ``https://api.cloudflare.com/client/v4``. Such a client still
honours the standard proxy variables, so :class:`InterceptingProxy` is an HTTP proxy
(``HTTPS_PROXY``) that answers ``CONNECT host:443`` for the hosts in ``routes``, completes
the TLS handshake itself with a certificate for that host from its own throwaway CA
(trusted by the client through ``REQUESTS_CA_BUNDLE``), and forwards the decrypted bytes
to the route's plain-HTTP emulator on 127.0.0.1. Any other host -- or a request that is
not ``CONNECT`` -- gets ``403`` and nothing leaves the machine. The client's code runs
unchanged, its real hostname and its certificate verification included.

``connects`` lists every ``CONNECT`` target asked for, so a test can show the client went
through the proxy. ``env()`` gives the variables for the client's process; ``NO_PROXY``
keeps loopback traffic (Pebble, the emulators themselves) direct.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path

from certsmith.testing.pebble import LOOPBACK, write_test_ca

_FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class InterceptingProxy:
    """``routes`` maps ``"host:port"`` (as in ``CONNECT``) to a plain-HTTP ``(address, port)``."""

    def __init__(self, routes: Mapping[str, tuple[str, int]], workdir: Path) -> None:
        self.routes = dict(routes)
        hostnames = tuple(sorted({target.rsplit(":", 1)[0] for target in self.routes}))
        self.ca_path, cert, key = write_test_ca(workdir, hostnames=hostnames)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self.connects: list[str] = []
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="connect-proxy", daemon=True)
        self.port = 0

    def start(self) -> InterceptingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            # tunnels still open end here, while the loop runs (not as coroutines left to a closed loop)
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            if handlers:
                await asyncio.wait(handlers, timeout=2)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> InterceptingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def env(self) -> dict[str, str]:
        """Proxy and trust variables for a client process (requests and httpx both read them)."""
        return {
            "HTTPS_PROXY": self.url,
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            self.connects.append(target)
            route = self.routes.get(target) if method == "CONNECT" else None
            if route is None:
                writer.write(_FORBIDDEN)
                await writer.drain()
                return
            up_reader, upstream = await asyncio.open_connection(*route)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(self._context)
            pipes = [asyncio.ensure_future(_pipe(reader, upstream)), asyncio.ensure_future(_pipe(up_reader, writer))]
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:  # one side is done: the exchange is over
                task.cancel()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            for stream in (upstream, writer):
                if stream is not None:
                    stream.close()
                    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                        async with asyncio.timeout(1):  # a TLS peer that never answers close_notify
                            await stream.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
