"""The ``exec`` provider: delegate TXT records to a program of the user's own.

certsmith runs ``$EXEC_PATH present <fqdn> <value>`` to create a record and
``$EXEC_PATH cleanup <fqdn> <value>`` to delete it, exactly like lego's ``exec``
provider, so existing hook scripts work unchanged. ``fqdn`` is absolute with the
trailing dot. The program runs without a shell, inherits the environment, and must
exit with status 0; anything else fails the challenge with the end of its stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

from certsmith.dns.base import ConfiguredProvider, EnvVar, ProviderInfo, optional_seconds, parse_seconds, read_env
from certsmith.errors import ConfigError, DnsError

log = logging.getLogger("certsmith.dns")

NAME = "exec"

#: How many trailing stderr lines go into an error message.
STDERR_LINES = 5

ENV = (
    EnvVar("EXEC_PATH", "The program to run: `PROGRAM present|cleanup FQDN VALUE`", required=True),
    EnvVar("EXEC_MODE", "lego's RAW mode is not supported; leave unset"),
    EnvVar("EXEC_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
    EnvVar("EXEC_POLLING_INTERVAL", "Accepted for lego compatibility; certsmith polls adaptively"),
    EnvVar("EXEC_COMMAND_TIMEOUT", "Seconds one run of the program may take", default="120"),
)


def _executable(path: str | Path) -> Path:
    """Resolve ``path`` (a bare name is looked up on PATH) and check that it can be run."""
    text = str(path)
    if not text:
        raise ConfigError("EXEC_PATH is empty; set it to the program that manages your TXT records")
    if os.sep not in text and (os.altsep is None or os.altsep not in text):
        found = shutil.which(text)
        if found is None:
            raise ConfigError(f"EXEC_PATH {text!r}: no such program on PATH")
        return Path(found)
    resolved = Path(text).expanduser()
    if not resolved.exists():
        raise ConfigError(f"EXEC_PATH {text!r} does not exist")
    if not resolved.is_file():
        raise ConfigError(f"EXEC_PATH {text!r} is not a file")
    if not os.access(resolved, os.X_OK):
        raise ConfigError(f"EXEC_PATH {text!r} is not executable (chmod +x it)")
    return resolved


@dataclass(frozen=True)
class ExecConfig:
    """Settings of :class:`ExecProvider`.

    ``propagation_timeout`` overrides the solver's default; ``polling_interval`` is
    kept for lego compatibility only; ``command_timeout`` bounds one run of the program.
    """

    path: str | Path
    propagation_timeout: float | None = None
    polling_interval: float | None = None
    command_timeout: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read and check lego's ``EXEC_*`` variables."""
        values = read_env(env, ENV, NAME, "the program that creates and deletes TXT records")
        mode = values.get("EXEC_MODE", "").strip()
        if mode:
            raise ConfigError(
                f"EXEC_MODE={mode!r} is not supported: certsmith always calls "
                "`EXEC_PATH present|cleanup FQDN VALUE`; unset EXEC_MODE"
            )
        return cls(
            values["EXEC_PATH"],
            propagation_timeout=optional_seconds(values, "EXEC_PROPAGATION_TIMEOUT"),
            polling_interval=optional_seconds(values, "EXEC_POLLING_INTERVAL"),
            command_timeout=parse_seconds("EXEC_COMMAND_TIMEOUT", values["EXEC_COMMAND_TIMEOUT"]),
        )


class ExecProvider(ConfiguredProvider[ExecConfig]):
    """Runs a user program to create and delete TXT records."""

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="External program",
        description=(
            "Runs EXEC_PATH with `present FQDN VALUE` and `cleanup FQDN VALUE` (lego-compatible); "
            "the program must exit with status 0."
        ),
        env=ENV,
        example="EXEC_PATH=/usr/local/bin/dns-hook certsmith issue --dns exec -d example.com",
        links=("https://go-acme.github.io/lego/dns/exec/",),
    )

    def __init__(self, config: ExecConfig) -> None:
        """Check that ``config.path`` names an executable file (:class:`ConfigError` if not)."""
        self.config = config
        self.path = _executable(config.path)
        self.command_timeout = config.command_timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build from lego's ``EXEC_*`` variables (see ``info.env`` and :class:`ExecConfig`)."""
        return cls(ExecConfig.from_env(env))


    async def present(self, fqdn: str, value: str) -> None:
        """Run ``EXEC_PATH present FQDN VALUE``."""
        await self._run("present", fqdn, value)

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Run ``EXEC_PATH cleanup FQDN VALUE``."""
        await self._run("cleanup", fqdn, value)

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _run(self, action: str, fqdn: str, value: str) -> None:
        import asyncio  # imported on use: `certsmith dns list` loads this module for its metadata only

        fqdn = fqdn if fqdn.endswith(".") else fqdn + "."
        command = f"{self.path} {action} {fqdn}"
        log.debug("running %s %s", command, value)
        try:
            process = await asyncio.create_subprocess_exec(
                str(self.path),
                action,
                fqdn,
                value,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
        except OSError as exc:
            raise DnsError(f"cannot run {self.path}: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(self.command_timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            raise DnsError(f"`{command}` did not finish within {self.command_timeout:g}s and was killed") from None
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if stdout.strip():
            log.debug("%s: %s", command, stdout.decode("utf-8", "replace").strip())
        if process.returncode != 0:
            raise DnsError(f"`{command}` failed with exit status {process.returncode}{_tail(stderr)}")


def _kill_group(pid: int) -> None:
    killpg = getattr(os, "killpg", None)
    if killpg is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            killpg(pid, signal.SIGKILL)


def _tail(stderr: bytes) -> str:
    lines = [line.rstrip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return " (no output on stderr)"
    return ": " + " | ".join(lines[-STDERR_LINES:])
