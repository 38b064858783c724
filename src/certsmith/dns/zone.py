"""DNS look-ups for dns-01: CNAME following, zone detection and the propagation check.

Everything here runs on dnspython's asyncio API and never blocks the event loop.
Queries go to the servers of a :class:`Resolver`: either the system's resolvers
(read from ``/etc/resolv.conf``) or an explicit list given as ``HOST:PORT`` strings,
e.g. from ``--dns-resolver``.

:func:`wait_for_txt` decides when the CA can see the challenge records. By default it
asks the zone's authoritative name servers directly, because that is where a new
record appears first and no cache can hide it; with explicit resolvers it asks
exactly those servers instead (for split-horizon setups or tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from certsmith.dns.base import parse_host_port
from certsmith.errors import DnsError, PropagationTimeout

log = logging.getLogger("certsmith.dns")

#: Longest CNAME chain :func:`follow_cname` walks before giving up.
MAX_CNAME_HOPS = 8

_NETWORK_ERRORS = (dns.exception.DNSException, OSError, EOFError, ValueError)


@dataclass(frozen=True, order=True)
class Nameserver:
    """One DNS server: an IP address and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """Parse ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address.

        ``HOST`` must be an IP address: resolving a resolver's own name would need
        a resolver. The port defaults to 53.
        """
        host, port = parse_host_port(text, "DNS resolver", require_ip=True)
        return cls(host, port)


@dataclass(frozen=True)
class AuthoritativeServer:
    """A name server of a zone (its NS name) and the addresses it was resolved to."""

    name: str
    addresses: tuple[Nameserver, ...]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Resolver:
    """Which servers certsmith asks, and how.

    ``servers`` empty means the system resolvers. ``check_authoritative`` chooses
    where :func:`wait_for_txt` looks: at the zone's authoritative servers (the
    default for the system resolver) or at ``servers`` themselves (the default when
    servers are given). ``authoritative_port`` is 53 in real life; tests running a
    name server on another port change it.
    """

    servers: tuple[Nameserver, ...] = ()
    query_timeout: float = 2.0
    check_authoritative: bool | None = None
    authoritative_port: int = 53

    @classmethod
    def from_cli(cls, specs: Iterable[str], *, query_timeout: float = 2.0) -> Resolver:
        """Build from ``--dns-resolver`` values; none at all means the system resolver.

        A value may hold several servers separated by commas.
        """
        servers: list[Nameserver] = []
        for spec in specs:
            for part in spec.split(","):
                server = Nameserver.parse(part)
                if server not in servers:
                    servers.append(server)
        return cls(tuple(servers), query_timeout=query_timeout)

    @property
    def is_system(self) -> bool:
        """Whether queries go to the resolvers of ``/etc/resolv.conf``."""
        return not self.servers

    @property
    def checks_authoritative(self) -> bool:
        """Whether :func:`wait_for_txt` asks the zone's authoritative servers."""
        if self.check_authoritative is None:
            return self.is_system
        return self.check_authoritative

    def __str__(self) -> str:
        return ", ".join(map(str, self.servers)) if self.servers else "system resolver"

    async def nameservers(self) -> tuple[Nameserver, ...]:
        """The servers to send look-ups to (reads ``/etc/resolv.conf`` in a thread if needed)."""
        if self.servers:
            return self.servers
        return await asyncio.to_thread(_system_nameservers)


def _system_nameservers() -> tuple[Nameserver, ...]:
    try:
        stub = dns.resolver.Resolver()
    except dns.exception.DNSException as exc:
        raise DnsError(f"cannot read the system resolver configuration: {exc}") from None
    servers: list[Nameserver] = []
    for entry in stub.nameservers:
        if not isinstance(entry, str):
            continue  # DNS-over-HTTPS and the like: not for plain queries
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            continue
        servers.append(Nameserver(address.compressed, stub.nameserver_ports.get(entry, stub.port)))
    if not servers:
        raise DnsError("the system has no DNS resolver configured (/etc/resolv.conf); name the servers to ask instead")
    return tuple(servers)


def absolute_name(fqdn: str) -> str:
    """``fqdn`` as absolute lower-case text with the trailing dot."""
    return _name(fqdn).to_text()


def _name(fqdn: str | dns.name.Name) -> dns.name.Name:
    if isinstance(fqdn, dns.name.Name):
        name = fqdn
    else:
        try:
            name = dns.name.from_text(fqdn)
        except dns.exception.DNSException as exc:
            raise DnsError(f"{fqdn!r} is not a valid DNS name: {exc}") from None
    return name.canonicalize()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    return str(exc) or type(exc).__name__


async def _ask(
    server: Nameserver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, timeout: float
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    response, _ = await dns.asyncquery.udp_with_fallback(query, server.host, timeout=timeout, port=server.port)
    return response


async def _query(
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    servers: Sequence[Nameserver],
    timeout: float,
) -> dns.message.Message:
    """The first NOERROR or NXDOMAIN answer of ``servers``, tried in order."""
    problems: list[str] = []
    for server in servers:
        try:
            response = await _ask(server, name, rdtype, timeout)
        except _NETWORK_ERRORS as exc:
            problems.append(f"{server}: {_describe(exc)}")
            continue
        rcode = response.rcode()
        if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return response
        problems.append(f"{server}: {dns.rcode.to_text(rcode)}")
    kind = dns.rdatatype.to_text(rdtype)
    raise DnsError(f"DNS query {name} {kind} failed: " + "; ".join(problems or ["no server to ask"]))


def _answer(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    return response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)


def _cname_target(response: dns.message.Message, name: dns.name.Name) -> dns.name.Name | None:
    rrset = _answer(response, name, dns.rdatatype.CNAME)
    if rrset is None or not len(rrset):
        return None
    target: dns.name.Name = next(iter(rrset)).target
    return target.canonicalize()


async def follow_cname(fqdn: str, resolver: Resolver, max_hops: int = MAX_CNAME_HOPS) -> str:
    """The name at the end of the CNAME chain that starts at ``fqdn`` (``fqdn`` itself if none).

    Raises :class:`DnsError` on a loop, on a chain longer than ``max_hops`` and when
    the look-up fails.
    """
    servers = await resolver.nameservers()
    name = _name(fqdn)
    chain = [name]
    for _ in range(max_hops + 1):
        response = await _query(name, dns.rdatatype.CNAME, servers, resolver.query_timeout)
        target = _cname_target(response, name)
        if target is None:
            return name.to_text()
        if target in chain:
            path = " -> ".join(n.to_text() for n in (*chain, target))
            raise DnsError(f"CNAME loop: {path}")
        chain.append(target)
        name = target
    raise DnsError(f"CNAME chain from {chain[0]} is longer than {max_hops} hops")


async def find_zone(fqdn: str, resolver: Resolver) -> str:
    """The apex of the zone that holds ``fqdn``, found by walking up with SOA queries.

    A level is the apex when the answer holds its SOA; a negative answer that carries
    the SOA of an enclosing zone in its authority section names that zone at once.
    SOA records of unrelated names (some test servers send one with everything) are
    ignored.
    """
    servers = await resolver.nameservers()
    start = _name(fqdn)
    name = start
    while name != dns.name.root:
        response = await _query(name, dns.rdatatype.SOA, servers, resolver.query_timeout)
        if _answer(response, name, dns.rdatatype.SOA) is not None:
            return name.to_text()
        if _cname_target(response, name) is None:
            for rrset in response.authority:
                owner = rrset.name.canonicalize()
                if rrset.rdtype == dns.rdatatype.SOA and owner != dns.name.root and name.is_subdomain(owner):
                    return owner.to_text()
        name = name.parent()
    raise DnsError(f"cannot find the DNS zone of {start}: no SOA record at any level (asked {resolver})")


async def _addresses(name: dns.name.Name, resolver: Resolver, servers: Sequence[Nameserver]) -> list[str]:
    answers = await asyncio.gather(
        *(_query(name, rdtype, servers, resolver.query_timeout) for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)),
        return_exceptions=True,
    )
    found: list[str] = []
    problems: list[str] = []
    for rdtype, answer in zip((dns.rdatatype.A, dns.rdatatype.AAAA), answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, DnsError):
                raise answer
            problems.append(str(answer))
            continue
        rrset = _answer(answer, name, rdtype)
        found.extend(rdata.address for rdata in rrset or ())
    if not found and problems:
        raise DnsError("; ".join(problems))
    return found


async def authoritative_servers(zone: str, resolver: Resolver) -> list[AuthoritativeServer]:
    """The NS names of ``zone`` with their addresses (IPv4 first), ports set to the resolver's.

    A name server whose addresses cannot be found is left out; :class:`DnsError` when
    none is left.
    """
    servers = await resolver.nameservers()
    apex = _name(zone)
    response = await _query(apex, dns.rdatatype.NS, servers, resolver.query_timeout)
    rrset = _answer(response, apex, dns.rdatatype.NS)
    if rrset is None or not len(rrset):
        raise DnsError(f"zone {apex} has no NS records (asked {resolver})")
    names = sorted({rdata.target.canonicalize() for rdata in rrset})
    results = await asyncio.gather(*(_addresses(name, resolver, servers) for name in names), return_exceptions=True)
    found: list[AuthoritativeServer] = []
    problems: list[str] = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, DnsError):
                raise result
            problems.append(f"{name}: {result}")
            continue
        if not result:
            problems.append(f"{name}: no A or AAAA record")
            continue
        ordered = sorted(result, key=lambda a: (ipaddress.ip_address(a).version, a))
        addresses = tuple(Nameserver(a, resolver.authoritative_port) for a in ordered)
        found.append(AuthoritativeServer(name.to_text(), addresses))
    for problem in problems:
        log.warning("name server of %s skipped: %s", apex, problem)
    if not found:
        raise DnsError(f"no address for any name server of {apex}: " + "; ".join(problems))
    return found


def _txt_at(response: dns.message.Message, name: dns.name.Name) -> set[str]:
    for _ in range(MAX_CNAME_HOPS):  # a recursive resolver may have followed CNAMEs for us
        target = _cname_target(response, name)
        if target is None:
            break
        name = target
    rrset = _answer(response, name, dns.rdatatype.TXT)
    return {b"".join(rdata.strings).decode("utf-8", "replace") for rdata in rrset or ()}


async def txt_values(fqdn: str, server: Nameserver | AuthoritativeServer, timeout: float = 2.0) -> set[str]:
    """The TXT values ``server`` returns for ``fqdn`` now (empty if none or no such name).

    For an :class:`AuthoritativeServer` its addresses are tried in order until one
    answers. Raises :class:`DnsError` on SERVFAIL, REFUSED, timeouts and the like.
    """
    addresses = server.addresses if isinstance(server, AuthoritativeServer) else (server,)
    name = _name(fqdn)
    response = await _query(name, dns.rdatatype.TXT, addresses, timeout)
    return _txt_at(response, name)


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


async def wait_for_txt(
    records: Mapping[str, Iterable[str]],
    resolver: Resolver,
    timeout: float,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    first_interval: float = 0.2,
    max_interval: float = 2.0,
) -> None:
    """Return once every ``fqdn`` shows all its ``values`` at every server that is checked.

    Checked are the authoritative servers of each record's zone (see
    :attr:`Resolver.checks_authoritative`) or else exactly the resolver's servers.
    Failures during the wait (SERVFAIL, timeouts, zones not found yet) are retried
    until ``timeout`` seconds have passed; then :class:`PropagationTimeout` names
    every record and server still missing. Polls start ``first_interval`` apart and
    the gap grows to ``max_interval``.
    """
    wanted = {absolute_name(fqdn): set(values) for fqdn, values in records.items()}
    deadline = clock() + timeout
    explicit = None if resolver.checks_authoritative else list(await resolver.nameservers())
    # For each record: the servers to check (None until known) and what is still missing.
    targets: dict[str, list[Nameserver] | list[AuthoritativeServer] | None] = {fqdn: explicit for fqdn in wanted}
    done: set[tuple[str, str]] = set()
    problems: dict[tuple[str, str], str] = {}
    zone_cache: dict[str, list[AuthoritativeServer]] = {}
    interval = first_interval

    async def discover(fqdn: str) -> None:
        try:
            zone = await find_zone(fqdn, resolver)
            if zone not in zone_cache:
                zone_cache[zone] = await authoritative_servers(zone, resolver)
                log.debug("authoritative servers of %s: %s", zone, ", ".join(map(str, zone_cache[zone])))
            targets[fqdn] = zone_cache[zone]
            problems.pop((fqdn, ""), None)
        except DnsError as exc:
            problems[(fqdn, "")] = f"finding its name servers failed: {exc}"

    async def check(fqdn: str, server: Nameserver | AuthoritativeServer, query_timeout: float) -> None:
        key = (fqdn, str(server))
        try:
            seen = await txt_values(fqdn, server, query_timeout)
        except DnsError as exc:
            problems[key] = str(exc)
            return
        missing = wanted[fqdn] - seen
        if missing:
            problems[key] = f"{len(missing)} of {len(wanted[fqdn])} values missing"
        else:
            problems.pop(key, None)
            done.add(key)

    while True:
        unknown = [fqdn for fqdn, servers in targets.items() if servers is None]
        if unknown:
            await asyncio.gather(*(discover(fqdn) for fqdn in unknown))
        remaining = deadline - clock()
        query_timeout = max(0.05, min(resolver.query_timeout, remaining))
        pending = [
            (fqdn, server)
            for fqdn, servers in targets.items()
            for server in servers or ()
            if (fqdn, str(server)) not in done
        ]
        if pending:
            await asyncio.gather(*(check(fqdn, server, query_timeout) for fqdn, server in pending))
        if all(servers is not None for servers in targets.values()) and not problems:
            log.debug("TXT records visible: %s", ", ".join(sorted(wanted)))
            return
        remaining = deadline - clock()
        if remaining <= 0:
            raise PropagationTimeout(_timeout_message(timeout, problems))
        await sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)


def _timeout_message(timeout: float, problems: Mapping[tuple[str, str], str]) -> str:
    lines = []
    for (fqdn, server), problem in sorted(problems.items()):
        where = f" at {server}" if server else ""
        lines.append(f"{fqdn}{where} ({problem})")
    return (
        f"TXT records not visible after {timeout:g}s: " + "; ".join(lines) + ". Check that the DNS "
        "provider published them, or allow more time with a longer propagation timeout."
    )
