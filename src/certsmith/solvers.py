"""One challenge solver per distinct setting, shared by every order that uses it.

Issuing many certificates with the same settings then runs one http-01 server, one
tls-alpn-01 responder and one DNS provider session, and dns-01 orders running at the
same time share one propagation wait per order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certsmith.challenges.base import ArtefactJournal, ChallengeSolver
from certsmith.errors import ConfigError
from certsmith.settings import ChallengeSettings

if TYPE_CHECKING:
    from certsmith.challenges.http01 import AnswerBoard


def _key(settings: ChallengeSettings) -> tuple[Any, ...]:
    if settings.challenge == "http-01":
        return ("http-01", settings.http_port, settings.http_host, settings.webroot, settings.http_shared)
    if settings.challenge == "tls-alpn-01":
        return ("tls-alpn-01", settings.tls_port, settings.tls_host)
    if settings.challenge == "dns-persist-01":
        return ("dns-persist-01",)
    return ("dns-01", settings.dns_provider, settings.dns_resolvers, settings.propagation_timeout, settings.dns_env)


def make_solver(
    settings: ChallengeSettings,
    env: Mapping[str, str],
    journal: ArtefactJournal | None = None,
    board: AnswerBoard | None = None,
) -> ChallengeSolver:
    """A new solver for ``settings``; DNS provider variables come from ``env``, then the lineage's ``dns_env``.

    ``journal`` notes the DNS records and web-root files the solver creates (see :class:`ArtefactJournal`);
    ``board`` (the store) is where http-01 answers are published when ``settings.http_shared`` asks for it.
    """
    if settings.challenge == "http-01":
        from certsmith.challenges.http01 import Http01Solver

        webroot = Path(settings.webroot) if settings.webroot else None
        if settings.http_shared and board is None:
            raise ConfigError("http_shared needs a store to publish the http-01 answers in")
        return Http01Solver(
            port=settings.http_port, host=settings.http_host, webroot=webroot, journal=journal,
            board=board if settings.http_shared else None,
        )
    if settings.challenge == "tls-alpn-01":
        from certsmith.challenges.tlsalpn01 import TlsAlpn01Solver

        return TlsAlpn01Solver(port=settings.tls_port, host=settings.tls_host)
    if settings.challenge == "dns-persist-01":
        from certsmith.challenges.dnspersist01 import DnsPersist01Solver

        return DnsPersist01Solver()
    from certsmith.challenges.dns01 import Dns01Solver
    from certsmith.dns.base import load_provider
    from certsmith.dns.zone import Resolver

    assert settings.dns_provider is not None
    provider = load_provider(settings.dns_provider, {**dict(settings.dns_env), **env})
    resolver = Resolver.from_cli(settings.dns_resolvers)
    return Dns01Solver(provider, resolver, propagation_timeout=settings.propagation_timeout, journal=journal)


class SolverPool:
    """Solvers by setting, created on first use and closed together."""

    def __init__(
        self,
        env: Mapping[str, str],
        journal: Callable[[ChallengeSettings], ArtefactJournal] | None = None,
        board: AnswerBoard | None = None,
    ) -> None:
        self.env = env
        self.board = board
        self._journal = journal
        self._solvers: dict[tuple[Any, ...], ChallengeSolver] = {}
        self._lock = asyncio.Lock()

    async def get(self, settings: ChallengeSettings) -> ChallengeSolver:
        async with self._lock:
            key = _key(settings)
            solver = self._solvers.get(key)
            if solver is None:
                solver = make_solver(
                    settings, self.env, self._journal(settings) if self._journal else None, self.board
                )
                self._solvers[key] = solver
            return solver

    async def aclose(self) -> None:
        solvers, self._solvers = list(self._solvers.values()), {}
        await asyncio.gather(*(solver.aclose() for solver in solvers), return_exceptions=True)
