"""dns-persist-01 records: what to publish for this account and CA, publishing it once, checking it.

The record value needs the CA's issuer domain name, which only a challenge tells
(``issuer-domain-names`` of a dns-persist-01 challenge): when the stored account does not
know it yet, :func:`issuer_domain_names` orders the first name, reads a pending
authorization, deactivates that authorization again and remembers the names with the
account. The record also names the account URL, which an account key rollover keeps.

:func:`create_records` publishes through any DNS provider, once, and only adds: an
identical record already there is adopted, and records of other CAs (or of another
account) are never touched. :func:`check_records` only reads, at each zone's
authoritative servers or at the resolver's servers, and says for each record whether the
CA would accept it now and if not why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from certsmith.accounts import Accounts
from certsmith.challenges.base import unsupported_reason
from certsmith.challenges.dnspersist01 import PersistRecord, RecordCheck, judge, plan_records
from certsmith.crypto import Identifier, parse_identifiers
from certsmith.dns.base import DnsProvider
from certsmith.dns.zone import (
    AuthoritativeServer,
    Nameserver,
    Resolver,
    authoritative_servers,
    find_zone,
    txt_values,
    wait_for_txt,
)
from certsmith.errors import ConfigError, DnsError

log = logging.getLogger("certsmith.persist")

CHALLENGE = "dns-persist-01"
EventSink = Callable[[str, str], None]


def persist_identifiers(names: Sequence[str]) -> list[Identifier]:
    """The names as identifiers, refusing those dns-persist-01 cannot validate (IP addresses)."""
    identifiers = parse_identifiers(names)
    for ident in identifiers:
        reason = unsupported_reason(CHALLENGE, ident.type, ident.value, wildcard=ident.wildcard)
        if reason is not None:
            raise ConfigError(reason)
    return identifiers


async def issuer_domain_names(
    accounts: Accounts,
    directory_url: str,
    ca_bundle: str | None,
    identifiers: Sequence[Identifier],
    on_event: EventSink | None = None,
) -> tuple[str, ...]:
    """The CA's dns-persist-01 issuer domain names: remembered with the account, else learned from a challenge."""
    stored = accounts.usable(directory_url)
    if stored.issuer_domain_names:
        return stored.issuer_domain_names
    client = await accounts.client(directory_url, ca_bundle)
    first = identifiers[0]
    order = await client.new_order([first])
    authz, _ = await client.get_authorization(order.authorizations[0])
    challenge = authz.challenge(CHALLENGE)
    if challenge is None:
        offered = ", ".join(sorted({c.type for c in authz.challenges})) or "none"
        raise ConfigError(f"the CA offers no {CHALLENGE} challenge for {authz.name} (it offers: {offered})")
    if not challenge.issuer_domain_names:
        raise ConfigError(f"the CA's {CHALLENGE} challenge for {authz.name} lists no issuer-domain-names")
    if authz.status == "pending":
        try:  # the order was only a question; leave no pending authorization behind
            await client.deactivate_authorization(authz.url)
        except Exception as exc:  # tidying up only: the answer is already known
            log.info("could not deactivate the authorization %s: %s", authz.url, exc)
    names = challenge.issuer_domain_names
    async with accounts.store.account_lock(directory_url, wait=60.0):
        current = accounts.usable(directory_url)
        accounts.store.save_account(replace(current, issuer_domain_names=names))
    if on_event is not None:
        on_event("persist", f"the CA's issuer domain name: {', '.join(names)}")
    return names


@dataclass(frozen=True)
class Plan:
    """The records for some names, with the account and the CA's issuer names they were made for."""

    records: list[PersistRecord]
    account_url: str
    issuers: tuple[str, ...]


async def plan(
    accounts: Accounts,
    directory_url: str,
    ca_bundle: str | None,
    names: Sequence[str],
    *,
    until: int | None = None,
    on_event: EventSink | None = None,
) -> Plan:
    """The records that let this account get certificates for ``names`` from this CA (the first issuer name)."""
    identifiers = persist_identifiers(names)
    account_url = accounts.usable(directory_url).url
    issuers = await issuer_domain_names(accounts, directory_url, ca_bundle, identifiers, on_event)
    records = plan_records([i.value for i in identifiers], issuers[0], account_url, until=until)
    return Plan(records, account_url, issuers)


async def _servers(fqdn: str, resolver: Resolver) -> list[Nameserver] | list[AuthoritativeServer]:
    if not resolver.checks_authoritative:
        return list(await resolver.nameservers())
    zone = await find_zone(fqdn, resolver)
    return await authoritative_servers(zone, resolver)


async def read_values(fqdn: str, resolver: Resolver) -> dict[str, set[str]]:
    """The TXT values at ``fqdn`` by server: each authoritative server of its zone, or each resolver server."""
    servers = await _servers(fqdn, resolver)
    found = await asyncio.gather(*(txt_values(fqdn, server, resolver.query_timeout) for server in servers))
    return {str(server): values for server, values in zip(servers, found, strict=True)}


async def check_records(the_plan: Plan, resolver: Resolver, now: datetime) -> list[RecordCheck]:
    """Judge every record at every server asked; a record passes when it passes everywhere."""

    async def one(record: PersistRecord) -> RecordCheck:
        try:
            by_server = await read_values(record.fqdn, resolver)
        except DnsError as exc:
            return RecordCheck(record, (), f"cannot read {record.fqdn}: {exc}", "unreadable")
        verdicts = [
            (server, judge(record, values, the_plan.account_url, the_plan.issuers, now))
            for server, values in by_server.items()
        ]
        for server, verdict in verdicts:
            if verdict.problem is not None:
                where = f" (at {server})" if len(verdicts) > 1 else ""
                return replace(verdict, problem=verdict.problem + where)
        return verdicts[0][1]

    return list(await asyncio.gather(*(one(record) for record in the_plan.records)))


@dataclass(frozen=True)
class Created:
    record: PersistRecord
    action: str  # "created" or "adopted"

    def to_json(self) -> dict[str, object]:
        return {**self.record.to_json(), "names": list(self.record.names), "action": self.action}


async def create_records(
    the_plan: Plan,
    provider: DnsProvider,
    resolver: Resolver,
    propagation_timeout: float,
    on_event: EventSink | None = None,
) -> list[Created]:
    """Add each record that is not already there, then wait until all are visible; never deletes anything."""

    async def one(record: PersistRecord) -> Created:
        try:
            existing = await read_values(record.fqdn, resolver)
        except DnsError as exc:
            log.info("cannot read %s before creating it (%s); creating it", record.fqdn, exc)
            existing = {}
        if existing and all(record.value in values for values in existing.values()):
            return Created(record, "adopted")
        await provider.present(record.fqdn, record.value)
        return Created(record, "created")

    try:
        results = list(await asyncio.gather(*(one(record) for record in the_plan.records)))
        created = {r.record.fqdn: {r.record.value} for r in results if r.action == "created"}
        if created:
            if on_event is not None:
                on_event("persist", f"waiting for {len(created)} record(s) to be visible")
            await wait_for_txt(created, resolver, propagation_timeout)
    finally:
        await provider.aclose()
    return results
