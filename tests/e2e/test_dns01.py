"""dns-01 end to end: the solver, the exec provider and the propagation check against real DNS servers.

``pebble-challtestsrv`` is the DNS server; records reach it through the real
:class:`ExecProvider` running a small hook script that calls the challtestsrv
management API (keeping a state file so that ``cleanup`` removes one value and
leaves the others at the same name). Zone detection is checked against a throwaway
BIND ``named`` when one is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.update
import pytest

from certsmith.challenges.base import ChallengeJob
from certsmith.challenges.dns01 import Dns01Solver, TxtRecord
from certsmith.dns.base import ProviderInfo, load_provider
from certsmith.dns.exec import ExecConfig, ExecProvider
from certsmith.dns.zone import (
    AuthoritativeServer,
    Nameserver,
    Resolver,
    authoritative_servers,
    find_zone,
    follow_cname,
    txt_values,
    wait_for_txt,
)
from certsmith.errors import ConfigError, DnsError, PropagationTimeout, ProviderConfigError
from certsmith.testing.conformance import check_provider
from certsmith.testing.pebble import ChallTestSrv, free_port, stop_process

HOOK = r'''#!{python} -S
"""Test DNS hook: present/cleanup FQDN VALUE against pebble-challtestsrv.

Names with a label "fail" make it fail, "silent" makes present a no-op,
"slowclean" makes cleanup take half a second and "slowpresent" present 5 seconds.
"""
import fcntl, json, os, sys, time, urllib.request

MANAGEMENT = {management!r}
STATE = {state!r}

def call(path, body):
    request = urllib.request.Request(MANAGEMENT + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(request, timeout=5).read()

action, fqdn, value = sys.argv[1:]
labels = fqdn.split(".")
log = os.environ.get("HOOK_LOG")
if log:
    with open(log, "a") as out:
        out.write(f"{{action}} {{fqdn}} {{value}}\n")
if "fail" in labels:
    for n in range(1, 9):
        print(f"hook line {{n}}", file=sys.stderr)
    print("zone refused the update", file=sys.stderr)
    sys.exit(3)
if "silent" in labels and action == "present":
    sys.exit(0)
if "slowclean" in labels and action == "cleanup":
    time.sleep(0.5)
if "slowpresent" in labels and action == "present":
    time.sleep(5)
with open(STATE + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = json.load(open(STATE)) if os.path.exists(STATE) else {{}}
    values = state.setdefault(fqdn, [])
    if action == "present":
        if value not in values:
            values.append(value)
            call("/set-txt", {{"host": fqdn, "value": value}})
    elif action == "cleanup":
        if value in values:
            values.remove(value)
            call("/clear-txt", {{"host": fqdn}})
            for other in values:
                call("/set-txt", {{"host": fqdn, "value": other}})
    else:
        sys.exit(f"unknown action {{action}}")
    with open(STATE + ".tmp", "w") as out:
        json.dump(state, out)
    os.replace(STATE + ".tmp", STATE)
'''


@pytest.fixture(scope="module")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallTestSrv]:
    if shutil.which("pebble-challtestsrv") is None:
        pytest.skip("pebble-challtestsrv is not installed (Debian package 'pebble')")
    server = ChallTestSrv(free_port(kind=socket.SOCK_DGRAM), free_port())
    server.start(tmp_path_factory.mktemp("challtestsrv") / "challtestsrv.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hook(challtestsrv: ChallTestSrv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hook")
    path = directory / "dns-hook"
    path.write_text(
        HOOK.format(
            python=sys.executable,
            management=challtestsrv.management_url,
            state=str(directory / "state.json"),
        )
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The hook's log of this test: one ``action fqdn value`` line per call."""
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("HOOK_LOG", str(log))
    return log


def logged(log: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split(" ")) for line in log.read_text().splitlines()]


def resolver_for(server: ChallTestSrv) -> Resolver:
    return Resolver.from_cli([server.dns_address])


def dns_server(server: ChallTestSrv) -> Nameserver:
    return Nameserver.parse(server.dns_address)


def job(identifier: str, token: str, wildcard: bool = False) -> ChallengeJob:
    return ChallengeJob("dns", identifier, token, f"{token}.thumbprint", wildcard)


def test_present_publishes_all_records_and_cleanup_removes_exactly_those(
    challtestsrv: ChallTestSrv, hook: Path, calls: Path
) -> None:
    server = dns_server(challtestsrv)
    apex_name = "_acme-challenge.apex.test."
    other_name = "_acme-challenge.other.test."
    jobs = [job("Apex.Test", "tok-apex"), job("apex.test", "tok-wild", wildcard=True), job("other.test", "tok-o")]
    values = [j.dns01_value for j in jobs]

    async def scenario() -> None:
        provider = ExecProvider(ExecConfig(hook))
        await provider.present(apex_name, "foreign-value")  # someone else's record at the same name
        solver = Dns01Solver(provider, resolver_for(challtestsrv), propagation_timeout=5)
        started = time.monotonic()
        await solver.present(jobs)
        assert time.monotonic() - started < 3
        assert await txt_values(apex_name, server) == {values[0], values[1], "foreign-value"}
        assert await txt_values(other_name, server) == {values[2]}
        assert solver.records == {
            TxtRecord(apex_name, values[0]),
            TxtRecord(apex_name, values[1]),
            TxtRecord(other_name, values[2]),
        }

        await solver.cleanup(jobs)
        assert await txt_values(apex_name, server) == {"foreign-value"}
        assert await txt_values(other_name, server) == set()
        assert solver.records == frozenset()
        before = len(logged(calls))
        await solver.cleanup(jobs)  # nothing left to delete: no provider call
        assert len(logged(calls)) == before
        await provider.cleanup(apex_name, "foreign-value")
        await solver.aclose()

    asyncio.run(scenario())
    cleanups = sorted(c[1:] for c in logged(calls) if c[0] == "cleanup")
    assert cleanups == sorted(
        [(apex_name, values[0]), (apex_name, values[1]), (other_name, values[2]), (apex_name, "foreign-value")]
    )
    presents = [c for c in logged(calls) if c[0] == "present"]
    assert len(presents) == 4  # one per record, no duplicate for the shared name


def test_cname_delegation_writes_at_the_target(challtestsrv: ChallTestSrv, hook: Path, calls: Path) -> None:
    challtestsrv.call("/set-cname", {"host": "_acme-challenge.deleg.test.", "target": "deleg.auth.test."})
    the_job = job("deleg.test", "tok-deleg")
    try:

        async def scenario() -> None:
            solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=5)
            await solver.present([the_job])
            assert await txt_values("deleg.auth.test.", dns_server(challtestsrv)) == {the_job.dns01_value}
            assert solver.records == {TxtRecord("deleg.auth.test.", the_job.dns01_value)}
            await solver.cleanup([the_job])
            assert await txt_values("deleg.auth.test.", dns_server(challtestsrv)) == set()

        asyncio.run(scenario())
    finally:
        challtestsrv.call("/clear-cname", {"host": "_acme-challenge.deleg.test."})
    assert logged(calls) == [
        ("present", "deleg.auth.test.", the_job.dns01_value),
        ("cleanup", "deleg.auth.test.", the_job.dns01_value),
    ]


def test_follow_cnames_off_writes_at_the_challenge_name(challtestsrv: ChallTestSrv, hook: Path, calls: Path) -> None:
    challtestsrv.call("/set-cname", {"host": "_acme-challenge.nofollow.test.", "target": "elsewhere.test."})
    the_job = job("nofollow.test", "tok-nofollow")
    try:

        async def scenario() -> None:
            solver = Dns01Solver(
                ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=0.5, follow_cnames=False
            )
            # challtestsrv answers the CNAME, not our TXT, so propagation cannot succeed here
            with pytest.raises(PropagationTimeout):
                await solver.present([the_job])

        asyncio.run(scenario())
    finally:
        challtestsrv.call("/clear-cname", {"host": "_acme-challenge.nofollow.test."})
    assert logged(calls)[0] == ("present", "_acme-challenge.nofollow.test.", the_job.dns01_value)


def test_follow_cname_chain_loop_and_plain_name(challtestsrv: ChallTestSrv) -> None:
    resolver = resolver_for(challtestsrv)
    cnames = {"a.chain.test.": "B.chain.test.", "b.chain.test.": "c.chain.test.", "l1.test.": "l2.test."}
    cnames["l2.test."] = "l1.test."
    for host, target in cnames.items():
        challtestsrv.call("/set-cname", {"host": host, "target": target})
    try:

        async def scenario() -> None:
            assert await follow_cname("A.Chain.Test", resolver) == "c.chain.test."
            assert await follow_cname("plain.test.", resolver) == "plain.test."
            with pytest.raises(DnsError, match=re.escape("CNAME loop: l1.test. -> l2.test. -> l1.test.")):
                await follow_cname("l1.test.", resolver)
            with pytest.raises(DnsError, match="longer than 1 hops"):
                await follow_cname("a.chain.test.", resolver, max_hops=1)

        asyncio.run(scenario())
    finally:
        for host in cnames:
            challtestsrv.call("/clear-cname", {"host": host})


def test_propagation_timeout_when_the_provider_does_not_publish(
    challtestsrv: ChallTestSrv, hook: Path, calls: Path
) -> None:
    jobs = [job("silent.test", "tok-silent"), job("published.test", "tok-pub")]

    async def scenario() -> None:
        solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=0.6)
        started = time.monotonic()
        with pytest.raises(PropagationTimeout) as caught:
            await solver.present(jobs)
        assert time.monotonic() - started < 4
        message = str(caught.value)
        assert f"_acme-challenge.silent.test. at {challtestsrv.dns_address} (1 of 1 values missing)" in message
        assert "published.test" not in message
        assert solver.records == frozenset()
        assert await txt_values("_acme-challenge.published.test.", dns_server(challtestsrv)) == set()

    asyncio.run(scenario())
    assert sorted(c[:2] for c in logged(calls) if c[0] == "cleanup") == [
        ("cleanup", "_acme-challenge.published.test."),
        ("cleanup", "_acme-challenge.silent.test."),
    ]


def test_failing_provider_removes_the_records_already_created(
    challtestsrv: ChallTestSrv, hook: Path, calls: Path
) -> None:
    good, bad = job("good.test", "tok-good"), job("fail.test", "tok-fail")

    async def scenario() -> None:
        solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=5)
        with pytest.raises(DnsError, match="exit status 3") as caught:
            await solver.present([good, bad])
        assert "zone refused the update" in str(caught.value)
        assert solver.records == frozenset()
        assert await txt_values("_acme-challenge.good.test.", dns_server(challtestsrv)) == set()

    asyncio.run(scenario())
    entries = logged(calls)
    assert ("cleanup", "_acme-challenge.good.test.", good.dns01_value) in entries
    assert not [c for c in entries if c[0] == "cleanup" and c[1] == "_acme-challenge.fail.test."]


def test_cancellation_during_the_propagation_wait_still_cleans_up(
    challtestsrv: ChallTestSrv, hook: Path, calls: Path
) -> None:
    visible, never = job("cancel.test", "tok-cancel"), job("silent.cancel.test", "tok-never")
    name = "_acme-challenge.cancel.test."

    async def scenario() -> None:
        solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=30)
        task = asyncio.create_task(solver.present([visible, never]))
        deadline = time.monotonic() + 5
        while visible.dns01_value not in await txt_values(name, dns_server(challtestsrv)):
            assert time.monotonic() < deadline, "the record never appeared"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # now inside the propagation wait
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the cancellation is re-raised only after the records are gone
        assert await txt_values(name, dns_server(challtestsrv)) == set()
        assert solver.records == frozenset()

    asyncio.run(scenario())
    assert sorted(c[1] for c in logged(calls) if c[0] == "cleanup") == [
        name,
        "_acme-challenge.silent.cancel.test.",
    ]


def test_cancellation_during_cleanup_lets_cleanup_finish(challtestsrv: ChallTestSrv, hook: Path, calls: Path) -> None:
    the_job = job("slowclean.test", "tok-slow")
    name = "_acme-challenge.slowclean.test."

    async def scenario() -> None:
        solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=5)
        await solver.present([the_job])
        task = asyncio.create_task(solver.cleanup([the_job]))
        await asyncio.sleep(0.15)  # the hook sleeps 0.5 s before deleting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await txt_values(name, dns_server(challtestsrv)) == set()

    asyncio.run(scenario())
    assert [c[0] for c in logged(calls)] == ["present", "cleanup"]


def test_cancellation_while_the_provider_works_cleans_up_the_unfinished_record(
    challtestsrv: ChallTestSrv, hook: Path, calls: Path
) -> None:
    quick, slow = job("quick.test", "tok-quick"), job("slowpresent.test", "tok-slowpresent")

    async def scenario() -> None:
        solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=30)
        task = asyncio.create_task(solver.present([quick, slow]))
        deadline = time.monotonic() + 5
        while len(logged(calls)) < 2:
            assert time.monotonic() < deadline, "the hook was never called"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 2  # the sleeping hook was killed, not waited for
        assert solver.records == frozenset()
        assert await txt_values("_acme-challenge.quick.test.", dns_server(challtestsrv)) == set()

    asyncio.run(scenario())
    # the interrupted present may or may not have reached the backend: both records are deleted
    assert sorted(c[1] for c in logged(calls) if c[0] == "cleanup") == [
        "_acme-challenge.quick.test.",
        "_acme-challenge.slowpresent.test.",
    ]


def test_a_job_presented_twice_is_deleted_after_its_last_cleanup(
    challtestsrv: ChallTestSrv, hook: Path, calls: Path
) -> None:
    shared, other = job("shared.test", "tok-shared"), job("leftover.test", "tok-leftover")
    server = dns_server(challtestsrv)

    async def scenario() -> None:
        solver = Dns01Solver(ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=5)
        await asyncio.gather(solver.present([shared]), solver.present([shared, other]))  # two orders
        await solver.cleanup([shared])
        assert await txt_values("_acme-challenge.shared.test.", server) == {shared.dns01_value}
        await solver.cleanup([shared])
        assert await txt_values("_acme-challenge.shared.test.", server) == set()
        assert solver.records == {TxtRecord("_acme-challenge.leftover.test.", other.dns01_value)}
        await solver.aclose()  # deletes what was never cleaned up
        assert await txt_values("_acme-challenge.leftover.test.", server) == set()

    asyncio.run(scenario())
    assert [c[1] for c in logged(calls) if c[0] == "cleanup"] == [
        "_acme-challenge.shared.test.",
        "_acme-challenge.leftover.test.",
    ]


def test_servfail_during_the_wait_is_retried(challtestsrv: ChallTestSrv, hook: Path, calls: Path) -> None:
    name = "_acme-challenge.flaky.test."
    the_job = job("flaky.test", "tok-flaky")
    challtestsrv.call("/set-servfail", {"host": name})

    async def heal() -> None:
        await asyncio.sleep(0.6)
        await asyncio.to_thread(challtestsrv.call, "/clear-servfail", {"host": name})

    async def scenario() -> float:
        # no CNAME look-up: it would (rightly) fail at once on the SERVFAIL before anything is created
        solver = Dns01Solver(
            ExecProvider(ExecConfig(hook)), resolver_for(challtestsrv), propagation_timeout=5, follow_cnames=False
        )
        started = time.monotonic()
        await asyncio.gather(solver.present([the_job]), heal())
        elapsed = time.monotonic() - started
        await solver.cleanup([the_job])
        return elapsed

    try:
        assert asyncio.run(scenario()) >= 0.6
    finally:
        challtestsrv.call("/clear-servfail", {"host": name})


def test_persistent_servfail_is_named_in_the_timeout(challtestsrv: ChallTestSrv) -> None:
    name = "_acme-challenge.broken.test."
    challtestsrv.call("/set-servfail", {"host": name})
    try:
        with pytest.raises(PropagationTimeout, match="SERVFAIL"):
            asyncio.run(wait_for_txt({name: {"x"}}, resolver_for(challtestsrv), timeout=0.4))
    finally:
        challtestsrv.call("/clear-servfail", {"host": name})


def test_poll_interval_grows_from_200ms_to_2s_with_an_injected_clock(challtestsrv: ChallTestSrv) -> None:
    now = [1000.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    async def scenario() -> None:
        await wait_for_txt(
            {"_acme-challenge.never.test.": {"value"}},
            resolver_for(challtestsrv),
            timeout=12,
            clock=lambda: now[0],
            sleep=fake_sleep,
        )

    started = time.monotonic()
    with pytest.raises(PropagationTimeout, match="after 12s"):
        asyncio.run(scenario())
    assert time.monotonic() - started < 5  # the fake clock, not real time, ran out
    assert sleeps[0] == pytest.approx(0.2)
    assert all(b >= a for a, b in itertools.pairwise(sleeps[:-1]))  # the last one is cut short
    assert max(sleeps) == pytest.approx(2.0)
    assert sum(sleeps) == pytest.approx(12)


def test_wait_for_txt_checks_every_explicit_server(challtestsrv: ChallTestSrv) -> None:
    dead = free_port(kind=socket.SOCK_DGRAM)  # nothing listens there
    resolver = Resolver.from_cli([challtestsrv.dns_address, f"127.0.0.1:{dead}"], query_timeout=0.2)
    name = "_acme-challenge.twoservers.test."
    challtestsrv.call("/set-txt", {"host": name, "value": "v"})
    try:
        with pytest.raises(PropagationTimeout) as caught:
            asyncio.run(wait_for_txt({name: {"v"}}, resolver, timeout=0.5))
        message = str(caught.value)
        assert f"at 127.0.0.1:{dead}" in message
        assert f"at {challtestsrv.dns_address}" not in message
        asyncio.run(wait_for_txt({name: {"v"}}, resolver_for(challtestsrv), timeout=2))
    finally:
        challtestsrv.call("/clear-txt", {"host": name})


def test_find_zone_ignores_challtestsrvs_unrelated_soa(challtestsrv: ChallTestSrv) -> None:
    # challtestsrv answers every SOA query with NOTIMP and an SOA of "challtestsrv.invalid."
    with pytest.raises(DnsError, match="NOTIMP"):
        asyncio.run(find_zone("_acme-challenge.x.test.", resolver_for(challtestsrv)))


def test_exec_provider_passes_the_conformance_check(challtestsrv: ChallTestSrv, hook: Path) -> None:
    server = dns_server(challtestsrv)

    async def read_txt(fqdn: str) -> set[str]:
        return await txt_values(fqdn, server)

    asyncio.run(check_provider(ExecProvider(ExecConfig(hook)), "conformance.test.", read_txt))


def test_exec_provider_reports_exit_status_and_stderr_tail(hook: Path, calls: Path) -> None:
    provider = ExecProvider(ExecConfig(hook))
    with pytest.raises(DnsError) as caught:
        asyncio.run(provider.present("_acme-challenge.fail.test", "v"))
    message = str(caught.value)
    assert f"`{hook} present _acme-challenge.fail.test.` failed with exit status 3" in message
    assert message.endswith("hook line 5 | hook line 6 | hook line 7 | hook line 8 | zone refused the update")
    assert "hook line 4" not in message
    assert logged(calls) == [("present", "_acme-challenge.fail.test.", "v")]  # trailing dot added


def test_exec_provider_kills_a_hanging_program(tmp_path: Path) -> None:
    script = tmp_path / "hang"
    script.write_text("#!/bin/sh\nsleep 30 &\nwait\n")
    script.chmod(0o755)
    provider = ExecProvider(ExecConfig(script, command_timeout=0.3))
    started = time.monotonic()
    with pytest.raises(DnsError, match=r"did not finish within 0.3s"):
        asyncio.run(provider.cleanup("_acme-challenge.x.test.", "v"))
    assert time.monotonic() - started < 3


def test_exec_provider_configuration_errors(tmp_path: Path, hook: Path) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(ConfigError, match="does not exist"):
        ExecProvider(ExecConfig(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not executable"):
        ExecProvider(ExecConfig(plain))
    with pytest.raises(ConfigError, match="is not a file"):
        ExecProvider(ExecConfig(tmp_path))
    with pytest.raises(ConfigError, match="no such program on PATH"):
        ExecProvider(ExecConfig("certsmith-no-such-hook-program"))
    with pytest.raises(ProviderConfigError, match="EXEC_PATH"):
        ExecProvider.from_env({})
    with pytest.raises(ConfigError, match="EXEC_MODE='RAW' is not supported"):
        ExecProvider.from_env({"EXEC_PATH": str(hook), "EXEC_MODE": "RAW"})
    with pytest.raises(ConfigError, match="EXEC_PROPAGATION_TIMEOUT must be a number"):
        ExecProvider.from_env({"EXEC_PATH": str(hook), "EXEC_PROPAGATION_TIMEOUT": "soon"})

    provider = load_provider("exec", {"EXEC_PATH": str(hook), "EXEC_PROPAGATION_TIMEOUT": "7"})
    assert isinstance(provider, ExecProvider)
    assert provider.path == hook
    assert Dns01Solver(provider, Resolver.from_cli(["127.0.0.1:1"])).propagation_timeout == 7.0
    default = ExecProvider.from_env({"EXEC_PATH": str(hook)})
    assert Dns01Solver(default).propagation_timeout == ExecProvider.info.default_propagation_timeout


# --- zone detection against a real authoritative server (BIND) -----------------------------------

ZONE = """\
$TTL 60
@                 SOA  ns1.example.test. hostmaster.example.test. 1 60 60 600 60
@                 NS   ns1.example.test.
@                 NS   ns2.nowhere.invalid.
ns1               A    127.0.0.1
sub               NS   ns1.example.test.
_acme-challenge.www TXT "static-one"
_acme-challenge.www TXT "static-two"
"""

SUBZONE = """\
$TTL 60
@                 SOA  ns1.example.test. hostmaster.example.test. 1 60 60 600 60
@                 NS   ns1.example.test.
"""


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nameserver]:
    binary = shutil.which("named") or shutil.which("named", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip("BIND (named) is not installed")
    directory = tmp_path_factory.mktemp("named")
    port = free_port()
    (directory / "example.test.zone").write_text(ZONE)
    (directory / "sub.example.test.zone").write_text(SUBZONE)
    (directory / "named.conf").write_text(
        textwrap.dedent(
            f"""\
            options {{
                directory "{directory}";
                pid-file "{directory}/named.pid";
                session-keyfile "{directory}/session.key";
                listen-on port {port} {{ 127.0.0.1; }};
                listen-on-v6 {{ none; }};
                recursion no;
                dnssec-validation no;
            }};
            controls {{ }};
            zone "example.test" {{ type primary; file "example.test.zone"; allow-update {{ 127.0.0.1; }}; }};
            zone "sub.example.test" {{ type primary; file "sub.example.test.zone"; }};
            """
        )
    )
    log = directory / "named.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-g", "-c", str(directory / "named.conf")], stdout=out, stderr=subprocess.STDOUT
        )
    server = Nameserver("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"named exited: {log.read_text()[-2000:]}")
            try:
                query = dns.message.make_query("sub.example.test.", "SOA")
                response = asyncio.run(dns.asyncquery.udp(query, server.host, timeout=0.3, port=port))
                if response.answer:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"named did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield server
    finally:
        stop_process(process)


def bind_resolver(server: Nameserver, authoritative: bool) -> Resolver:
    return Resolver((server,), check_authoritative=authoritative, authoritative_port=server.port)


def test_find_zone_walks_up_to_the_apex(named: Nameserver) -> None:
    resolver = bind_resolver(named, authoritative=False)

    async def scenario() -> None:
        assert await find_zone("_acme-challenge.www.example.test.", resolver) == "example.test."
        assert await find_zone("EXAMPLE.test", resolver) == "example.test."
        assert await find_zone("_acme-challenge.a.b.sub.example.test.", resolver) == "sub.example.test."
        with pytest.raises(DnsError, match="REFUSED"):  # not served there, and no recursion
            await find_zone("_acme-challenge.elsewhere.invalid.", resolver)

    asyncio.run(scenario())


def test_authoritative_servers_resolves_ns_names(named: Nameserver) -> None:
    servers = asyncio.run(authoritative_servers("example.test.", bind_resolver(named, authoritative=True)))
    # ns2.nowhere.invalid. cannot be resolved and is left out
    assert servers == [AuthoritativeServer("ns1.example.test.", (named,))]


def test_wait_for_txt_at_the_authoritative_servers(named: Nameserver) -> None:
    resolver = bind_resolver(named, authoritative=True)
    name = "_acme-challenge.www.example.test."
    dynamic = "_acme-challenge.dyn.example.test."

    async def add_record_later() -> None:
        await asyncio.sleep(0.5)
        update = dns.update.UpdateMessage("example.test.")
        update.add(dynamic, 60, "TXT", '"added-later"')
        response = await dns.asyncquery.tcp(update, named.host, timeout=2, port=named.port)
        assert response.rcode() == dns.rcode.NOERROR

    async def scenario() -> None:
        await wait_for_txt({name: {"static-one", "static-two"}}, resolver, timeout=2)
        with pytest.raises(PropagationTimeout, match=r"www.example.test. at ns1.example.test. \(1 of 3"):
            await wait_for_txt({name: {"static-one", "static-two", "absent"}}, resolver, timeout=0.5)
        started = time.monotonic()
        await asyncio.gather(wait_for_txt({dynamic: {"added-later"}}, resolver, timeout=5), add_record_later())
        assert time.monotonic() - started >= 0.5

    asyncio.run(scenario())


def test_wait_for_txt_reports_zones_that_cannot_be_found(named: Nameserver) -> None:
    resolver = bind_resolver(named, authoritative=True)
    with pytest.raises(PropagationTimeout, match="finding its name servers failed"):
        asyncio.run(wait_for_txt({"_acme-challenge.elsewhere.invalid.": {"v"}}, resolver, timeout=0.3))


class BindUpdateProvider:
    """Writes TXT records into the test BIND with plain RFC 2136 updates (zone example.test.)."""

    info = ProviderInfo(name="bind-update", title="test", description="test")
    propagation_timeout = 5.0

    def __init__(self, server: Nameserver) -> None:
        self.server = server

    async def _update(self, fqdn: str, value: str, *, add: bool) -> None:
        update = dns.update.UpdateMessage("example.test.")
        if add:
            update.add(fqdn, 60, "TXT", f'"{value}"')
        else:
            update.delete(fqdn, "TXT", f'"{value}"')
        response = await dns.asyncquery.tcp(update, self.server.host, timeout=2, port=self.server.port)
        assert response.rcode() == dns.rcode.NOERROR

    async def present(self, fqdn: str, value: str) -> None:
        await self._update(fqdn, value, add=True)

    async def cleanup(self, fqdn: str, value: str) -> None:
        await self._update(fqdn, value, add=False)

    async def aclose(self) -> None:
        pass


def test_the_solver_says_it_asks_the_authoritative_servers(
    named: Nameserver, caplog: pytest.LogCaptureFixture
) -> None:
    solver = Dns01Solver(BindUpdateProvider(named), bind_resolver(named, authoritative=True), propagation_timeout=5)
    job = ChallengeJob("dns", "said.example.test", "token", "token.thumbprint")

    async def scenario() -> None:
        try:
            await solver.present([job])
            await solver.cleanup([job])
        finally:
            await solver.aclose()

    with caplog.at_level(logging.INFO, logger="certsmith.dns"):
        asyncio.run(scenario())
    assert "asking each zone's authoritative servers" in caplog.text
    assert "system resolver" not in caplog.text
