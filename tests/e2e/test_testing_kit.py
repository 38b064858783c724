"""certsmith.testing's Pebble launcher: both versions, profiles, ARI overrides and log reading.

These check the test kit itself against the real servers, so the renewal tests built on it
can trust what it reports.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509

from certsmith.acme.client import AcmeClient
from certsmith.crypto import ari_cert_id, load_private_key, parse_identifiers
from certsmith.storage.files import FileStore
from certsmith.testing.pebble import ChallTestSrv, PebbleServer, find_pebble, free_port
from tests.conftest import PROFILES, Cli
from tests.e2e.helpers import verify_chain


def renewal_info(pebble: PebbleServer, cert: x509.Certificate) -> tuple[str | None, bytes]:
    """GET the certificate's renewalInfo as any client would: (Retry-After, body)."""
    url = f"{pebble.directory()['renewalInfo']}/{ari_cert_id(cert)}"
    context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.headers.get("Retry-After"), response.read()


def issue(cli: Cli, name: str, *extra: str) -> x509.Certificate:
    cli.run("issue", "-d", name, *extra, *cli.http_args())
    return x509.load_pem_x509_certificate((cli.state_dir / "certificates" / name / "cert.pem").read_bytes())


def test_main_server_is_pebble_210_with_the_profiles(pebble: PebbleServer) -> None:
    directory = pebble.directory()
    assert pebble.version == "2.10" and directory["renewalInfo"].startswith(f"https://127.0.0.1:{pebble.listen_port}/")
    assert directory["meta"]["profiles"] == {name: p.description for name, p in PROFILES.items()}


@pytest.mark.parametrize("profile", ["shortlived", "tiny"])
def test_a_named_profile_sets_the_lifetime(registered_cli: Cli, profile: str, tmp_path: Path) -> None:
    leaf = issue(registered_cli, f"{profile}.example.com", "--profile", profile)
    verify_chain(registered_cli.pebble, registered_cli.state_dir / "certificates" / f"{profile}.example.com", tmp_path)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == PROFILES[profile].validity - datetime.timedelta(seconds=1)


def test_set_renewal_info_overrides_the_ari_answer(registered_cli: Cli) -> None:
    pebble = registered_cli.pebble
    leaf = issue(registered_cli, "ari.example.com", "--profile", "default")
    retry_after, body = renewal_info(pebble, leaf)
    # Pebble's own answer: a two-day window around two thirds of the lifetime
    start = datetime.datetime.fromisoformat(json.loads(body)["suggestedWindow"]["start"])
    assert retry_after == "21600"
    assert abs(start - (leaf.not_valid_before_utc + datetime.timedelta(days=59))) < datetime.timedelta(minutes=1)

    now = datetime.datetime.now(datetime.UTC)
    past = {"start": now - datetime.timedelta(days=2), "end": now - datetime.timedelta(days=1)}
    pem = (registered_cli.state_dir / "certificates" / "ari.example.com" / "fullchain.pem").read_bytes()
    pebble.set_renewal_info(pem, {"suggestedWindow": past, "explanationURL": "https://example.com/incident"})
    retry_after, body = renewal_info(pebble, leaf)
    answer = json.loads(body)
    assert retry_after == "21600" and answer["explanationURL"] == "https://example.com/incident"
    assert datetime.datetime.fromisoformat(answer["suggestedWindow"]["end"]) == past["end"]

    pebble.set_renewal_info(pem, "this is not JSON")
    assert renewal_info(pebble, leaf)[1] == b"this is not JSON"


def test_set_renewal_info_refuses_what_pebble_cannot_use(pebble: PebbleServer, pebble24: PebbleServer) -> None:
    assert pebble.ca_bundle is not None
    unknown = pebble.ca_bundle.read_bytes()  # the launcher's own TLS CA: never issued by Pebble
    with pytest.raises(RuntimeError, match=r"HTTP 404 .*set-renewal-info.*not found"):
        pebble.set_renewal_info(unknown, "{}")
    with pytest.raises(TypeError, match="time zone"):
        pebble.set_renewal_info(unknown, {"suggestedWindow": {"start": datetime.datetime(2030, 1, 1)}})
    with pytest.raises(RuntimeError, match=r"Pebble 2\.4 has no ARI"):
        pebble24.set_renewal_info(unknown, "{}")


def test_log_shows_orders_certificates_and_replacements(registered_cli: Cli) -> None:
    pebble = registered_cli.pebble
    mark = pebble.log_mark()
    leaf = issue(registered_cli, "replaced.example.com")
    (first_order,) = pebble.orders_created(mark)
    assert pebble.certificates_issued(mark) == {leaf.serial_number: first_order}
    # one order; Pebble's 5% nonce rejection may make the client send its newOrder again
    assert 1 <= pebble.request_count("newOrder", mark) <= 3 and pebble.request_count("newAccount", mark) == 0
    assert pebble.replacements(mark) == []

    account = FileStore(registered_cli.state_dir).load_account(pebble.directory_url)
    assert account is not None

    async def order_replacing() -> str:
        async with AcmeClient(
            pebble.directory_url, load_private_key(account.key_pem), account_url=account.url, ca_bundle=pebble.ca_bundle
        ) as client:
            order = await client.new_order(parse_identifiers(["replaced.example.com"]), replaces=ari_cert_id(leaf))
        return order.url.rsplit("/", 1)[-1]

    second = pebble.log_mark()
    new_order = asyncio.run(order_replacing())
    assert pebble.orders_created(second) == [new_order]
    assert pebble.replacements(mark) == [(new_order, first_order)]
    assert 1 <= pebble.request_count("newOrder", second, method="POST") <= 3
    assert pebble.request_count("newOrder", second, method="GET") == 0
    with pytest.raises(ValueError, match="no 'newAuthz'"):
        pebble.request_count("newAuthz")


@pytest.mark.parametrize("version", ["2.10", "2.4"])
def test_challtestsrv_of_either_version_serves_txt_records(version: str, tmp_path: Path) -> None:
    """2.10 names the DNS flag -dnsserver, 2.4 -dns01: both must come up and answer."""
    srv = ChallTestSrv(free_port(kind=socket.SOCK_DGRAM), free_port(), binary=find_pebble(version).challtestsrv)
    srv.start(tmp_path / "challtestsrv.log")
    try:
        srv.set_txt_values("_acme-challenge.kit.example.com.", ["one", "two"])
        query = dns.message.make_query("_acme-challenge.kit.example.com.", dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=srv.dns_port, timeout=5)
        values = {b"".join(rdata.strings).decode() for rrset in answer.answer for rdata in rrset}
        assert values == {"one", "two"}
    finally:
        srv.stop()


def test_profiles_are_refused_on_pebble_24_before_anything_starts(tmp_path: Path) -> None:
    server = PebbleServer(workdir=tmp_path / "p", version="2.4", profiles={"default": PROFILES["default"]})
    with pytest.raises(ValueError, match=r"Pebble 2\.4 has no certificate profiles"):
        server.start()
    assert server.process is None and server.challtestsrv is None
