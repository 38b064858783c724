"""A Cloudflare API v4 emulator (zones and DNS records) for tests.

:class:`CloudflareEmulator` is a small HTTP server on 127.0.0.1 serving
``/client/v4``: the v4 envelope (``success``, ``errors``, ``messages``, ``result``,
``result_info``), API tokens (``Authorization: Bearer``) with per-token permissions
and zone scopes, the global API key (``X-Auth-Email`` + ``X-Auth-Key``), page-based
pagination, Cloudflare's error codes and HTTP statuses, and rate limiting (HTTP 429
with ``Retry-After``) on demand. ``on_change(fqdn, values)`` is called (in a server
thread, with the emulator's lock held) whenever the TXT records at a name change,
e.g. to publish them to ``pebble-challtestsrv``.

Typical use::

    token = CloudflareToken("tok", permissions={"Zone:Read", "DNS:Edit"})
    with CloudflareEmulator([CloudflareAccount(zones=["example.com"], tokens=[token])]) as cf:
        env = {"CLOUDFLARE_DNS_API_TOKEN": "tok", "CLOUDFLARE_BASE_URL": cf.base_url}

Behaviour the public documentation leaves open, and the choice made here:

* a token without ``Zone:Read`` gets 403 / 9109 "Unauthorized to access requested
  resource" from ``GET /zones``; a token scoped to other zones gets an empty list;
* a write without ``DNS:Edit`` on the zone (or to another account's zone) gets
  403 / 10000 "Authentication error";
* an identical record gets 400 / 81058 "An identical record already exists.";
* a record name that does not end in the zone's name is taken as relative to it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOOPBACK = "127.0.0.1"
PREFIX = "/client/v4"
ALL_PERMISSIONS = frozenset({"Zone:Read", "DNS:Read", "DNS:Edit"})

OnChange = Callable[[str, list[str]], None]


@dataclass(frozen=True)
class CloudflareToken:
    """An API token: its secret ``value``, ``permissions`` (``Zone:Read``, ``DNS:Read``,
    ``DNS:Edit``) and the ``zones`` it is limited to (``None``: every zone of the account)."""

    value: str = field(repr=False)
    permissions: frozenset[str] | set[str] = ALL_PERMISSIONS
    zones: tuple[str, ...] | list[str] | None = None

    def may(self, permission: str, zone: str) -> bool:
        in_scope = self.zones is None or zone in {z.lower().rstrip(".") for z in self.zones}
        held = set(self.permissions)
        if "DNS:Edit" in held:
            held.add("DNS:Read")
        return in_scope and permission in held


@dataclass(frozen=True)
class CloudflareAccount:
    """An account: its zones, API tokens and global-key users (``email`` -> ``key``)."""

    zones: tuple[str, ...] | list[str] = ()
    tokens: tuple[CloudflareToken, ...] | list[CloudflareToken] = ()
    global_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class _Zone:
    id: str
    name: str
    account: CloudflareAccount
    created: str

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": "active",
            "paused": False,
            "type": "full",
            "development_mode": 0,
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
            "original_name_servers": None,
            "original_registrar": None,
            "original_dnshost": None,
            "modified_on": self.created,
            "created_on": self.created,
            "activated_on": self.created,
            "meta": {"step": 2, "phishing_detected": False},
            "owner": {"id": None, "type": "user", "email": None},
            "account": {"id": self.account.id, "name": "emulated account"},
            "permissions": ["#dns_records:edit", "#zone:read"],
            "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0},
        }


@dataclass
class _Record:
    id: str
    zone: _Zone
    name: str
    type: str
    content: str
    ttl: int
    comment: str | None
    created: str

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "zone_id": self.zone.id,
            "zone_name": self.zone.name,
            "name": self.name,
            "type": self.type,
            "content": self.content,
            "proxiable": False,
            "proxied": False,
            "ttl": self.ttl,
            "settings": {},
            "meta": {},
            "comment": self.comment,
            "tags": [],
            "created_on": self.created,
            "modified_on": self.created,
        }


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it (credentials left out)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    codes: tuple[int, ...]
    auth: str | None  # "token", "key" or None


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, chain: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.chain = chain or []


def _auth_error() -> ApiError:
    return ApiError(403, 10000, "Authentication error")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Caller:
    account: CloudflareAccount
    token: CloudflareToken | None  # None: the global API key (everything allowed)

    def may(self, permission: str, zone: _Zone) -> bool:
        if zone.account is not self.account:
            return False
        return self.token is None or self.token.may(permission, zone.name)


class CloudflareEmulator:
    """Cloudflare's API v4 on ``http://127.0.0.1:<port>/client/v4`` (see the module docstring).

    ``throttle_every``: every N-th authenticated call answers 429 (0 = never) with
    ``Retry-After: retry_after``.
    """

    def __init__(
        self,
        accounts: Iterable[CloudflareAccount] = (),
        *,
        on_change: OnChange | None = None,
        throttle_every: int = 0,
        retry_after: str | None = "0",
        port: int = 0,
    ) -> None:
        self.on_change = on_change
        self.throttle_every = throttle_every
        self.retry_after = retry_after
        self._port = port
        self._lock = threading.RLock()
        self._accounts: list[CloudflareAccount] = []
        self._zones: dict[str, _Zone] = {}
        self._records: dict[str, _Record] = {}
        self._log: list[LoggedRequest] = []
        self._calls = 0
        self._throttle_next = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for account in accounts:
            self.add_account(account)

    # -- lifecycle --

    def start(self) -> CloudflareEmulator:
        if self._server is None:
            server = _Server((LOOPBACK, self._port), _Handler)
            server.emulator = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cloudflare-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> CloudflareEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The value for ``CLOUDFLARE_BASE_URL`` (and the SDK's ``base_url``)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}{PREFIX}"

    # -- state --

    def add_account(self, account: CloudflareAccount) -> None:
        with self._lock:
            self._accounts.append(account)
            for name in account.zones:
                key = name.lower().rstrip(".")
                if any(z.name == key for z in self._zones.values()):
                    raise ValueError(f"zone {name} already exists")
                zone = _Zone(uuid.uuid4().hex, key, account, _now())
                self._zones[zone.id] = zone

    def zone_id(self, name: str) -> str:
        key = name.lower().rstrip(".")
        with self._lock:
            return next(z.id for z in self._zones.values() if z.name == key)

    def records(self, zone: str) -> list[dict[str, Any]]:
        """Every record of ``zone`` (by name), oldest first."""
        zid = self.zone_id(zone)
        with self._lock:
            return [r.as_api() for r in self._records.values() if r.zone.id == zid]

    def txt_values(self, fqdn: str) -> list[str]:
        name = fqdn.lower().rstrip(".")
        with self._lock:
            return [r.content for r in self._records.values() if r.type == "TXT" and r.name == name]

    def add_record(self, fqdn: str, content: str, type: str = "TXT") -> str:
        """Create a record directly (as in the dashboard); returns its id."""
        name = fqdn.lower().rstrip(".")
        with self._lock:
            zone = self._zone_for(name)
            record = self._insert(zone, name, type, content, 1, None)
            return record.id

    def delete_record(self, record_id: str) -> None:
        with self._lock:
            record = self._records.pop(record_id)
            self._changed({record.name})

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def calls(self, method: str, path_suffix: str = "") -> int:
        """Requests with ``method`` whose path (without the zone id) ends with ``path_suffix``."""
        with self._lock:
            return sum(1 for r in self._log if r.method == method and r.path.endswith(path_suffix))

    def throttle_next(self, times: int = 1) -> None:
        """Answer the next ``times`` authenticated calls with 429."""
        with self._lock:
            self._throttle_next += times

    # -- internals --

    def _zone_for(self, name: str) -> _Zone:
        matches = [z for z in self._zones.values() if name == z.name or name.endswith("." + z.name)]
        if not matches:
            raise KeyError(name)
        return max(matches, key=lambda z: len(z.name))

    def _insert(self, zone: _Zone, name: str, type_: str, content: str, ttl: int, comment: str | None) -> _Record:
        record = _Record(uuid.uuid4().hex, zone, name, type_, content, ttl, comment, _now())
        self._records[record.id] = record
        if type_ == "TXT":
            self._changed({name})
        return record

    def _changed(self, names: set[str]) -> None:
        if self.on_change is None:
            return
        for name in sorted(names):
            values = [r.content for r in self._records.values() if r.type == "TXT" and r.name == name]
            self.on_change(name + ".", values)

    def _dispatch(
        self, method: str, path: str, query: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            params = dict(parse_qsl(query, keep_blank_values=True))
            body: Any = None
            extra_headers: dict[str, str] = {}
            auth_kind: str | None = None
            try:
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise ApiError(400, 9207, "Request body is invalid.") from None
                caller, auth_kind = self._authenticate(headers)
                self._calls += 1
                if self._throttle_next > 0 or (self.throttle_every and self._calls % self.throttle_every == 0):
                    self._throttle_next = max(0, self._throttle_next - 1)
                    if self.retry_after is not None:
                        extra_headers["Retry-After"] = self.retry_after
                    raise ApiError(429, 971, "Please wait and consider throttling your request speed")
                status, envelope = self._route(caller, method, path, params, body)
            except ApiError as exc:
                status = exc.status
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                if exc.chain:
                    error["error_chain"] = exc.chain
                envelope = {"success": False, "errors": [error], "messages": [], "result": None}
            codes = tuple(e["code"] for e in envelope["errors"])
            self._log.append(LoggedRequest(method, path, params, body, status, codes, auth_kind))
            payload = json.dumps(envelope).encode()
            return status, {"Content-Type": "application/json", **extra_headers}, payload

    def _authenticate(self, headers: Mapping[str, str]) -> tuple[_Caller, str]:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme != "Bearer" or not token.strip() or " " in token.strip():
                raise ApiError(
                    400, 6003, "Invalid request headers",
                    [{"code": 6111, "message": "Invalid format for Authorization header"}],
                )  # fmt: skip
            for account in self._accounts:
                for candidate in account.tokens:
                    if candidate.value == token.strip():
                        return _Caller(account, candidate), "token"
            raise ApiError(403, 9109, "Invalid access token")
        email, key = headers.get("x-auth-email"), headers.get("x-auth-key")
        if email is None and key is None:
            raise ApiError(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        if not email or not key:
            raise ApiError(
                400, 6003, "Invalid request headers",
                [{"code": 6102 if not email else 6103, "message": "Invalid format for X-Auth-Email header"
                  if not email else "Invalid format for X-Auth-Key header"}],
            )  # fmt: skip
        for account in self._accounts:
            if account.global_keys.get(email) == key:
                return _Caller(account, None), "key"
        raise ApiError(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")

    def _route(
        self, caller: _Caller, method: str, path: str, params: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        if not path.startswith(PREFIX + "/"):
            raise ApiError(400, 7000, "No route for that URI")
        parts = path[len(PREFIX) + 1 :].rstrip("/").split("/")
        if parts == ["user", "tokens", "verify"] and method == "GET":
            if caller.token is None:
                raise ApiError(400, 1000, "Invalid API Token")
            return 200, _ok({"id": uuid.uuid5(uuid.NAMESPACE_OID, caller.token.value).hex, "status": "active"})
        if parts == ["zones"] and method == "GET":
            return 200, self._list_zones(caller, params)
        if len(parts) >= 2 and parts[0] == "zones":
            zone = self._zones.get(parts[1])
            if zone is None:
                raise ApiError(
                    400, 7003, f"Could not route to {path[len(PREFIX) :]}, perhaps your object identifier is invalid?"
                )
            rest = parts[2:]
            if rest == [] and method == "GET":
                if not caller.may("Zone:Read", zone):
                    raise _auth_error()
                return 200, _ok(zone.as_api())
            if rest == ["dns_records"] and method == "GET":
                if not caller.may("DNS:Read", zone):
                    raise _auth_error()
                return 200, self._list_records(zone, params)
            if rest == ["dns_records"] and method == "POST":
                if not caller.may("DNS:Edit", zone):
                    raise _auth_error()
                return 200, _ok(self._create(zone, body).as_api())
            if len(rest) == 2 and rest[0] == "dns_records" and method in ("GET", "DELETE"):
                need = "DNS:Read" if method == "GET" else "DNS:Edit"
                if not caller.may(need, zone):
                    raise _auth_error()
                record = self._records.get(rest[1])
                if record is None or record.zone is not zone:
                    raise ApiError(404, 81044, "Record does not exist.")
                if method == "GET":
                    return 200, _ok(record.as_api())
                del self._records[record.id]
                self._changed({record.name} if record.type == "TXT" else set())
                return 200, _ok({"id": record.id})
        raise ApiError(405 if parts and parts[0] == "zones" else 400, 10405, f"Method {method} not allowed")

    def _list_zones(self, caller: _Caller, params: dict[str, str]) -> dict[str, Any]:
        if caller.token is not None and "Zone:Read" not in caller.token.permissions:
            raise ApiError(403, 9109, "Unauthorized to access requested resource")
        zones = sorted((z for z in self._zones.values() if caller.may("Zone:Read", z)), key=lambda z: z.name)
        name = params.get("name", "").lower().rstrip(".")
        if name:
            zones = [z for z in zones if z.name == name]
        page, per_page = _paging(params, default=20, low=5, high=50)
        return _paged([z.as_api() for z in zones], page, per_page)

    def _list_records(self, zone: _Zone, params: dict[str, str]) -> dict[str, Any]:
        records = [r for r in self._records.values() if r.zone is zone]
        if type_ := params.get("type"):
            records = [r for r in records if r.type == type_.upper()]
        if name := (params.get("name") or params.get("name.exact") or "").lower().rstrip("."):
            records = [r for r in records if r.name == name]
        if contains := params.get("name.contains", "").lower():
            records = [r for r in records if contains in r.name]
        if (content := params.get("content") or params.get("content.exact")) is not None:
            records = [r for r in records if r.content == content]
        page, per_page = _paging(params, default=100, low=5, high=5000)
        return _paged([r.as_api() for r in records], page, per_page)

    def _create(self, zone: _Zone, body: Any) -> _Record:
        if not isinstance(body, dict):
            raise ApiError(400, 9207, "Request body is invalid.")
        type_ = str(body.get("type") or "").upper()
        if not type_:
            raise ApiError(400, 9004, "DNS record type is required.")
        name = str(body.get("name") or "").lower().rstrip(".")
        if not name:
            raise ApiError(400, 9007, "DNS record name is required.")
        if name == "@":
            name = zone.name
        elif name != zone.name and not name.endswith("." + zone.name):
            name = f"{name}.{zone.name}"  # like the dashboard: a name outside the zone is taken as relative
        content = body.get("content")
        if not isinstance(content, str) or not content:
            raise ApiError(400, 9005, "Content for TXT record is invalid.")
        if type_ == "TXT" and len(content) > 2048:
            raise ApiError(400, 9005, "Content for TXT record is invalid.")
        ttl = body.get("ttl", 1)
        if not isinstance(ttl, int) or (ttl != 1 and not 30 <= ttl <= 86400):
            raise ApiError(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
        same = [r for r in self._records.values() if r.zone is zone and r.name == name and r.type == type_]
        if any(r.content == content for r in same):
            raise ApiError(400, 81058, "An identical record already exists.")
        comment = body.get("comment")
        return self._insert(zone, name, type_, content, ttl, comment if isinstance(comment, str) else None)


def _ok(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _paging(params: Mapping[str, str], *, default: int, low: int, high: int) -> tuple[int, int]:
    try:
        page = int(params.get("page") or 1)
        per_page = int(params.get("per_page") or default)
    except ValueError:
        raise ApiError(400, 1001, "Invalid page or per_page") from None
    if page < 1:
        raise ApiError(400, 1001, "Invalid page")
    return page, min(max(per_page, low), high)


def _paged(items: list[dict[str, Any]], page: int, per_page: int) -> dict[str, Any]:
    chunk = items[(page - 1) * per_page : page * per_page]
    total_pages = (len(items) + per_page - 1) // per_page
    envelope = _ok(chunk)
    envelope["result_info"] = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": total_pages,
    }
    return envelope


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: CloudflareEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, response_headers, payload = self.server.emulator._dispatch(
            self.command, split.path, split.query, headers, raw
        )
        self.send_response(status)
        for name, value in response_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator keeps its own request log."""
