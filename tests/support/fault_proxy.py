"""A fault-injecting TLS reverse proxy in front of Pebble: real sockets, real faults.

The client talks TLS to the proxy (its own throwaway CA, :attr:`FaultProxy.ca_path`); the
proxy forwards each HTTP/1.1 request unchanged -- the ``Host`` header included, so Pebble
builds every URL it returns on the proxy's address and checks the JWS ``url`` against it --
and returns Pebble's answer, unless a :class:`Fault` matches the request:

* ``reset``: the connection is reset (RST) before anything is forwarded;
* ``status``: an HTTP error (``status``, optional ``Retry-After``) without forwarding;
* ``forward-then-reset``: Pebble processes the request, then the client's connection is
  reset -- the response is lost;
* ``forward-then-status``: Pebble processes it, the client gets ``status`` instead;
* ``delay``: the answer comes ``delay`` seconds late (past the client's timeout);
* ``respond``: a hostile answer instead of Pebble's (``status``, ``headers``, ``body``);
* ``forward-add-headers``: Pebble's answer with ``extra_headers`` (name, value pairs) added;
* ``trickle``: Pebble's answer one byte every ``delay`` seconds (a slowloris CA);
* ``garbage``: 4 KiB of random bytes instead of an HTTP answer.

It runs its own event loop in a thread, so a test can drive the CLI in a subprocess or the
library in its own loop while faults are added and the log is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from certsmith.testing.pebble import LOOPBACK, free_port, write_test_ca

_MAX_HEAD = 65536


@dataclass
class Fault:
    """What to do to the ``times`` requests matching ``method`` and ``path`` after ``skip`` of them."""

    path: str
    action: str
    method: str = "POST"
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    times: int = 1
    skip: int = 0
    hits: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.hits >= self.times:
            return False
        self.hits += 1
        return True


@dataclass(frozen=True)
class Exchange:
    """One request through the proxy, as the log keeps it."""

    method: str
    path: str
    status: int | None
    fault: str | None


class FaultProxy:
    """``https://127.0.0.1:<port>`` in front of ``upstream`` (Pebble's ``host:port``)."""

    def __init__(self, upstream_host: str, upstream_port: int, upstream_ca: Path, workdir: Path) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca_path, cert, key = write_test_ca(workdir)
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_context.load_cert_chain(cert, key)
        self._upstream_context = ssl.create_default_context(cafile=str(upstream_ca))
        self.faults: list[Fault] = []
        self.log: list[Exchange] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def directory_url(self) -> str:
        return f"{self.base_url}/dir"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, LOOPBACK, self.port, ssl=self._server_context, limit=_MAX_HEAD
        )

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        """Forget every fault and the log."""
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def requests(self, path: str, method: str = "POST") -> list[Exchange]:
        """The logged exchanges whose path matches the pattern ``path``."""
        with self._lock:
            return [e for e in self.log if e.method == method and re.search(path, e.path)]

    # -- one connection, one request (Connection: close) ------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, headers = _parse_head(head)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            with self._lock:
                fault = next((f for f in self.faults if f.matches(method, path)), None)
            action = fault.action if fault else None
            status: int | None = None
            if action == "reset":
                _reset(writer)
            elif action == "status":
                assert fault is not None
                status = fault.status
                await _answer(writer, _error_response(fault))
            elif action == "respond":
                assert fault is not None
                status = fault.status
                await _answer(writer, _canned_response(fault))
            elif action == "garbage":
                await _answer(writer, random.Random(len(path)).randbytes(4096))
            else:
                if action == "delay":
                    assert fault is not None
                    await asyncio.sleep(fault.delay)
                response = await self._forward(_rewrite_head(head), body)
                status = _status_of(response)
                if action == "forward-then-reset":
                    _reset(writer)
                elif action == "forward-add-headers":
                    assert fault is not None
                    head, _, rest = response.partition(b"\r\n\r\n")
                    added = "".join(f"\r\n{name}: {value}" for name, value in fault.extra_headers).encode("latin-1")
                    await _answer(writer, head + added + b"\r\n\r\n" + rest)
                elif action == "trickle":
                    assert fault is not None
                    for byte in response:  # one byte every `delay` seconds, each well within a read time-out
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(fault.delay)
                elif action == "forward-then-status":
                    assert fault is not None
                    status = fault.status
                    await _answer(writer, _error_response(fault))
                else:
                    await _answer(writer, response)
            with self._lock:
                self.log.append(Exchange(method, path, status, action))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        host, port = self.upstream
        reader, writer = await asyncio.open_connection(host, port, ssl=self._upstream_context, server_hostname=host)
        try:
            writer.write(head + body)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


def _rewrite_head(head: bytes) -> bytes:
    """The same request with ``Connection: close``, so Pebble's answer ends at EOF."""
    lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith((b"connection:",
                                                                                          b"keep-alive:"))]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


def _status_of(response: bytes) -> int | None:
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _error_response(fault: Fault) -> bytes:
    body = json.dumps({
        "type": "urn:ietf:params:acme:error:serverInternal",
        "detail": f"injected {fault.status}",
    }).encode()
    headers = [
        f"HTTP/1.1 {fault.status} Injected",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if fault.retry_after is not None:
        headers.append(f"Retry-After: {fault.retry_after}")
    return "\r\n".join([*headers, "", ""]).encode() + body


def _canned_response(fault: Fault) -> bytes:
    headers = [f"HTTP/1.1 {fault.status} Canned", f"Content-Length: {len(fault.body)}", "Connection: close"]
    headers += [f"{name}: {value}" for name, value in fault.headers.items()]
    return "\r\n".join([*headers, "", ""]).encode("latin-1") + fault.body


async def _answer(writer: asyncio.StreamWriter, response: bytes) -> None:
    writer.write(response)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a crashed middlebox or a dropped NAT entry does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
