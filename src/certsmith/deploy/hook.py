"""The deploy hook: a shell command run after a certificate was stored.

It gets the lineage's location and names in certsmith's variables and in the ones
certbot's hooks already read, so existing hook scripts keep working.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from certsmith.storage.base import LineageMeta

log = logging.getLogger("certsmith")


async def run_deploy_hook(command: str, meta: LineageMeta, location: str, env: Mapping[str, str]) -> str | None:
    """Run ``command`` through the shell; returns an error text when it fails, ``None`` when it succeeds."""
    domains = " ".join(meta.names)
    hook_env = dict(env)
    hook_env.update(
        CERTSMITH_LINEAGE=location,
        CERTSMITH_NAME=meta.name,
        CERTSMITH_DOMAINS=domains,
        RENEWED_LINEAGE=location,
        RENEWED_DOMAINS=domains,
    )
    process = await asyncio.create_subprocess_shell(
        command,
        env=hook_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if stdout:
        log.info("deploy hook output: %s", stdout.decode(errors="replace").strip())
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        return f"deploy hook exited with status {process.returncode}" + (f": {' / '.join(tail)}" if tail else "")
    return None
