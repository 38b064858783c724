"""A throw-away ``redis-server`` (Debian's) on a free loopback port, for the Redis store's tests.

No persistence (``--save ''``, ``--appendonly no``), its working directory in a temporary
directory, stopped at the end of the session. ``flush()`` empties it between tests;
``stop()``/``start()`` let a test take Redis away in the middle of a run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from certsmith.testing.pebble import LOOPBACK, free_port, stop_process


def find_redis_server() -> str:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if Path(p).is_file()), None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed; run scripts/bootstrap.sh (Debian package redis-server)")
    return found


class RedisServer:
    """One redis-server process; ``url`` is ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        binary = find_redis_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            # A free port can be taken between free_port() and redis-server's bind(): try another.
            self.port = self.port or free_port()
            log = self.workdir / "redis.log"
            self.process = subprocess.Popen(
                [
                    binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                    "--dir", str(self.workdir), "--logfile", str(log), "--daemonize", "no",
                    "--protected-mode", "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return
            stop_process(self.process)
            self.port = 0
        text = (self.workdir / "redis.log").read_text(errors="replace") if (self.workdir / "redis.log").exists() else ""
        raise RuntimeError(f"redis-server did not start; its log:\n{text[-2000:]}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def command(self, *args: str) -> bytes:
        """One command in the inline protocol (for tests that must not go through redis-py's pool)."""
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as sock:
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(65536)

    def flush(self) -> None:
        assert self.command("FLUSHALL").startswith(b"+OK")

    def stop(self) -> None:
        """Stop the server, keeping its port so that ``start()`` brings it back at the same URL."""
        stop_process(self.process)
        self.process = None
