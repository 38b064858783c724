"""The http-01 solver (RFC 8555 §8.3, RFC 8738 §5 for IP identifiers).

Two ways to answer ``GET /.well-known/acme-challenge/<token>`` with the key
authorization:

* standalone: a small asyncio HTTP/1.1 server started on the first ``present`` and
  stopped by ``aclose``; it serves every token currently presented by any order;
* webroot: the files are written under ``<webroot>/.well-known/acme-challenge/`` for
  a web server that already runs, and removed again (with only the directories this
  solver created) on cleanup.

Tokens come from the CA and end up in a URL path or a file name, so their syntax is
checked (base64url alphabet only) before they are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from certsmith.challenges.base import ChallengeJob
from certsmith.errors import ChallengeError

__all__ = ["ChallengeListener", "Http01Solver", "is_valid_token"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_SUPPORTED_TYPES = frozenset({"dns", "ip"})

# Bounds of the standalone server: the CA sends one short GET, anything bigger or
# slower is not a validation request.
_MAX_LINE = 4096
_MAX_HEAD = 8192
_MAX_HEADER_LINES = 64
_MAX_REQUESTS_PER_CONNECTION = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}


def is_valid_token(token: str) -> bool:
    """Whether ``token`` only uses the base64url alphabet (RFC 8555 §8.3), so it is safe in paths."""
    return _TOKEN_RE.fullmatch(token) is not None


def check_jobs(jobs: Sequence[ChallengeJob], challenge_type: str) -> None:
    """Reject jobs an http-01 / tls-alpn-01 solver cannot answer, before any side effect."""
    for job in jobs:
        if job.wildcard:
            raise ChallengeError(f"{challenge_type} cannot validate the wildcard name *.{job.identifier}: use dns-01")
        if job.identifier_type not in _SUPPORTED_TYPES:
            raise ChallengeError(f"{challenge_type} cannot validate identifiers of type {job.identifier_type!r}")
        if not is_valid_token(job.token):
            raise ChallengeError(
                f"the CA sent a malformed {challenge_type} token for {job.identifier} "
                "(only base64url characters are allowed); refusing to use it"
            )


class ChallengeListener:
    """A TCP listener started on demand that tracks its connections.

    Shared by the http-01 and tls-alpn-01 solvers: ``start`` is idempotent and safe to
    call from concurrent ``present`` calls, bind errors become :class:`ChallengeError`
    with a hint (``hint``) on what to do, and ``aclose`` also ends open connections so
    that the port is free again when it returns.
    """

    def __init__(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        *,
        host: str,
        port: int,
        hint: str,
        limit: int = 2**16,
    ) -> None:
        self._handler = handler
        self.host = host
        self.port = port
        self._hint = hint
        self._limit = limit
        self._server: asyncio.Server | None = None
        self._start_lock = asyncio.Lock()
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}
        self._closing = False

    @property
    def running(self) -> bool:
        """Whether the listening socket is open."""
        return self._server is not None

    async def start(self) -> None:
        """Listen on ``host:port`` unless already listening."""
        async with self._start_lock:
            if self._server is not None:
                return
            try:
                self._server = await asyncio.start_server(
                    self._serve,
                    host=self.host or None,
                    port=self.port,
                    limit=self._limit,
                    reuse_address=True,
                )
            except OSError as exc:
                raise self._bind_error(exc) from exc
            log.debug("listening on %s port %d", self.host or "all addresses", self.port)

    def _bind_error(self, exc: OSError) -> ChallengeError:
        where = f" on {self.host}" if self.host else ""
        if exc.errno == errno.EADDRINUSE:
            return ChallengeError(f"port {self.port}{where} is in use: {self._hint}")
        if exc.errno in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
            return ChallengeError(
                f"no permission to listen on port {self.port}{where}: ports below 1024 need root or "
                f"the CAP_NET_BIND_SERVICE capability; otherwise {self._hint}"
            )
        if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            return ChallengeError(
                f"cannot listen on {self.host!r} port {self.port}: the address is not one of this "
                "machine's; pass a local address or leave the host empty for all addresses"
            )
        reason = exc.strerror or str(exc)
        return ChallengeError(f"cannot listen on port {self.port}{where}: {reason}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections[writer] = asyncio.current_task()
        try:
            await self._handler(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # cancelled by aclose: end normally (Python 3.11's stream callback logs cancelled tasks)
        except Exception:  # one broken connection must not disturb the others
            log.debug("challenge connection failed", exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()
            self._connections.pop(writer, None)

    async def aclose(self) -> None:
        """Stop listening and end every open connection."""
        async with self._start_lock:
            server, self._server = self._server, None
            if server is None:
                return
            self._closing = True
            try:
                server.close()
                connections = dict(self._connections)
                for writer in connections:
                    writer.transport.abort()  # the handlers see the end of input and return
                tasks = {task for task in connections.values() if task is not None}
                if tasks:
                    _, pending = await asyncio.wait(tasks, timeout=2)
                    for task in pending:
                        task.cancel()
                    if pending:
                        await asyncio.wait(pending, timeout=1)
                await server.wait_closed()
            finally:
                self._closing = False
            log.debug("stopped listening on port %d", self.port)


async def finish_in_thread(func: Callable[[], T]) -> T:
    """Run ``func`` in a thread and wait for it even when cancelled.

    A thread cannot be interrupted, so on cancellation this still waits until the
    filesystem step is over (the caller then knows what is on disk) and re-raises
    :class:`asyncio.CancelledError` afterwards.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func))
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                break
            cancelled = True
        except BaseException:  # the thread's error, raised by result() below
            break
    if cancelled:
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not warn about it
        raise asyncio.CancelledError
    return future.result()


@dataclass
class _Active:
    key_authorization: str
    count: int


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]


class Http01Solver:
    """Answers http-01 challenges with a built-in HTTP server or by writing files into a webroot.

    ``host=""`` listens on all addresses. ``request_timeout`` bounds the time a client
    may take to send one request (and the idle time between requests on a kept-alive
    connection).
    """

    challenge_type: ClassVar[str] = "http-01"

    def __init__(
        self,
        port: int = 80,
        host: str = "",
        webroot: Path | None = None,
        *,
        request_timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.host = host
        self.webroot = Path(webroot) if webroot is not None else None
        self.request_timeout = request_timeout
        self._active: dict[str, _Active] = {}
        self._fs_lock = asyncio.Lock()
        self._created_dirs: list[Path] = []  # parents first
        self._listener = ChallengeListener(
            self._handle_connection,
            host=host,
            port=port,
            hint="stop the web server or use --webroot DIR / --http-port N",
            limit=_MAX_LINE,
        )

    # -- the solver protocol -------------------------------------------------------

    def supports(self, identifier_type: str, wildcard: bool) -> bool:
        """DNS names and IP addresses (RFC 8738), never wildcards."""
        return identifier_type in _SUPPORTED_TYPES and not wildcard

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        """Serve every job's key authorization at its token's URL."""
        check_jobs(jobs, self.challenge_type)
        if not jobs:
            return
        if self.webroot is None:
            await self._listener.start()
            self._register(jobs)
            return
        async with self._fs_lock:
            self._check_conflicts(jobs)
            fresh = _unique((job.token, job.key_authorization) for job in jobs if job.token not in self._active)
            written: list[str] = []
            try:
                await finish_in_thread(lambda: self._write_files(fresh, written))
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    await finish_in_thread(lambda: self._undo_writes(fresh, written, prune=not self._active))
                if isinstance(exc, OSError):
                    raise self._write_error(exc) from exc
                raise
            self._register(jobs)

    async def cleanup(self, jobs: Sequence[ChallengeJob]) -> None:
        """Stop serving these jobs; tokens still presented by another order stay."""
        if self.webroot is None:
            self._unregister(jobs)
            return
        async with self._fs_lock:
            gone = self._unregister(jobs)
            if not gone:
                return
            prune = not self._active
            try:
                await finish_in_thread(lambda: self._remove_files(gone, prune=prune))
            except OSError as exc:
                log.warning("could not remove http-01 challenge files from %s: %s", self.webroot, exc)

    async def aclose(self) -> None:
        """Stop the server; in webroot mode remove files still presented."""
        await self._listener.aclose()
        if self.webroot is None:
            self._active.clear()
            return
        async with self._fs_lock:
            tokens = list(self._active)
            self._active.clear()
            try:
                await finish_in_thread(lambda: self._remove_files(tokens, prune=True))
            except OSError as exc:
                log.warning("could not remove http-01 challenge files from %s: %s", self.webroot, exc)

    # -- the registry of presented tokens -------------------------------------------

    def _check_conflicts(self, jobs: Sequence[ChallengeJob]) -> None:
        seen: dict[str, str] = {token: active.key_authorization for token, active in self._active.items()}
        for job in jobs:
            known = seen.setdefault(job.token, job.key_authorization)
            if known != job.key_authorization:
                raise ChallengeError(
                    f"http-01 token for {job.identifier} is already presented with another key "
                    "authorization; two accounts cannot share one solver"
                )

    def _register(self, jobs: Sequence[ChallengeJob]) -> None:
        self._check_conflicts(jobs)
        for job in jobs:
            active = self._active.get(job.token)
            if active is None:
                self._active[job.token] = _Active(job.key_authorization, 1)
            else:
                active.count += 1
            log.debug("presenting http-01 for %s", job.identifier)

    def _unregister(self, jobs: Sequence[ChallengeJob]) -> list[str]:
        """Drop one reference per job; returns the tokens no longer presented at all."""
        gone: list[str] = []
        for job in jobs:
            active = self._active.get(job.token)
            if active is None or active.key_authorization != job.key_authorization:
                continue
            active.count -= 1
            if active.count <= 0:
                del self._active[job.token]
                gone.append(job.token)
        return gone

    # -- webroot mode (runs in a worker thread, under self._fs_lock) ----------------

    def _challenge_dir(self) -> Path:
        assert self.webroot is not None
        return self.webroot / ".well-known" / "acme-challenge"

    def _write_files(self, items: Sequence[tuple[str, str]], written: list[str]) -> None:
        """Write one file per ``(token, key authorization)``; ``written`` collects the tokens done."""
        assert self.webroot is not None
        if not self.webroot.is_dir():
            raise ChallengeError(
                f"the webroot {self.webroot} does not exist or is not a directory: pass the directory "
                "your web server serves for this site"
            )
        directory = self._challenge_dir()
        for path in (directory.parent, directory):
            try:
                path.mkdir(mode=0o755)
            except FileExistsError:
                if not path.is_dir():
                    raise ChallengeError(
                        f"{path} exists but is not a directory: the http-01 challenge files cannot be written there"
                    ) from None
                continue
            self._created_dirs.append(path)
            os.chmod(path, 0o755)  # noqa: S103 -- the web server must read it, whatever the umask
        for token, key_authorization in items:
            final = directory / token
            temporary = directory / f".{token}.certsmith-tmp"  # a token never contains a dot
            temporary.unlink(missing_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o644)
                handle.write(key_authorization.encode("ascii"))
            os.replace(temporary, final)
            written.append(token)

    def _undo_writes(self, items: Sequence[tuple[str, str]], written: Sequence[str], *, prune: bool) -> None:
        """Roll back a failed ``_write_files``: its temporary files and only the files it wrote."""
        directory = self._challenge_dir()
        for token, _ in items:
            (directory / f".{token}.certsmith-tmp").unlink(missing_ok=True)
        self._remove_files(written, prune=prune)

    def _remove_files(self, tokens: Iterable[str], *, prune: bool) -> None:
        """Delete the tokens' files, trying every one; re-raises the first error at the end."""
        directory = self._challenge_dir()
        error: OSError | None = None
        for token in tokens:
            try:
                (directory / token).unlink(missing_ok=True)
            except OSError as exc:
                error = error or exc
        if prune:
            self._prune_dirs()
        if error is not None:
            raise error

    def _prune_dirs(self) -> None:
        """Remove the directories this solver created, deepest first, if they are empty."""
        for path in reversed(list(self._created_dirs)):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # not empty: someone else keeps files there
                break
            self._created_dirs.remove(path)

    def _write_error(self, exc: OSError) -> ChallengeError:
        reason = exc.strerror or str(exc)
        return ChallengeError(
            f"cannot write the http-01 challenge file under {self._challenge_dir()}: {reason}; "
            "make sure the webroot exists and this user may write to it"
        )

    # -- standalone mode: a minimal HTTP/1.1 server ---------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(_MAX_REQUESTS_PER_CONNECTION):
            try:
                async with asyncio.timeout(self.request_timeout):
                    request = await _read_request(reader)
            except _BadRequest as exc:
                writer.write(_response(exc.status, b"bad request\n", head=False, keep_alive=False))
                break
            if request is None:
                return  # the client closed the connection
            status, body, keep_alive, extra = self._answer(request)
            writer.write(_response(status, body, head=request.method == "HEAD", keep_alive=keep_alive, extra=extra))
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()
            if not keep_alive:
                break
        await _close_gracefully(reader, writer)

    def _answer(self, request: _Request) -> tuple[int, bytes, bool, dict[str, str]]:
        """Status, body, whether to keep the connection, extra headers."""
        connection = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
        if request.version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        if "transfer-encoding" in request.headers:
            keep_alive = False  # we never read request bodies
        else:
            length = request.headers.get("content-length", "0").strip()
            if not length.isdigit():
                return 400, b"bad request\n", False, {}
            if int(length) > 0:
                keep_alive = False
        if request.method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", keep_alive, {"Allow": "GET, HEAD"}
        path = request.target
        if "://" in path:  # absolute-form (RFC 9112 §3.2.2)
            path = urlsplit(path).path
        path = path.split("?", 1)[0]
        if path.startswith(CHALLENGE_PATH):
            token = path[len(CHALLENGE_PATH) :]
            if is_valid_token(token):
                active = self._active.get(token)
                if active is not None:
                    log.debug("answered http-01 request for token %s", token)
                    return 200, active.key_authorization.encode("ascii"), keep_alive, {}
        return 404, b"not found\n", keep_alive, {}


def _unique(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for token, value in items:
        seen.setdefault(token, value)
    return list(seen.items())


async def _close_gracefully(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send FIN, then discard what the client still sends (bounded) before closing.

    Closing a socket with unread input makes the kernel send RST, which can destroy
    the response before the client reads it (a body we skipped, a pipelined request).
    """
    async with asyncio.timeout(1):
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        discarded = 0
        while discarded < 65536:
            chunk = await reader.read(4096)
            if not chunk:
                break
            discarded += len(chunk)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Read one request head; ``None`` at a clean end of the connection."""
    lines: list[str] = []
    total = 0
    while True:
        try:
            raw = await reader.readline()
        except ValueError:  # a line longer than the reader's limit
            raise _BadRequest(414 if not lines else 431) from None
        if not raw:
            if lines or total:
                raise _BadRequest(400)
            return None
        if not raw.endswith(b"\n"):
            raise _BadRequest(400)  # the connection ended inside a line
        total += len(raw)
        if total > _MAX_HEAD or len(lines) > _MAX_HEADER_LINES:
            raise _BadRequest(431)
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if not line:
            if not lines:
                continue  # empty lines before the request line are ignored (RFC 9112 §2.2)
            break
        lines.append(line)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise _BadRequest(400)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400)
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return _Request(method, target, version, headers)


def _response(
    status: int,
    body: bytes,
    *,
    head: bool,
    keep_alive: bool,
    extra: dict[str, str] | None = None,
) -> bytes:
    headers = {
        "Date": email.utils.formatdate(usegmt=True),
        "Content-Type": "text/plain",
        "Content-Length": str(len(body)),
        "Connection": "keep-alive" if keep_alive else "close",
        **(extra or {}),
    }
    head_text = f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
    head_text += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    return head_text.encode("latin-1") + (b"" if head else body)
