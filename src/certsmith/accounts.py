"""ACME accounts, one per CA: register, update, roll over the key, deactivate.

Each change takes the store's per-CA account lock and looks again after taking it,
so two processes starting on a fresh state directory register one account, not two.
One :class:`AcmeClient` is kept per CA and shared by every order sent to it (one
connection pool, one nonce pool). When the store offers a directory cache
(``FileStore.directory_cache()``) every client is given it, so a new process skips
the GET of a directory fetched by an earlier one within the cache's lifetime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from certsmith._constants import DEFAULT_KEY_TYPE
from certsmith._time import format_time, utc_now
from certsmith.acme.client import AcmeClient, DirectoryCache
from certsmith.acme.errors import AccountDoesNotExist
from certsmith.acme.resources import Directory
from certsmith.crypto import generate_key_async, key_type_of, load_private_key, private_key_pem
from certsmith.errors import AccountError, ConfigError
from certsmith.ratelimit import RateLimiter
from certsmith.storage.base import Store, StoredAccount

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("certsmith")


class Registration(TypedDict, total=False):
    """The keyword arguments of :meth:`Accounts.register`, which :meth:`Accounts.ensure` passes on."""

    email: Sequence[str]
    agree_tos: bool
    key_type: str
    eab_kid: str | None
    eab_hmac_key: str | None

EventSink = Callable[[str, str], None]


def mailto(email: str) -> str:
    """``mailto:`` contact URL of one plain e-mail address."""
    address = email.strip().removeprefix("mailto:")
    if "@" not in address or "," in address or "?" in address or " " in address:
        raise ConfigError(f"{email!r} is not a single email address")
    return "mailto:" + address


class Accounts:
    """The accounts of every CA in one store, and one ACME client per CA.

    ``http`` is an ``httpx.AsyncClient`` the ACME clients share (a proxy, a test
    transport); by default each CA's client has its own. ``directory_cache`` defaults
    to the store's own (``store.directory_cache()``) when it has one.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_event: EventSink | None = None,
        http: httpx.AsyncClient | None = None,
        directory_cache: DirectoryCache | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter  # takes a token before each newAccount (see certsmith.ratelimit)
        self._on_event = on_event
        self._http = http
        if directory_cache is None:
            factory = getattr(store, "directory_cache", None)
            directory_cache = factory() if callable(factory) else None
        self.directory_cache = directory_cache
        self._clients: dict[str, AcmeClient] = {}
        self._ca_bundles: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def trust(self, directory_url: str, ca_bundle: str | None) -> None:
        """Use ``ca_bundle`` (PEM roots) for the CA at ``directory_url`` when a call gives none."""
        if ca_bundle:
            self._ca_bundles[directory_url] = ca_bundle

    def _bundle(self, directory_url: str, ca_bundle: str | None) -> str | None:
        return ca_bundle or self._ca_bundles.get(directory_url)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)

    def _event(self, kind: str, message: str) -> None:
        log.info("%s", message)
        if self._on_event is not None:
            self._on_event(kind, message)

    def stored(self, directory_url: str) -> StoredAccount | None:
        return self.store.load_account(directory_url)

    def usable(self, directory_url: str) -> StoredAccount:
        """The stored account of ``directory_url``; :class:`AccountError` when there is none or it is not valid."""
        return self._usable(directory_url)

    def _usable(self, directory_url: str) -> StoredAccount:
        account = self.stored(directory_url)
        if account is None:
            raise AccountError(
                f"there is no account for {directory_url}; register one first", directory_url=directory_url,
                reason="missing",
            )
        if account.status != "valid":
            raise AccountError(
                f"the account for {directory_url} is {account.status}; register a new one",
                directory_url=directory_url, reason="not-valid",
            )
        return account

    async def client(self, directory_url: str, ca_bundle: str | None = None) -> AcmeClient:
        """The ACME client for the stored account at ``directory_url``."""
        async with self._lock:
            client = self._clients.get(directory_url)
            if client is None:
                if self.store.load_pending_account_key(directory_url) is not None:
                    await self._finish_rollover(directory_url, ca_bundle)
                account = self._usable(directory_url)
                key = load_private_key(account.key_pem, "the stored account key")
                client = AcmeClient(
                    directory_url,
                    key,
                    account_url=account.url,
                    ca_bundle=self._bundle(directory_url, ca_bundle),
                    http=self._http,
                    directory_cache=self.directory_cache,
                )
                self._clients[directory_url] = client
            return client

    async def _finish_rollover(self, directory_url: str, ca_bundle: str | None) -> None:
        """A key rollover was cut short: keep whichever key the CA now has, the old or the staged one."""
        async with self.store.account_lock(directory_url, wait=60.0):
            staged = self.store.load_pending_account_key(directory_url)
            stored = self.store.load_account(directory_url)
            if staged is None or stored is None:
                return
            bundle = self._bundle(directory_url, ca_bundle)
            for key_pem in (stored.key_pem, staged):
                key = load_private_key(key_pem, "an account key")
                async with AcmeClient(directory_url, key, ca_bundle=bundle, http=self._http,
                                      directory_cache=self.directory_cache) as probe:
                    try:
                        account = await probe.lookup_account()
                    except AccountDoesNotExist:
                        continue
                if account.url == stored.url:
                    if key_pem is staged:
                        self.store.save_account(replace(stored, key_pem=staged))
                        self._event("account", "finished an interrupted key rollover: the CA has the new key")
                    self.store.save_pending_account_key(directory_url, None)
                    return
            raise AccountError(
                f"an interrupted key rollover left two keys for {directory_url} and the CA knows neither",
                directory_url=directory_url,
                reason="not-valid",
            )

    async def directory(self, directory_url: str, ca_bundle: str | None = None) -> Directory:
        """The CA's directory, through the account's client, or an anonymous one when there is no account yet."""
        if directory_url in self._clients or self.stored(directory_url) is not None:
            return await (await self.client(directory_url, ca_bundle)).directory(confirmed=True)
        key = await generate_key_async(DEFAULT_KEY_TYPE)
        bundle = self._bundle(directory_url, ca_bundle)
        async with AcmeClient(
            directory_url, key, ca_bundle=bundle, http=self._http, directory_cache=self.directory_cache
        ) as anonymous:
            return await anonymous.directory(confirmed=True)

    async def register(
        self,
        directory_url: str,
        ca_bundle: str | None = None,
        *,
        email: Sequence[str] = (),
        agree_tos: bool = False,
        key_type: str = DEFAULT_KEY_TYPE,
        eab_kid: str | None = None,
        eab_hmac_key: str | None = None,
    ) -> StoredAccount:
        """Register a new account and store it; an account already stored and valid is returned as it is."""
        contact = [mailto(e) for e in email]
        async with self.store.account_lock(directory_url, wait=60.0):
            existing = self.stored(directory_url)
            if existing is not None and existing.status == "valid":
                return existing
            key = await generate_key_async(key_type)
            client = AcmeClient(
                directory_url, key, ca_bundle=self._bundle(directory_url, ca_bundle), http=self._http,
                directory_cache=self.directory_cache,
            )
            try:
                directory = await client.directory(confirmed=True)
                if directory.external_account_required and not (eab_kid and eab_hmac_key):
                    raise AccountError(
                        f"the CA at {directory_url} requires external account binding: give the key ID and "
                        "HMAC key from your account at the CA (eab_kid, eab_hmac_key)",
                        directory_url=directory_url, reason="eab-required",
                    )
                if directory.terms_of_service and not agree_tos:
                    raise AccountError(
                        f"the CA's terms of service must be accepted ({directory.terms_of_service})",
                        directory_url=directory_url, reason="terms-not-agreed",
                        terms_of_service=directory.terms_of_service,
                    )
                if self.limiter is not None:
                    self.limiter.before_new_account(directory_url, utc_now())
                account = await client.register(
                    contact=contact, agree_tos=agree_tos, eab_kid=eab_kid, eab_hmac_key=eab_hmac_key
                )
                stored = StoredAccount(
                    directory_url=directory_url,
                    url=account.url,
                    key_pem=private_key_pem(key),
                    contact=account.contact or tuple(contact),
                    status=account.status,
                    created_at=format_time(utc_now()),
                )
                self.store.save_account(stored)
            except BaseException:
                await client.aclose()
                raise
        async with self._lock:
            old = self._clients.pop(directory_url, None)
            self._clients[directory_url] = client  # keep its directory, connection and nonces for what follows
        if old is not None:
            await old.aclose()
        self._event("account", f"registered account {account.url}")
        return stored

    async def ensure(
        self, directory_url: str, ca_bundle: str | None = None, **registration: Unpack[Registration]
    ) -> None:
        """Register when no account is stored and the caller gave what registration needs
        (``registration``: the keyword arguments of :meth:`register`)."""
        if self.stored(directory_url) is not None:
            self._usable(directory_url)
            return
        if not registration.get("email") and not registration.get("agree_tos"):
            self._usable(directory_url)  # raises the "missing" AccountError
        await self.register(directory_url, ca_bundle, **registration)

    async def info(self, directory_url: str, ca_bundle: str | None = None) -> dict[str, Any]:
        """The account as the CA sees it."""
        client = await self.client(directory_url, ca_bundle)
        account = await client.fetch_account()
        stored = self._usable(directory_url)
        return {
            "directory": directory_url,
            "url": account.url,
            "status": account.status,
            "contact": list(account.contact),
            "key_type": key_type_of(client.account_key),
            "created_at": stored.created_at,
        }

    async def update(self, directory_url: str, ca_bundle: str | None = None, *, email: Sequence[str]) -> StoredAccount:
        """Replace the account's contact addresses."""
        client = await self.client(directory_url, ca_bundle)
        async with self.store.account_lock(directory_url, wait=60.0):
            account = await client.update_account(contact=[mailto(e) for e in email])
            updated = replace(self._usable(directory_url), contact=account.contact, status=account.status)
            self.store.save_account(updated)
        return updated

    async def rollover(
        self, directory_url: str, ca_bundle: str | None = None, *, key_type: str | None = None
    ) -> StoredAccount:
        """Replace the account key at the CA, keeping the old key in the store's archive."""
        client = await self.client(directory_url, ca_bundle)
        async with self.store.account_lock(directory_url, wait=60.0):
            stored = self._usable(directory_url)
            new_key = await generate_key_async(key_type or key_type_of(client.account_key))
            new_pem = private_key_pem(new_key)
            self.store.archive_account_key(directory_url)
            self.store.save_pending_account_key(directory_url, new_pem)  # staged before the CA hears of it
            await client.change_key(new_key)
            updated = replace(stored, key_pem=new_pem)
            self.store.save_account(updated)
            self.store.save_pending_account_key(directory_url, None)
        self._event("account", "account key rolled over")
        return updated

    async def deactivate(self, directory_url: str, ca_bundle: str | None = None) -> StoredAccount:
        """Deactivate the account for good."""
        client = await self.client(directory_url, ca_bundle)
        async with self.store.account_lock(directory_url, wait=60.0):
            account = await client.deactivate_account()
            updated = replace(self._usable(directory_url), status=account.status)
            self.store.save_account(updated)
        return updated

