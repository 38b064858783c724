"""Start a throwaway BIND 9 name server with TSIG-protected dynamic zones.

:class:`BindServer` is the real counterpart of the ``rfc2136`` DNS provider: it
writes a ``named.conf``, a TSIG key with a random secret and one zone file per zone
into a temporary directory, starts ``named`` in the foreground on a free port of
127.0.0.1 (UDP and TCP, no recursion, no rndc) and waits until every zone answers
an SOA query. Debian ships ``named`` in the ``bind9`` package.

Use it in your own tests::

    from certsmith.dns.rfc2136 import Rfc2136Provider
    from tests.support.bind import BindServer

    with BindServer(zones=("example.test.",)) as bind:
        provider = Rfc2136Provider.from_env(bind.env())
        # await provider.present("_acme-challenge.example.test.", "token")
        # assert "token" in await bind.read_txt("_acme-challenge.example.test.")

Every zone also has ``<zone> A`` and ``*.<zone> A`` records (127.0.0.1 by default),
so an ACME test server resolving through BIND, e.g.
``PebbleServer(dns_server=bind.address)``, reaches http-01 and tls-alpn-01 names too.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Self

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from certsmith.testing.pebble import LOOPBACK, free_port, stop_process

UpdatePolicy = Literal["update-policy", "allow-update"]


class _Sender(Protocol):
    """The shape shared by ``dns.query.udp`` and ``dns.query.tcp`` as used here."""

    def __call__(self, q: dns.message.Message, where: str, *, timeout: float, port: int) -> dns.message.Message: ...


_DIGEST_SIZES = {
    "hmac-md5": 16,
    "hmac-sha1": 20,
    "hmac-sha224": 28,
    "hmac-sha256": 32,
    "hmac-sha384": 48,
    "hmac-sha512": 64,
}


class BindError(RuntimeError):
    """``named`` could not be started or did not answer; the message ends with its log."""


def _absolute(name: str) -> str:
    return name.strip().rstrip(".").lower() + "."


def _quote(text: str) -> str:
    if any(c in text for c in '"\\;{}\n'):
        raise ValueError(f"unsafe character in BIND configuration value {text!r}")
    return f'"{text}"'


def _address_type(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


def _named_binary() -> str:
    for candidate in (shutil.which("named"), "/usr/sbin/named"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BindError("named not found; install the Debian package 'bind9'")


@dataclass
class BindServer:
    """A BIND 9 primary server on 127.0.0.1 for tests of RFC 2136 updates.

    ``zones`` are updatable with the TSIG key ``tsig_key_name`` (through
    ``update-policy { grant KEY zonesub ANY; }`` or, with ``policy="allow-update"``,
    ``allow-update { key KEY; }``). ``readonly_zones`` are served but accept no update,
    to test a REFUSED answer. ``hosts`` adds address records: a sequence of names (each
    gets ``default_address``) or a mapping name -> IPv4/IPv6 address; relative names
    belong to the first zone. ``tsig_secret`` is generated when left empty.
    """

    zones: Sequence[str] = ("example.test.",)
    hosts: Mapping[str, str] | Sequence[str] = ()
    tsig_key_name: str = "certsmith-test-key."
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret: str = field(default="", repr=False)
    policy: UpdatePolicy = "update-policy"
    readonly_zones: Sequence[str] = ()
    default_address: str = LOOPBACK
    port: int = 0
    workdir: Path | None = None
    startup_timeout: float = 20.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tempdir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.zones = tuple(_absolute(z) for z in self.zones)
        self.readonly_zones = tuple(_absolute(z) for z in self.readonly_zones)
        if not self.zones and not self.readonly_zones:
            raise ValueError("BindServer needs at least one zone")
        self.tsig_algorithm = self.tsig_algorithm.lower().rstrip(".")
        if self.tsig_algorithm not in _DIGEST_SIZES:
            raise ValueError(
                f"unsupported TSIG algorithm {self.tsig_algorithm!r}; use one of {', '.join(_DIGEST_SIZES)}"
            )
        if not self.tsig_secret:
            size = _DIGEST_SIZES[self.tsig_algorithm]
            self.tsig_secret = base64.b64encode(secrets.token_bytes(size)).decode()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the form ``RFC2136_NAMESERVER`` and Pebble's ``-dnsserver`` take."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where named's output goes (it runs with ``-g``, logging to stderr)."""
        return self._dir / "named.log"

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise BindError("BindServer is not started")
        return self.workdir

    def env(self, **extra: str) -> dict[str, str]:
        """The ``RFC2136_*`` variables that point the ``rfc2136`` provider at this server."""
        values = {
            "RFC2136_NAMESERVER": self.address,
            "RFC2136_TSIG_KEY": self.tsig_key_name,
            "RFC2136_TSIG_SECRET": self.tsig_secret,
            "RFC2136_TSIG_ALGORITHM": self.tsig_algorithm,
        }
        values.update(extra)
        return values

    def start(self) -> Self:
        """Write the configuration, start named and wait until every zone answers."""
        if self.process is not None:
            return self
        if self.workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="certsmith-bind-")
            self.workdir = Path(self._tempdir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        pick_port = self.port == 0
        try:
            for attempt in range(3):
                if pick_port:
                    self.port = free_port()
                self._write_files()
                try:
                    self._launch()
                    return self
                except BindError:
                    # A free port can be taken between free_port() and named's bind().
                    if pick_port and attempt < 2 and "address in use" in self.log_tail():
                        self._terminate()
                        continue
                    raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop named and delete the temporary directory (if this object made it)."""
        self._terminate()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of named's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, BindError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def read_txt(self, fqdn: str) -> set[str]:
        """The TXT values BIND now serves at ``fqdn`` (an authoritative query over TCP)."""
        query = dns.message.make_query(_absolute(fqdn), dns.rdatatype.TXT)
        query.flags &= ~dns.flags.RD
        response = await dns.asyncquery.tcp(query, LOOPBACK, timeout=5, port=self.port)
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise BindError(f"TXT query for {fqdn} answered {dns.rcode.to_text(response.rcode())}")
        values: set[str] = set()
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                values.update(b"".join(rdata.strings).decode() for rdata in rrset)
        return values

    # -- internals -------------------------------------------------------------------

    def _write_files(self) -> None:
        directory = self._dir
        key = _quote(self.tsig_key_name)
        lines = [
            f"key {key} {{ algorithm {self.tsig_algorithm}; secret {_quote(self.tsig_secret)}; }};",
            "controls { };",
            "options {",
            f"    directory {_quote(str(directory))};",
            f"    pid-file {_quote(str(directory / 'named.pid'))};",
            f"    session-keyfile {_quote(str(directory / 'session.key'))};",
            f"    managed-keys-directory {_quote(str(directory))};",
            f"    dump-file {_quote(str(directory / 'named.dump'))};",
            f"    statistics-file {_quote(str(directory / 'named.stats'))};",
            f"    listen-on port {self.port} {{ {LOOPBACK}; }};",
            "    listen-on-v6 { none; };",
            "    recursion no;",
            "    allow-query { any; };",
            "    allow-transfer { none; };",
            "    dnssec-validation no;",
            "    notify no;",
            "};",
        ]
        records = self._host_records()
        for zone in (*self.zones, *self.readonly_zones):
            stem = zone.rstrip(".") or "root"
            zone_file = directory / f"{stem}.zone"
            zone_file.write_text(self._zone_text(zone, records.get(zone, [])))
            journal = directory / f"{stem}.zone.jnl"
            journal.unlink(missing_ok=True)
            lines += [
                f"zone {_quote(zone)} {{",
                "    type primary;",
                f"    file {_quote(str(zone_file))};",
                f"    journal {_quote(str(journal))};",
            ]
            if zone in self.zones and self.policy == "update-policy":
                lines.append(f"    update-policy {{ grant {key} zonesub ANY; }};")
            elif zone in self.zones:
                lines.append(f"    allow-update {{ key {key}; }};")
            lines.append("};")
        (directory / "named.conf").write_text("\n".join(lines) + "\n")

    def _host_records(self) -> dict[str, list[str]]:
        if isinstance(self.hosts, Mapping):
            pairs = list(self.hosts.items())
        else:
            names = (self.hosts,) if isinstance(self.hosts, str) else self.hosts
            pairs = [(name, self.default_address) for name in names]
        first_zone = (*self.zones, *self.readonly_zones)[0]
        all_zones = sorted((*self.zones, *self.readonly_zones), key=len, reverse=True)
        records: dict[str, list[str]] = {}
        for name, address in pairs:
            absolute = _absolute(name) if name.endswith(".") else _absolute(f"{name}.{first_zone}")
            zone = next((z for z in all_zones if absolute == z or absolute.endswith("." + z)), None)
            if zone is None:
                raise ValueError(f"host {name!r} is in none of the zones {', '.join(all_zones)}")
            records.setdefault(zone, []).append(f"{absolute} 60 IN {_address_type(address)} {address}")
        return records

    def _zone_text(self, zone: str, extra: list[str]) -> str:
        # A serial from the clock keeps a reused workdir's journal from confusing named.
        serial = int(time.time()) % 4_000_000_000
        return "\n".join(
            [
                f"$ORIGIN {zone}",
                "$TTL 60",
                f"@ IN SOA ns1.{zone} hostmaster.{zone} {serial} 3600 600 86400 1",
                f"@ IN NS ns1.{zone}",
                f"ns1 IN A {LOOPBACK}",
                f"@ IN {_address_type(self.default_address)} {self.default_address}",
                f"* IN {_address_type(self.default_address)} {self.default_address}",
                *extra,
                "",
            ]
        )

    def _launch(self) -> None:
        directory = self._dir
        conf = directory / "named.conf"
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [_named_binary(), "-g", "-4", "-n", "1", "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        pending = list((*self.zones, *self.readonly_zones))
        while pending:
            if self.process.poll() is not None:
                raise BindError(
                    f"named exited with status {self.process.returncode}; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BindError(
                    f"named did not answer SOA queries for {', '.join(pending)} on {self.address} "
                    f"within {self.startup_timeout:.0f}s; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._answers_soa(pending[0], dns.query.udp):
                pending.pop(0)
            else:
                time.sleep(0.05)
        if not self._answers_soa(self.zones[0] if self.zones else self.readonly_zones[0], dns.query.tcp):
            raise BindError(f"named answers on UDP but not on TCP {self.address}:\n{self.log_tail()}")

    def _answers_soa(self, zone: str, send: _Sender) -> bool:
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        try:
            response = send(query, LOOPBACK, timeout=0.5, port=self.port)
        except (dns.exception.DNSException, OSError):
            return False
        name = dns.name.from_text(zone)
        return response.rcode() == dns.rcode.NOERROR and any(
            rrset.rdtype == dns.rdatatype.SOA and rrset.name == name for rrset in response.answer
        )

    def _terminate(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout=10)
