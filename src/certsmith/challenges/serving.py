"""What the built-in http-01 and tls-alpn-01 servers share.

:class:`ChallengeListener` is the TCP listener started on demand; :class:`ActiveAnswers`
is the reference-counted registry of what is being presented (two orders may share one
authorization, and the first to finish must not withdraw the other's answer);
:func:`check_jobs` refuses what such a server cannot answer before any side effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from certsmith.challenges.base import ChallengeJob, check_supported
from certsmith.errors import ChallengeError, ListenError
from certsmith.storage.base import is_acme_token as is_valid_token

__all__ = ["ActiveAnswers", "Answer", "ChallengeListener", "check_jobs", "is_valid_token"]

log = logging.getLogger("certsmith.challenges")

_P = TypeVar("_P")


def check_jobs(jobs: Sequence[ChallengeJob], challenge_type: str) -> None:
    """Reject jobs an http-01 / tls-alpn-01 server cannot answer, before any side effect."""
    check_supported(challenge_type, jobs)
    for job in jobs:
        if not is_valid_token(job.token):
            raise ChallengeError(
                f"the CA sent a malformed {challenge_type} token for {job.identifier} "
                "(only base64url characters are allowed); refusing to use it"
            )


@dataclass
class Answer(Generic[_P]):
    """One presented answer: the key authorization, what serves it, and how many orders want it."""

    key_authorization: str
    payload: _P
    count: int = 1


class ActiveAnswers(Generic[_P]):
    """Answers being presented, by key (an http-01 token, a tls-alpn-01 server name).

    One key serves one key authorization at a time: a second, different one is refused
    with ``conflict`` (formatted with the job's ``identifier``) rather than served in
    place of the first.
    """

    def __init__(self, conflict: str) -> None:
        self._conflict = conflict
        self._answers: dict[str, Answer[_P]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._answers

    def __bool__(self) -> bool:
        return bool(self._answers)

    def get(self, key: str) -> Answer[_P] | None:
        """The answer presented at ``key``, if any."""
        return self._answers.get(key)

    def keys(self) -> list[str]:
        """Every key presented now."""
        return list(self._answers)

    def check(self, claims: Iterable[tuple[str, ChallengeJob]]) -> None:
        """Refuse ``claims`` that would serve a second key authorization at a key."""
        seen = {key: answer.key_authorization for key, answer in self._answers.items()}
        for key, job in claims:
            if seen.setdefault(key, job.key_authorization) != job.key_authorization:
                raise ChallengeError(self._conflict.format(identifier=job.identifier))

    def add(self, claims: Sequence[tuple[str, ChallengeJob]], payloads: Mapping[str, _P]) -> None:
        """Present ``claims``; ``payloads`` holds what serves each key not presented yet."""
        self.check(claims)
        for key, job in claims:
            answer = self._answers.get(key)
            if answer is None:
                self._answers[key] = Answer(job.key_authorization, payloads[key])
            else:
                answer.count += 1

    def release(self, claims: Iterable[tuple[str, ChallengeJob]]) -> list[str]:
        """Drop one reference per claim; returns the keys no longer presented at all."""
        gone: list[str] = []
        for key, job in claims:
            answer = self._answers.get(key)
            if answer is None or answer.key_authorization != job.key_authorization:
                continue
            answer.count -= 1
            if answer.count <= 0:
                del self._answers[key]
                gone.append(key)
        return gone

    def clear(self) -> None:
        """Forget every answer."""
        self._answers.clear()


class ChallengeListener:
    """A TCP listener started on demand that tracks its connections.

    Shared by the http-01 and tls-alpn-01 solvers: ``start`` is idempotent and safe to
    call from concurrent ``present`` calls, bind errors become :class:`ListenError`
    saying why (``challenge_type`` names the solver in it), and ``aclose`` also ends open connections so
    that the port is free again when it returns.
    """

    def __init__(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        *,
        host: str,
        port: int,
        challenge_type: str,
        limit: int = 2**16,
    ) -> None:
        self._handler = handler
        self.host = host
        self.port = port
        self.challenge_type = challenge_type
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

    def _bind_error(self, exc: OSError) -> ListenError:
        where = f" on {self.host}" if self.host else ""
        what = f"the {self.challenge_type} server"
        if exc.errno == errno.EADDRINUSE:
            cause, message = "in-use", f"port {self.port}{where} is in use: another program listens there"
        elif exc.errno in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
            cause = "permission"
            message = (
                f"no permission for {what} to listen on port {self.port}{where}: ports below 1024 need root "
                "or the CAP_NET_BIND_SERVICE capability"
            )
        elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            cause = "address"
            message = f"{what} cannot listen on {self.host!r} port {self.port}: that is not an address of this machine"
        else:
            cause, message = "other", f"{what} cannot listen on port {self.port}{where}: {exc.strerror or exc}"
        return ListenError(message, challenge_type=self.challenge_type, host=self.host, port=self.port, cause=cause)

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
