"""An acme-dns (https://github.com/joohoi/acme-dns) API emulator for tests.

:class:`AcmeDnsEmulator` serves the real server's HTTP API on 127.0.0.1:

* ``POST /register`` (optional body ``{"allowfrom": [CIDR, ...]}``) -> 201 with
  ``username``, ``password``, ``fulldomain``, ``subdomain``, ``allowfrom``;
  400 ``malformed_json_payload`` / ``invalid_allowfrom_cidr``;
* ``POST /update`` with ``X-Api-User``/``X-Api-Key`` and ``{"subdomain", "txt"}`` -> 200
  ``{"txt": ...}``; 401 ``forbidden`` for unknown users, wrong passwords, another
  account's subdomain or a client address outside ``allowfrom``; 400 ``bad_txt``
  unless the value is 43 base64url characters (an ACME key authorization digest);
* ``GET /health`` -> 200.

Like the real server it keeps the two most recent TXT values per subdomain (an update
replaces the older one) and serves them at ``<subdomain>.<domain>``;
``on_change(fqdn, values)`` is called after every update, e.g. to publish the values
to ``pebble-challtestsrv``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
TXT_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")

OnChange = Callable[[str, list[str]], None]


@dataclass
class _Account:
    username: str
    password: str
    subdomain: str
    allowfrom: list[str]
    values: list[str] = field(default_factory=list)  # oldest first, at most two


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    body: Any
    status: int
    error: str | None


class AcmeDnsEmulator:
    """acme-dns on ``http://127.0.0.1:<port>`` serving ``<subdomain>.<domain>``."""

    def __init__(self, domain: str = "auth.acme-dns.test", *, on_change: OnChange | None = None, port: int = 0) -> None:
        self.domain = domain.lower().rstrip(".")
        self.on_change = on_change
        self._port = port
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        self._log: list[LoggedRequest] = []
        self.fail_next_with: list[int] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AcmeDnsEmulator:
        if self._server is None:
            server = _Server((LOOPBACK, self._port), _Handler)
            server.emulator = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="acme-dns-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> AcmeDnsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        """The value for ``ACME_DNS_API_BASE``."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    # -- state --

    def register(self, allowfrom: list[str] | None = None) -> dict[str, Any]:
        """Register directly (as ``POST /register`` would); returns the registration."""
        with self._lock:
            return self._register(allowfrom or [])

    def txt_values(self, fqdn: str) -> list[str]:
        """The values served at ``fqdn`` (``<subdomain>.<domain>``), oldest first."""
        name = fqdn.lower().rstrip(".")
        with self._lock:
            for account in self._accounts.values():
                if f"{account.subdomain}.{self.domain}" == name:
                    return list(account.values)
        return []

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    # -- handling --

    def _register(self, allowfrom: list[str]) -> dict[str, Any]:
        account = _Account(str(uuid.uuid4()), secrets.token_urlsafe(30)[:40], str(uuid.uuid4()), allowfrom)
        self._accounts[account.username] = account
        return {
            "username": account.username,
            "password": account.password,
            "fulldomain": f"{account.subdomain}.{self.domain}",
            "subdomain": account.subdomain,
            "allowfrom": account.allowfrom,
        }

    def _dispatch(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes, client: str
    ) -> tuple[int, bytes]:
        with self._lock:
            body: Any = None
            status, payload = self._handle(method, path, headers, raw, client)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            error = payload.get("error") if isinstance(payload, dict) else None
            self._log.append(LoggedRequest(method, path, body, status, error))
            return status, (json.dumps(payload).encode() if payload is not None else b"")

    def _handle(self, method: str, path: str, headers: Mapping[str, str], raw: bytes, client: str) -> tuple[int, Any]:
        if path == "/health" and method == "GET":
            return 200, None
        if method != "POST" or path not in ("/register", "/update"):
            return 404, {"error": "not_found"}  # the real router answers 404/405 in plain text
        if self.fail_next_with:
            return self.fail_next_with.pop(0), {"error": "db_error"}
        if path == "/register":
            allowfrom: list[str] = []
            if raw:
                try:
                    data = json.loads(raw)
                except ValueError:
                    return 400, {"error": "malformed_json_payload"}
                allowfrom = list(data.get("allowfrom") or []) if isinstance(data, dict) else []
            for cidr in allowfrom:
                try:
                    ipaddress.ip_network(str(cidr), strict=False)
                except ValueError:
                    return 400, {"error": "invalid_allowfrom_cidr"}
            return 201, self._register([str(c) for c in allowfrom])
        # /update: authentication first, like the real server's middleware
        account = self._accounts.get(headers.get("x-api-user", ""))
        if account is None or not secrets.compare_digest(account.password, headers.get("x-api-key", "")):
            return 401, {"error": "forbidden"}
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            data = None  # the real middleware only logs a decoding error; the subdomain check then fails
        if not isinstance(data, dict) or data.get("subdomain") != account.subdomain:
            return 401, {"error": "forbidden"}
        if account.allowfrom and not any(
            ipaddress.ip_address(client) in ipaddress.ip_network(c, strict=False) for c in account.allowfrom
        ):
            return 401, {"error": "forbidden"}
        txt = data.get("txt")
        if not isinstance(txt, str) or not TXT_PATTERN.fullmatch(txt):
            return 400, {"error": "bad_txt"}
        account.values = [*account.values, txt][-2:]
        if self.on_change is not None:
            self.on_change(f"{account.subdomain}.{self.domain}.", list(account.values))
        return 200, {"txt": txt}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: AcmeDnsEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = self.server.emulator._dispatch(
            self.command, urlsplit(self.path).path, headers, raw, self.client_address[0]
        )
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator keeps its own request log."""
