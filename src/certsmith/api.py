"""Synchronous entry points for scripts: the same manager the CLI uses, without asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from certsmith._constants import DEFAULT_KEY_TYPE
from certsmith.errors import ConfigError
from certsmith.manager import IssueResult, Manager, RenewOutcome
from certsmith.settings import CertificateRequest, ChallengeSettings, resolve_directory
from certsmith.storage import open_store


def _manager(state_dir: str | Path | None, directory: str | None, ca_bundle: str | Path | None,
             env: Mapping[str, str] | None, store: str | None = None) -> Manager:
    """The manager on ``store`` (a redis:// URL or a directory) or else ``state_dir`` (default: the usual one)."""
    variables = dict(os.environ if env is None else env)
    if store is not None and state_dir is not None:
        raise ConfigError("give state_dir or store, not both")
    chosen = store if store is not None else (Path(state_dir) if state_dir else None)
    return Manager(open_store(chosen, env=variables), resolve_directory(directory), ca_bundle=ca_bundle, env=env)


def issue(
    names: Sequence[str],
    *,
    state_dir: str | Path | None = None,
    directory: str | None = None,
    ca_bundle: str | Path | None = None,
    email: Sequence[str] = (),
    agree_tos: bool = False,
    challenge: ChallengeSettings | None = None,
    key_type: str = DEFAULT_KEY_TYPE,
    lineage: str | None = None,
    preferred_chain: str | None = None,
    profile: str | None = None,
    deploy_hook: str | None = None,
    deploy: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    force: bool = False,
    store: str | None = None,
) -> IssueResult:
    """Obtain a certificate for ``names`` and store it; registers an account when
    ``email``/``agree_tos`` are given and none exists. ``challenge`` defaults to
    http-01 on port 80; ``env`` supplies DNS provider variables (default: os.environ).
    A valid, not yet due certificate for the same request is kept (``result.issued``
    is false) unless ``force`` is true. ``deploy`` lists deploy targets in ``--deploy``
    syntax (``"files:fullchain=/etc/tls/a.pem,key=/etc/tls/a.key"``); their outcomes are in
    ``result.deployed`` and a failure in ``result.deploy_error``. ``store`` chooses a shared
    store (``redis://...``; its key from ``CERTSMITH_STORE_KEY`` in ``env``) instead of ``state_dir``.
    """
    from certsmith.deploy.base import parse_deploy_spec

    request = CertificateRequest(
        names=tuple(names),
        lineage=lineage,
        challenge=challenge or ChallengeSettings(),
        key_type=key_type,
        preferred_chain=preferred_chain,
        profile=profile,
        deploy_hook=deploy_hook,
        deploy=tuple(parse_deploy_spec(text) for text in deploy),
    )

    async def run() -> IssueResult:
        async with _manager(state_dir, directory, ca_bundle, env, store) as manager:
            await manager.preflight(request)  # a bad target or setting costs no account and no order
            await manager.accounts.ensure(manager.directory_url, manager.ca_bundle, email=email, agree_tos=agree_tos)
            return await manager.issue(request, force=force)

    return asyncio.run(run())


def renew(
    names: Sequence[str] = (),
    *,
    force: bool = False,
    state_dir: str | Path | None = None,
    directory: str | None = None,
    ca_bundle: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    store: str | None = None,
) -> list[RenewOutcome]:
    """Renew due lineages (or ``names``), each at the CA that issued it; one outcome per lineage.

    ``directory`` narrows the set to the lineages of that CA; ``store`` as for :func:`issue`.
    """

    async def run() -> list[RenewOutcome]:
        async with _manager(state_dir, directory, ca_bundle, env, store) as manager:
            narrowed = manager.directory_url if directory else None
            return await manager.renew(names, force=force, directory_url=narrowed)

    return asyncio.run(run())
