"""httpx where certsmith needs it: behind a proxy, on a caller's client, and for the DNS API providers.

Two adapters between httpx and :mod:`certsmith._http11`:

- :class:`Http11Transport` puts certsmith's HTTP/1.1 pool under an ``httpx.AsyncClient``
  (the DNS API providers keep httpx's request building and decoding, without loading
  httpx's own transport stack); its failures are httpx's exception types.
- :class:`HttpxClient` gives the ACME client an ``httpx.AsyncClient`` with the interface
  of :class:`certsmith._http11.HttpClient`; its failures are ``_http11``'s types.

Importing this module imports httpx: the ACME client loads it only when a proxy is
configured or the caller passed a client.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Unpack

import httpx

from certsmith import _http11
from certsmith._http11 import Headers, Http11Pool, PoolOptions, Reply, Timeouts

_TO_HTTPX: dict[type[_http11.HttpError], type[httpx.TransportError]] = {
    _http11.ConnectTimeout: httpx.ConnectTimeout,
    _http11.ReadTimeout: httpx.ReadTimeout,
    _http11.WriteTimeout: httpx.WriteTimeout,
    _http11.PoolTimeout: httpx.PoolTimeout,
    _http11.HttpTimeout: httpx.TimeoutException,
    _http11.ConnectError: httpx.ConnectError,
    _http11.ReadError: httpx.ReadError,
    _http11.WriteError: httpx.WriteError,
    _http11.ProxyError: httpx.ProxyError,
    _http11.RemoteProtocolError: httpx.RemoteProtocolError,
    _http11.LocalProtocolError: httpx.LocalProtocolError,
    _http11.UnsupportedProtocol: httpx.UnsupportedProtocol,
}
# Most specific first: the first httpx class an exception is an instance of names its _http11 type.
_FROM_HTTPX: list[tuple[type[httpx.HTTPError], type[_http11.HttpError]]] = [
    *((httpx_type, own) for own, httpx_type in _TO_HTTPX.items() if own is not _http11.HttpTimeout),
    (httpx.TimeoutException, _http11.HttpTimeout),
]


def transport_for(ssl_context: ssl.SSLContext | None) -> Http11Transport | None:
    """The transport for a new ``httpx.AsyncClient``: certsmith's, or ``None`` (httpx's own) when a
    proxy is configured: httpx reads the proxy variables only for a client without a transport of the
    caller's, and reaches proxies through its own."""
    return None if _http11.proxy_configured() else Http11Transport(ssl_context)


class Http11Transport(httpx.AsyncBaseTransport):
    """An httpx transport on :class:`certsmith._http11.Http11Pool` (same options)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, **options: Unpack[PoolOptions]) -> None:
        self._pool = Http11Pool(ssl_context, **options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        try:
            response = await self._pool.open(
                request.method, str(request.url), list(request.headers.raw), await request.aread(),
                Timeouts(timeouts.get("connect"), timeouts.get("read"), timeouts.get("write"), timeouts.get("pool")),
            )
        except _http11.HttpError as exc:
            raise _as_httpx(exc, request) from exc.__cause__
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_Stream(response, request),
            extensions={"http_version": response.version, "reason_phrase": response.reason},
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Stream(httpx.AsyncByteStream):
    def __init__(self, response: _http11.Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response:
                yield piece
        except _http11.HttpError as exc:
            raise _as_httpx(exc, self._request) from exc.__cause__

    async def aclose(self) -> None:
        await self._response.aclose()


def _as_httpx(exc: _http11.HttpError, request: httpx.Request) -> httpx.TransportError:
    return _TO_HTTPX.get(type(exc), httpx.TransportError)(str(exc), request=request)


class HttpxClient:
    """An ``httpx.AsyncClient`` with :class:`certsmith._http11.HttpClient`'s interface and errors.

    The client is closed by :meth:`aclose` only when ``own`` (it was made for this use).
    """

    def __init__(self, client: httpx.AsyncClient, *, own: bool) -> None:
        self.client = client
        self._own = own

    @classmethod
    def create(cls, ssl_context: ssl.SSLContext, *, timeout: float, headers: Mapping[str, str]) -> HttpxClient:
        """A client of its own on httpx's transport, which honours the proxy variables."""
        return cls(
            httpx.AsyncClient(verify=ssl_context, timeout=timeout, headers=dict(headers), follow_redirects=False),
            own=True,
        )

    async def request(
        self, method: str, url: str, *, content: bytes | None = None, headers: Mapping[str, str] | None = None,
        limit: int,
    ) -> Reply:
        try:
            request = self.client.build_request(method, url, content=content, headers=dict(headers or {}))
            response = await self.client.send(request, stream=True)
            try:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _http11.BodyTooLarge(limit, int(declared))
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > limit:
                        raise _http11.BodyTooLarge(limit)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            own = next((mine for theirs, mine in _FROM_HTTPX if isinstance(exc, theirs)), _http11.HttpError)
            raise own(str(exc)) from exc
        return Reply(method, url, response.status_code, response.reason_phrase, Headers(response.headers.raw),
                     bytes(body))

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()
