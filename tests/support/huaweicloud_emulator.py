"""A Huawei Cloud DNS (API v2) emulator for tests.

:class:`HuaweiCloudEmulator` is a small HTTP server on 127.0.0.1 speaking the v2 REST
API closely enough for Huawei's own SDK (``huaweicloudsdkdns``) and certsmith's
provider: public zones (``GET /v2/zones``), record sets (list, create, show, update,
delete), AK/SK ``SDK-HMAC-SHA256`` signatures verified exactly as API Gateway does
(recomputed from what arrived with the pure functions of
:mod:`certsmith.dns.huaweicloud_signing`; the SDK tests check that independently),
a 15-minute ``X-Sdk-Date`` window, IAM fine-grained permissions, throttling injection,
and the service's error bodies: API Gateway's ``{"error_code", "error_msg"}`` and the
DNS service's ``{"code", "message"}``.

Every TXT value is stored as Huawei Cloud stores it -- quoted -- and a name has at most
one record set per type (``DNS.0312`` otherwise). ``on_change(fqdn, values)`` is called
with the unquoted values whenever a TXT set changes, e.g. to publish them to
``pebble-challtestsrv``.

Behaviour the public documentation does not pin down, chosen here and kept
consistent: the permission-denied code (``DNS.0030``), the invalid-record code
(``DNS.0308``), and a wrong ``X-Project-Id`` answered as an authentication error.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from certsmith.dns import huaweicloud_signing as signing
from certsmith.dns.huaweicloud import unquote_txt

LOOPBACK = "127.0.0.1"
DATE_WINDOW = timedelta(minutes=15)
OnChange = Callable[[str, list[str]], None]
TXT_RECORD = re.compile(r'"(?:[^"\\]|\\.){0,255}"( "(?:[^"\\]|\\.){0,255}")*')


@dataclass(frozen=True)
class HuaweiAccount:
    """An account as seen through one AK/SK: its public zones and IAM permissions.

    ``allowed_actions`` ``None`` allows everything; otherwise a set of IAM actions such
    as ``"dns:recordset:create"`` (``"dns:*:*"`` allows all).
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    zones: tuple[str, ...] | list[str] = ()
    project_id: str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    allowed_actions: frozenset[str] | set[str] | None = None

    def allows(self, action: str) -> bool:
        return self.allowed_actions is None or action in self.allowed_actions or "dns:*:*" in self.allowed_actions


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    access_key_id: str | None
    status: int
    code: str | None
    canonical_request: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, gateway: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.gateway = status, code, message, gateway

    def body(self) -> dict[str, str]:
        if self.gateway:
            return {"error_code": self.code, "error_msg": self.message, "request_id": uuid.uuid4().hex}
        return {"code": self.code, "message": self.message}


def _auth_error(detail: str) -> ApiError:
    return ApiError(401, "APIGW.0301", f"Incorrect IAM authentication information: {detail}", gateway=True)


@dataclass
class _Zone:
    id: str
    name: str
    owner: str


@dataclass
class _RecordSet:
    id: str
    zone: _Zone
    name: str
    type: str
    ttl: int
    records: list[str]
    created: str
    updated: str

    def as_api(self, base: str, project_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": None,
            "zone_id": self.zone.id,
            "zone_name": self.zone.name,
            "type": self.type,
            "ttl": self.ttl,
            "records": list(self.records),
            "status": "ACTIVE",
            "default": False,
            "project_id": project_id,
            "create_at": self.created,
            "update_at": self.updated,
            "links": {"self": f"{base}/v2/zones/{self.zone.id}/recordsets/{self.id}"},
        }


class HuaweiCloudEmulator:
    """The emulator; use as a context manager. ``endpoint`` is its base URL."""

    def __init__(self, accounts: list[HuaweiAccount], *, on_change: OnChange | None = None) -> None:
        self._lock = threading.RLock()
        self._accounts = {a.access_key_id: a for a in accounts}
        self._ids = itertools.count(1)
        self._zones: dict[str, _Zone] = {}
        self._sets: dict[str, _RecordSet] = {}
        self._on_change = on_change
        self._failures: list[tuple[int, str, str, bool]] = []
        self._race: tuple[str, str] | None = None
        self.requests: list[LoggedRequest] = []
        self.clock_offset = timedelta(0)
        for account in accounts:
            for zone in account.zones:
                self.add_zone(account, zone)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def __enter__(self) -> HuaweiCloudEmulator:
        server = _Server((LOOPBACK, 0), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # -- state for tests --

    def add_zone(self, account: HuaweiAccount, name: str) -> str:
        with self._lock:
            zone_id = "ff8080" + uuid.uuid4().hex[:26]
            self._zones[zone_id] = _Zone(zone_id, name.lower().rstrip(".") + ".", account.access_key_id)
            return zone_id

    def zone_id(self, name: str) -> str:
        fqdn = name.lower().rstrip(".") + "."
        return next(z.id for z in self._zones.values() if z.name == fqdn)

    def add_txt(self, fqdn: str, *values: str, ttl: int = 300) -> None:
        """Put TXT values at ``fqdn`` (merged into its set) as another client would."""
        name = fqdn.lower().rstrip(".") + "."
        with self._lock:
            rs = self._set_named(name, "TXT")
            quoted = ['"' + v + '"' for v in values]
            if rs is None:
                zone = max((z for z in self._zones.values() if _within(name, z.name)), key=lambda z: len(z.name))
                now = _now_text()
                rs = _RecordSet(_new_id(), zone, name, "TXT", ttl, [], now, now)
                self._sets[rs.id] = rs
            rs.records.extend(quoted)
            self._changed(name)

    def txt_values(self, fqdn: str) -> list[str]:
        name = fqdn.lower().rstrip(".") + "."
        with self._lock:
            rs = self._set_named(name, "TXT")
            return [unquote_txt(r) for r in rs.records] if rs else []

    def record_sets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rs.as_api(self.endpoint, "") for rs in self._sets.values()]

    def fail_next(self, status: int, code: str, message: str, *, times: int = 1, gateway: bool = True) -> None:
        """Answer the next ``times`` requests with this error (after authentication)."""
        with self._lock:
            self._failures.extend([(status, code, message, gateway)] * times)

    def race_after_next_list(self, fqdn: str, value: str) -> None:
        """Right after answering the next record-set list, add ``value`` at ``fqdn`` as another
        client would: the caller's view is stale, so its create meets ``DNS.0312``."""
        self._race = (fqdn, value)

    def calls(self, method: str, status: int | None = None) -> int:
        return sum(1 for r in self.requests if r.method == method and (status is None or r.status == status))

    # -- request handling --

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        url = urlsplit(raw_path)
        query_pairs = parse_qsl(url.query, keep_blank_values=True)
        query = dict(query_pairs)
        parsed: Any = None
        log: dict[str, Any] = {"access_key_id": None, "canonical_request": None}
        try:
            account = self._authenticate(method, url.path, query_pairs, headers, body, log)
            with self._lock:
                if self._failures:
                    status, code, message, gateway = self._failures.pop(0)
                    raise ApiError(status, code, message, gateway=gateway)
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    raise ApiError(400, "DNS.0005", "Request body is not valid JSON.") from None
            status, answer = self._route(account, method, unquote(url.path), query, parsed)
            code = None
        except ApiError as exc:
            status, answer, code = exc.status, exc.body(), exc.code
        self.requests.append(
            LoggedRequest(method, url.path, query, parsed, log["access_key_id"], status, code, log["canonical_request"])
        )
        return status, answer

    def _authenticate(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        log: dict[str, Any],
    ) -> HuaweiAccount:
        lowered = {k.lower(): v for k, v in headers.items()}
        auth = signing.parse_authorization(lowered.get("authorization", ""))
        if auth is None:
            raise _auth_error("Authorization header missing or not SDK-HMAC-SHA256")
        log["access_key_id"] = auth["Access"]
        date = lowered.get("x-sdk-date")
        if date is None:
            raise _auth_error("x-sdk-date header missing")
        try:
            moment = datetime.strptime(date, signing.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise _auth_error("x-sdk-date format invalid") from None
        if abs(datetime.now(UTC) + self.clock_offset - moment) > DATE_WINDOW:
            raise _auth_error("request expired, x-sdk-date out of range")
        signed = auth["SignedHeaders"].split(";")
        if "x-sdk-date" not in signed or "host" not in signed or signed != sorted(signed):
            raise _auth_error("SignedHeaders must be sorted and include host and x-sdk-date")
        if any(name not in lowered for name in signed):
            raise _auth_error("a signed header is missing")
        account = self._accounts.get(auth["Access"])
        if account is None:
            raise _auth_error(f"ak {auth['Access']} not exist")
        canonical = signing.canonical_request(method, path, query, lowered, signed, body)
        log["canonical_request"] = canonical
        expected = signing.signature(account.secret_access_key, signing.string_to_sign(canonical, date))
        if expected != auth["Signature"]:
            raise _auth_error("verify aksk signature fail")
        project = lowered.get("x-project-id")
        if project is not None and project != account.project_id:
            raise _auth_error(f"project id {project} does not belong to this account")
        return account

    def _route(
        self, account: HuaweiAccount, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        parts = path.rstrip("/").split("/")[1:]
        if parts == ["v2", "zones"] and method == "GET":
            return 200, self._list_zones(account, query)
        if len(parts) == 4 and parts[:2] == ["v2", "zones"] and parts[3] == "recordsets":
            zone = self._zone(account, parts[2])
            if method == "GET":
                return 200, self._list_sets(account, zone, query)
            if method == "POST":
                return 202, self._create(account, zone, body)
        if len(parts) == 5 and parts[:2] == ["v2", "zones"] and parts[3] == "recordsets":
            zone = self._zone(account, parts[2])
            if method == "GET":
                self._check(account, "dns:recordset:get")
                return 200, self._owned(zone, parts[4]).as_api(self.endpoint, account.project_id)
            if method == "PUT":
                return 202, self._update(account, zone, parts[4], body)
            if method == "DELETE":
                return 202, self._delete(account, zone, parts[4])
        raise ApiError(
            404, "APIGW.0101", "The API does not exist or has not been published in the environment", gateway=True
        )

    @staticmethod
    def _check(account: HuaweiAccount, action: str) -> None:
        if not account.allows(action):
            raise ApiError(403, "DNS.0030", f"Policy doesn't allow {action} to be performed.")

    def _zone(self, account: HuaweiAccount, zone_id: str) -> _Zone:
        zone = self._zones.get(zone_id)
        if zone is None or zone.owner != account.access_key_id:
            raise ApiError(404, "DNS.0101", "The zone does not exist.")
        return zone

    def _owned(self, zone: _Zone, set_id: str) -> _RecordSet:
        rs = self._sets.get(set_id)
        if rs is None or rs.zone is not zone:
            raise ApiError(404, "DNS.0302", "The record set does not exist.")
        return rs

    def _set_named(self, name: str, type_: str) -> _RecordSet | None:
        return next((rs for rs in self._sets.values() if rs.name == name and rs.type == type_), None)

    def _list_zones(self, account: HuaweiAccount, query: dict[str, str]) -> dict[str, Any]:
        self._check(account, "dns:zone:list")
        if query.get("type", "public") != "public":
            zones: list[_Zone] = []
        else:
            zones = [z for z in self._zones.values() if z.owner == account.access_key_id]
        name = query.get("name", "").lower().rstrip(".")
        if name:
            exact = query.get("search_mode") == "equal"
            zones = [z for z in zones if (z.name.rstrip(".") == name if exact else name in z.name)]
        offset, limit = _page(query)
        items = [
            {
                "id": z.id,
                "name": z.name,
                "description": None,
                "email": "hostmaster@example.com",
                "ttl": 300,
                "serial": 1,
                "zone_type": "public",
                "status": "ACTIVE",
                "record_num": sum(1 for rs in self._sets.values() if rs.zone is z),
                "pool_id": "ff8080825b8fc86c015b94bc6f8712c3",
                "project_id": account.project_id,
                "created_at": "2026-01-01T00:00:00.000",
                "updated_at": "2026-01-01T00:00:00.000",
                "links": {"self": f"{self.endpoint}/v2/zones/{z.id}"},
                "masters": [],
            }
            for z in zones
        ]
        return {
            "links": {"self": f"{self.endpoint}/v2/zones"},
            "zones": items[offset : offset + limit],
            "metadata": {"total_count": len(items)},
        }

    def _list_sets(self, account: HuaweiAccount, zone: _Zone, query: dict[str, str]) -> dict[str, Any]:
        self._check(account, "dns:recordset:list")
        with self._lock:
            sets = [rs for rs in self._sets.values() if rs.zone is zone]
        name = query.get("name", "").lower().rstrip(".")
        if name:
            exact = query.get("search_mode") == "equal"
            sets = [rs for rs in sets if (rs.name.rstrip(".") == name if exact else name in rs.name)]
        if query.get("type"):
            sets = [rs for rs in sets if rs.type == query["type"].upper()]
        offset, limit = _page(query)
        items = [rs.as_api(self.endpoint, account.project_id) for rs in sets]
        if self._race is not None:
            fqdn, value = self._race
            self._race = None
            self.add_txt(fqdn, value)
        return {
            "links": {"self": f"{self.endpoint}/v2/zones/{zone.id}/recordsets"},
            "recordsets": items[offset : offset + limit],
            "metadata": {"total_count": len(items)},
        }

    def _validated(self, zone: _Zone, body: Any, *, require_name: bool = True) -> tuple[str, str, int, list[str]]:
        if not isinstance(body, dict):
            raise ApiError(400, "DNS.0005", "The request body is missing.")
        name = str(body.get("name", "")).lower()
        if require_name and not name:
            raise ApiError(400, "DNS.0303", "The record set name is required.")
        name = name.rstrip(".") + "."
        if not _within(name, zone.name):
            raise ApiError(400, "DNS.0303", f"The record set name {name} does not belong to zone {zone.name}.")
        type_ = str(body.get("type", "")).upper()
        ttl = body.get("ttl", 300)
        records = body.get("records")
        if type_ != "TXT":
            raise ApiError(400, "DNS.0307", "Only TXT record sets are emulated.")
        if not isinstance(ttl, int) or not 1 <= ttl <= 2147483647:
            raise ApiError(400, "DNS.0306", "The TTL must be from 1 to 2147483647.")
        if not isinstance(records, list) or not 1 <= len(records) <= 50:
            raise ApiError(400, "DNS.0308", "A record set holds 1 to 50 records.")
        for record in records:
            if not isinstance(record, str) or not TXT_RECORD.fullmatch(record):
                raise ApiError(400, "DNS.0308", f"Invalid TXT record {record!r}: quote each string.")
        return name, type_, ttl, list(records)

    def _create(self, account: HuaweiAccount, zone: _Zone, body: Any) -> dict[str, Any]:
        self._check(account, "dns:recordset:create")
        name, type_, ttl, records = self._validated(zone, body)
        with self._lock:
            if self._set_named(name, type_) is not None:
                raise ApiError(400, "DNS.0312", "The record set already exists.")
            now = _now_text()
            rs = _RecordSet(_new_id(), zone, name, type_, ttl, records, now, now)
            self._sets[rs.id] = rs
            self._changed(name)
            return rs.as_api(self.endpoint, account.project_id)

    def _update(self, account: HuaweiAccount, zone: _Zone, set_id: str, body: Any) -> dict[str, Any]:
        self._check(account, "dns:recordset:update")
        with self._lock:
            rs = self._owned(zone, set_id)
            merged = {"name": rs.name, "type": rs.type, "ttl": rs.ttl, **(body if isinstance(body, dict) else {})}
            name, _, ttl, records = self._validated(zone, merged)
            if name != rs.name:
                raise ApiError(400, "DNS.0303", "The name of a record set cannot be changed.")
            rs.ttl, rs.records, rs.updated = ttl, records, _now_text()
            self._changed(name)
            return rs.as_api(self.endpoint, account.project_id)

    def _delete(self, account: HuaweiAccount, zone: _Zone, set_id: str) -> dict[str, Any]:
        self._check(account, "dns:recordset:delete")
        with self._lock:
            rs = self._owned(zone, set_id)
            del self._sets[set_id]
            self._changed(rs.name)
            answer = rs.as_api(self.endpoint, account.project_id)
            answer["status"] = "PENDING_DELETE"
            return answer

    def _changed(self, name: str) -> None:
        if self._on_change is not None and name.endswith("."):
            self._on_change(name, self.txt_values(name))


def _within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _page(query: dict[str, str]) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", "500"))
        offset = int(query.get("offset", "0"))
    except ValueError:
        raise ApiError(400, "DNS.0002", "Invalid limit or offset.") from None
    if not 0 <= limit <= 500 or offset < 0:
        raise ApiError(400, "DNS.0002", "limit must be from 0 to 500.")
    return offset, limit


def _new_id() -> str:
    return "ff8080" + uuid.uuid4().hex[:26]


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: HuaweiCloudEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, answer = self.server.emulator.handle(self.command, self.path, dict(self.headers.items()), body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
