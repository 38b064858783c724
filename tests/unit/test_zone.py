"""Unit tests without network: resolver strings, record names, solver settings, the manual provider."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Mapping
from typing import ClassVar, Self

import pytest

from certsmith.challenges.base import ChallengeJob, ChallengeSolver, run_to_completion, unsupported_reason
from certsmith.challenges.dns01 import Dns01Solver, challenge_fqdn
from certsmith.dns.base import DnsProvider, ProviderInfo, load_provider, provider_class
from certsmith.dns.manual import ManualProvider
from certsmith.dns.zone import Nameserver, Resolver, absolute_name
from certsmith.errors import ChallengeError, ConfigError, DnsError

# --- resolver strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        (" 127.0.0.1 ", "127.0.0.1", 53),
        ("[::1]:53", "::1", 53),
        ("[::1]:8053", "::1", 8053),
        ("[::1]", "::1", 53),
        ("::1", "::1", 53),
        ("2001:DB8:0:0::1", "2001:db8::1", 53),
        ("[2001:db8::1]:65535", "2001:db8::1", 65535),
    ],
)
def test_nameserver_parse(text: str, host: str, port: int) -> None:
    server = Nameserver.parse(text)
    assert (server.host, server.port) == (host, port)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("dns.example:53", "not an IP address"),
        ("localhost", "not an IP address"),
        ("127.0.0.1:", "port after ':' is missing"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:dns", "from 1 to 65535"),
        ("[::1", r"write IPv6 addresses as \[::1\]"),
        ("[::1]53", r"write IPv6 addresses as \[::1\]"),
        ("[::1]:", "port after ':' is missing"),
        ("[127.0.0.1]:53", "brackets are for IPv6"),
        ("::1::2", "not an IP address"),
        ("300.1.1.1:53", "not an IP address"),
    ],
)
def test_nameserver_parse_rejects(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        Nameserver.parse(text)
    assert repr(text) in str(caught.value)  # the message quotes what the user wrote


def test_nameserver_str_round_trips() -> None:
    for text in ("127.0.0.1:53", "[::1]:5353", "[2001:db8::1]:53"):
        assert str(Nameserver.parse(text)) == text


def test_resolver_from_cli() -> None:
    resolver = Resolver.from_cli(["127.0.0.1:5353,[::1]:53", "127.0.0.1:5353", "10.0.0.1"])
    assert resolver.servers == (
        Nameserver("127.0.0.1", 5353),
        Nameserver("::1", 53),
        Nameserver("10.0.0.1", 53),
    )
    assert not resolver.is_system
    assert not resolver.checks_authoritative  # explicit servers are checked themselves
    assert str(resolver) == "127.0.0.1:5353, [::1]:53, 10.0.0.1:53"
    with pytest.raises(ConfigError, match="not an IP address"):
        Resolver.from_cli(["127.0.0.1", "ns.example"])


def test_system_resolver_checks_authoritative_servers() -> None:
    system = Resolver.from_cli([])
    assert system.is_system
    assert system.checks_authoritative
    assert str(system) == "system resolver"
    assert Resolver(check_authoritative=False).checks_authoritative is False
    assert Resolver((Nameserver("127.0.0.1"),), check_authoritative=True).checks_authoritative


# --- record names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "fqdn"),
    [
        ("example.com", "_acme-challenge.example.com."),
        ("WWW.Example.COM", "_acme-challenge.www.example.com."),
        ("example.com.", "_acme-challenge.example.com."),
        ("*.example.com", "_acme-challenge.example.com."),
        ("bücher.example", "_acme-challenge.xn--bcher-kva.example."),
        ("BÜCHER.Example", "_acme-challenge.xn--bcher-kva.example."),
        ("faß.de", "_acme-challenge.xn--fa-hia.de."),  # IDNA 2008: no transitional ß -> ss
        ("xn--bcher-kva.example", "_acme-challenge.xn--bcher-kva.example."),
        ("例え.テスト", "_acme-challenge.xn--r8jz45g.xn--zckzah."),
    ],
)
def test_challenge_fqdn(identifier: str, fqdn: str) -> None:
    assert challenge_fqdn(identifier) == fqdn


@pytest.mark.parametrize("identifier", ["", "*.", "a..b", "x" * 64 + ".example", ("a" * 60 + ".") * 4 + "com"])
def test_challenge_fqdn_rejects(identifier: str) -> None:
    with pytest.raises(ChallengeError, match=r"identifier|derive"):
        challenge_fqdn(identifier)


def test_absolute_name() -> None:
    assert absolute_name("_ACME-challenge.Example.com") == "_acme-challenge.example.com."
    with pytest.raises(DnsError, match="not a valid DNS name"):
        absolute_name("a..b")


# --- solver settings -------------------------------------------------------------------------


class RecordingProvider:
    """A provider that only records calls; the solver's unit tests never reach DNS."""

    info: ClassVar[ProviderInfo] = ProviderInfo("recording", "Recording", "test", default_propagation_timeout=42)

    def __init__(self, propagation_timeout: float | None = None) -> None:
        self.propagation_timeout = propagation_timeout or self.info.default_propagation_timeout
        self.calls: list[tuple[str, str, str]] = []
        self.closed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls()

    async def present(self, fqdn: str, value: str) -> None:
        self.calls.append(("present", fqdn, value))

    async def cleanup(self, fqdn: str, value: str) -> None:
        self.calls.append(("cleanup", fqdn, value))

    async def aclose(self) -> None:
        self.closed = True


def test_solver_propagation_timeout_sources() -> None:
    resolver = Resolver.from_cli(["127.0.0.1:1"])
    assert Dns01Solver(RecordingProvider(), resolver).propagation_timeout == 42
    assert Dns01Solver(RecordingProvider(propagation_timeout=9), resolver).propagation_timeout == 9
    assert Dns01Solver(RecordingProvider(propagation_timeout=9), resolver, 3.5).propagation_timeout == 3.5


def test_solver_fits_the_protocols() -> None:
    provider: DnsProvider = RecordingProvider()
    solver: ChallengeSolver = Dns01Solver(provider)
    assert isinstance(provider, DnsProvider)
    assert solver.challenge_type == "dns-01"


def test_solver_refuses_ip_identifiers_before_touching_dns() -> None:
    provider = RecordingProvider()
    solver = Dns01Solver(provider, Resolver.from_cli(["127.0.0.1:1"]))
    jobs = [ChallengeJob("dns", "example.com", "t1", "t1.k"), ChallengeJob("ip", "192.0.2.7", "t2", "t2.k")]
    with pytest.raises(ChallengeError, match=re.escape("192.0.2.7 is an IP address: use http-01 or tls-alpn-01")):
        asyncio.run(solver.present(jobs))
    assert provider.calls == []
    asyncio.run(solver.cleanup(jobs))  # nothing was created: nothing to delete
    assert provider.calls == []
    asyncio.run(solver.aclose())
    assert provider.closed


def test_run_to_completion_finishes_before_the_cancellation_propagates() -> None:
    steps: list[str] = []

    async def work() -> str:
        await asyncio.sleep(0.1)
        steps.append("work done")
        return "ok"

    async def caller() -> None:
        await run_to_completion(work())
        steps.append("caller went on")  # must not happen: the cancellation comes back afterwards

    async def scenario() -> None:
        task = asyncio.create_task(caller())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        steps.append("cancelled")

    asyncio.run(scenario())
    assert steps == ["work done", "cancelled"]
    assert asyncio.run(run_to_completion(work())) == "ok"


def test_run_to_completion_keeps_a_cancellation_when_the_work_fails() -> None:
    async def scenario() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def failing() -> None:
            started.set()
            await cancelled.wait()  # the work is still running when the cancellation arrives
            raise OSError("disk gone")

        task = asyncio.create_task(run_to_completion(failing()))
        await started.wait()
        task.cancel()
        await asyncio.sleep(0)  # deliver the cancellation to run_to_completion
        cancelled.set()
        with pytest.raises(asyncio.CancelledError):  # Ctrl-C is not turned into the work's error
            await task

    asyncio.run(scenario())

    async def fails_at_once() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(run_to_completion(fails_at_once()))


@pytest.mark.parametrize(
    ("challenge", "kind", "value", "wildcard", "refusal"),
    [
        ("dns-01", "dns", "example.com", False, None),
        ("dns-01", "dns", "example.com", True, None),
        ("dns-01", "ip", "192.0.2.1", False, "192.0.2.1 is an IP address: use http-01 or tls-alpn-01"),
        ("http-01", "dns", "example.com", False, None),
        ("http-01", "ip", "2001:db8::1", False, None),
        ("http-01", "dns", "example.com", True, "*.example.com is a wildcard: wildcards can only be validated"),
        ("tls-alpn-01", "dns", "*.example.com", True, "*.example.com is a wildcard"),
        ("tls-alpn-01", "ip", "192.0.2.1", False, None),
        ("http-01", "email", "a@example.com", False, "http-01 cannot validate identifiers of type 'email'"),
    ],
)
def test_which_challenge_validates_which_identifier(
    challenge: str, kind: str, value: str, wildcard: bool, refusal: str | None
) -> None:
    reason = unsupported_reason(challenge, kind, value, wildcard=wildcard)
    if refusal is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(refusal)


# --- manual provider -------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    """Typed input that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def test_manual_provider_prompts_and_waits_for_enter() -> None:
    output = io.StringIO()
    provider = ManualProvider(stdin=FakeTerminal("\n\n"), output=output)

    async def scenario() -> None:
        await asyncio.gather(
            provider.present("_acme-challenge.example.com.", "value-one"),
            provider.present("_acme-challenge.example.com.", "value-two"),
        )
        await provider.cleanup("_acme-challenge.example.com.", "value-one")

    asyncio.run(scenario())
    text = output.getvalue()
    assert text.count("press Enter") == 2
    assert "  name:  _acme-challenge.example.com.\n  type:  TXT\n  value: value-one\n" in text
    assert "value: value-two" in text
    assert text.endswith("delete the DNS record: _acme-challenge.example.com. TXT value-one\n")


def test_manual_provider_needs_a_terminal() -> None:
    not_a_tty = ManualProvider(stdin=io.StringIO("\n"), output=io.StringIO())
    with pytest.raises(DnsError, match="needs an interactive terminal"):
        asyncio.run(not_a_tty.present("_acme-challenge.example.com.", "v"))
    closed = FakeTerminal()
    closed.close()
    with pytest.raises(DnsError, match="needs an interactive terminal"):
        asyncio.run(ManualProvider(stdin=closed, output=io.StringIO()).present("_acme-challenge.x.", "v"))
    at_eof = ManualProvider(stdin=FakeTerminal(""), output=io.StringIO())
    with pytest.raises(DnsError, match="stdin was closed"):
        asyncio.run(at_eof.present("_acme-challenge.example.com.", "v"))


def test_manual_provider_is_registered_and_refused_without_a_terminal() -> None:
    assert provider_class("manual") is ManualProvider
    assert ManualProvider.info.name == "manual"
    # a timer or a pipe: refused when the solver is built, before any account or order exists
    with pytest.raises(DnsError, match="needs an interactive terminal"):
        load_provider("manual", {})
