"""An asynchronous RFC 8555 client on one ``httpx.AsyncClient``.

One :class:`AcmeClient` holds one account key and serves any number of concurrent
orders. Nonces come from a pool fed by every response's ``Replay-Nonce``; a fresh
one is fetched only when the pool is empty. ``badNonce`` is retried (bounded) with
the nonce from the error response, ``Retry-After`` is honoured on polling and on
``rateLimited``/503, and every wait is capped.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certsmith._http import json_object
from certsmith._redact import add_secret
from certsmith._version import __version__
from certsmith.acme import wire
from certsmith.acme.errors import (
    BadNonce,
    CertificateVerifyFailed,
    IncompleteExternalAccountBinding,
    InvalidProfile,
    NotADirectory,
    OrderFailed,
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
    Directory,
    Order,
    OrderStatus,
    RenewalInfo,
)
from certsmith.crypto import Identifier, issuer_common_name, split_pem_chain
from certsmith.errors import ConfigError
from certsmith.jose import PrivateKey, b64u_encode, eab_jws, jws, public_jwk

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


def parse_retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Returns ``None`` when the header is absent or unparsable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    current = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - current).total_seconds())


def parse_links(headers: httpx.Headers, base_url: str) -> list[tuple[str, str]]:
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
    """How to poll: the first wait, its growth, and the cap applied to ``Retry-After`` too."""

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 5.0
    retry_after_cap: float = 60.0

    def next_wait(self, previous: float, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return min(previous * self.factor, self.maximum)


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


def _transport_error(exc: httpx.HTTPError, method: str, url: str, ca_bundle: str | None) -> TransportError:
    """The fact behind an httpx failure: untrusted certificate, TLS failure, time-out or no connection."""
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
    if _find_cause(exc, ssl.SSLError) is not None:
        return TransportError(f"TLS handshake with {host} failed: {exc}", method=method, url=url)
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"{method} {url} timed out; the CA is slow or unreachable", method=method, url=url)
    return TransportError(f"cannot reach the CA at {host}: {exc or type(exc).__name__}", method=method, url=url)


class AcmeClient:
    """RFC 8555 operations for one account key against one directory URL.

    ``account_url`` is the ``kid``; it is set by :meth:`register`/:meth:`lookup_account`
    or given when the account is known. Use as an async context manager, or call
    :meth:`aclose`. Pass ``http`` to share an ``httpx.AsyncClient`` between clients
    (``ca_bundle`` is then the caller's business and ignored).

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
        max_nonce_retries: int = 20,
        max_server_retries: int = 3,
        poll: PollPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        directory_cache: DirectoryCache | None = None,
    ) -> None:
        if not directory_url.startswith("https://"):
            raise ConfigError(f"the ACME directory must be an https:// URL, not {directory_url!r}")
        self.directory_url = directory_url
        self.account_key = account_key
        self.account_url = account_url
        self.ca_bundle = str(ca_bundle) if ca_bundle is not None and http is None else None
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            verify=_ssl_context(self.ca_bundle),
            timeout=timeout,
            headers={"User-Agent": f"certsmith/{__version__}", "Accept-Language": "en"},
            follow_redirects=False,
        )
        self._directory: Directory | None = None
        self._directory_lock = asyncio.Lock()
        self._directory_cache = directory_cache
        self._directory_cached = False  # True while self._directory came from the cache, unconfirmed
        self._nonces: deque[str] = deque(maxlen=64)
        self._nonce_arrived = asyncio.Event()
        self._in_flight = 0
        self.max_nonce_retries = max_nonce_retries
        self.max_server_retries = max_server_retries
        self.poll = poll or PollPolicy()
        self._sleep = sleep
        self.request_count = 0

    async def __aenter__(self) -> AcmeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- transport -------------------------------------------------------------------

    async def _send(
        self, method: str, url: str, *, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        self.request_count += 1
        number = self.request_count
        on_wire = wire.log.isEnabledFor(logging.DEBUG)
        if on_wire:
            wire.log_request(number, method, url, content)
        self._in_flight += 1
        try:
            response = await self._http.request(method, url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            error = _transport_error(exc, method, url, self.ca_bundle)
            if on_wire:
                wire.log_failure(number, method, url, error)
            raise error from None
        finally:
            self._in_flight -= 1
            self._nonce_arrived.set()
        nonce = response.headers.get("replay-nonce")
        if nonce and _NONCE.match(nonce):
            self._nonces.append(nonce)
        if on_wire:
            wire.log_response(number, method, url, response)
        else:
            log.debug("%s %s -> %s", method, url, response.status_code)
        return response

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
        response = await self._send("GET", self.directory_url)
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

    async def _nonce(self) -> str:
        """A fresh nonce: from the pool, else from a response still in flight, else HEAD newNonce."""
        while not self._nonces and self._in_flight:
            self._nonce_arrived.clear()
            try:
                await asyncio.wait_for(self._nonce_arrived.wait(), timeout=2.0)
            except TimeoutError:
                break
        if self._nonces:
            return self._nonces.pop()
        url = (await self.directory()).new_nonce
        for _ in range(3):
            try:
                response = await self._send("HEAD", url)
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
    ) -> httpx.Response:
        """A signed POST (``payload=None`` is POST-as-GET) with bounded retries."""
        signing_key = key or self.account_key
        if not use_jwk and self.account_url is None:
            raise ConfigError(
                "no ACME account is known for this key: call register() or lookup_account(), or pass account_url="
            )
        nonce_retries = 0
        server_retries = 0
        healed = False
        while True:
            nonce = await self._nonce()
            body = jws(signing_key, payload, url=url, nonce=nonce, kid=None if use_jwk else self.account_url)
            headers = {"Content-Type": JOSE_JSON}
            if accept:
                headers["Accept"] = accept
            try:
                response = await self._send("POST", url, content=json.dumps(body).encode(), headers=headers)
            except TransportError:
                if healed or (fresh := await self._refreshed(url)) is None:
                    raise
                url, healed = fresh, True
                continue
            if response.status_code < 400:
                return response
            if response.status_code == 404 and not healed and (fresh := await self._refreshed(url)) is not None:
                url, healed = fresh, True
                continue
            error = self._problem(response, "POST", url)
            if isinstance(error, BadNonce) and nonce_retries < self.max_nonce_retries:
                nonce_retries += 1
                continue
            retryable = isinstance(error, RateLimited | ServerInternal) or response.status_code == 503
            if retryable and server_retries < self.max_server_retries:
                wait = parse_retry_after(response.headers.get("retry-after"))
                if wait is None:
                    wait = 1.0 * (2**server_retries)
                if wait <= self.poll.retry_after_cap:
                    server_retries += 1
                    log.info("%s; retrying in %.1fs", error, wait)
                    await self._sleep(wait)
                    continue
            raise error

    def _problem(self, response: httpx.Response, method: str, url: str) -> ProblemError:
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
        """Tell the CA the challenge is ready (POST ``{}``, RFC 8555 §7.5.1)."""
        await self._post(url, {})

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
        """Send the CSR and wait until the order is ``valid``."""
        response = await self._post(order.finalize, {"csr": b64u_encode(csr_der)})
        finalized = Order.from_json(order.url, _json(response))
        if finalized.status == OrderStatus.PROCESSING:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after:
                await self._sleep(min(retry_after, self.poll.retry_after_cap))
        finalized = await self.poll_order(finalized, timeout=timeout)
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
        for alternate_url in alternates:
            chain, _ = await self.download_chain(alternate_url)
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
        response = await self._send("GET", url)
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
        if certificate_key is not None:
            await self._post(directory.revoke_cert, payload, key=certificate_key, use_jwk=True)
        else:
            await self._post(directory.revoke_cert, payload)


def _chain_matches(chain: CertificateChain, name: str) -> bool:
    wanted = name.strip().lower()
    if chain.top_issuer.lower() == wanted:
        return True
    certs = split_pem_chain(chain.pem)
    return any(issuer_common_name(c).lower() == wanted for c in certs[1:])


def _json(response: httpx.Response) -> dict[str, Any]:
    body = json_object(response)
    if body is None:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url} returned invalid JSON, not an object "
            f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no content type')})"
        )
    return body


def certificate_der(pem: bytes) -> bytes:
    """DER of the first certificate in ``pem``."""
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
