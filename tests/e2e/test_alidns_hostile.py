"""A broken or hostile Alidns endpoint: wrong types, missing fields, listings that never end.

Each answer is a one-line :class:`AlidnsError` in bounded time, never a raw ``KeyError`` or
``TypeError`` and never an endless loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from certsmith.dns.alidns import AlidnsError, AlidnsProvider
from certsmith.testing.pebble import LOOPBACK

Script = Callable[[str, int], dict[str, Any]]


@pytest.fixture
def hostile() -> Iterator[tuple[str, list[Script], list[str]]]:
    """An endpoint answering each action by the current script; records the actions asked."""
    scripts: list[Script] = []
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            action = self.headers.get("x-acs-action") or parse_qs(body).get("Action", [""])[0]
            asked.append(action)
            answer = json.dumps(scripts[-1](action, len(asked))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", scripts, asked
    finally:
        server.shutdown()
        server.server_close()


def _present(endpoint: str) -> None:
    provider = AlidnsProvider.from_env({
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tHostile", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "hostile-secret",
        "ALIDNS_ENDPOINT": endpoint,
    })

    async def run() -> None:
        try:
            await provider.present("_acme-challenge.example.com.", "value")
        finally:
            await provider.aclose()

    asyncio.run(run())


def _domains(total: Any) -> dict[str, Any]:
    return {"TotalCount": total, "Domains": {"Domain": [{"DomainName": "example.com"}]}}


def test_a_malformed_count_is_one_line(hostile: tuple[str, list[Script], list[str]]) -> None:
    endpoint, scripts, _ = hostile
    scripts.append(lambda action, n: _domains("abc"))
    with pytest.raises(AlidnsError, match="malformed TotalCount"):
        _present(endpoint)


def test_a_missing_record_id_is_one_line(hostile: tuple[str, list[Script], list[str]]) -> None:
    endpoint, scripts, _ = hostile
    scripts.append(lambda action, n: _domains(1) if action == "DescribeDomains" else {"RequestId": "x"})
    with pytest.raises(AlidnsError, match="without a usable RecordId"):
        _present(endpoint)


def test_an_endless_record_search_gives_up(hostile: tuple[str, list[Script], list[str]]) -> None:
    endpoint, scripts, asked = hostile

    def answer(action: str, n: int) -> dict[str, Any]:
        if action == "DescribeDomains":
            return _domains(1)
        if action == "AddDomainRecord":
            return {"Code": "DomainRecordDuplicate", "Message": "The DNS record already exists."}
        return {"TotalCount": 10**6, "DomainRecords": {"Record": [{"RR": "other", "Type": "TXT", "Value": "x",
                                                                  "RecordId": "1"}]}}

    scripts.append(answer)
    with pytest.raises(AlidnsError, match="more than 50 pages"):
        _present(endpoint)
    assert asked.count("DescribeDomainRecords") == 50
