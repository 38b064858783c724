"""The http-01 solver (RFC 8555 §8.3, RFC 8738 §5 for IP identifiers).

Two ways to answer ``GET /.well-known/acme-challenge/<token>`` with the key
authorization:

* standalone: a small asyncio HTTP/1.1 server started on the first ``present`` and
  stopped by ``aclose``; it serves every token currently presented by any order;
* webroot: the files are written under ``<webroot>/.well-known/acme-challenge/`` for
  a web server that already runs, and removed again (with only the directories this
  solver created) on cleanup.

With a ``board`` (``--http-shared``: the shared store) every answer is also published
there, with an expiry, and withdrawn at cleanup, so that :class:`SharedHttp01Responder`
(``certsmith serve-challenges``) answers it on any host of a fleet the CA may reach.

Tokens come from the CA and end up in a URL path or a file name, so their syntax is
checked (base64url alphabet only) before they are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit

from certsmith.challenges.base import ArtefactJournal, ChallengeJob, run_to_completion
from certsmith.challenges.serving import ActiveAnswers, ChallengeListener, check_jobs, is_valid_token
from certsmith.errors import CertsmithError, ChallengeError

__all__ = ["AnswerBoard", "Http01Solver", "SharedHttp01Responder", "is_valid_token"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CHALLENGE_PATH = "/.well-known/acme-challenge/"

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
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
#: How long a published answer lives in the shared store if the run that published it dies
#: (it is withdrawn at cleanup, and a killed run's journal note removes it on the next run).
SHARED_ANSWER_TTL = 3600.0


class AnswerBoard(Protocol):
    """Where http-01 answers are published for other hosts: the Store's http-01 methods."""

    def challenge_publish(self, token: str, key_authorization: str, ttl: float) -> None: ...

    def challenge_lookup(self, token: str) -> str | None: ...

    def challenge_withdraw(self, token: str) -> None: ...


async def finish_in_thread(func: Callable[[], T]) -> T:
    """Run a filesystem step in a thread; on cancellation wait for it, so what is on disk is known."""
    return await run_to_completion(asyncio.to_thread(func))


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
        journal: ArtefactJournal | None = None,
        board: AnswerBoard | None = None,
    ) -> None:
        self.journal = journal
        self.board = board
        self.port = port
        self.host = host
        self.webroot = Path(webroot) if webroot is not None else None
        self.request_timeout = request_timeout
        self._active: ActiveAnswers[str] = ActiveAnswers(
            "http-01 token for {identifier} is already presented with another key authorization; "
            "two accounts cannot share one solver"
        )
        self._fs_lock = asyncio.Lock()
        self._created_dirs: list[Path] = []  # parents first
        self._listener = ChallengeListener(
            self._handle_connection,
            host=host,
            port=port,
            challenge_type=self.challenge_type,
            limit=_MAX_LINE,
        )

    # -- the solver protocol -------------------------------------------------------

    async def prepare(self) -> None:
        """Listen on the port now (standalone), or check that the webroot can take the files."""
        if self.webroot is None:
            await self._listener.start()
        else:
            await asyncio.to_thread(self._check_webroot)

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        """Serve every job's key authorization at its token's URL."""
        check_jobs(jobs, self.challenge_type)
        if not jobs:
            return
        published: list[str] = []
        if self.board is not None:
            self._check_conflicts(jobs)
            published = [job.token for job in jobs if job.token not in self._active]
            await finish_in_thread(lambda: self._publish(jobs))
        try:
            await self._present(jobs)
        except BaseException:
            await self._withdraw(list(dict.fromkeys(published)))  # not presented: not left published for an hour
            raise

    async def _present(self, jobs: Sequence[ChallengeJob]) -> None:
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
            await self._withdraw(self._unregister(jobs))
            return
        async with self._fs_lock:
            gone = self._unregister(jobs)
            await self._withdraw(gone)
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
            tokens = self._active.keys()
            self._active.clear()
            await self._withdraw(tokens)
            return
        async with self._fs_lock:
            tokens = self._active.keys()
            self._active.clear()
            await self._withdraw(tokens)
            try:
                await finish_in_thread(lambda: self._remove_files(tokens, prune=True))
            except OSError as exc:
                log.warning("could not remove http-01 challenge files from %s: %s", self.webroot, exc)

    # -- the shared store (--http-shared) -------------------------------------------

    def _publish(self, jobs: Sequence[ChallengeJob]) -> None:
        """Publish each fresh answer in the shared store, journalled first (a killed run's are withdrawn later)."""
        assert self.board is not None
        for token, key_authorization in _unique((job.token, job.key_authorization) for job in jobs):
            if token in self._active:
                continue
            if self.journal is not None:
                self.journal.created({"kind": "http-01-shared", "token": token, "path": f"shared:{token}"})
            self.board.challenge_publish(token, key_authorization, SHARED_ANSWER_TTL)

    async def _withdraw(self, tokens: Sequence[str]) -> None:
        """Withdraw these answers from the shared store; a failure is logged (they expire; the journal keeps them)."""
        if self.board is None or not tokens:
            return
        board = self.board

        def withdraw() -> None:
            for token in tokens:
                try:
                    board.challenge_withdraw(token)
                except CertsmithError as exc:
                    log.warning("could not withdraw the shared http-01 answer %s: %s", token, exc)
                    continue
                if self.journal is not None:
                    self.journal.removed({"kind": "http-01-shared", "token": token, "path": f"shared:{token}"})

        await finish_in_thread(withdraw)

    # -- the registry of presented tokens -------------------------------------------

    def _check_conflicts(self, jobs: Sequence[ChallengeJob]) -> None:
        self._active.check((job.token, job) for job in jobs)

    def _register(self, jobs: Sequence[ChallengeJob]) -> None:
        self._active.add([(job.token, job) for job in jobs], {job.token: job.key_authorization for job in jobs})
        for job in jobs:
            log.debug("presenting http-01 for %s", job.identifier)

    def _unregister(self, jobs: Sequence[ChallengeJob]) -> list[str]:
        """Drop one reference per job; returns the tokens no longer presented at all."""
        return self._active.release((job.token, job) for job in jobs)

    # -- webroot mode (runs in a worker thread, under self._fs_lock) ----------------

    def _challenge_dir(self) -> Path:
        assert self.webroot is not None
        return self.webroot / ".well-known" / "acme-challenge"

    def _check_webroot(self) -> None:
        """Refuse a webroot that is missing or whose challenge directory this user cannot write."""
        assert self.webroot is not None
        if not self.webroot.is_dir():
            raise ChallengeError(
                f"the webroot {self.webroot} does not exist or is not a directory: pass the directory "
                "your web server serves for this site"
            )
        directory = self._challenge_dir()
        nearest = next(path for path in (directory, directory.parent, self.webroot) if path.exists())
        if not nearest.is_dir():
            raise ChallengeError(
                f"{nearest} exists but is not a directory: the http-01 challenge files cannot be written there"
            )
        if not os.access(nearest, os.W_OK | os.X_OK):
            raise ChallengeError(
                f"cannot write the http-01 challenge files under {nearest}: permission denied; run certsmith "
                "as a user who may write there, or give that user write access to it"
            )

    def _write_files(self, items: Sequence[tuple[str, str]], written: list[str]) -> None:
        """Write one file per ``(token, key authorization)``; ``written`` collects the tokens done."""
        self._check_webroot()
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
            if self.journal is not None:
                self.journal.created({"kind": "http-01", "path": str(final), "content": key_authorization})
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
            if self.journal is not None and token not in written:
                self.journal.removed({"kind": "http-01", "path": str(directory / token)})
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
            else:
                if self.journal is not None:
                    self.journal.removed({"kind": "http-01", "path": str(directory / token)})
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
            status, body, keep_alive, extra = await self._answer(request)
            writer.write(_response(status, body, head=request.method == "HEAD", keep_alive=keep_alive, extra=extra))
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()
            if not keep_alive:
                break
        await _close_gracefully(reader, writer)

    async def _answer(self, request: _Request) -> tuple[int, bytes, bool, dict[str, str]]:
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
            try:
                path = urlsplit(path).path
            except ValueError:  # e.g. an unclosed IPv6 literal
                return 400, b"bad request\n", False, {}
        elif not path.startswith("/") and path != "*":
            return 400, b"bad request\n", False, {}
        path = path.split("?", 1)[0]
        if path.startswith(CHALLENGE_PATH):
            token = path[len(CHALLENGE_PATH) :]
            if is_valid_token(token):
                try:
                    async with asyncio.timeout(self.request_timeout):
                        value = await self._lookup(token)
                except (CertsmithError, TimeoutError) as exc:
                    log.warning("cannot look up http-01 token %s: %s", token, exc or "timed out")
                    return 503, b"answers unavailable\n", False, {"Retry-After": "5"}
                if value is not None:
                    log.debug("answered http-01 request for token %s", token)
                    return 200, value.encode("ascii", errors="replace"), keep_alive, {}
        return 404, b"not found\n", keep_alive, {}

    async def _lookup(self, token: str) -> str | None:
        """The key authorization this server answers ``token`` with, or ``None``."""
        active = self._active.get(token)
        return active.key_authorization if active is not None else None


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


class SharedHttp01Responder(Http01Solver):
    """``certsmith serve-challenges``: the standalone http-01 server, answering from the shared store.

    The same request handling as the solver's own server (404 for unknown tokens, 400 for
    bad request targets, bounded heads and connections), but every token is looked up in
    ``board`` at request time, so it answers what any host of the fleet has published.
    """

    def __init__(self, board: AnswerBoard, port: int = 80, host: str = "", *, request_timeout: float = 10.0) -> None:
        super().__init__(port=port, host=host, request_timeout=request_timeout, board=board)

    async def start(self) -> None:
        """Listen on the port (a ListenError says why not)."""
        await self._listener.start()

    async def _lookup(self, token: str) -> str | None:
        """Asked of the store in a thread: a slow store (Redis across the network) holds one request, not all."""
        assert self.board is not None  # given to __init__
        return await asyncio.to_thread(self.board.challenge_lookup, token)
