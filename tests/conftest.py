"""Session fixtures: one Pebble 2.10 (the main server) and one Debian Pebble 2.4 (the
compatibility set), each with pebble-challtestsrv as its DNS and started once per run.

Both keep Pebble's default 5% nonce rejection. The 2.10 server offers alternate chains
(so the preferred-chain test needs no second server) and the profiles in ``PROFILES``.
Pebble gives an order that names no profile one chosen at random: every profile here
outlives any test, so tests that don't care about lifetime need not name one; a test that
asserts on lifetime or on whether renewal is due names one (``--profile default``).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certsmith.testing.pebble import PebbleProfile, PebbleServer
from tests.support.redis_server import RedisServer

CERTSMITH = [sys.executable, "-m", "certsmith.cli"]

PROFILES = {
    "default": PebbleProfile("90 days, like Let's Encrypt's classic profile", datetime.timedelta(days=90)),
    "shortlived": PebbleProfile("160 hours, like Let's Encrypt's shortlived", datetime.timedelta(hours=160)),
    # For renewal tests: certsmith's lifetime rule (less than half left under 10 days) makes it due
    # after 30 minutes, and Pebble's ARI window spans its whole hour, so only the client's random
    # choice inside the window decides. No certificate can be due the moment it is issued (Pebble
    # does not backdate); force that with pebble.set_renewal_info or a revocation.
    "tiny": PebbleProfile("1 hour, for renewal tests", datetime.timedelta(hours=1)),
}


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """Pebble 2.10 with ARI and ``PROFILES``."""
    server = PebbleServer(
        workdir=tmp_path_factory.mktemp("pebble"),
        env={"PEBBLE_ALTERNATE_ROOTS": "2", "PEBBLE_CHAIN_LENGTH": "3"},
        profiles=PROFILES,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pebble24(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """Debian's Pebble 2.4: no ARI, no profiles, certificates valid for five years."""
    server = PebbleServer(workdir=tmp_path_factory.mktemp("pebble24"), version="2.4")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port, without persistence, for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test (restarted first if an earlier test stopped it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


# Variables that would let a developer's own settings leak into a test: certsmith's, the DNS
# providers', and the TLS trust overrides.
_LEAKY_PREFIXES = (
    "CERTSMITH_", "ALIBABA_CLOUD_", "ALICLOUD_", "ALIDNS_", "Ali_", "RFC2136_", "EXEC_",
    "CLOUDFLARE_", "CF_", "ACME_DNS_", "ACMEDNS_",
    "AWS_", "ROUTE53_", "TENCENTCLOUD_", "Tencent_", "HUAWEICLOUD_", "LEXICON_",
)  # fmt: skip
_LEAKY_NAMES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without the developer's certsmith, provider and trust variables."""
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES) or name in _LEAKY_NAMES:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _forget_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered for redaction by one test (a provider's fake token "t") stay in that test."""
    from certsmith import _redact

    monkeypatch.setattr(_redact, "_secrets", set(_redact._secrets))
    monkeypatch.setattr(_redact, "_longest_first", _redact._longest_first)


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without certsmith and CA-bundle variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_LEAKY_PREFIXES) and k not in _LEAKY_NAMES
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
