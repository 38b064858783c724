"""The http-01 solver: standalone server on loopback and webroot files."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from certsmith.challenges.base import ChallengeJob
from certsmith.challenges.http01 import Http01Solver, is_valid_token
from certsmith.errors import ChallengeError, ListenError
from certsmith.testing.pebble import LOOPBACK, free_port

TOKEN_A = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
TOKEN_B = "DGyRejmCefe7v4NfDGDKfA_b-9yG3TvLwJsF1Q3mVkQ"
TOKEN_C = "c2Vjb25kLW9yZGVyLXRva2VuLXdpdGgtZW5vdWdoLWI"
T = TypeVar("T")

THUMB = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

JOB_A = ChallengeJob("dns", "a.example.test", TOKEN_A, f"{TOKEN_A}.{THUMB}")
JOB_B = ChallengeJob("dns", "b.example.test", TOKEN_B, f"{TOKEN_B}.{THUMB}")
JOB_IP = ChallengeJob("ip", "192.0.2.7", TOKEN_C, f"{TOKEN_C}.{THUMB}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


# Built once: httpx would otherwise load the system CA bundle for every client (plain http here).
_TLS = ssl.create_default_context()


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=5, verify=_TLS)


def url(port: int, token: str) -> str:
    return f"http://{LOOPBACK}:{port}/.well-known/acme-challenge/{token}"


async def get(port: int, token: str, method: str = "GET") -> httpx.Response:
    async with client() as http:
        return await http.request(method, url(port, token))


def raw_exchange(port: int, payload: bytes, timeout: float = 5) -> bytes:
    """Send ``payload`` and read until the server closes the connection."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def statuses(data: bytes) -> list[int]:
    """The status codes of the responses in ``data`` (a body without newline runs into the next one)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


async def with_solver(body: Callable[[Http01Solver, int], Awaitable[None]], **kwargs: Any) -> None:
    port = free_port()
    solver = Http01Solver(port, LOOPBACK, **kwargs)
    try:
        await body(solver, port)
    finally:
        await solver.aclose()


# -- standalone ---------------------------------------------------------------------


def test_serves_key_authorization_for_dns_and_ip_identifiers() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A, JOB_IP])
        for job in (JOB_A, JOB_IP):
            response = await get(port, job.token)
            assert response.status_code == 200
            assert response.text == job.key_authorization
            assert response.headers["content-type"] == "text/plain"
            assert response.headers["content-length"] == str(len(job.key_authorization))

    run(with_solver(body))


def test_head_sends_headers_without_body() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        response = await get(port, TOKEN_A, "HEAD")
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(JOB_A.key_authorization))
        assert response.content == b""
        raw = await asyncio.to_thread(
            raw_exchange, port, f"HEAD /.well-known/acme-challenge/{TOKEN_A} HTTP/1.0\r\n\r\n".encode()
        )
        assert raw.endswith(b"\r\n\r\n")  # nothing after the head

    run(with_solver(body))


def test_unknown_token_and_other_paths_are_404() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        assert (await get(port, TOKEN_B)).status_code == 404
        async with client() as http:
            assert (await http.get(f"http://{LOOPBACK}:{port}/")).status_code == 404
            assert (await http.get(f"http://{LOOPBACK}:{port}/{TOKEN_A}")).status_code == 404
            response = await http.post(url(port, TOKEN_A), content=b"x")
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD"

    run(with_solver(body))


def test_only_an_exact_token_path_is_answered() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        for target in (
            f"/.well-known/acme-challenge/{TOKEN_A}/",
            f"/.well-known/acme-challenge/{TOKEN_A}%2e",
            f"/.well-known/acme-challenge/../acme-challenge/{TOKEN_A}x",
            "/.well-known/acme-challenge/",
        ):
            raw = await asyncio.to_thread(raw_exchange, port, f"GET {target} HTTP/1.0\r\n\r\n".encode())
            assert statuses(raw) == [404], target
        # the query string and the absolute form still find a valid token
        for target in (
            f"/.well-known/acme-challenge/{TOKEN_A}?x=1",
            f"http://a.example.test/.well-known/acme-challenge/{TOKEN_A}",
        ):
            raw = await asyncio.to_thread(raw_exchange, port, f"GET {target} HTTP/1.0\r\n\r\n".encode())
            assert statuses(raw) == [200], target
            assert raw.endswith(JOB_A.key_authorization.encode())

    run(with_solver(body))


@pytest.mark.parametrize("token", ["", "../../etc/passwd", "a/b", "a.b", "tok=", "tok en", "tök", "a\x00b", "x" * 300])
def test_present_rejects_malformed_tokens(token: str, tmp_path: Path) -> None:
    assert not is_valid_token(token)
    job = ChallengeJob("dns", "a.example.test", token, f"{token}.{THUMB}")

    async def body(solver: Http01Solver, port: int) -> None:
        with pytest.raises(ChallengeError, match="malformed"):
            await solver.present([JOB_B, job])
        with pytest.raises(httpx.ConnectError):  # refused before the server was even started
            await get(port, TOKEN_B)

    run(with_solver(body))
    webroot = tmp_path / "www"
    webroot.mkdir()
    run(with_solver(body, webroot=webroot))
    assert list(webroot.iterdir()) == []


def test_valid_tokens() -> None:
    assert is_valid_token(TOKEN_A)
    assert is_valid_token("a-_Z9")


def test_cleanup_removes_token() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        assert (await get(port, TOKEN_A)).status_code == 200
        await solver.cleanup([JOB_A])
        assert (await get(port, TOKEN_A)).status_code == 404
        await solver.cleanup([JOB_A, JOB_B])  # already gone: no error

    run(with_solver(body))


def test_concurrent_job_sets_are_cleaned_separately() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await asyncio.gather(solver.present([JOB_A]), solver.present([JOB_B, JOB_IP]))
        for job in (JOB_A, JOB_B, JOB_IP):
            assert (await get(port, job.token)).text == job.key_authorization
        await solver.cleanup([JOB_B, JOB_IP])
        assert (await get(port, TOKEN_A)).status_code == 200
        assert (await get(port, TOKEN_B)).status_code == 404
        assert (await get(port, TOKEN_C)).status_code == 404
        await solver.cleanup([JOB_A])
        assert (await get(port, TOKEN_A)).status_code == 404

    run(with_solver(body))


def test_shared_token_stays_until_last_cleanup() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        await solver.present([JOB_A])  # a second order reusing the same pending authorization
        await solver.cleanup([JOB_A])
        assert (await get(port, TOKEN_A)).status_code == 200
        await solver.cleanup([JOB_A])
        assert (await get(port, TOKEN_A)).status_code == 404

    run(with_solver(body))


def test_same_token_with_other_key_authorization_is_refused() -> None:
    other = ChallengeJob("dns", "a.example.test", TOKEN_A, f"{TOKEN_A}.other")

    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        with pytest.raises(ChallengeError, match="another key authorization"):
            await solver.present([JOB_B, other])
        assert (await get(port, TOKEN_A)).text == JOB_A.key_authorization
        assert (await get(port, TOKEN_B)).status_code == 404  # nothing of the refused batch
        await solver.cleanup([other])  # not ours: ignored
        assert (await get(port, TOKEN_A)).status_code == 200

    run(with_solver(body))


def test_wildcards_and_other_types_are_not_supported() -> None:
    solver = Http01Solver(free_port(), LOOPBACK)
    wildcard = ChallengeJob("dns", "example.test", TOKEN_A, JOB_A.key_authorization, wildcard=True)
    with pytest.raises(ChallengeError, match="wildcard"):
        run(solver.present([wildcard]))
    assert Http01Solver.challenge_type == "http-01"


def test_several_requests_per_connection() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A, JOB_B])
        request = "GET /.well-known/acme-challenge/{} HTTP/1.1\r\nHost: x\r\n{}\r\n"
        pipelined = (
            request.format(TOKEN_A, "")
            + request.format("unknown", "")
            + request.format(TOKEN_B, "Connection: close\r\n")
            + request.format(TOKEN_A, "")  # after "close": never answered
        )
        raw = await asyncio.to_thread(raw_exchange, port, pipelined.encode())
        assert statuses(raw) == [200, 404, 200]
        assert JOB_A.key_authorization.encode() in raw
        assert raw.endswith(JOB_B.key_authorization.encode())
        # httpx reuses one kept-alive connection for several requests
        async with client() as http:
            for job in (JOB_A, JOB_B, JOB_A):
                assert (await http.get(url(port, job.token))).text == job.key_authorization

    run(with_solver(body))


def test_http10_closes_after_each_request() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        request = f"GET /.well-known/acme-challenge/{TOKEN_A} HTTP/1.0\r\n\r\n"
        raw = await asyncio.to_thread(raw_exchange, port, (request * 2).encode())
        assert statuses(raw) == [200]
        assert b"Connection: close" in raw

    run(with_solver(body))


def test_server_half_closes_and_drains_before_closing() -> None:
    """Unread input at close() would make the kernel send RST, which can destroy the response."""

    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])

        def exchange() -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                request = f"GET /.well-known/acme-challenge/{TOKEN_A} HTTP/1.1\r\nConnection: close\r\n\r\n"
                sock.sendall(request.encode())
                response = b""
                while chunk := sock.recv(65536):
                    response += chunk
                # the server sent FIN but still reads: late bytes are discarded, not reset
                sock.sendall(b"x" * 1000)
                time.sleep(0.1)
                sock.sendall(b"y" * 1000)
                return response

        response = await asyncio.to_thread(exchange)
        assert statuses(response) == [200]

    run(with_solver(body))


def test_oversized_and_malformed_requests_are_refused() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])
        long_target = "/" + "a" * 10000
        raw = await asyncio.to_thread(raw_exchange, port, f"GET {long_target} HTTP/1.1\r\n\r\n".encode())
        assert statuses(raw) == [414]
        headers = "".join(f"X-{n}: {'v' * 100}\r\n" for n in range(100))
        raw = await asyncio.to_thread(raw_exchange, port, f"GET / HTTP/1.1\r\n{headers}\r\n".encode())
        assert statuses(raw) == [431]
        raw = await asyncio.to_thread(raw_exchange, port, b"\x16\x03\x01 garbage\r\n\r\n")
        assert statuses(raw) == [400]
        raw = await asyncio.to_thread(raw_exchange, port, b"GET / HTTP/2.0\r\n\r\n")
        assert statuses(raw) == [505]
        for odd in (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET noslash HTTP/1.1\r\nHost: x\r\n\r\n"):
            raw = await asyncio.to_thread(raw_exchange, port, odd)
            assert statuses(raw) == [400], odd
        # the server still answers afterwards
        assert (await get(port, TOKEN_A)).status_code == 200

    run(with_solver(body))


def test_slow_client_is_disconnected() -> None:
    async def body(solver: Http01Solver, port: int) -> None:
        await solver.present([JOB_A])

        def slow() -> tuple[bytes, float]:
            started = time.monotonic()
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                sock.sendall(b"GET /.well-known/acme-")  # and never the rest
                return sock.recv(100), time.monotonic() - started

        data, elapsed = await asyncio.to_thread(slow)
        assert data == b""
        assert elapsed < 2

    run(with_solver(body, request_timeout=0.3))


def test_port_in_use() -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind((LOOPBACK, port))
        busy.listen()
        solver = Http01Solver(port, LOOPBACK)
        with pytest.raises(ListenError) as info:
            run(solver.present([JOB_A]))
        message = str(info.value)
        assert f"port {port} on {LOOPBACK} is in use" in message
        assert "--" not in message  # the library states facts; the CLI names the flags
        assert (info.value.challenge_type, info.value.host, info.value.port) == ("http-01", LOOPBACK, port)
        assert info.value.cause == "in-use"
        run(solver.cleanup([JOB_A]))
        run(solver.aclose())


def test_port_in_use_message_for_all_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> None:
        assert kwargs["host"] is None and kwargs["port"] == 80
        raise OSError(errno.EADDRINUSE, "address already in use")

    monkeypatch.setattr(asyncio, "start_server", refuse)
    with pytest.raises(ListenError) as info:
        run(Http01Solver().present([JOB_A]))
    assert str(info.value) == "port 80 is in use: another program listens there"


def test_privileged_port_without_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(asyncio, "start_server", refuse)
    with pytest.raises(ListenError) as info:
        run(Http01Solver().prepare())
    message = str(info.value)
    assert message.startswith("no permission for the http-01 server to listen on port 80:")
    assert "CAP_NET_BIND_SERVICE" in message
    assert info.value.cause == "permission"


def test_aclose_frees_the_port_and_closes_idle_connections() -> None:
    port = free_port()

    async def main() -> None:
        solver = Http01Solver(port, LOOPBACK)
        await solver.present([JOB_A])
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(f"GET /.well-known/acme-challenge/{TOKEN_A} HTTP/1.1\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(JOB_A.key_authorization.encode())  # kept alive
        await solver.aclose()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
        writer.close()
        with socket.socket() as probe:
            # SO_REUSEADDR ignores the server side's TIME_WAIT but not a listening socket
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((LOOPBACK, port))
            probe.listen()  # free again
        # the solver can be used again after aclose
        await solver.present([JOB_B])
        assert (await get(port, TOKEN_B)).status_code == 200
        assert (await get(port, TOKEN_A)).status_code == 404
        await solver.aclose()

    run(main())


# -- webroot ------------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def challenge_dir(webroot: Path) -> Path:
    return webroot / ".well-known" / "acme-challenge"


def test_webroot_files_created_and_removed(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    port = free_port()

    async def main() -> None:
        solver = Http01Solver(port, LOOPBACK, webroot=webroot)
        with umask(0o077):
            await solver.present([JOB_A, JOB_IP])
        directory = challenge_dir(webroot)
        for job in (JOB_A, JOB_IP):
            path = directory / job.token
            assert path.read_text() == job.key_authorization
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
        assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o755
        assert sorted(p.name for p in directory.iterdir()) == sorted([TOKEN_A, TOKEN_C])  # no temp files
        with socket.socket() as probe:
            probe.bind((LOOPBACK, port))  # webroot mode starts no server
        await solver.cleanup([JOB_A, JOB_IP])
        assert list(webroot.iterdir()) == []
        await solver.aclose()

    run(main())


def test_webroot_keeps_directories_it_did_not_create(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    (webroot / ".well-known").mkdir(parents=True)
    (webroot / ".well-known" / "security.txt").write_text("contact")

    async def main() -> None:
        solver = Http01Solver(webroot=webroot)
        await solver.present([JOB_A])
        assert (challenge_dir(webroot) / TOKEN_A).exists()
        await solver.cleanup([JOB_A])
        await solver.aclose()

    run(main())
    assert sorted(p.name for p in (webroot / ".well-known").iterdir()) == ["security.txt"]

    # an existing acme-challenge directory with foreign files stays as it was
    challenge_dir(webroot).mkdir()
    (challenge_dir(webroot) / "keep").write_text("x")
    run(main())
    assert sorted(p.name for p in challenge_dir(webroot).iterdir()) == ["keep"]


def test_webroot_concurrent_job_sets(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    directory = challenge_dir(webroot)

    async def main() -> None:
        solver = Http01Solver(webroot=webroot)
        await asyncio.gather(solver.present([JOB_A]), solver.present([JOB_B]), solver.present([JOB_A]))
        assert sorted(p.name for p in directory.iterdir()) == sorted([TOKEN_A, TOKEN_B])
        await solver.cleanup([JOB_B])
        assert sorted(p.name for p in directory.iterdir()) == [TOKEN_A]
        await solver.cleanup([JOB_A])
        assert (directory / TOKEN_A).read_text() == JOB_A.key_authorization  # still one reference
        await solver.cleanup([JOB_A])
        assert list(webroot.iterdir()) == []
        await solver.aclose()

    run(main())


def test_webroot_aclose_removes_what_is_left(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()

    async def main() -> None:
        solver = Http01Solver(webroot=webroot)
        await solver.present([JOB_A, JOB_B])
        await solver.aclose()

    run(main())
    assert list(webroot.iterdir()) == []


def test_unusable_webroot(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ChallengeError, match="does not exist or is not a directory"):
        run(Http01Solver(webroot=missing).present([JOB_A]))
    assert not missing.exists()

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ChallengeError, match="does not exist or is not a directory"):
        run(Http01Solver(webroot=not_a_dir).present([JOB_A]))

    blocked = tmp_path / "blocked"
    (blocked / ".well-known").mkdir(parents=True)
    (blocked / ".well-known" / "acme-challenge").write_text("x")
    with pytest.raises(ChallengeError, match="is not a directory"):
        run(Http01Solver(webroot=blocked).present([JOB_A]))


def test_unwritable_webroot_rolls_back(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    # a directory where the second file should go makes its write fail, whatever our privileges
    challenge_dir(webroot).mkdir(parents=True)
    (challenge_dir(webroot) / TOKEN_B).mkdir()

    async def main() -> None:
        solver = Http01Solver(webroot=webroot)
        with pytest.raises(ChallengeError, match="cannot write the http-01 challenge file"):
            await solver.present([JOB_A, JOB_B])
        assert not (challenge_dir(webroot) / TOKEN_A).exists()
        await solver.cleanup([JOB_A, JOB_B])
        await solver.aclose()

    run(main())
    assert sorted(p.name for p in challenge_dir(webroot).iterdir()) == [TOKEN_B]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_webroot(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    webroot.chmod(0o555)
    try:
        with pytest.raises(ChallengeError, match="cannot write the http-01 challenge file"):
            run(Http01Solver(webroot=webroot).present([JOB_A]))
    finally:
        webroot.chmod(0o755)


class _SlowBoard:
    """A shared store whose look-up of one token blocks (a Redis far away), the others answer at once."""

    def __init__(self) -> None:
        self.answers = {"A" * 43: "slow.key", "B" * 43: "fast.key"}

    def challenge_publish(self, token: str, key_authorization: str, ttl: float) -> None:
        self.answers[token] = key_authorization

    def challenge_lookup(self, token: str) -> str | None:
        if token.startswith("A"):
            time.sleep(1.0)
        return self.answers.get(token)

    def challenge_withdraw(self, token: str) -> None:
        self.answers.pop(token, None)


def test_a_slow_shared_store_holds_one_request_not_the_server() -> None:
    """serve-challenges asks the store off the event loop: a blocked look-up does not stall other requests."""
    from certsmith.challenges.http01 import SharedHttp01Responder

    port = free_port()

    async def scenario() -> tuple[float, int, bytes, int, bytes]:
        responder = SharedHttp01Responder(_SlowBoard(), port=port, host=LOOPBACK)
        await responder.start()
        try:
            started = time.monotonic()
            slow = asyncio.create_task(get(port, "A" * 43))
            await asyncio.sleep(0.1)  # the slow look-up is under way (a blocked loop wakes up only after it)
            fast = await get(port, "B" * 43)
            waited = time.monotonic() - started
            slow_answer = await slow
        finally:
            await responder.aclose()
        return waited, fast.status_code, fast.content, slow_answer.status_code, slow_answer.content

    waited, fast_status, fast_body, slow_status, slow_body = run(scenario())
    assert (fast_status, fast_body) == (200, b"fast.key")
    assert waited < 0.7, f"the fast request was answered {waited:.2f} s after the slow one began"
    assert (slow_status, slow_body) == (200, b"slow.key")


def test_a_shared_answer_is_withdrawn_when_present_fails() -> None:
    """--http-shared: a present that fails (port in use) does not leave its answer published for an hour."""
    from tests.support.memory_store import MemoryStore

    board = MemoryStore()
    port = free_port()
    with socket.socket() as busy:
        busy.bind((LOOPBACK, port))
        busy.listen()
        solver = Http01Solver(port, LOOPBACK, board=board)
        with pytest.raises(ListenError):
            run(solver.present([JOB_A]))
    assert board.challenges == {}
    run(solver.aclose())
