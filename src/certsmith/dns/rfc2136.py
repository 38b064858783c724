"""RFC 2136 dynamic DNS updates signed with TSIG (RFC 8945), e.g. to BIND, Knot or PowerDNS.

The provider talks straight to the primary name server: it finds the zone that
holds a name with SOA queries to that server, then sends one signed UPDATE per
record over TCP. ``present`` adds exactly one TXT value; ``cleanup`` deletes exactly
that value and leaves any other TXT value at the same name alone. The variable
names are lego's, so existing ``RFC2136_*`` settings work unchanged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from certsmith.dns.base import (
    ConfiguredProvider,
    EnvVar,
    ProviderInfo,
    is_ip_address,
    optional_seconds,
    parse_host_port,
    parse_int,
    parse_seconds,
    read_env,
)
from certsmith.errors import ConfigError, DnsError, ProviderConfigError

log = logging.getLogger(__name__)

NAME = "rfc2136"

#: Accepted spellings (lower case, without trailing dot) -> the TSIG algorithm name.
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-md5.sig-alg.reg.int": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

ENV = (
    EnvVar(
        "RFC2136_NAMESERVER",
        "Primary name server that accepts the updates: host, host:port, IPv6 as [::1]:53",
        required=True,
    ),
    EnvVar(
        "RFC2136_TSIG_KEY",
        "TSIG key name, as in the server's `key` statement (e.g. certsmith.); unset for unsigned updates",
    ),
    EnvVar(
        "RFC2136_TSIG_SECRET",
        "TSIG secret, base64, as in the `key` statement; required with RFC2136_TSIG_KEY",
        secret=True,
    ),
    EnvVar(
        "RFC2136_TSIG_ALGORITHM",
        "TSIG algorithm: hmac-sha256, hmac-sha512, hmac-sha1, ... (a trailing dot is fine)",
        default="hmac-sha256",
    ),
    EnvVar("RFC2136_TTL", "TTL of the TXT records, seconds", default="120"),
    EnvVar("RFC2136_PROPAGATION_TIMEOUT", "Seconds to wait until the record is visible"),
    EnvVar("RFC2136_DNS_TIMEOUT", "Timeout of one DNS query or update, seconds", default="10"),
    EnvVar("RFC2136_ZONE", "Zone to update; found with SOA queries to the name server when unset"),
)


@dataclass(frozen=True)
class Rfc2136Config:
    """Settings of :class:`Rfc2136Provider`; ``tsig_secret`` is kept out of ``repr``."""

    host: str
    port: int = 53
    tsig_key: str | None = None
    tsig_secret: bytes | None = field(default=None, repr=False)
    tsig_algorithm: dns.name.Name = dns.tsig.HMAC_SHA256
    ttl: int = 120
    propagation_timeout: float | None = None
    dns_timeout: float = 10.0
    zone: str | None = None

    @property
    def nameserver(self) -> str:
        """``host:port`` (IPv6 in brackets), for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read and check lego's ``RFC2136_*`` variables; every missing one is named at once."""
        missing: list[str] = []
        try:
            values = read_env(env, ENV, NAME)
        except ProviderConfigError as exc:
            missing += exc.missing
            values = read_env(env, ENV[1:], NAME)  # only optional ones: does not raise
        key, secret = values.get("RFC2136_TSIG_KEY"), values.get("RFC2136_TSIG_SECRET")
        tsig_missing = [n for n, v in (("RFC2136_TSIG_KEY", key), ("RFC2136_TSIG_SECRET", secret)) if not v]
        if len(tsig_missing) == 1:
            missing += tsig_missing
        if missing:
            hint = "TSIG needs both the key name and the secret" if len(tsig_missing) == 1 else ""
            raise ProviderConfigError(NAME, missing, hint)
        host, port = parse_host_port(values["RFC2136_NAMESERVER"], "RFC2136_NAMESERVER")
        secret_bytes: bytes | None = None
        if secret is not None:
            try:
                secret_bytes = base64.b64decode("".join(secret.split()), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("RFC2136_TSIG_SECRET is not valid base64") from None
            if not secret_bytes:
                raise ConfigError("RFC2136_TSIG_SECRET is empty")
        if key is not None:
            _check_name(key, "RFC2136_TSIG_KEY")
        zone = values.get("RFC2136_ZONE")
        if zone is not None:
            zone = _check_name(zone, "RFC2136_ZONE").to_text()
        return cls(
            host=host,
            port=port,
            tsig_key=key,
            tsig_secret=secret_bytes,
            tsig_algorithm=parse_algorithm(values["RFC2136_TSIG_ALGORITHM"]),
            ttl=parse_int("RFC2136_TTL", values["RFC2136_TTL"]),
            propagation_timeout=optional_seconds(values, "RFC2136_PROPAGATION_TIMEOUT"),
            dns_timeout=parse_seconds("RFC2136_DNS_TIMEOUT", values["RFC2136_DNS_TIMEOUT"]),
            zone=zone,
        )


def parse_algorithm(text: str) -> dns.name.Name:
    """The TSIG algorithm for ``hmac-sha256``, ``HMAC-SHA256.``, ``sha256`` and the like."""
    key = text.strip().lower().rstrip(".")
    if not key.startswith("hmac-"):
        key = "hmac-" + key
    try:
        return ALGORITHMS[key]
    except KeyError:
        known = ", ".join(k for k in ALGORITHMS if "." not in k)
        raise ConfigError(f"RFC2136_TSIG_ALGORITHM {text!r} is not supported; use one of {known}") from None


def _check_name(text: str, variable: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text.strip().lower())
    except dns.exception.DNSException as exc:
        raise ConfigError(f"{variable} {text!r} is not a valid DNS name: {exc}") from None


class Rfc2136Provider(ConfiguredProvider[Rfc2136Config]):
    """Creates and deletes TXT records with TSIG-signed RFC 2136 updates."""

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="RFC 2136 dynamic update (BIND, Knot, PowerDNS, ...)",
        description=(
            "Sends TSIG-signed dynamic updates to your primary name server. The server must let "
            "the key change TXT records, e.g. BIND: update-policy { grant KEY zonesub TXT; };"
        ),
        env=ENV,
        example=(
            "RFC2136_NAMESERVER=ns1.example.com:53 RFC2136_TSIG_KEY=certsmith. "
            "RFC2136_TSIG_ALGORITHM=hmac-sha256 RFC2136_TSIG_SECRET_FILE=/etc/certsmith/tsig.secret "
            "certsmith issue -d example.com --dns rfc2136"
        ),
        links=(
            "https://www.rfc-editor.org/rfc/rfc2136",
            "https://www.rfc-editor.org/rfc/rfc8945",
            "https://bind9.readthedocs.io/en/stable/reference.html#dynamic-update-policies",
            "https://go-acme.github.io/lego/dns/rfc2136/",
        ),
        default_propagation_timeout=60.0,
    )

    def __init__(self, config: Rfc2136Config) -> None:
        self.config = config
        self._keyring: dict[dns.name.Name, dns.tsig.Key] | None = None
        self._keyname: dns.name.Name | None = None
        if config.tsig_key is not None and config.tsig_secret is not None:
            self._keyname = dns.name.from_text(config.tsig_key.lower())
            # dns.tsig.Key's repr shows the secret: it stays in this private dict only.
            key = dns.tsig.Key(self._keyname, config.tsig_secret, config.tsig_algorithm)
            self._keyring = {self._keyname: key}
        self._addresses: list[str] | None = [config.host] if is_ip_address(config.host) else None
        self._zones: dict[dns.name.Name, dns.name.Name] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build from lego's ``RFC2136_*`` variables (see ``info.env`` and :class:`Rfc2136Config`)."""
        return cls(Rfc2136Config.from_env(env))


    async def present(self, fqdn: str, value: str) -> None:
        """Add the TXT record ``fqdn`` = ``value`` (adding it twice is harmless)."""
        name = self._name(fqdn)
        zone = await self._zone_of(name)
        update = self._update(zone)
        update.add(name, self.config.ttl, _txt(value))
        log.debug("rfc2136: adding TXT %s in zone %s via %s", name, zone, self.config.nameserver)
        await self._send_update(update, zone, name, "add")

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Delete the TXT record ``fqdn`` = ``value``; other values at ``fqdn`` stay."""
        name = self._name(fqdn)
        zone = await self._zone_of(name)
        update = self._update(zone)
        update.delete(name, _txt(value))
        log.debug("rfc2136: deleting TXT %s in zone %s via %s", name, zone, self.config.nameserver)
        await self._send_update(update, zone, name, "delete")

    async def aclose(self) -> None:
        """Nothing to release: every query and update uses its own TCP connection."""

    # -- zone detection ----------------------------------------------------------------

    def _name(self, fqdn: str) -> dns.name.Name:
        try:
            return dns.name.from_text(fqdn.lower())
        except dns.exception.DNSException as exc:
            raise DnsError(f"{fqdn!r} is not a valid DNS name: {exc}") from None

    async def _zone_of(self, name: dns.name.Name) -> dns.name.Name:
        if self.config.zone is not None:
            zone = dns.name.from_text(self.config.zone)
            if not name.is_subdomain(zone):
                raise DnsError(f"{name} is not inside RFC2136_ZONE {zone}")
            return zone
        cached = self._zones.get(name)
        if cached is None:
            cached = self._zones[name] = await self._find_zone(name)
        return cached

    async def _find_zone(self, name: dns.name.Name) -> dns.name.Name:
        """Walk up from ``name`` asking the name server for the SOA until it names a zone.

        A name that does not exist is answered NXDOMAIN with the zone's SOA in the
        authority section, so one query usually suffices; REFUSED or an answer without
        an SOA means "not here", so the walk goes on with the parent name.
        """
        candidate = name
        answers: list[str] = []
        while candidate != dns.name.root:
            query = dns.message.make_query(candidate, dns.rdatatype.SOA)
            query.flags &= ~dns.flags.RD
            response = await self._exchange(query, f"SOA query for {candidate}")
            rcode = response.rcode()
            answers.append(f"{candidate} {dns.rcode.to_text(rcode)}")
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                for rrset in response.answer:
                    if rrset.rdtype == dns.rdatatype.SOA and rrset.name == candidate:
                        return candidate
                for rrset in response.authority:
                    if rrset.rdtype == dns.rdatatype.SOA and candidate.is_subdomain(rrset.name):
                        return rrset.name
                if not response.flags & dns.flags.AA and any(
                    rrset.rdtype == dns.rdatatype.NS and candidate.is_subdomain(rrset.name)
                    for rrset in response.authority
                ):
                    cut = next(r.name for r in response.authority if r.rdtype == dns.rdatatype.NS)
                    raise DnsError(
                        f"{self.config.nameserver} delegates {cut} to other name servers; point "
                        f"RFC2136_NAMESERVER at the primary server of {cut} or set RFC2136_ZONE"
                    )
            candidate = candidate.parent()
        raise DnsError(
            f"{self.config.nameserver} is not authoritative for any zone containing {name} "
            f"(SOA queries answered: {', '.join(answers)}); check RFC2136_NAMESERVER or set RFC2136_ZONE"
        )

    # -- updates -----------------------------------------------------------------------

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        if self._keyring is None:
            return dns.update.UpdateMessage(zone)
        return dns.update.UpdateMessage(
            zone, keyring=self._keyring, keyname=self._keyname, keyalgorithm=self.config.tsig_algorithm
        )

    async def _send_update(
        self, update: dns.update.UpdateMessage, zone: dns.name.Name, name: dns.name.Name, action: str
    ) -> None:
        what = f"{action} of TXT {name} in zone {zone}"
        response = await self._exchange(update, what)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        key = f"TSIG key {self.config.tsig_key}" if self.config.tsig_key else "an unsigned update"
        server = self.config.nameserver
        if rcode == dns.rcode.REFUSED:
            raise DnsError(
                f"{server} refused the {what} (REFUSED): the zone's update-policy or allow-update "
                f"must permit {key} to change TXT records at {name}"
            )
        if rcode == dns.rcode.NOTAUTH:
            raise DnsError(
                f"{server} is not authoritative for zone {zone} (NOTAUTH) during the {what}; "
                "RFC2136_NAMESERVER must be a primary server of the zone (check RFC2136_ZONE too)"
            )
        if rcode == dns.rcode.NOTZONE:
            raise DnsError(f"{server} says {name} is not inside zone {zone} (NOTZONE); check RFC2136_ZONE")
        raise DnsError(f"{server} answered {dns.rcode.to_text(rcode)} to the {what}")

    async def _exchange(self, message: dns.message.Message, what: str) -> dns.message.Message:
        """Send ``message`` over TCP and turn every failure into a :class:`DnsError`."""
        server = self.config.nameserver
        timeout = self.config.dns_timeout
        try:
            return await self._send(message)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.message.UnknownTSIGKey) as exc:
            code = "BADKEY" if isinstance(exc, dns.tsig.PeerBadKey) else "BADSIG"
            raise DnsError(
                f"{server} rejected the {what} ({code}): the TSIG key name or secret is not what the "
                f"server has (key {self.config.tsig_key!r}, algorithm "
                f"{self.config.tsig_algorithm.to_text(True)}); check RFC2136_TSIG_KEY, "
                "RFC2136_TSIG_SECRET and RFC2136_TSIG_ALGORITHM"
            ) from None
        except dns.tsig.PeerBadTime:
            raise DnsError(
                f"{server} rejected the {what} (BADTIME): the clocks of this machine and of the "
                "server differ by more than the TSIG fudge (5 minutes)"
            ) from None
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.BadKey) as exc:
            raise DnsError(f"{server} answered the {what} with a bad TSIG signature ({exc!r})") from None
        except dns.exception.Timeout:
            raise DnsError(f"no answer from DNS server {server} to the {what} within {timeout:g}s") from None
        except ConnectionRefusedError:
            raise DnsError(
                f"cannot reach DNS server {server} for the {what}: connection refused "
                "(nothing listens on that TCP port; check RFC2136_NAMESERVER)"
            ) from None
        except (OSError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise DnsError(f"cannot reach DNS server {server} for the {what}: {reason}") from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"DNS server {server} sent an unusable answer to the {what}: {exc}") from None

    async def _send(self, message: dns.message.Message) -> dns.message.Message:
        """One TCP exchange; a host name's addresses are tried in turn until one connects."""
        addresses = await self._server_addresses()
        for address in addresses[:-1]:
            try:
                return await self._tcp(message, address)
            except OSError as exc:  # e.g. "localhost" -> ::1 first while the server is on 127.0.0.1
                log.debug("rfc2136: %s unreachable (%s), trying the next address", address, exc)
        return await self._tcp(message, addresses[-1])

    async def _tcp(self, message: dns.message.Message, address: str) -> dns.message.Message:
        import dns.asyncquery  # here: it pulls in asyncio's networking, which `certsmith dns list` never needs

        return await dns.asyncquery.tcp(message, address, timeout=self.config.dns_timeout, port=self.config.port)

    async def _server_addresses(self) -> list[str]:
        """The server's IP addresses; a host name is resolved once, without blocking."""
        if self._addresses is None:
            import asyncio

            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise DnsError(
                    f"cannot resolve the RFC2136_NAMESERVER host {self.config.host!r}: {exc.strerror}"
                ) from None
            self._addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return self._addresses


def _txt(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    """One TXT rdata holding ``value``, split into 255-byte strings as DNS requires."""
    data = value.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
