"""The manager's decisions without a network: an in-memory store, a fixed clock and a scripted CA transport.

The CA here answers only what a decision needs (the directory, renewalInfo, a refused
newOrder), so each test sees exactly which requests a decision caused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from certsmith._time import format_time
from certsmith.crypto import generate_key, private_key_pem
from certsmith.jose import b64u_decode
from certsmith.manager import Manager
from certsmith.settings import CertificateRequest, ChallengeSettings
from certsmith.storage.base import CertificateFiles, LineageMeta, RenewalState, StoredAccount
from tests.support.memory_store import MemoryStore

CA = "https://ca.test/dir"
OTHER_CA = "https://other-ca.test/dir"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class ScriptedCa:
    """Records every request; answers the directory, renewalInfo (via ``ari``) and refuses orders."""

    def __init__(self, ari: Callable[[str], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.ari = ari or (lambda cert_id: window_response(NOW + timedelta(days=20), NOW + timedelta(days=22)))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        base = f"https://{request.url.host}"
        path = request.url.path
        nonce = {"Replay-Nonce": f"nonce{len(self.requests)}"}
        if path == "/dir":
            return httpx.Response(200, json={
                "newNonce": base + "/nonce", "newAccount": base + "/account", "newOrder": base + "/order",
                "revokeCert": base + "/revoke", "keyChange": base + "/key", "renewalInfo": base + "/ari",
            })
        if path == "/nonce":
            return httpx.Response(200, headers=nonce)
        if path.startswith("/ari/"):
            return self.ari(path.removeprefix("/ari/"))
        problem = {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "scripted refusal"}
        return httpx.Response(403, json=problem, headers={**nonce, "Content-Type": "application/problem+json"})

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.host}{r.url.path}" for r in self.requests]

    def order_payloads(self) -> list[dict[str, Any]]:
        payloads = []
        for request in self.requests:
            if request.url.path == "/order":
                body = json.loads(request.content)
                payloads.append(json.loads(b64u_decode(body["payload"])))
        return payloads


def window_response(start: datetime, end: datetime, retry_after: str = "21600") -> httpx.Response:
    body = {"suggestedWindow": {"start": format_time(start), "end": format_time(end)}}
    return httpx.Response(200, json=body, headers={"Retry-After": retry_after})


def lineage(
    store: MemoryStore,
    name: str,
    *,
    lifetime: timedelta = timedelta(days=90),
    age: timedelta = timedelta(days=10),
    directory_url: str = CA,
    cert_id: str = "aki.serial",
) -> LineageMeta:
    not_before = NOW - age
    settings = ChallengeSettings(http_port=8080)
    request = CertificateRequest(names=(name,), challenge=settings, directory_url=directory_url)
    meta = LineageMeta(
        name=name, names=(name,), key_type="ec256", directory_url=directory_url, settings=request.settings_json(),
        not_before=format_time(not_before), not_after=format_time(not_before + lifetime), serial="1", issuer="CA",
        version=0, created_at="", updated_at="", cert_id=cert_id,
    )
    files = CertificateFiles(b"cert", b"chain", b"certchain", private_key_pem(generate_key()))
    return store.save_certificate(meta, files)


def account(store: MemoryStore, directory_url: str = CA) -> None:
    store.save_account(StoredAccount(directory_url, directory_url + "/acct/1", private_key_pem(generate_key()),
                                     ("mailto:a@example.com",), "valid", ""))


def manager(store: MemoryStore, ca: ScriptedCa, events: list[str] | None = None) -> Manager:
    http = httpx.AsyncClient(transport=httpx.MockTransport(ca))
    return Manager(store, CA, env={}, clock=lambda: NOW, http=http,
                   on_event=(lambda kind, text: events.append(text)) if events is not None else None)


def run_renew(m: Manager, **kwargs: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with m:
            return {o.name: o for o in await m.renew(**kwargs)}

    return asyncio.run(go())


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    account(s)
    return s


def test_not_due_asks_ari_once_and_then_not_before_retry_after(store: MemoryStore) -> None:
    lineage(store, "a.test")
    ca = ScriptedCa()
    outcomes = run_renew(manager(store, ca))
    assert outcomes["a.test"].renewed is False and "renewal window" in outcomes["a.test"].reason
    assert ca.paths() == ["GET ca.test/dir", "GET ca.test/ari/aki.serial"]
    state = store.load_state("a.test")
    assert state is not None and state.ari_next_check == format_time(NOW + timedelta(hours=6))
    second = ScriptedCa()
    run_renew(manager(store, second))
    assert second.paths() == []  # nothing due, nothing to ask: not even the directory


def test_a_past_window_orders_a_replacement_and_falls_back_without_replaces(store: MemoryStore) -> None:
    lineage(store, "due.test")
    lineage(store, "fresh.test", cert_id="")  # no ARI possible: the lifetime rule says not due
    ca = ScriptedCa(ari=lambda _: window_response(NOW - timedelta(days=2), NOW - timedelta(days=1)))
    events: list[str] = []
    outcomes = run_renew(manager(store, ca, events))
    assert outcomes["due.test"].error and "scripted refusal" in outcomes["due.test"].error
    assert outcomes["fresh.test"].renewed is False and outcomes["fresh.test"].error is None
    payloads = ca.order_payloads()
    assert [p.get("replaces") for p in payloads] == ["aki.serial", None]  # refused once, then ordered without
    assert all(p["identifiers"] == [{"type": "dns", "value": "due.test"}] for p in payloads)
    assert any("ordering without it" in e for e in events)


def test_an_ari_failure_is_remembered_and_the_lifetime_rule_decides(store: MemoryStore) -> None:
    lineage(store, "old.test", age=timedelta(days=70))  # past two thirds of 90 days
    ca = ScriptedCa(ari=lambda _: httpx.Response(200, content=b"<html>"))
    events: list[str] = []
    outcomes = run_renew(manager(store, ca, events))
    assert "left of 90 days" in outcomes["old.test"].reason  # lifetime rule: due, attempted
    assert outcomes["old.test"].error
    state = store.load_state("old.test")
    assert state is not None and state.ari_error and state.ari_next_check == format_time(NOW + timedelta(hours=1))
    assert any("cannot get the CA's renewal window" in e for e in events)


def test_a_damaged_lineage_is_reported_and_the_others_go_on(store: MemoryStore) -> None:
    lineage(store, "good.test", cert_id="")
    lineage(store, "bad.test", cert_id="")
    store.damaged.add("bad.test")
    outcomes = run_renew(manager(store, ScriptedCa()))
    assert outcomes["bad.test"].reason == "damaged" and "damaged" in (outcomes["bad.test"].error or "")
    assert outcomes["good.test"].renewed is False and outcomes["good.test"].error is None


def test_directory_narrows_renew_to_one_ca(store: MemoryStore) -> None:
    account(store, OTHER_CA)
    lineage(store, "here.test", cert_id="")
    lineage(store, "there.test", directory_url=OTHER_CA, cert_id="", age=timedelta(days=80))
    ca = ScriptedCa()
    assert list(run_renew(manager(store, ca), directory_url=CA)) == ["here.test"]
    assert ca.paths() == []
    everything = run_renew(manager(store, ScriptedCa()))
    assert set(everything) == {"here.test", "there.test"} and everything["there.test"].error  # due: attempted


def test_a_revoked_lineage_is_due_without_asking(store: MemoryStore) -> None:
    meta = lineage(store, "revoked.test")
    store.save_state("revoked.test", RenewalState(version=meta.version, revoked_at=format_time(NOW),
                                                  ari_next_check=format_time(NOW + timedelta(hours=1))))
    ca = ScriptedCa()
    outcomes = run_renew(manager(store, ca))
    assert outcomes["revoked.test"].reason == "the certificate was revoked"
    assert "GET ca.test/ari/aki.serial" not in ca.paths()


def test_issue_keeps_a_valid_certificate_for_the_same_request(store: MemoryStore) -> None:
    lineage(store, "same.test", cert_id="")
    ca = ScriptedCa()
    request = CertificateRequest(names=("same.test",), challenge=ChallengeSettings(http_port=8080))

    async def go(req: CertificateRequest) -> Any:
        async with manager(store, ca) as m:
            return await m.issue(req, force=False)

    kept = asyncio.run(go(request))
    assert kept.issued is False and "valid until" in kept.reason and ca.paths() == []
    with pytest.raises(Exception, match="scripted refusal"):
        asyncio.run(go(CertificateRequest(names=("same.test", "www.same.test"),
                                          challenge=ChallengeSettings(http_port=8080))))
    assert ca.order_payloads()[0]["identifiers"][1] == {"type": "dns", "value": "www.same.test"}
    assert all("replaces" not in p for p in ca.order_payloads())


def test_a_missing_lineage_is_a_clear_error(store: MemoryStore) -> None:
    with pytest.raises(Exception, match=r"no certificate named 'nope\.test'"):
        run_renew(manager(store, ScriptedCa()), names=["nope.test"])


def test_web_root_files_left_by_a_killed_run_are_removed_and_others_kept(tmp_path: Any) -> None:
    store = MemoryStore()
    directory = tmp_path / ".well-known" / "acme-challenge"
    directory.mkdir(parents=True)
    ours, theirs = directory / "tok1", directory / "tok2"
    ours.write_text("tok1.thumb")
    theirs.write_text("someone else's")
    dead = {"pid": 2**22 + 12345, "host": __import__("socket").gethostname(), "settings": {}}
    store.journal_add("a1", {"kind": "http-01", "path": str(ours), "content": "tok1.thumb", **dead})
    store.journal_add("a2", {"kind": "http-01", "path": str(theirs), "content": "tok2.thumb", **dead})
    store.journal_add("a3", {"kind": "http-01", "path": str(directory / "tok3"), "content": "x", "pid": 1,
                             "host": "another-host"})
    events: list[str] = []
    removed = asyncio.run(manager(store, ScriptedCa(), events).clean_leftovers())
    assert not ours.exists() and theirs.read_text() == "someone else's"  # changed since: not ours to delete
    assert len(removed) == 2 and sorted(store.journal) == ["a3"]  # another host's run is its own business
    assert any("left by an earlier run" in event for event in events)
