"""Faults on the wire, from a real TLS proxy in front of Pebble: resets, 5xx, lost answers, time-outs.

Each case checks the outcome (issued, or the exact error) and that no certificate the CA
issued was thrown away: one order and one certificate wherever recovery is possible.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certsmith.acme.client import AcmeClient, RetryPolicy
from certsmith.acme.errors import PollTimeout, RequestTimeout
from certsmith.acme.resources import Order
from certsmith.crypto import generate_key
from certsmith.testing.pebble import LOOPBACK, PebbleServer
from tests.conftest import Cli
from tests.support.fault_proxy import Fault, FaultProxy


@pytest.fixture(scope="module")
def proxy(pebble: PebbleServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    assert pebble.ca_bundle is not None
    port = int(pebble.directory_url.rsplit(":", 1)[1].split("/", 1)[0])
    server = FaultProxy(LOOPBACK, port, pebble.ca_bundle, tmp_path_factory.mktemp("proxy")).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ProxiedCli(Cli):
    """The CLI talking to Pebble through the fault proxy."""

    proxy: FaultProxy | None = None

    def global_args(self) -> list[str]:
        assert self.proxy is not None
        return [
            "--directory", self.proxy.directory_url,
            "--ca-bundle", str(self.proxy.ca_path),
            "--state-dir", str(self.state_dir),
        ]


@pytest.fixture
def faulty(pebble: PebbleServer, proxy: FaultProxy, tmp_path: Path) -> Iterator[ProxiedCli]:
    proxy.reset()
    cli = ProxiedCli(pebble, tmp_path / "state", proxy)
    cli.register()
    yield cli
    proxy.reset()


def _issue(cli: ProxiedCli, name: str, *, check: bool = True) -> tuple[int, str, int]:
    """Issue ``name``; returns (exit status, stderr, Pebble log mark taken before)."""
    mark = cli.pebble.log_mark()
    result = cli.run("issue", "-d", name, *cli.http_args(), check=check)
    return result.returncode, result.stderr, mark


def _one_order_one_certificate(cli: ProxiedCli, mark: int) -> None:
    assert len(cli.pebble.orders_created(mark)) == 1
    assert len(cli.pebble.certificates_issued(mark)) == 1


def test_resets_on_reads_are_ridden_out(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    faulty.proxy.add(
        Fault("^/nonce-plz", "reset", method="HEAD"),
        Fault("^/authZ/", "reset", times=2),
        Fault("^/my-order/", "reset"),
        Fault("^/certZ/", "reset"),
    )
    _, stderr, mark = _issue(faulty, "resets.example.com")
    assert "Traceback" not in stderr
    _one_order_one_certificate(faulty, mark)
    assert all(f.hits == f.times for f in faulty.proxy.faults if f.path != "^/nonce-plz")


def test_5xx_with_retry_after_in_seconds_and_as_a_date_is_honoured(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    soon = email.utils.formatdate(time.time() + 1, usegmt=True)
    faulty.proxy.add(
        Fault("^/order-plz", "status", status=503, retry_after="1"),
        Fault("^/authZ/", "status", status=500, retry_after=soon),
        Fault("^/certZ/", "status", status=502),
    )
    started = time.monotonic()
    _, _, mark = _issue(faulty, "busy.example.com")
    assert time.monotonic() - started >= 1.0
    _one_order_one_certificate(faulty, mark)


@pytest.mark.parametrize("action", ["forward-then-reset", "forward-then-status"])
def test_a_lost_finalize_answer_keeps_the_certificate_the_ca_issued(faulty: ProxiedCli, action: str) -> None:
    assert faulty.proxy is not None
    faulty.proxy.add(Fault("^/finalize-order/", action, status=500))
    _, stderr, mark = _issue(faulty, f"finalize-{action}.example.com")
    _one_order_one_certificate(faulty, mark)
    assert faulty.proxy.faults[0].hits == 1, stderr


@pytest.mark.parametrize("action", ["forward-then-reset", "forward-then-status"])
def test_a_lost_challenge_answer_is_read_back(faulty: ProxiedCli, action: str) -> None:
    assert faulty.proxy is not None
    faulty.proxy.add(Fault("^/chalZ/", action, status=503))
    _, _, mark = _issue(faulty, f"challenge-{action}.example.com")
    _one_order_one_certificate(faulty, mark)


def test_a_lost_new_order_answer_costs_at_most_one_abandoned_order(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    faulty.proxy.add(Fault("^/order-plz", "forward-then-reset"))
    _, _, mark = _issue(faulty, "neworder.example.com")
    # two orders; one when Pebble refused the lost request's nonce before creating anything
    assert len(faulty.pebble.orders_created(mark)) in (1, 2)
    assert len(faulty.pebble.certificates_issued(mark)) == 1


def test_a_lost_revoke_answer_counts_as_revoked(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    _issue(faulty, "revoke.example.com")
    faulty.proxy.add(Fault("^/revoke-cert", "forward-then-reset"))
    result = faulty.run("revoke", "revoke.example.com")
    assert "Traceback" not in result.stderr
    statuses = [e.status for e in faulty.proxy.requests("^/revoke-cert")]
    # revoked by the lost request (200), then alreadyRevoked (400); a rejected nonce may add a 400 before
    assert 200 in statuses and statuses[-1] == 400 and len(statuses) <= 4


def test_retry_after_beyond_the_cap_says_when_the_ca_wants_to_hear_again(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    faulty.proxy.add(Fault("^/order-plz", "status", status=503, retry_after="7200", times=10))
    status, stderr, mark = _issue(faulty, "later.example.com", check=False)
    assert status == 1 and "retried in 7200s, after 20" in stderr and "Traceback" not in stderr
    assert faulty.pebble.orders_created(mark) == []


def test_a_persistent_reset_is_named(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    faulty.proxy.add(Fault("^/authZ/", "reset", times=100))
    status, stderr, _ = _issue(faulty, "reset.example.com", check=False)
    assert status == 1 and "the connection was reset" in stderr and "tries)" in stderr


def test_a_slow_answer_times_out_with_the_phase_named_and_is_retried(proxy: FaultProxy) -> None:
    proxy.reset()

    async def directory(times: int) -> None:
        proxy.reset()
        proxy.add(Fault("^/dir", "delay", method="GET", delay=1.5, times=times))
        client = AcmeClient(
            proxy.directory_url, generate_key(), ca_bundle=proxy.ca_path, timeout=0.5,
            retry=RetryPolicy(attempts=3, base=0.05),
        )
        async with client:
            await client.directory()

    asyncio.run(directory(times=1))  # the second try is answered at once
    with pytest.raises(RequestTimeout, match=r"timed out after 0.5s waiting for the answer \(3 tries\)"):
        asyncio.run(directory(times=3))
    proxy.reset()


# -- a hostile or broken CA ------------------------------------------------------------------


def _problem(detail: str) -> bytes:
    return json.dumps({"type": "urn:ietf:params:acme:error:malformed", "detail": detail}).encode()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault("^/order-plz", "respond", status=400, headers={"Content-Type": "application/problem+json"},
               body=_problem("\x1b]0;owned\x07\x1b[2J" + "A" * 1_000_000)), "malformed: ?]0;owned??[2JAAA"),
        (Fault("^/order-plz", "respond", status=201, headers={"Location": "file:///etc/passwd",
                                                              "Content-Type": "application/json"},
               body=json.dumps({"status": "pending", "authorizations": ["file:///etc/shadow"],
                                "finalize": "http://127.0.0.1:1/f", "identifiers": []}).encode()),
         "is not an https:// URL"),
        (Fault("^/order-plz", "respond", status=503, headers={"Retry-After": "9" * 5000},
               body=_problem("busy")), "busy"),
        (Fault("^/order-plz", "respond", status=200, headers={"Content-Type": "application/json"},
               body=b"[" * 100_000 + b"]" * 100_000), "error:"),
        (Fault("^/order-plz", "respond", status=201, headers={"Location": "https://127.0.0.1:1/[/x]"},
               body=b'{"status": 5}'), "error:"),
    ],
    ids=["escapes-and-a-megabyte", "file-and-http-urls", "absurd-retry-after", "deep-json", "markup-and-bad-types"],
)
def test_a_hostile_answer_is_one_clean_line(faulty: ProxiedCli, fault: Fault, expected: str) -> None:
    _hostile(faulty, fault, expected)


def test_an_absurdly_long_chain_is_refused(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    pem = faulty.proxy.ca_path.read_bytes()
    fault = Fault("^/certZ/", "respond", status=200, headers={"Content-Type": "application/pem-certificate-chain"},
                  body=pem * 20)
    _hostile(faulty, fault, "a chain of 20 certificates")


def test_hundreds_of_alternate_chains_cost_at_most_ten_requests(faulty: ProxiedCli) -> None:
    assert faulty.proxy is not None
    links = [("Link", f'<{faulty.proxy.base_url}/certZ/alt{i}>;rel="alternate"') for i in range(500)]
    # the certificate's own URL (not the alternates'), every time: a rejected nonce makes the client ask again
    faulty.proxy.add(Fault("^/certZ/[0-9a-f]+$", "forward-add-headers", extra_headers=links, times=100))
    mark = faulty.pebble.log_mark()
    result = faulty.run("issue", "-d", "alternates.example.com", "--preferred-chain", "No Such Root",
                        *faulty.http_args())
    assert "Traceback" not in result.stderr
    default = {e.path for e in faulty.proxy.requests("^/certZ/[0-9a-f]+$")}
    alternates = {e.path for e in faulty.proxy.requests("^/certZ/")} - default  # Pebble's own two, then ours
    assert len(default) == 1 and len(alternates) == 10
    ours = {p for p in alternates if p.rsplit("/", 1)[-1].startswith("alt") and "/alternate/" not in p}
    assert ours == {f"/certZ/alt{i}" for i in range(8)}  # ten in all: Pebble's two come first
    _one_order_one_certificate(faulty, mark)


def _hostile(faulty: ProxiedCli, fault: Fault, expected: str) -> None:
    assert faulty.proxy is not None
    fault.times = 10
    faulty.proxy.add(fault)
    started = time.monotonic()
    status, stderr, _ = _issue(faulty, "hostile.example.com", check=False)
    assert status == 1 and expected in stderr, stderr[:2000]
    assert "Traceback" not in stderr and "\x1b" not in stderr and "\x07" not in stderr
    assert len(stderr) < 5000 and time.monotonic() - started < 60
    assert not (faulty.state_dir / "certificates" / "hostile.example.com").exists()


def test_an_answer_trickled_byte_by_byte_hits_the_overall_deadline(proxy: FaultProxy) -> None:
    """Each byte comes within the read time-out; only the deadline for the whole exchange ends it."""
    proxy.reset()
    proxy.add(Fault("^/dir", "trickle", method="GET", delay=0.2, times=5))

    async def directory() -> None:
        client = AcmeClient(
            proxy.directory_url, generate_key(), ca_bundle=proxy.ca_path, timeout=0.5,
            retry=RetryPolicy(attempts=2, base=0.05),
        )
        async with client:
            await client.directory()

    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"timed out after 2s in all: the answer came too slowly \(2 tries\)"):
        asyncio.run(directory())
    assert time.monotonic() - started < 10
    proxy.reset()


def test_random_bytes_instead_of_an_answer_are_one_clean_line(faulty: ProxiedCli) -> None:
    _hostile(faulty, Fault("^/order-plz", "garbage"), "cannot reach the CA")


def test_an_order_processing_forever_ends_at_the_poll_deadline(faulty: ProxiedCli) -> None:
    """A CA that never finishes an order: the poll gives up at its deadline, having honoured Retry-After."""
    assert faulty.proxy is not None
    proxy = faulty.proxy
    order_json = {"status": "processing", "identifiers": [{"type": "dns", "value": "slow.example.com"}],
                  "authorizations": [], "finalize": f"{proxy.base_url}/finalize-order/x"}
    proxy.add(Fault("^/my-order/forever$", "respond", status=200, times=1000,
                    headers={"Content-Type": "application/json", "Retry-After": "1"},
                    body=json.dumps(order_json).encode()))

    async def poll() -> int:
        client = AcmeClient(proxy.directory_url, generate_key(), ca_bundle=proxy.ca_path)
        async with client:
            await client.register(agree_tos=True)
            order = Order.from_json(f"{proxy.base_url}/my-order/forever", order_json)
            with pytest.raises(PollTimeout, match=r"is still processing after 4s"):
                await client.poll_order(order, timeout=4)
        return len(proxy.requests("^/my-order/forever$"))

    started = time.monotonic()
    polls = asyncio.run(poll())
    assert 2 <= polls <= 5 and time.monotonic() - started < 15  # about one poll a second, then it stops
