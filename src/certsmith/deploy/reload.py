"""The ``reload`` deploy target: a shell command that makes a server pick up the new files.

It runs after every other target of the lineage, and only when it is needed: when one
of them changed something in this run, or when the command has not yet succeeded for
the lineage's current certificate (the first deploy, or after it failed). So a renewal
reloads once, and ``certsmith deploy NAME`` run again reloads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from certsmith.deploy.base import BaseTarget, DeployContext, DeployOutcome, TargetInfo, TargetOption, parse_seconds
from certsmith.errors import DeployError

OPTIONS = (
    TargetOption("command", "shell command, e.g. 'systemctl reload nginx'", required=True),
    TargetOption("timeout", "seconds the command may take before it is stopped", default="300"),
)


@dataclass(frozen=True)
class ReloadConfig:
    command: str
    timeout: float = 300.0

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        timeout = parse_seconds("reload: timeout", options["timeout"]) if options.get("timeout") else 300.0
        return cls(options["command"], timeout)


class ReloadTarget(BaseTarget[ReloadConfig]):
    info: ClassVar[TargetInfo] = TargetInfo(
        name="reload",
        title="Reload command",
        description="Runs a shell command after the other targets, when one of them changed something or when "
        "it has not yet succeeded for the current certificate. It gets CERTSMITH_LINEAGE, CERTSMITH_NAME, "
        "CERTSMITH_DOMAINS, CERTSMITH_CHANGED (one change per line) and certbot's RENEWED_LINEAGE, "
        "RENEWED_DOMAINS.",
        options=OPTIONS,
        example="certsmith issue -d example.com --deploy files:fullchain=/etc/nginx/a.pem,key=/etc/nginx/a.key "
        "--deploy reload:command='systemctl reload nginx'",
        runs_last=True,
    )

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        return cls(ReloadConfig.from_options(options, env))

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        if not context.changed and context.state.get("serial") == context.serial:
            return DeployOutcome(skipped="nothing changed and it already ran for this certificate")
        domains = " ".join(context.names)
        env = dict(context.env)
        env.update(
            CERTSMITH_LINEAGE=context.location,
            CERTSMITH_NAME=context.lineage,
            CERTSMITH_DOMAINS=domains,
            CERTSMITH_CHANGED="\n".join(context.changed),
            RENEWED_LINEAGE=context.location,
            RENEWED_DOMAINS=domains,
        )
        process = await asyncio.create_subprocess_shell(
            self.config.command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout stops the whole command
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.config.timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise DeployError(f"{self.config.command!r} did not finish within {self.config.timeout:g}s") from None
            raise
        if process.returncode != 0:
            tail = output.decode(errors="replace").strip().splitlines()[-2:]
            detail = f": {' / '.join(tail)}" if tail else ""
            raise DeployError(f"{self.config.command!r} exited with status {process.returncode}{detail}")
        context.state["serial"] = context.serial
        return DeployOutcome(changed=[f"ran {self.config.command}"])
