"""An asynchronous RFC 8555 client on one HTTP/1.1 connection pool (:mod:`certsmith._http11`).

One :class:`AcmeClient` holds one account key and serves any number of concurrent
orders. Nonces come from a pool fed by every response's ``Replay-Nonce``; a fresh
one is fetched only when the pool is empty. ``badNonce`` is retried (bounded) with
the nonce from the error response, ``Retry-After`` is honoured on polling and on
``rateLimited``/503, and every wait is capped.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import random
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certsmith import _http11
from certsmith._http import json_object
from certsmith._http import parse_retry_after as parse_retry_after  # re-exported: part of the client API
from certsmith._http11 import Headers, HttpClient, Reply
from certsmith._redact import add_secret
from certsmith._text import clean
from certsmith._version import __version__
from certsmith.acme import wire
from certsmith.acme.errors import (
    AlreadyRevoked,
    BadNonce,
    CertificateVerifyFailed,
    IncompleteExternalAccountBinding,
    InvalidProfile,
    Malformed,
    NotADirectory,
    OrderFailed,
    OrderNotReady,
    PollTimeout,
    Problem,
    ProblemError,
    ProfileNotOffered,
    RateLimited,
    RequestTimeout,
    ServerInternal,
    TransportError,
    UnexpectedResponse,
    problem_error,
)
from certsmith.acme.resources import (
    Account,
    Authorization,
    AuthorizationStatus,
    CertificateChain,
    Challenge,
    ChallengeStatus,
    Directory,
    Order,
    OrderStatus,
    RenewalInfo,
)
from certsmith.crypto import Identifier, issuer_common_name, split_pem_chain
from certsmith.errors import ConfigError
from certsmith.jose import PrivateKey, b64u_encode, eab_jws, jws, public_jwk

if TYPE_CHECKING:
    import httpx

    from certsmith._httpx_bridge import HttpxClient

log = logging.getLogger("certsmith.acme")

JOSE_JSON = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
_NONCE = re.compile(r"^[A-Za-z0-9_-]+$")
_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")

_DIRECTORY_RESOURCES = ("new_nonce", "new_account", "new_order", "revoke_cert", "key_change", "new_authz")


class DirectoryCache(Protocol):
    """Where a client keeps directory documents between processes (e.g. ``FileStore.directory_cache()``).

    ``get`` returns the JSON document stored for ``url`` while it is fresh, else ``None``;
    ``put`` stores one just fetched; ``drop`` forgets one that proved stale. None of them
    raises: a cache that fails only costs a GET.
    """

    def get(self, url: str) -> Any | None: ...

    def put(self, url: str, document: Any) -> None: ...

    def drop(self, url: str) -> None: ...


def parse_links(headers: Headers, base_url: str) -> list[tuple[str, str]]:
    """Every ``Link`` header entry as ``(absolute url, rel)``; several may share a rel."""
    links: list[tuple[str, str]] = []
    for header in headers.get_list("link"):
        for match in _LINK.finditer(header):
            target, params = match.group(1), match.group(2)
            rel_match = re.search(r'rel\s*=\s*"?([^";]+)"?', params)
            if rel_match:
                for rel in rel_match.group(1).split():
                    links.append((urljoin(base_url, target), rel))
    return links


@dataclass(frozen=True)
class PollPolicy:
    """How to poll: the first wait, its growth, and the cap applied to ``Retry-After`` too.

    The first wait is short because a CA often has the answer within milliseconds (Pebble
    issues a few milliseconds after ``finalize``); tripling from 10 ms asks a CA that takes
    a second as often as doubling from 50 ms did (5 times), and sees the answer sooner.
    """

    initial: float = 0.01
    factor: float = 3.0
    maximum: float = 5.0
    retry_after_cap: float = 60.0

    retry_after_floor: float = 1.0

    def next_wait(self, previous: float, retry_after: float | None) -> float:
        """The next pause: the CA's ``Retry-After`` (at least ``retry_after_floor``, so a server saying
        ``0`` is not asked many times a second, at most ``retry_after_cap``), else the growing wait."""
        if retry_after is not None:
            return min(max(retry_after, self.retry_after_floor), self.retry_after_cap)
        return min(previous * self.factor, self.maximum)


@dataclass(frozen=True)
class RetryPolicy:
    """How requests ride out transient faults: resets, refused connections, time-outs, 5xx.

    A request is tried at most ``attempts`` times and never longer than ``budget`` seconds
    in all; between tries the wait grows from ``base`` (doubling, full jitter, at most
    ``cap``) or is the CA's ``Retry-After`` when that is within ``retry_after_cap``.
    """

    attempts: int = 4
    base: float = 0.5
    cap: float = 8.0
    budget: float = 120.0
    retry_after_cap: float = 60.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """The pause before try number ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return max(retry_after, 0.0)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    if ca_bundle is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA bundle {ca_bundle}: {exc}") from None


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _transport_error(
    exc: _http11.HttpError, method: str, url: str, ca_bundle: str | None, timeout: float | None = None
) -> TransportError:
    """The fact behind an HTTP failure, named: untrusted certificate, TLS failure, time-out, reset..."""
    verify = _find_cause(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        reason = getattr(verify, "verify_message", None) or str(verify)
        code = getattr(verify, "verify_code", None)
        return CertificateVerifyFailed(
            method=method,
            url=url,
            reason=reason,
            verify_code=code if isinstance(code, int) else None,
            ca_bundle=ca_bundle,
        )
    host = urlsplit(url).netloc
    if isinstance(exc, _http11.HttpTimeout):
        phase = {
            _http11.ConnectTimeout: "connecting",
            _http11.ReadTimeout: "waiting for the answer",
            _http11.WriteTimeout: "sending the request",
            _http11.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "waiting")
        after = f" after {timeout:g}s" if timeout else ""
        return RequestTimeout(f"{method} {url} timed out{after} {phase}", method=method, url=url)
    return TransportError(f"cannot reach the CA at {host}: {_describe(exc)}", method=method, url=url)


def _describe(exc: _http11.HttpError) -> str:
    """What went wrong on the wire, in words; never an empty string."""
    if isinstance(exc, _http11.ProxyError):
        proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY") if os.environ.get(k)), "")
        where = f" {urlsplit(proxy).netloc.rpartition('@')[2]}" if proxy else ""  # never its user and password
        return f"the proxy{where} failed: {exc or 'no reason given'}"
    if _find_cause(exc, ConnectionResetError) is not None or "reset" in str(exc).lower():
        return "the connection was reset"
    if _find_cause(exc, ConnectionRefusedError) is not None or "refused" in str(exc).lower():
        return "connection refused"
    tls = _find_cause(exc, ssl.SSLError)
    if tls is not None:
        reason = getattr(tls, "reason", None) or str(tls) or type(tls).__name__
        return f"the TLS handshake failed ({reason})"
    if isinstance(exc, _http11.RemoteProtocolError):
        return f"the server closed the connection without a complete answer ({exc or 'no reason'})"
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if not text and cause is not None:
        text = str(cause) or type(cause).__name__
    return text or type(exc).__name__


class AcmeClient:
    """RFC 8555 operations for one account key against one directory URL.

    ``account_url`` is the ``kid``; it is set by :meth:`register`/:meth:`lookup_account`
    or given when the account is known. Use as an async context manager, or call
    :meth:`aclose`. Pass ``http`` to share an ``httpx.AsyncClient`` between clients
    (``ca_bundle`` is then the caller's business and ignored); without it the client sends
    through certsmith's own HTTP/1.1 pool, or through httpx when a proxy variable is set.

    Every request and response is logged on ``certsmith.wire`` at DEBUG, with key
    material shortened and registered secrets masked (see :mod:`certsmith.acme.wire`).
    """

    def __init__(
        self,
        directory_url: str,
        account_key: PrivateKey,
        *,
        account_url: str | None = None,
        ca_bundle: Path | str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_nonce_retries: int = 100,
        max_server_retries: int = 3,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        directory_cache: DirectoryCache | None = None,
    ) -> None:
        if not directory_url.startswith("https://"):
            raise ConfigError(f"the ACME directory must be an https:// URL, not {directory_url!r}")
        self.directory_url = directory_url
        self.account_key = account_key
        self.account_url = account_url
        self.ca_bundle = str(ca_bundle) if ca_bundle is not None and http is None else None
        self._http: HttpClient | HttpxClient
        if http is not None:
            from certsmith._httpx_bridge import HttpxClient

            self._http = HttpxClient(http, own=False)
        else:
            context = _ssl_context(self.ca_bundle)
            headers = {"User-Agent": f"certsmith/{__version__}", "Accept-Language": "en"}
            if _http11.proxy_configured():
                from certsmith._httpx_bridge import HttpxClient

                self._http = HttpxClient.create(context, timeout=timeout, headers=headers)
            else:
                self._http = HttpClient(context, timeout=timeout, headers=headers)
        self._directory: Directory | None = None
        self._directory_lock = asyncio.Lock()
        self._directory_cache = directory_cache
        self._directory_cached = False  # True while self._directory came from the cache, unconfirmed
        self._nonces: deque[str] = deque(maxlen=64)
        # Callers waiting for a response in flight to bring a nonce, first come first served.
        self._nonce_waiters: deque[asyncio.Future[None]] = deque()
        self._in_flight = 0
        self.max_nonce_retries = max_nonce_retries
        self.max_server_retries = max_server_retries
        self.poll = poll or PollPolicy()
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._sleep = sleep
        self.request_count = 0

    async def __aenter__(self) -> AcmeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport -------------------------------------------------------------------

    async def _send(
        self, method: str, url: str, *, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        if not url.startswith("https://"):
            # every URL after the directory's comes from the CA: a file:// or plain http:// one is refused
            raise UnexpectedResponse(f"the CA pointed to {clean(url, 200)!r}, which is not an https:// URL")
        self.request_count += 1
        number = self.request_count
        on_wire = wire.log.isEnabledFor(logging.DEBUG)
        if on_wire:
            wire.log_request(number, method, url, content)
        self._in_flight += 1
        deadline = self.timeout * EXCHANGE_DEADLINE_FACTOR
        try:
            exchange = self._http.request(method, url, content=content, headers=headers, limit=MAX_RESPONSE_BYTES)
            response = await asyncio.wait_for(exchange, deadline)
        except TimeoutError:
            # each read has its own time-out; a CA that trickles its answer byte by byte needs this one
            slow = RequestTimeout(
                f"{method} {url} timed out after {deadline:g}s in all: the answer came too slowly",
                method=method, url=url,
            )
            if on_wire:
                wire.log_failure(number, method, url, slow)
            raise slow from None
        except _http11.BodyTooLarge as exc:
            too_large = UnexpectedResponse(
                f"{method} {url} answered with {exc.declared} bytes; refusing more than {exc.limit}"
                if exc.declared is not None else f"{method} {url} answered with more than {exc.limit} bytes"
            )
            if on_wire:
                wire.log_failure(number, method, url, too_large)
            raise too_large from None
        except _http11.HttpError as exc:
            error = _transport_error(exc, method, url, self.ca_bundle, self.timeout)
            if on_wire:
                wire.log_failure(number, method, url, error)
            raise error from None
        finally:
            self._in_flight -= 1
            self._wake_nonce_waiter()  # runs after the nonce below is pooled: no await in between
        nonce = response.headers.get("replay-nonce")
        if nonce and len(nonce) <= _MAX_NONCE and _NONCE.match(nonce):
            self._nonces.append(nonce)
        if on_wire:
            wire.log_response(number, method, url, response)
        else:
            log.debug("%s %s -> %s", method, url, response.status_code)
        return response

    async def _send_idempotent(self, method: str, url: str) -> Reply:
        """A GET or HEAD, tried again after resets, time-outs and 5xx/429 answers (see :class:`RetryPolicy`)."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, url)
            except TransportError as exc:
                if not await self._pause_before_retry(exc, attempt, started, None):
                    raise self._gave_up(exc, attempt) from None
                continue
            if response.status_code in _RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if await self._pause_before_retry(None, attempt, started, retry_after):
                    continue
            return response

    async def _pause_before_retry(
        self, error: TransportError | None, attempt: int, started: float, retry_after: float | None
    ) -> bool:
        """Sleep before the next try and return ``True``, or ``False`` when the budget is spent."""
        if isinstance(error, CertificateVerifyFailed) or attempt >= self.retry.attempts:
            return False
        if retry_after is not None and retry_after > self.retry.retry_after_cap:
            return False
        wait = self.retry.wait(attempt, retry_after)
        if time.monotonic() - started + wait > self.retry.budget:
            return False
        log.info("%s; trying again in %.1fs", error or "the CA is busy", wait)
        await self._sleep(wait)
        return True

    @staticmethod
    def _gave_up(error: TransportError, attempts: int) -> TransportError:
        if attempts > 1 and not isinstance(error, CertificateVerifyFailed):
            error.args = (f"{error.args[0]} ({attempts} tries)",)
        return error

    async def directory(self, *, confirmed: bool = False) -> Directory:
        """The directory: from the cache when one was given and holds a fresh copy, else a plain GET
        (RFC 8555 §7.1.1), fetched once per client.

        ``confirmed=True`` is for decisions taken on the directory's metadata before
        anything is sent (profiles offered, terms of service, EAB): a copy from the cache
        is then replaced by a fetched one. The resource URLs need no confirmation: a
        request to a URL that moved fetches the directory anew and is retried.
        """
        directory = self._directory
        if directory is not None and not (confirmed and self._directory_cached):
            return directory
        async with self._directory_lock:
            if self._directory is None:
                self._directory = self._cached_directory()
            if self._directory is None or (confirmed and self._directory_cached):
                self._directory = await self._fetch_directory()
        return self._directory

    def _cached_directory(self) -> Directory | None:
        if self._directory_cache is None:
            return None
        document = self._directory_cache.get(self.directory_url)
        if document is None:
            return None
        try:
            directory = Directory.from_json(self.directory_url, document)
        except (NotADirectory, ValueError, TypeError):
            self._directory_cache.drop(self.directory_url)
            return None
        log.debug("directory of %s from the cache", self.directory_url)
        self._directory_cached = True
        return directory

    async def _fetch_directory(self) -> Directory:
        response = await self._send_idempotent("GET", self.directory_url)
        status = response.status_code
        if status != 200:
            raise NotADirectory(self.directory_url, f"GET answered HTTP {status}", status=status)
        try:
            data = response.json()
        except ValueError:
            raise NotADirectory(self.directory_url, "its answer is not JSON", status=status) from None
        directory = Directory.from_json(self.directory_url, data)
        self._directory_cached = False
        if self._directory_cache is not None:
            self._directory_cache.put(self.directory_url, data)
        return directory

    async def _refreshed(self, url: str) -> str | None:
        """After a request to ``url`` failed: when ``url`` came from a cached directory, fetch the
        directory anew and return the resource's URL if it changed (the caller retries once), else ``None``.

        This is how a cached copy heals when the CA moved a resource: the failed request
        costs one GET of the directory and a retry.
        """
        directory = self._directory
        if not self._directory_cached or directory is None:
            return None
        names = [name for name in _DIRECTORY_RESOURCES if getattr(directory, name) == url]
        if not names:
            return None
        async with self._directory_lock:
            if self._directory is directory:
                log.info("%s failed with a cached directory; fetching the directory anew", url)
                if self._directory_cache is not None:
                    self._directory_cache.drop(self.directory_url)
                self._directory = await self._fetch_directory()
        fresh = getattr(self._directory, names[0])
        return fresh if isinstance(fresh, str) and fresh != url else None

    def _wake_nonce_waiter(self) -> None:
        """A response came back: let one waiter look for its nonce (every waiter when none is left in flight).

        Waking one per response instead of all of them keeps a run with hundreds of orders in
        flight linear: each response used to wake every waiting request, all but one of which
        found the pool empty again and went back to sleep.
        """
        while self._nonce_waiters:
            waiter = self._nonce_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if self._in_flight:
                    return

    async def _nonce(self) -> str:
        """A fresh nonce: from the pool, else from a response still in flight, else HEAD newNonce."""
        while not self._nonces and self._in_flight:
            waiter = asyncio.get_running_loop().create_future()
            self._nonce_waiters.append(waiter)
            try:
                async with asyncio.timeout(2.0):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_nonce_waiter()  # woken but leaving: the wake-up goes to the next in line
                if isinstance(exc, TimeoutError):
                    break
                raise
        if self._nonces:
            return self._nonces.pop()
        url = (await self.directory()).new_nonce
        for _ in range(3):
            try:
                response = await self._send_idempotent("HEAD", url)
            except TransportError:
                if (fresh := await self._refreshed(url)) is None:
                    raise
                url = fresh
                continue
            if response.status_code in (200, 204) and self._nonces:
                return self._nonces.pop()
            if response.status_code == 404 and (fresh := await self._refreshed(url)) is not None:
                url = fresh
        raise UnexpectedResponse(f"{url} gave no usable Replay-Nonce")

    async def _post(
        self,
        url: str,
        payload: Any | None,
        *,
        key: PrivateKey | None = None,
        use_jwk: bool = False,
        accept: str | None = None,
    ) -> Reply:
        """A signed POST (``payload=None`` is POST-as-GET) with bounded retries."""
        signing_key = key or self.account_key
        if not use_jwk and self.account_url is None:
            raise ConfigError(
                "no ACME account is known for this key: call register() or lookup_account(), or pass account_url="
            )
        idempotent = payload is None  # POST-as-GET reads; anything else may have been processed
        started = time.monotonic()
        attempt = 0
        nonce_retries = 0
        server_retries = 0
        healed = False
        while True:
            attempt += 1
            nonce = await self._nonce()
            body = jws(signing_key, payload, url=url, nonce=nonce, kid=None if use_jwk else self.account_url)
            headers = {"Content-Type": JOSE_JSON}
            if accept:
                headers["Accept"] = accept
            try:
                response = await self._send("POST", url, content=json.dumps(body).encode(), headers=headers)
            except TransportError as exc:
                if not healed and (fresh := await self._refreshed(url)) is not None:
                    url, healed = fresh, True
                    continue
                if idempotent and await self._pause_before_retry(exc, attempt, started, None):
                    continue
                raise self._gave_up(exc, attempt) from None
            if response.status_code < 400:
                return response
            if response.status_code == 404 and not healed and (fresh := await self._refreshed(url)) is not None:
                url, healed = fresh, True
                continue
            error = self._problem(response, "POST", url)
            if isinstance(error, BadNonce) and nonce_retries < self.max_nonce_retries:
                nonce_retries += 1
                if nonce_retries > 5:  # a CA rejecting nonce after nonce is overloaded: back off, jittered
                    await self._sleep(random.uniform(0, min(0.25, 0.01 * 2 ** (nonce_retries - 5))))
                continue
            retryable = isinstance(error, RateLimited | ServerInternal) or response.status_code in _RETRY_STATUSES
            if retryable and server_retries < self.max_server_retries:
                wait = parse_retry_after(response.headers.get("retry-after"))
                if wait is None:
                    wait = self.retry.wait(server_retries + 1)
                if wait <= self.retry.retry_after_cap:
                    server_retries += 1
                    log.info("%s; retrying in %.1fs", error, wait)
                    await self._sleep(wait)
                    continue
                when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=wait)
                error.args = (f"{error.args[0]}; the CA asks to be retried in {wait:.0f}s, "
                              f"after {when.strftime('%Y-%m-%d %H:%M:%S')} UTC",)
            raise error

    def _problem(self, response: Reply, method: str, url: str) -> ProblemError:
        try:
            data = response.json()
        except ValueError:
            data = {"type": "about:blank", "detail": f"HTTP {response.status_code}: {response.text[:200]}"}
        error = problem_error(
            Problem.from_json(data),
            method=method,
            url=url,
            status=response.status_code,
            links=parse_links(response.headers, url),
        )
        if isinstance(error, RateLimited):
            error.retry_after = parse_retry_after(response.headers.get("retry-after"))
        elif isinstance(error, InvalidProfile) and self._directory is not None:
            error.offered = tuple(sorted(self._directory.profiles))
        return error

    # -- accounts --------------------------------------------------------------------

    async def register(
        self,
        *,
        contact: Sequence[str] = (),
        agree_tos: bool = False,
        eab_kid: str | None = None,
        eab_hmac_key: str | None = None,
        only_existing: bool = False,
    ) -> Account:
        """Create the account, or find it (same key → same account, RFC 8555 §7.3.1)."""
        directory = await self.directory()
        payload: dict[str, Any] = {}
        if only_existing:
            payload["onlyReturnExisting"] = True
        else:
            if contact:
                payload["contact"] = list(contact)
            if agree_tos:
                payload["termsOfServiceAgreed"] = True
            if eab_kid or eab_hmac_key:
                add_secret(eab_hmac_key)
                if not eab_kid:
                    raise IncompleteExternalAccountBinding("eab_kid")
                if not eab_hmac_key:
                    raise IncompleteExternalAccountBinding("eab_hmac_key")
                payload["externalAccountBinding"] = eab_jws(
                    self.account_key, kid=eab_kid, hmac_key_b64u=eab_hmac_key, url=directory.new_account
                )
        response = await self._post(directory.new_account, payload, use_jwk=True)
        location = response.headers.get("location")
        if not location:
            raise UnexpectedResponse(f"{directory.new_account} returned no Location for the account")
        self.account_url = location
        return Account.from_json(location, _json(response))

    async def lookup_account(self) -> Account:
        """The existing account of this key (``onlyReturnExisting``)."""
        return await self.register(only_existing=True)

    async def fetch_account(self) -> Account:
        assert self.account_url is not None
        response = await self._post(self.account_url, None)
        return Account.from_json(self.account_url, _json(response))

    async def update_account(self, *, contact: Sequence[str]) -> Account:
        assert self.account_url is not None
        response = await self._post(self.account_url, {"contact": list(contact)})
        return Account.from_json(self.account_url, _json(response))

    async def deactivate_account(self) -> Account:
        assert self.account_url is not None
        response = await self._post(self.account_url, {"status": "deactivated"})
        return Account.from_json(self.account_url, _json(response))

    async def change_key(self, new_key: PrivateKey) -> None:
        """Roll the account over to ``new_key`` (RFC 8555 §7.3.5); the client then signs with it."""
        directory = await self.directory()
        if not directory.key_change:
            raise UnexpectedResponse("the CA's directory has no keyChange resource")
        assert self.account_url is not None
        inner = jws(
            new_key,
            {"account": self.account_url, "oldKey": public_jwk(self.account_key)},
            url=directory.key_change,
            nonce=None,
        )
        await self._post(directory.key_change, inner)
        self.account_key = new_key

    # -- orders ----------------------------------------------------------------------

    async def new_order(
        self,
        identifiers: Iterable[Identifier],
        *,
        not_before: str | None = None,
        not_after: str | None = None,
        profile: str | None = None,
        replaces: str | None = None,
    ) -> Order:
        directory = await self.directory()
        payload: dict[str, Any] = {"identifiers": [i.to_json() for i in identifiers]}
        if not_before:
            payload["notBefore"] = not_before
        if not_after:
            payload["notAfter"] = not_after
        if profile:
            if profile not in directory.profiles:
                raise ProfileNotOffered(profile, directory_url=self.directory_url, offered=directory.profiles)
            payload["profile"] = profile
        if replaces and directory.renewal_info:
            payload["replaces"] = replaces
        try:
            response = await self._post(directory.new_order, payload)
        except TransportError as exc:
            if isinstance(exc, CertificateVerifyFailed):
                raise
            # The answer was lost; an order the CA may have created cannot be found again
            # (the orders list is optional), so ask once more: at worst one order is abandoned.
            log.info("%s; sending the order once more", exc)
            response = await self._post(directory.new_order, payload)
        location = response.headers.get("location")
        if not location:
            raise UnexpectedResponse(f"{directory.new_order} returned no Location for the order")
        return Order.from_json(location, _json(response))

    async def get_order(self, url: str) -> tuple[Order, float | None]:
        response = await self._post(url, None)
        return Order.from_json(url, _json(response)), parse_retry_after(response.headers.get("retry-after"))

    async def get_authorization(self, url: str) -> tuple[Authorization, float | None]:
        response = await self._post(url, None)
        return (
            Authorization.from_json(url, _json(response)),
            parse_retry_after(response.headers.get("retry-after")),
        )

    async def answer_challenge(self, url: str) -> None:
        """Tell the CA the challenge is ready (POST ``{}``, RFC 8555 §7.5.1).

        When the answer is lost (a reset, a 5xx, or a retry the CA refuses because the first
        try already started validation), the challenge is read back: ``processing`` or
        ``valid`` means the CA got it; ``pending`` gets the POST once more.
        """
        try:
            await self._post(url, {})
        except (TransportError, ServerInternal, Malformed) as exc:
            if isinstance(exc, CertificateVerifyFailed):
                raise
            status = await self._challenge_status(url)
            if status in (ChallengeStatus.PROCESSING, ChallengeStatus.VALID, ChallengeStatus.INVALID):
                log.info("the CA has the challenge answer already (%s); going on", status)
                return
            if isinstance(exc, Malformed):
                raise
            await self._post(url, {})

    async def _challenge_status(self, url: str) -> ChallengeStatus:
        response = await self._post(url, None)
        challenge = Challenge.from_json(_json(response))
        if challenge is None:
            raise UnexpectedResponse(f"{url} is not a challenge")
        return challenge.status

    async def deactivate_authorization(self, url: str) -> Authorization:
        response = await self._post(url, {"status": "deactivated"})
        return Authorization.from_json(url, _json(response))

    async def poll_authorization(
        self, url: str, *, timeout: float = 300.0, first_wait: float | None = None
    ) -> Authorization:
        """Poll until the authorization leaves ``pending``."""
        deadline = time.monotonic() + timeout
        wait = self.poll.initial if first_wait is None else first_wait
        while True:
            if wait > 0:
                await self._sleep(wait)
            authz, retry_after = await self.get_authorization(url)
            if authz.status != AuthorizationStatus.PENDING:
                return authz
            wait = self.poll.next_wait(wait or self.poll.initial, retry_after)
            if time.monotonic() + wait > deadline:
                raise PollTimeout(f"authorization for {authz.name} is still pending after {timeout:.0f}s")

    async def poll_order(self, order: Order, *, timeout: float = 300.0) -> Order:
        """Poll while the order is ``pending`` or ``processing``."""
        deadline = time.monotonic() + timeout
        wait = self.poll.initial
        while order.status in (OrderStatus.PENDING, OrderStatus.PROCESSING):
            await self._sleep(wait)
            order, retry_after = await self.get_order(order.url)
            wait = self.poll.next_wait(wait, retry_after)
            if order.status in (OrderStatus.PENDING, OrderStatus.PROCESSING) and time.monotonic() + wait > deadline:
                raise PollTimeout(f"order {order.url} is still {order.status} after {timeout:.0f}s")
        return order

    async def finalize(self, order: Order, csr_der: bytes, *, timeout: float = 300.0) -> Order:
        """Send the CSR and wait until the order is ``valid``.

        When the answer is lost (a reset, a 5xx, or ``orderNotReady`` on a retry because the
        first try was processed), the order is read back: ``processing`` or ``valid`` is
        polled and downloaded, never thrown away; ``ready`` is finalized once more.
        """
        try:
            response = await self._post(order.finalize, {"csr": b64u_encode(csr_der)})
        except (TransportError, ServerInternal, OrderNotReady) as exc:
            if isinstance(exc, CertificateVerifyFailed):
                raise
            current, _ = await self.get_order(order.url)
            if current.status == OrderStatus.READY and not isinstance(exc, OrderNotReady):
                response = await self._post(order.finalize, {"csr": b64u_encode(csr_der)})
            elif current.status in (OrderStatus.PROCESSING, OrderStatus.VALID):
                log.info("the CA has the finalize request already (order %s); going on", current.status)
                return await self._until_valid(order, await self.poll_order(current, timeout=timeout))
            else:
                raise
        finalized = Order.from_json(order.url, _json(response))
        if finalized.status == OrderStatus.PROCESSING:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after:
                await self._sleep(min(retry_after, self.poll.retry_after_cap))
        return await self._until_valid(order, await self.poll_order(finalized, timeout=timeout))

    @staticmethod
    async def _until_valid(order: Order, finalized: Order) -> Order:
        if finalized.status != OrderStatus.VALID or not finalized.certificate:
            raise OrderFailed(order.url, finalized.status.value, finalized.error)
        return finalized

    async def download_chain(self, url: str) -> tuple[CertificateChain, list[str]]:
        """One certificate chain and the URLs of its alternates (``Link rel="alternate"``)."""
        response = await self._post(url, None, accept=PEM_CHAIN)
        try:
            certs = split_pem_chain(response.content)
        except ValueError as exc:
            raise UnexpectedResponse(f"the certificate at {url} is unusable: {exc}") from None
        if len(certs) > MAX_CHAIN_LENGTH:
            raise UnexpectedResponse(
                f"the certificate at {url} comes with a chain of {len(certs)} certificates; at most "
                f"{MAX_CHAIN_LENGTH} are accepted"
            )
        alternates = [target for target, rel in parse_links(response.headers, url) if rel == "alternate"]
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        return CertificateChain(url=url, pem=pem, top_issuer=issuer_common_name(certs[-1])), alternates

    async def download_certificate(self, url: str, *, preferred_chain: str | None = None) -> CertificateChain:
        """The default chain, or the first chain whose top issuer's CN is ``preferred_chain``.

        Falls back to the default chain when no chain matches, as other clients do.
        """
        default, alternates = await self.download_chain(url)
        if not preferred_chain or _chain_matches(default, preferred_chain):
            return default
        for alternate_url in alternates[:MAX_ALTERNATE_CHAINS]:
            try:
                chain, _ = await self.download_chain(alternate_url)
            except (ProblemError, UnexpectedResponse) as exc:  # a broken alternate: the default chain still stands
                log.warning("skipping the alternate chain %s: %s", clean(alternate_url, 200), exc)
                continue
            if _chain_matches(chain, preferred_chain):
                return chain
        log.warning("no chain issued by %r is offered; using the default chain", preferred_chain)
        return default

    async def renewal_info(self, cert_id: str) -> tuple[RenewalInfo, float | None]:
        """The CA's renewal window for the certificate with ARI CertID ``cert_id`` and its ``Retry-After``.

        An unauthenticated GET (RFC 9773 §4.1); raises :class:`ConfigError` when the CA
        offers no ARI and :class:`UnexpectedResponse` for an answer that is not a window.
        """
        directory = await self.directory()
        if not directory.renewal_info:
            raise ConfigError(f"the CA at {self.directory_url} offers no renewal information (ARI)")
        url = directory.renewal_info.rstrip("/") + "/" + cert_id
        response = await self._send_idempotent("GET", url)
        if response.status_code != 200:
            raise self._problem(response, "GET", url)
        try:
            data = response.json()
        except ValueError:
            raise UnexpectedResponse(f"{url} answered with something that is not JSON") from None
        return RenewalInfo.from_json(url, data), parse_retry_after(response.headers.get("retry-after"))

    async def revoke(self, cert_der: bytes, *, reason: int = 0, certificate_key: PrivateKey | None = None) -> None:
        """Revoke with the account key (kid), or with the certificate's own key (jwk)."""
        directory = await self.directory()
        payload = {"certificate": b64u_encode(cert_der), "reason": reason}
        signing: dict[str, Any] = {"key": certificate_key, "use_jwk": True} if certificate_key is not None else {}
        try:
            await self._post(directory.revoke_cert, payload, **signing)
        except (TransportError, ServerInternal) as exc:
            if isinstance(exc, CertificateVerifyFailed):
                raise
            try:  # the answer was lost: the CA may have revoked it already
                await self._post(directory.revoke_cert, payload, **signing)
            except AlreadyRevoked:
                log.info("the certificate was revoked by the request whose answer was lost")


_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The largest ACME response read (a chain of a few certificates is ~10 KB): a CA that sends
#: megabytes is broken or hostile, and reading it all would only cost memory.
MAX_RESPONSE_BYTES = 1 << 20
#: One exchange (connect, send, the whole answer) may take at most this many times the
#: per-read time-out: a trickling answer would otherwise reset the read time-out forever.
EXCHANGE_DEADLINE_FACTOR = 4
#: Certificates in one chain (a leaf, its intermediates and perhaps a cross-signed root).
MAX_CHAIN_LENGTH = 10
_MAX_NONCE = 512
#: Alternate chains looked at for ``preferred_chain``; a CA offering hundreds gets no more requests.
MAX_ALTERNATE_CHAINS = 10


def _chain_matches(chain: CertificateChain, name: str) -> bool:
    wanted = name.strip().lower()
    if chain.top_issuer.lower() == wanted:
        return True
    certs = split_pem_chain(chain.pem)
    return any(issuer_common_name(c).lower() == wanted for c in certs[1:])


def _json(response: Reply) -> dict[str, Any]:
    body = json_object(response)
    if body is None:
        raise UnexpectedResponse(
            f"{response.method} {response.url} returned invalid JSON, not an object "
            f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no content type')})"
        )
    return body


def certificate_der(pem: bytes) -> bytes:
    """DER of the first certificate in ``pem``."""
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
