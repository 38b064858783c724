"""Session fixtures: one Pebble (with pebble-challtestsrv as its DNS) for the whole run.

Pebble keeps its default 5% nonce rejection; it offers alternate chains so the
preferred-chain test needs no second server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certsmith.testing.pebble import PebbleServer

CERTSMITH = [sys.executable, "-m", "certsmith.cli"]


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    server = PebbleServer(
        workdir=tmp_path_factory.mktemp("pebble"),
        env={"PEBBLE_ALTERNATE_ROOTS": "2", "PEBBLE_CHAIN_LENGTH": "3"},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without certsmith and CA-bundle variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CERTSMITH_") and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
    }
    env.update(extra)
    return env


@dataclass
class Cli:
    """Runs the real ``certsmith`` command against the session's Pebble."""

    pebble: PebbleServer
    state_dir: Path

    def global_args(self) -> list[str]:
        return [
            "--directory", self.pebble.directory_url,
            "--ca-bundle", str(self.pebble.ca_bundle),
            "--state-dir", str(self.state_dir),
        ]

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CERTSMITH, *self.global_args(), *args],
            capture_output=True,
            text=True,
            env=env or clean_env(),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"certsmith {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def register(self, *extra: str) -> None:
        self.run("account", "register", "--email", "test@example.com", "--agree-tos", *extra)

    def http_args(self) -> list[str]:
        return ["--challenge", "http-01", "--http-port", str(self.pebble.http_port)]


@pytest.fixture
def cli(pebble: PebbleServer, tmp_path: Path) -> Cli:
    return Cli(pebble, tmp_path / "state")


@pytest.fixture
def registered_cli(cli: Cli) -> Cli:
    cli.register()
    return cli
