"""The shared machinery of DNS providers that speak a provider's HTTP API.

Every cloud provider (Alidns, Cloudflare, DNSPod, Huawei Cloud, acme-dns) needs the same
parts, and these are they:

* :class:`RetryPolicy` -- attempts per call and an exponential back-off with jitter,
  capped, that honours a server's ``Retry-After``;
* :class:`LookupCache` -- a look-up (zones) asked once per key;
* :class:`RecordLocks` -- one :class:`asyncio.Lock` per record (or per name), so a
  ``present`` and a ``cleanup`` of one record never interleave;
* :class:`ApiProvider` -- the config, the retry policy, and the ``repr`` and
  ``propagation_timeout`` every provider has (alone, for an SDK-based provider);
* :class:`HttpApiProvider` -- adds one :class:`httpx.AsyncClient`, ``aclose`` and
  :meth:`~HttpApiProvider.send_with_retries`, the one retry loop (transport error:
  back off; an answer the provider calls :class:`Retryable`: back off; anything else:
  the provider's result or its error);
* :class:`RecordApiProvider` -- for APIs with a record id: ``present`` and ``cleanup``
  under the record's lock, the map of the records this instance created (so
  ``cleanup`` deletes exactly those), and :meth:`~RecordApiProvider.adopt` for an
  identical record that already exists;
* :class:`AccountZonesProvider` -- for APIs that list the account's domains: the list
  read once, and the zone holding a name picked by longest suffix (:func:`select_zone`,
  in A-label form).

A new HTTP-API provider subclasses one of these classes and writes only what is its
own: signing, the calls, the error messages. httpx and asyncio are imported inside the
methods, so reading a provider's ``info`` (``certsmith dns list``) stays light.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, TypedDict, TypeVar, Unpack

from certsmith.dns.base import C as C  # the config type of a provider; its subclasses import it from here
from certsmith.dns.base import ConfiguredProvider
from certsmith.errors import DnsError

if TYPE_CHECKING:
    import asyncio

    import httpx


T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
V = TypeVar("V")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one API call is tried.

    The ``n``-th back-off waits ``retry_delay * 2**(n-1)`` seconds, capped at
    ``max_retry_delay``, times a random factor from 0.5 to 1 (so clients that failed
    together do not retry together); a server's ``Retry-After`` (capped the same way)
    is waited at least.
    """

    max_attempts: int = 6
    retry_delay: float = 0.5
    max_retry_delay: float = 8.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_attempts", max(1, self.max_attempts))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay: float = min(self.max_retry_delay, self.retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_delay))
        return delay

    async def backoff(self, attempt: int, retry_after: float | None = None) -> None:
        """Sleep :meth:`delay` seconds."""
        import asyncio

        await asyncio.sleep(self.delay(attempt, retry_after))


class HttpOptions(TypedDict, total=False):
    """The keyword arguments every HTTP-API provider takes after its config.

    ``max_attempts`` per call; back-off from ``retry_delay`` doubling up to
    ``max_retry_delay`` seconds (see :class:`RetryPolicy`); ``timeout`` of one request
    in seconds; an httpx ``transport`` (tests). Left out, the provider's defaults hold.
    """

    max_attempts: int
    retry_delay: float
    max_retry_delay: float
    timeout: float
    transport: httpx.AsyncBaseTransport | None


@dataclass(frozen=True)
class Retryable:
    """A classifier's verdict on an answer worth another attempt (throttling, 5xx).

    ``error`` is raised when no attempt is left; ``after`` is the server's
    ``Retry-After`` in seconds, ``reason`` a word for the debug log (the error code).
    """

    error: Exception
    after: float | None = None
    reason: str = ""


class RecordLocks(Generic[K]):
    """One :class:`asyncio.Lock` per key, made on first use (from one event loop)."""

    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}

    def __call__(self, key: K) -> asyncio.Lock:
        import asyncio

        return self._locks.setdefault(key, asyncio.Lock())


class LookupCache(Generic[K, V]):
    """Answers of a look-up (the account's zones, a zone's settings), asked once per key.

    One lock for all keys: a second caller waits for the first one's answer instead of
    asking the API again.
    """

    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._lock: asyncio.Lock | None = None

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        """The answer for ``key``, from ``lookup()`` the first time."""
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if key not in self._values:
                self._values[key] = await lookup()
            return self._values[key]

    def known(self, key: K) -> V | None:
        """The answer for ``key`` if it was looked up already (for messages), else ``None``."""
        return self._values.get(key)


def endpoint_root(endpoint: str) -> tuple[str, str]:
    """The URL of ``endpoint``'s root path and its host (``host[:port]``, as signatures want it)."""
    import httpx

    url = httpx.URL(endpoint)
    return str(url.copy_with(path="/", query=None, fragment=None)), url.netloc.decode("ascii")


def normalise(fqdn: str) -> str:
    """``fqdn`` in lower case with exactly one trailing dot."""
    return fqdn.strip().lower().rstrip(".") + "."


class ApiProvider(ConfiguredProvider[C]):
    """What every provider of a remote API has: its config, a retry policy, ``repr`` and ``propagation_timeout``.

    A subclass sets ``info``, keeps its own ``__init__`` signature (its defaults are
    part of its API) and passes the settings on. Subclass :class:`HttpApiProvider`
    for an HTTP API; this class alone serves a provider that talks through an SDK
    (``route53``).
    """

    def __init__(self, config: C, *, retry: RetryPolicy) -> None:
        self.config = config
        self._retry = retry
        self._log = logging.getLogger(type(self).__module__)


class HttpApiProvider(ApiProvider[C]):
    """Base of the providers that call an HTTP API through one :class:`httpx.AsyncClient`.

    The constructor takes the config and :class:`HttpOptions`; a provider changes the
    defaults with ``default_retry`` and :meth:`_default_timeout`, and extends
    ``__init__`` only for what is its own (a clock, caches). Every API call goes
    through :meth:`send_with_retries`. Use one instance from one event loop.
    """

    #: The retry settings a provider uses where the caller gives none.
    default_retry: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(self, config: C, **options: Unpack[HttpOptions]) -> None:
        import httpx  # here, not at the top: reading `info` (certsmith dns list) must not need httpx

        default = self.default_retry
        retry = RetryPolicy(
            options.get("max_attempts", default.max_attempts),
            options.get("retry_delay", default.retry_delay),
            options.get("max_retry_delay", default.max_retry_delay),
        )
        super().__init__(config, retry=retry)
        timeout = options.get("timeout", self._default_timeout())
        from certsmith._httpx_bridge import transport_for

        transport = options.get("transport") or transport_for(httpx.create_ssl_context())
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    def _default_timeout(self) -> float:
        """Seconds one request may take unless ``timeout`` is given (a provider may read its config)."""
        return 30.0

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def send_with_retries(
        self,
        build: Callable[[], httpx.Request],
        classify: Callable[[httpx.Response], T | Retryable],
        *,
        unreachable: Callable[[httpx.TransportError], Exception],
        label: str,
    ) -> T:
        """:func:`send_with_retries` with this provider's client, retry policy and log."""
        return await send_with_retries(
            self._http, self._retry, build, classify, unreachable=unreachable, label=f"{self.info.name}: {label}",
            log=self._log,
        )


async def send_with_retries(
    http: httpx.AsyncClient,
    retry: RetryPolicy,
    build: Callable[[], httpx.Request],
    classify: Callable[[httpx.Response], T | Retryable],
    *,
    unreachable: Callable[[httpx.TransportError], Exception],
    label: str,
    log: logging.Logger,
) -> T:
    """Send one API call, bounded by ``retry``, and return what ``classify`` makes of the answer.

    ``build`` makes the request afresh for every attempt (a new signature, nonce and
    timestamp). ``classify`` returns the result, returns :class:`Retryable` for an
    answer worth another attempt, or raises the caller's error. A transport error is
    retried too; on the last attempt it becomes ``unreachable(exc)``. ``label`` names
    the call in the debug log. Also used outside DNS (the Alibaba Cloud deploy targets).
    """
    import httpx

    attempt = 0
    while True:
        attempt += 1
        last = attempt >= retry.max_attempts
        try:
            response = await http.send(build())
        except httpx.TransportError as exc:
            if last:
                raise unreachable(exc) from None
            log.debug("%s attempt %d: %s", label, attempt, type(exc).__name__)
            await retry.backoff(attempt)
            continue
        outcome = classify(response)
        if not isinstance(outcome, Retryable):
            return outcome
        if last:
            raise outcome.error
        log.debug("%s attempt %d: HTTP %d %s", label, attempt, response.status_code, outcome.reason)
        await retry.backoff(attempt, outcome.after)


class RecordApiProvider(HttpApiProvider[C], Generic[C, R]):
    """Base of the providers whose API creates one TXT record and names it (a record id).

    A subclass writes ``_create_record(fqdn, value)``, which returns what it needs to
    delete the record later (an id, or the zone and an id), and
    ``_delete_record(fqdn, value, created)``, which treats "already gone" as done.
    This class runs both under the record's lock and keeps the map of created
    records, so ``cleanup`` deletes exactly what ``present`` created or adopted.
    """

    def __init__(self, config: C, **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, **options)
        self._created: dict[tuple[str, str], R] = {}
        self._lock_for: RecordLocks[tuple[str, str]] = RecordLocks()

    async def present(self, fqdn: str, value: str) -> None:
        """Create the TXT record, or adopt an identical one that already exists."""
        key = (normalise(fqdn), value)
        async with self._lock_for(key):
            self._created[key] = await self._create_record(key[0], value)

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Delete the record ``present`` created or adopted for (``fqdn``, ``value``), if any."""
        key = (normalise(fqdn), value)
        async with self._lock_for(key):
            created = self._created.get(key)
            if created is None:
                self._log.debug("%s: no record of ours for TXT %s = %s; nothing to delete", self.info.name, *key)
                return
            await self._delete_record(key[0], value, created)
            del self._created[key]

    async def _create_record(self, fqdn: str, value: str) -> R:
        raise NotImplementedError

    async def _delete_record(self, fqdn: str, value: str, created: R) -> None:
        raise NotImplementedError

    async def adopt(self, find: Awaitable[T | None], missing: Callable[[], Exception]) -> T:
        """The id of the identical record the API says exists (``find``); ``missing()`` when it is not listed.

        Call it where creating the record failed as a duplicate.
        """
        found = await find
        if found is None:
            raise missing() from None
        self._log.info("%s: adopted the existing identical record %s", self.info.name, found)
        return found


# --- providers that find the zone among the account's domains ------------------------------


@dataclass(frozen=True)
class Zone:
    """A domain of the account: ``name`` as the API reports it, ``ascii`` for matching."""

    name: str
    ascii: str


def to_ascii(name: str) -> str:
    """Lower-case A-label form of ``name`` without the trailing dot.

    Only non-ASCII labels are converted (IDNA 2008 with UTS 46 mapping), so labels
    such as ``_acme-challenge`` that IDNA forbids pass through untouched.
    """
    labels = name.strip().rstrip(".").split(".")
    out = []
    for label in labels:
        if label.isascii():
            out.append(label.lower())
            continue
        import idna  # only for internationalised names; keeps `certsmith dns list` light

        try:
            out.append(idna.encode(label, uts46=True).decode("ascii"))
        except idna.IDNAError as exc:
            raise DnsError(f"{name!r} is not a valid internationalised domain name: {exc}") from None
    return ".".join(out)


def select_zone(fqdn: str, zones: list[Zone]) -> tuple[Zone, str] | None:
    """The zone with the longest suffix match for ``fqdn`` and the RR left of it.

    The RR may span several labels (``_acme-challenge.www``) and is ``@`` at the apex.
    Matching is on whole labels, in A-label form, case-insensitively.
    """
    name = to_ascii(fqdn)
    best: Zone | None = None
    for zone in zones:
        if (name == zone.ascii or name.endswith("." + zone.ascii)) and (
            best is None or len(zone.ascii) > len(best.ascii)
        ):
            best = zone
    if best is None:
        return None
    rr = name[: -len(best.ascii)].rstrip(".") or "@"
    return best, rr


def zone_list(zones: list[str], service: str, *, advice: str = "") -> str:
    """The account's domains for an error message (the first 20, sorted), or how to add one when it has none."""
    if not zones:
        return f"the account has no domains in {service}; add the zone there first"
    shown = ", ".join(sorted(zones)[:20])
    more = f" and {len(zones) - 20} more" if len(zones) > 20 else ""
    return f"the account has: {shown}{more}{advice}"


class AccountZonesProvider(RecordApiProvider[C, R]):
    """Base of the providers that list every domain of the account once and pick the one holding a name.

    A subclass writes ``_list_zones()`` (all pages of the API's domain list) and
    ``_no_zone(fqdn, zones)``, the error for a name in none of them.
    """

    def __init__(self, config: C, **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, **options)
        self._zones: LookupCache[None, list[Zone]] = LookupCache()

    async def zones(self) -> list[Zone]:
        """Every domain of the account (all pages of the API's list), cached."""
        return list(await self._zones.get(None, self._list_zones))

    async def _list_zones(self) -> list[Zone]:
        raise NotImplementedError

    def _no_zone(self, fqdn: str, zones: list[Zone]) -> DnsError:
        raise NotImplementedError

    async def _locate(self, fqdn: str) -> tuple[Zone, str]:
        """The zone holding ``fqdn`` and the name left of it (:func:`select_zone`), else ``_no_zone``'s error."""
        zones = await self.zones()
        found = select_zone(fqdn, zones)
        if found is None:
            raise self._no_zone(fqdn, zones)
        return found
