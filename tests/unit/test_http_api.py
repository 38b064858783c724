"""The shared base of the HTTP-API DNS providers: retry policy, retry loop, record bookkeeping.

The providers' emulator tests cover the base end to end; these pin the rules they share.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import httpx
import pytest

from certsmith.dns.base import ProviderInfo
from certsmith.dns.http_api import LookupCache, RecordApiProvider, Retryable, RetryPolicy


@dataclass(frozen=True)
class _Config:
    propagation_timeout: float | None = None


class _Provider(RecordApiProvider[_Config, str]):
    """A record API on a MockTransport: POST creates (id = value), DELETE deletes."""

    info: ClassVar[ProviderInfo] = ProviderInfo(name="fake", title="Fake", description="", env=())
    default_retry = RetryPolicy(max_attempts=3, retry_delay=0.001, max_retry_delay=0.002)

    def __init__(self, handler: httpx.MockTransport) -> None:
        super().__init__(_Config(), transport=handler)
        self.deleted: list[str] = []

    async def call(self, method: str, path: str) -> str:
        def classify(response: httpx.Response) -> str | Retryable:
            if response.status_code == 200:
                return response.text
            error = RuntimeError(f"HTTP {response.status_code}")
            if response.status_code >= 500:
                return Retryable(error, reason=str(response.status_code))
            raise error

        return await self.send_with_retries(
            lambda: self._http.build_request(method, "http://api.test" + path),
            classify,
            unreachable=lambda exc: RuntimeError(f"unreachable: {type(exc).__name__}"),
            label=path,
        )

    async def _create_record(self, fqdn: str, value: str) -> str:
        return await self.call("POST", f"/{fqdn}{value}")

    async def _delete_record(self, fqdn: str, value: str, created: str) -> None:
        self.deleted.append(await self.call("DELETE", f"/{created}"))


def _serving(statuses: list[int]) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        status = statuses.pop(0) if statuses else 200
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, text=request.url.path.lstrip("/"))

    return httpx.MockTransport(handler), seen


def test_5xx_and_transport_errors_are_retried_then_the_answer_is_classified() -> None:
    transport, seen = _serving([503, 0])
    provider = _Provider(transport)
    assert asyncio.run(provider.call("GET", "/x")) == "x"
    assert seen == ["GET /x"] * 3


def test_a_retryable_answer_on_the_last_attempt_raises_its_error() -> None:
    transport, seen = _serving([503, 502, 500, 200])
    with pytest.raises(RuntimeError, match=r"^HTTP 500$"):
        asyncio.run(_Provider(transport).call("GET", "/x"))
    assert len(seen) == 3


def test_a_transport_error_on_the_last_attempt_is_the_unreachable_error() -> None:
    transport, _ = _serving([0, 0, 0])
    with pytest.raises(RuntimeError, match=r"^unreachable: ConnectError$"):
        asyncio.run(_Provider(transport).call("GET", "/x"))


def test_a_final_error_is_not_retried() -> None:
    transport, seen = _serving([403, 200])
    with pytest.raises(RuntimeError, match=r"^HTTP 403$"):
        asyncio.run(_Provider(transport).call("GET", "/x"))
    assert len(seen) == 1


def test_cleanup_deletes_exactly_what_present_created_once() -> None:
    transport, _ = _serving([])
    provider = _Provider(transport)

    async def scenario() -> None:
        await provider.present("A.Example.com", "v1")
        await provider.cleanup("a.example.com.", "v2")  # never presented: nothing to delete
        await provider.cleanup("a.example.com.", "v1")
        await provider.cleanup("a.example.com.", "v1")  # already cleaned up
        await provider.aclose()

    asyncio.run(scenario())
    assert provider.deleted == ["a.example.com.v1"]


def test_back_off_is_capped_jittered_and_waits_at_least_retry_after() -> None:
    policy = RetryPolicy(max_attempts=0, retry_delay=1.0, max_retry_delay=4.0)
    assert policy.max_attempts == 1
    assert all(0.5 <= policy.delay(1) <= 1.0 for _ in range(50))
    assert all(2.0 <= policy.delay(9) <= 4.0 for _ in range(50))
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=600.0) == 4.0  # capped


def test_lookup_cache_asks_once_per_key_even_when_asked_concurrently() -> None:
    cache: LookupCache[str, int] = LookupCache()
    calls: list[str] = []

    async def lookup(key: str) -> int:
        calls.append(key)
        await asyncio.sleep(0.01)
        return len(calls)

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(cache.get(k, lambda k=k: lookup(k)) for k in ("a", "a", "b", "a"))))

    assert asyncio.run(scenario()) == [1, 1, 2, 1]
    assert calls == ["a", "b"] and cache.known("a") == 1 and cache.known("c") is None
