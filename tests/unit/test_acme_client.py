"""Protocol edge cases Pebble never produces, against an in-test CA on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from certsmith.acme.client import AcmeClient, PollPolicy, parse_links, parse_retry_after
from certsmith.acme.errors import (
    ACME_ERROR_PREFIX,
    PROBLEM_CLASSES,
    BadNonce,
    Problem,
    ProblemError,
    RateLimited,
    UnexpectedResponse,
    problem_error,
)
from certsmith.crypto import generate_key
from certsmith.jose import b64u_decode, public_jwk

BASE = "https://ca.test"
DIRECTORY = {
    "newNonce": f"{BASE}/nonce",
    "newAccount": f"{BASE}/acct",
    "newOrder": f"{BASE}/order",
    "revokeCert": f"{BASE}/revoke",
    "keyChange": f"{BASE}/key-change",
}


class FakeCa:
    """Answers the directory and nonces; ``on_post`` decides every signed request."""

    def __init__(
        self, on_post: Callable[[str, dict[str, Any], int], httpx.Response], directory: dict[str, Any] | None = None
    ) -> None:
        self.on_post = on_post
        self.directory = directory or DIRECTORY
        self.posts: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.heads = 0
        self.counter = 0
        self.requests: list[httpx.Request] = []

    def nonce(self) -> str:
        self.counter += 1
        return f"nonce{self.counter}"

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        if request.method == "GET" and url == f"{BASE}/dir":
            return httpx.Response(200, json=self.directory)
        if request.method == "HEAD" and url == DIRECTORY["newNonce"]:
            self.heads += 1
            return httpx.Response(200, headers={"Replay-Nonce": self.nonce()})
        body = json.loads(request.content)
        header = json.loads(b64u_decode(body["protected"]))
        self.posts.append((url, header, body))
        return self.on_post(url, body, len(self.posts))

    def client(self, **kwargs: Any) -> AcmeClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AcmeClient(f"{BASE}/dir", generate_key(), account_url=f"{BASE}/acct/1", http=http, **kwargs)


def problem(status: int, kind: str, nonce: str | None, **headers: str) -> httpx.Response:
    all_headers = {"Content-Type": "application/problem+json", **headers}
    if nonce:
        all_headers["Replay-Nonce"] = nonce
    return httpx.Response(status, json={"type": ACME_ERROR_PREFIX + kind, "detail": kind}, headers=all_headers)


def ok(nonce: str, payload: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=payload or {"status": "valid"}, headers={"Replay-Nonce": nonce, **headers})


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def test_bad_nonce_retry_uses_the_nonce_from_the_error_response() -> None:
    def on_post(url: str, body: dict[str, Any], n: int) -> httpx.Response:
        return problem(400, "badNonce", "from-error") if n == 1 else ok("next")

    ca = FakeCa(on_post)

    async def run() -> None:
        async with ca.client() as client:
            await client.fetch_account()

    asyncio.run(run())
    assert [h["nonce"] for _, h, _ in ca.posts] == ["nonce1", "from-error"]
    assert ca.heads == 1, "a nonce is fetched only when the pool is empty"


def test_invalid_replay_nonce_is_ignored() -> None:
    def on_post(url: str, body: dict[str, Any], n: int) -> httpx.Response:
        return problem(400, "badNonce", "not a nonce!") if n == 1 else ok("next")

    ca = FakeCa(on_post)

    async def run() -> None:
        async with ca.client() as client:
            await client.fetch_account()

    asyncio.run(run())
    assert ca.posts[1][1]["nonce"] == "nonce2", "the invalid nonce is dropped and a fresh one fetched"


def test_bad_nonce_retries_are_bounded() -> None:
    ca = FakeCa(lambda url, body, n: problem(400, "badNonce", f"e{n}"))

    async def run() -> None:
        async with ca.client(max_nonce_retries=5) as client:
            await client.fetch_account()

    with pytest.raises(BadNonce):
        asyncio.run(run())
    assert len(ca.posts) == 6


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_503_retry_after_is_honoured(form: str) -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=7)
    value = "7" if form == "seconds" else email.utils.format_datetime(when, usegmt=True)

    def on_post(url: str, body: dict[str, Any], n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(503, text="busy", headers={"Retry-After": value, "Replay-Nonce": "n503"})
        return ok("after")

    ca = FakeCa(on_post)
    sleeps = Sleeps()

    async def run() -> None:
        async with ca.client(sleep=sleeps) as client:
            await client.fetch_account()

    asyncio.run(run())
    assert len(sleeps.calls) == 1 and 5.5 <= sleeps.calls[0] <= 7


def test_rate_limit_beyond_the_cap_is_reported_not_slept() -> None:
    ca = FakeCa(lambda url, body, n: problem(429, "rateLimited", "n", **{"Retry-After": "86400"}))
    sleeps = Sleeps()

    async def run() -> None:
        async with ca.client(sleep=sleeps) as client:
            await client.fetch_account()

    with pytest.raises(RateLimited) as info:
        asyncio.run(run())
    assert info.value.retry_after == 86400 and sleeps.calls == []
    assert "try again later" in str(info.value)


def test_poll_follows_retry_after_with_a_cap() -> None:
    responses = iter(
        [
            ok("a", {"status": "pending", "identifier": {"type": "dns", "value": "x.test"}}, **{"Retry-After": "3"}),
            ok("b", {"status": "pending", "identifier": {"type": "dns", "value": "x.test"}}, **{"Retry-After": "999"}),
            ok("c", {"status": "valid", "identifier": {"type": "dns", "value": "x.test"}}),
        ]
    )
    ca = FakeCa(lambda url, body, n: next(responses))
    sleeps = Sleeps()

    async def run() -> str:
        async with ca.client(sleep=sleeps, poll=PollPolicy(retry_after_cap=30)) as client:
            authz = await client.poll_authorization(f"{BASE}/authz/1", first_wait=0.1, timeout=1000)
            return authz.status.value

    assert asyncio.run(run()) == "valid"
    assert sleeps.calls == [0.1, 3.0, 30.0]
    assert all(body["payload"] == "" for _, _, body in ca.posts), "polling is POST-as-GET"


def test_order_polling_after_finalize_starts_short_and_grows() -> None:
    """A CA that issues within milliseconds is asked again after 10 ms, not 50; a slow one
    is asked with tripling waits (10, 30, 90 ms ...), so one that takes a second is asked
    about five times."""
    order = {"status": "processing", "finalize": f"{BASE}/fin", "identifiers": [], "authorizations": []}
    done = {**order, "status": "valid", "certificate": f"{BASE}/cert"}
    answers = iter([ok("f", order), ok("a", order), ok("b", order), ok("c", done)])
    ca = FakeCa(lambda url, body, n: next(answers))
    sleeps = Sleeps()

    async def run() -> str:
        from certsmith.acme.resources import Order

        async with ca.client(sleep=sleeps) as client:
            pending = Order.from_json(f"{BASE}/order/1", {**order, "status": "ready"})
            finalized = await client.finalize(pending, b"csr")
            return finalized.status.value

    assert asyncio.run(run()) == "valid"
    assert sleeps.calls == pytest.approx([0.01, 0.03, 0.09])
    assert [url for url, _, _ in ca.posts] == [f"{BASE}/fin"] + [f"{BASE}/order/1"] * 3


def test_key_change_inner_jws_has_no_nonce_and_the_new_jwk() -> None:
    ca = FakeCa(lambda url, body, n: ok(f"n{n}"))
    new_key = generate_key("ec384")

    async def run() -> dict[str, Any]:
        async with ca.client() as client:
            old_jwk = public_jwk(client.account_key)
            await client.change_key(new_key)
            assert client.account_key is new_key
            return old_jwk

    old_jwk = asyncio.run(run())
    url, outer_header, body = ca.posts[0]
    assert url == DIRECTORY["keyChange"] and outer_header["kid"] == f"{BASE}/acct/1" and "jwk" not in outer_header
    inner = json.loads(b64u_decode(body["payload"]))
    inner_header = json.loads(b64u_decode(inner["protected"]))
    assert "nonce" not in inner_header
    assert inner_header["jwk"] == public_jwk(new_key) and "kid" not in inner_header
    assert inner_header["url"] == outer_header["url"] == DIRECTORY["keyChange"]
    assert json.loads(b64u_decode(inner["payload"])) == {"account": f"{BASE}/acct/1", "oldKey": old_jwk}


def test_requests_on_a_given_httpx_client_carry_the_exact_content_type() -> None:
    """The client's own pool sends its headers too: tests/e2e/test_http11_transport.py."""
    ca = FakeCa(lambda url, body, n: ok("x"))

    async def run() -> None:
        async with ca.client() as client:
            await client.fetch_account()

    asyncio.run(run())
    post = next(r for r in ca.requests if r.method == "POST")
    assert post.headers["content-type"] == "application/jose+json"
    assert "replay-nonce" not in post.headers


def test_chain_with_a_private_key_block_is_rejected() -> None:
    pem = (
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    )
    ca = FakeCa(lambda url, body, n: httpx.Response(200, content=pem, headers={"Replay-Nonce": "z"}))

    async def run() -> None:
        async with ca.client() as client:
            await client.download_chain(f"{BASE}/cert/1")

    with pytest.raises(UnexpectedResponse, match="'PRIVATE KEY' block"):
        asyncio.run(run())


def test_missing_location_on_new_order_is_a_clear_error() -> None:
    ca = FakeCa(lambda url, body, n: ok("x", {"status": "pending", "finalize": f"{BASE}/fin", "identifiers": []}))

    async def run() -> None:
        async with ca.client() as client:
            from certsmith.crypto import Identifier

            await client.new_order([Identifier("dns", "x.test")])

    with pytest.raises(UnexpectedResponse, match="no Location"):
        asyncio.run(run())


def test_retry_after_parsing() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Wed, 31 Dec 2025 12:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("9" * 40, now) == 366 * 86400  # capped, no OverflowError
    assert parse_retry_after("9" * 5000, now) is None  # no ValueError from int()
    assert parse_retry_after("\u00b2", now) is None  # a Latin-1 header byte that str.isdigit() accepts
    assert parse_retry_after("\u0661\u0662", now) is None  # non-ASCII digits are not delay-seconds
    assert parse_retry_after("Thu, 01 Jan 99999 12:00:00 GMT", now) is None


def test_link_headers_with_several_alternates() -> None:
    headers = httpx.Headers(
        [
            ("Link", '<https://ca.test/dir>;rel="index"'),
            ("Link", '</cert/1/alt/1>;rel="alternate", <https://ca.test/cert/1/alt/2>; rel=alternate'),
        ]
    )
    links = parse_links(headers, "https://ca.test/cert/1")
    assert [u for u, rel in links if rel == "alternate"] == [
        "https://ca.test/cert/1/alt/1",
        "https://ca.test/cert/1/alt/2",
    ]


@pytest.mark.parametrize("short_type", sorted(PROBLEM_CLASSES))
def test_every_acme_error_type_maps_to_its_class(short_type: str) -> None:
    error = problem_error(Problem.from_json({"type": ACME_ERROR_PREFIX + short_type, "detail": "d"}))
    assert type(error) is PROBLEM_CLASSES[short_type]
    assert error.problem.short_type == short_type


def test_unknown_and_foreign_types_stay_generic_and_subproblems_are_shown() -> None:
    assert type(problem_error(Problem.from_json({"type": ACME_ERROR_PREFIX + "brandNew"}))) is ProblemError
    foreign = problem_error(Problem.from_json({"type": "https://example.com/malformed", "detail": "x"}))
    assert type(foreign) is ProblemError, "mapping goes by the ACME URN, never by text"
    compound = problem_error(
        Problem.from_json(
            {
                "type": ACME_ERROR_PREFIX + "compound",
                "detail": "two failed",
                "subproblems": [
                    {"type": ACME_ERROR_PREFIX + "caa", "detail": "CAA forbids", "identifier": {"value": "a.test"}},
                    {"type": ACME_ERROR_PREFIX + "dns", "detail": "NXDOMAIN", "identifier": {"value": "b.test"}},
                ],
            }
        )
    )
    assert "a.test: CAA forbids" in str(compound) and "b.test: NXDOMAIN" in str(compound)


def test_resources_tolerate_unknown_fields_statuses_and_challenge_types() -> None:
    from certsmith.acme.resources import Authorization, AuthorizationStatus, ChallengeStatus, Order, OrderStatus

    authz = Authorization.from_json(
        f"{BASE}/authz/1",
        {
            "identifier": {"type": "dns", "value": "x.test"},
            "status": "quantum",
            "futureField": {"nested": True},
            "challenges": [
                {"type": "dns-account-01", "url": f"{BASE}/c/0", "status": "pending", "token": "t0", "extra": 1},
                {"type": "http-01", "url": f"{BASE}/c/1", "status": "superposed", "token": "t1"},
                "not an object",
                {"type": "broken-no-url"},
            ],
        },
    )
    assert authz.status == AuthorizationStatus.UNKNOWN
    assert [c.type for c in authz.challenges] == ["dns-account-01", "http-01"]
    http = authz.challenge("http-01")
    assert http is not None and http.status == ChallengeStatus.UNKNOWN and http.token == "t1"
    order = Order.from_json(
        f"{BASE}/order/1",
        {"status": "archived", "identifiers": [], "authorizations": [], "finalize": f"{BASE}/f", "new": 1},
    )
    assert order.status == OrderStatus.UNKNOWN


def test_a_gzipped_answer_is_read_once_and_an_oversized_one_refused() -> None:
    import gzip

    from certsmith.acme.client import MAX_RESPONSE_BYTES
    from certsmith.acme.errors import UnexpectedResponse

    directory = {"newNonce": f"{BASE}/n", "newAccount": f"{BASE}/a", "newOrder": f"{BASE}/o"}
    answers = {
        "gzip": lambda: httpx.Response(200, headers={"Content-Encoding": "gzip"},
                                       content=gzip.compress(json.dumps(directory).encode())),
        "huge": lambda: httpx.Response(200, content=b"{" + b" " * (MAX_RESPONSE_BYTES + 10) + b"}"),
        "bomb": lambda: httpx.Response(200, headers={"Content-Encoding": "gzip"},
                                       content=gzip.compress(b" " * (MAX_RESPONSE_BYTES * 4))),
    }

    def fetch(kind: str) -> Any:
        async def run() -> Any:
            http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answers[kind]()))
            async with AcmeClient(f"{BASE}/dir", generate_key(), http=http) as client:
                return await client.directory()

        return asyncio.run(run())

    assert fetch("gzip").new_order == f"{BASE}/o"
    for kind in ("huge", "bomb"):
        with pytest.raises(UnexpectedResponse, match="bytes"):
            fetch(kind)


class SlowCa:
    """Answers POSTs only when ``release`` is set, each with a fresh nonce; counts HEADs."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.heads = 0
        self.counter = 0
        self.used: list[str] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if request.method == "GET":
            return httpx.Response(200, json=DIRECTORY)
        self.counter += 1
        nonce = f"nonce{self.counter}"
        if request.method == "HEAD":
            self.heads += 1
            return httpx.Response(200, headers={"Replay-Nonce": nonce})
        self.used.append(json.loads(b64u_decode(json.loads(request.content)["protected"]))["nonce"])
        if url.endswith("/slow"):
            await self.release.wait()
        return ok(nonce, {"status": "valid", "identifier": {"type": "dns", "value": "x.test"}})

    def client(self) -> AcmeClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AcmeClient(f"{BASE}/dir", generate_key(), account_url=f"{BASE}/acct/1", http=http)


def test_requests_waiting_for_a_nonce_are_served_by_responses_in_flight_one_each() -> None:
    """Thirty requests started while one is in flight take their nonces from the responses,
    one each (no nonce is used twice), with a single HEAD newNonce for the whole run."""
    ca = SlowCa()

    async def run() -> None:
        async with ca.client() as client:
            slow = asyncio.create_task(client.get_authorization(f"{BASE}/slow"))
            await asyncio.sleep(0.01)  # the slow request is in flight; the pool is empty
            fast = [asyncio.create_task(client.get_authorization(f"{BASE}/authz/{i}")) for i in range(30)]
            await asyncio.sleep(0.01)
            ca.release.set()
            await asyncio.gather(slow, *fast)

    asyncio.run(asyncio.wait_for(run(), timeout=1.5))  # a stranded waiter would wait 2 s, then HEAD
    assert ca.heads == 1
    assert len(ca.used) == 31 and len(set(ca.used)) == 31


def test_a_cancelled_nonce_waiter_does_not_strand_the_next_one() -> None:
    ca = SlowCa()

    async def run() -> None:
        async with ca.client() as client:
            slow = asyncio.create_task(client.get_authorization(f"{BASE}/slow"))
            await asyncio.sleep(0.01)
            first = asyncio.create_task(client.get_authorization(f"{BASE}/authz/1"))
            second = asyncio.create_task(client.get_authorization(f"{BASE}/authz/2"))
            await asyncio.sleep(0.01)
            first.cancel()  # waiting in line ahead of the second
            ca.release.set()
            await asyncio.gather(slow, second)
            assert first.cancelled()

    asyncio.run(asyncio.wait_for(run(), timeout=1.5))
    assert ca.heads == 1 and len(ca.used) == 2
