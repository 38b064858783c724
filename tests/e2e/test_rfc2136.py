"""The rfc2136 provider against a real BIND 9 (``named`` from the Debian package bind9)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from certsmith.dns.base import DnsProvider, load_provider
from certsmith.dns.rfc2136 import Rfc2136Provider
from certsmith.errors import DnsError
from certsmith.testing.conformance import check_provider
from certsmith.testing.pebble import LOOPBACK, free_port
from tests.support.bind import BindError, BindServer

VALUE = "v" * 43


@pytest.fixture(scope="module")
def bind() -> Iterator[BindServer]:
    server = BindServer(
        zones=("example.test.", "other.test.", "sub.example.test."),
        readonly_zones=("static.test.",),
        hosts=("www",),
    )
    with server:
        yield server


def provider(bind: BindServer, **extra: str) -> Rfc2136Provider:
    return Rfc2136Provider.from_env(bind.env(**extra))


def soa_serial(bind: BindServer, zone: str) -> int:
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, LOOPBACK, timeout=5, port=bind.port)
    serial: int = response.answer[0][0].serial
    return serial


def udp_txt(bind: BindServer, fqdn: str) -> set[str]:
    """TXT values over UDP, independent of BindServer.read_txt (which uses TCP)."""
    query = dns.message.make_query(fqdn, dns.rdatatype.TXT, use_edns=0, payload=4096)
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, LOOPBACK, timeout=5, port=bind.port)
    assert response.flags & dns.flags.AA and not response.flags & dns.flags.TC
    return {b"".join(r.strings).decode() for rrset in response.answer for r in rrset}


def failure(coro: Coroutine[Any, Any, None]) -> DnsError:
    """Run ``coro`` and return the DnsError it must raise."""
    with pytest.raises(DnsError) as info:
        asyncio.run(coro)
    return info.value


def assert_secret_hidden(bind: BindServer, *texts: str) -> None:
    raw = base64.b64decode(bind.tsig_secret)
    for text in texts:
        assert bind.tsig_secret not in text
        assert raw.hex() not in text


def test_provider_is_registered_and_satisfies_the_protocol(bind: BindServer) -> None:
    loaded = load_provider("rfc2136", bind.env())
    assert isinstance(loaded, Rfc2136Provider)
    assert isinstance(loaded, DnsProvider)


def test_conformance(bind: BindServer) -> None:
    async def run() -> None:
        p = provider(bind)
        try:
            await check_provider(p, "example.test.", bind.read_txt)
        finally:
            await p.aclose()

    asyncio.run(run())


def test_records_are_served_with_the_configured_ttl(bind: BindServer) -> None:
    fqdn = "_acme-challenge.ttl.example.test."
    p = provider(bind, RFC2136_TTL="77")
    asyncio.run(p.present(fqdn, VALUE))
    query = dns.message.make_query(fqdn, dns.rdatatype.TXT)
    response = dns.query.udp(query, LOOPBACK, timeout=5, port=bind.port)
    assert response.answer[0].ttl == 77
    assert udp_txt(bind, fqdn) == {VALUE}
    asyncio.run(p.cleanup(fqdn, VALUE))
    assert udp_txt(bind, fqdn) == set()


@pytest.mark.parametrize(
    ("fqdn", "zone"),
    [
        ("_acme-challenge.a.b.other.test.", "other.test."),  # two levels under the zone, NXDOMAIN
        ("_acme-challenge.www.other.test.", "other.test."),  # under a wildcard: NODATA
        ("other.test.", "other.test."),  # the apex: SOA in the answer section
        ("_acme-challenge.x.sub.example.test.", "sub.example.test."),  # the deepest zone wins
    ],
)
def test_zone_is_found_by_soa_queries(bind: BindServer, fqdn: str, zone: str) -> None:
    before = {z: soa_serial(bind, z) for z in bind.zones}
    p = provider(bind)
    asyncio.run(p.present(fqdn, VALUE))
    try:
        assert VALUE in udp_txt(bind, fqdn)
        changed = {z for z in bind.zones if soa_serial(bind, z) != before[z]}
        assert changed == {zone}
    finally:
        asyncio.run(p.cleanup(fqdn, VALUE))
    assert VALUE not in udp_txt(bind, fqdn)


def test_zone_override(bind: BindServer) -> None:
    fqdn = "_acme-challenge.override.other.test."
    p = provider(bind, RFC2136_ZONE="Other.Test")
    asyncio.run(p.present(fqdn, VALUE))
    assert udp_txt(bind, fqdn) == {VALUE}
    asyncio.run(p.cleanup(fqdn, VALUE))
    assert udp_txt(bind, fqdn) == set()
    error = failure(p.present("_acme-challenge.example.test.", VALUE))
    assert "not inside RFC2136_ZONE other.test." in str(error)


def test_long_values_are_split_into_255_byte_strings(bind: BindServer) -> None:
    fqdn = "_acme-challenge.long.example.test."
    value = "".join(chr(ord("a") + i % 26) for i in range(600))
    p = provider(bind)
    asyncio.run(p.present(fqdn, value))
    assert udp_txt(bind, fqdn) == {value}
    asyncio.run(p.cleanup(fqdn, value))
    assert udp_txt(bind, fqdn) == set()


def test_wrong_secret_is_reported_and_changes_nothing(bind: BindServer) -> None:
    fqdn = "_acme-challenge.wrong.example.test."
    good = provider(bind)
    asyncio.run(good.present(fqdn, VALUE))
    other_secret = base64.b64encode(os.urandom(32)).decode()
    bad = provider(bind, RFC2136_TSIG_SECRET=other_secret)
    try:
        added = failure(bad.present(fqdn, "n" * 43))
        deleted = failure(bad.cleanup(fqdn, VALUE))
        for error in (added, deleted):
            assert "BADSIG" in str(error)
            assert "the TSIG key name or secret is not what the server has" in str(error)
            assert bind.address in str(error)
            assert other_secret not in str(error)
            assert_secret_hidden(bind, str(error), repr(error))
        assert udp_txt(bind, fqdn) == {VALUE}
    finally:
        asyncio.run(good.cleanup(fqdn, VALUE))


def test_unknown_key_name(bind: BindServer) -> None:
    error = failure(provider(bind, RFC2136_TSIG_KEY="no-such-key.").present("_acme-challenge.example.test.", VALUE))
    assert "BADKEY" in str(error)
    assert "the TSIG key name or secret is not what the server has" in str(error)
    assert "'no-such-key.'" in str(error)
    assert_secret_hidden(bind, str(error))
    assert VALUE not in udp_txt(bind, "_acme-challenge.example.test.")


def test_wrong_algorithm_is_a_key_mismatch(bind: BindServer) -> None:
    error = failure(
        provider(bind, RFC2136_TSIG_ALGORITHM="hmac-sha512").present("_acme-challenge.example.test.", VALUE)
    )
    assert "the TSIG key name or secret is not what the server has" in str(error)
    assert "hmac-sha512" in str(error)


def test_update_refused_names_zone_and_policy(bind: BindServer) -> None:
    error = failure(provider(bind).present("_acme-challenge.static.test.", VALUE))
    message = str(error)
    assert "REFUSED" in message and "static.test." in message
    assert "update-policy" in message and "allow-update" in message and bind.tsig_key_name in message
    assert_secret_hidden(bind, message)


def test_unsigned_update_is_refused(bind: BindServer) -> None:
    p = Rfc2136Provider.from_env({"RFC2136_NAMESERVER": bind.address})
    error = failure(p.present("_acme-challenge.example.test.", VALUE))
    assert "REFUSED" in str(error) and "unsigned" in str(error)


def test_zone_not_served(bind: BindServer) -> None:
    error = failure(provider(bind).present("_acme-challenge.nowhere.test.", VALUE))
    assert "not authoritative for any zone containing _acme-challenge.nowhere.test." in str(error)
    assert "RFC2136_ZONE" in str(error) and bind.address in str(error)

    error = failure(provider(bind, RFC2136_ZONE="nowhere.test.").present("_acme-challenge.nowhere.test.", VALUE))
    assert "NOTAUTH" in str(error) and "nowhere.test." in str(error)
    assert_secret_hidden(bind, str(error))


def test_connection_refused_names_the_server(bind: BindServer) -> None:
    address = f"{LOOPBACK}:{free_port()}"
    error = failure(provider(bind, RFC2136_NAMESERVER=address).present("_acme-challenge.example.test.", VALUE))
    assert address in str(error) and "connection refused" in str(error)


def test_timeout_names_the_server(bind: BindServer) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind((LOOPBACK, 0))
        silent.listen(4)
        address = f"{LOOPBACK}:{silent.getsockname()[1]}"
        p = provider(bind, RFC2136_NAMESERVER=address, RFC2136_DNS_TIMEOUT="0.3")
        error = failure(p.cleanup("_acme-challenge.example.test.", VALUE))
    assert f"no answer from DNS server {address}" in str(error) and "0.3s" in str(error)


def test_secret_never_in_repr_or_logs(bind: BindServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = provider(bind)
    fqdn = "_acme-challenge.logs.example.test."
    asyncio.run(p.present(fqdn, VALUE))
    asyncio.run(p.cleanup(fqdn, VALUE))
    assert "rfc2136: adding TXT" in caplog.text  # the debug log is really captured
    assert_secret_hidden(bind, caplog.text, repr(p), repr(p.config), str(vars(p).get("config")))
    assert_secret_hidden(bind, repr(bind))


def test_harness_allow_update_sha512_and_hosts() -> None:
    """The other BindServer options: allow-update, another algorithm, host records."""
    with BindServer(
        zones=("alt.test.",),
        policy="allow-update",
        tsig_key_name="alt-key",
        tsig_algorithm="HMAC-SHA512",
        hosts={"api": "127.0.0.2", "v6.alt.test.": "::1"},
    ) as server:
        assert len(base64.b64decode(server.tsig_secret)) == 64
        assert server.address == f"{LOOPBACK}:{server.port}"
        for name, rdtype, expected in [
            ("api.alt.test.", "A", "127.0.0.2"),
            ("v6.alt.test.", "AAAA", "::1"),
            ("anything.alt.test.", "A", LOOPBACK),
            ("alt.test.", "A", LOOPBACK),
        ]:
            query = dns.message.make_query(name, rdtype)
            response = dns.query.udp(query, LOOPBACK, timeout=5, port=server.port)
            assert [r.to_text() for r in response.answer[0]] == [expected]
        p = Rfc2136Provider.from_env(server.env())
        asyncio.run(check_provider(p, "alt.test.", server.read_txt))
    assert server.process is None and server.workdir is None


def test_harness_reports_named_failure_with_its_log() -> None:
    server = BindServer(tsig_secret="not base64 !")
    with pytest.raises(BindError) as info:
        server.start()
    message = str(info.value)
    assert "named exited" in message and "named.conf" in message  # the log tail names the bad line
    assert server.process is None and server.workdir is None
