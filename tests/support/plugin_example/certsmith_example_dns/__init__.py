"""An example third-party certsmith DNS provider: TXT records in pebble-challtestsrv.

It follows the recipe of :mod:`certsmith.dns.base` like a built-in -- ``ENV``, a frozen
config with ``from_env``, ``info``, ``present``/``cleanup``/``aclose`` -- and is found by
certsmith only through its ``certsmith.dns_providers`` entry point (see pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from certsmith.dns.base import EnvVar, ProviderInfo, optional_seconds, read_env

NAME = "example-challtestsrv"
ENV = (
    EnvVar(
        "EXAMPLE_CHALLTESTSRV_URL", "Management URL of pebble-challtestsrv, e.g. http://127.0.0.1:8055", required=True
    ),
    EnvVar("EXAMPLE_CHALLTESTSRV_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
)


@dataclass(frozen=True)
class ChallTestSrvConfig:
    url: str
    propagation_timeout: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        values = read_env(env, ENV, NAME)
        return cls(
            url=values["EXAMPLE_CHALLTESTSRV_URL"].rstrip("/"),
            propagation_timeout=optional_seconds(values, "EXAMPLE_CHALLTESTSRV_PROPAGATION_TIMEOUT"),
        )


class ChallTestSrvProvider:
    """Serves the TXT values it is given from pebble-challtestsrv (all values per name are ours)."""

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="pebble-challtestsrv (example plug-in)",
        description="An example plug-in from another package; serves TXT records from pebble-challtestsrv.",
        env=ENV,
        example=f"EXAMPLE_CHALLTESTSRV_URL=http://127.0.0.1:8055 certsmith issue -d example.com --dns {NAME}",
        default_propagation_timeout=30.0,
    )

    def __init__(self, config: ChallTestSrvConfig) -> None:
        import asyncio

        import httpx

        self.config = config
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=10)
        self._values: dict[str, list[str]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(ChallTestSrvConfig.from_env(env))

    @property
    def propagation_timeout(self) -> float:
        return self.config.propagation_timeout or self.info.default_propagation_timeout

    async def present(self, fqdn: str, value: str) -> None:
        values = self._values.setdefault(fqdn, [])
        if value not in values:
            values.append(value)
        await self._publish(fqdn)

    async def cleanup(self, fqdn: str, value: str) -> None:
        values = self._values.get(fqdn, [])
        if value in values:
            values.remove(value)
            await self._publish(fqdn)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _publish(self, fqdn: str) -> None:
        async with self._lock:  # one clear-and-set at a time, so concurrent values at a name all stay
            await self._publish_now(fqdn)

    async def _publish_now(self, fqdn: str) -> None:
        (await self._http.post(self.config.url + "/clear-txt", json={"host": fqdn})).raise_for_status()
        for value in list(self._values.get(fqdn, [])):
            response = await self._http.post(self.config.url + "/set-txt", json={"host": fqdn, "value": value})
            response.raise_for_status()
