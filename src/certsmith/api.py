"""Synchronous entry points for scripts: the same manager the CLI uses, without asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from certsmith.manager import CertificateRequest, ChallengeSettings, IssueResult, Manager, resolve_directory
from certsmith.storage.files import FileStore


def _manager(state_dir: str | Path | None, directory: str | None, ca_bundle: str | Path | None,
             env: Mapping[str, str] | None) -> Manager:
    root = Path(state_dir) if state_dir else FileStore.default_root()
    return Manager(FileStore(root), resolve_directory(directory), ca_bundle=ca_bundle, env=env)


def issue(
    names: Sequence[str],
    *,
    state_dir: str | Path | None = None,
    directory: str | None = None,
    ca_bundle: str | Path | None = None,
    email: Sequence[str] = (),
    agree_tos: bool = False,
    challenge: ChallengeSettings | None = None,
    key_type: str = "ec256",
    lineage: str | None = None,
    preferred_chain: str | None = None,
    deploy_hook: str | None = None,
    env: Mapping[str, str] | None = None,
) -> IssueResult:
    """Obtain a certificate for ``names`` and store it; registers an account when
    ``email``/``agree_tos`` are given and none exists. ``challenge`` defaults to
    http-01 on port 80; ``env`` supplies DNS provider variables (default: os.environ).
    """
    request = CertificateRequest(
        names=tuple(names),
        lineage=lineage,
        challenge=challenge or ChallengeSettings(),
        key_type=key_type,
        preferred_chain=preferred_chain,
        deploy_hook=deploy_hook,
    )

    async def run() -> IssueResult:
        async with _manager(state_dir, directory, ca_bundle, env) as manager:
            await manager.ensure_account(email=email, agree_tos=agree_tos)
            return await manager.issue(request)

    return asyncio.run(run())


def renew(
    names: Sequence[str] = (),
    *,
    force: bool = False,
    state_dir: str | Path | None = None,
    directory: str | None = None,
    ca_bundle: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Renew due lineages (or ``names``); one outcome dictionary per lineage."""

    async def run() -> list[dict[str, Any]]:
        async with _manager(state_dir, directory, ca_bundle, env) as manager:
            return await manager.renew(names, force=force)

    return asyncio.run(run())
