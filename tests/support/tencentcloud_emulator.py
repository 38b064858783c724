"""A Tencent Cloud DNSPod API 3.0 (2021-03-23) emulator for tests.

:class:`TencentCloudEmulator` is an HTTP server on 127.0.0.1 that answers the API the
way ``dnspod.tencentcloudapi.com`` does, closely enough for Tencent's own SDK
(``tencentcloud-sdk-python-dnspod``) and certsmith's provider:

* TC3-HMAC-SHA256 checked exactly: the canonical request is rebuilt from what arrived
  (method, path, query, the signed ``content-type`` and ``host`` headers, the payload's
  SHA-256), the credential scope must be ``<UTC date of X-TC-Timestamp>/dnspod/tc3_request``,
  the timestamp within 5 minutes of the emulator's clock;
* POST with a JSON body (the SDKs' default) and GET with form-encoded parameters;
* several accounts (SecretId, SecretKey, optional session token ``X-TC-Token``) with
  their domains and CAM permissions;
* the service's answer shape -- HTTP 200 with ``{"Response": {..., "RequestId"}}`` or
  ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` -- and its error codes:
  ``AuthFailure.SignatureFailure``, ``AuthFailure.SecretIdNotFound``,
  ``AuthFailure.SignatureExpire``, ``AuthFailure.TokenFailure``, ``UnauthorizedOperation``,
  ``RequestLimitExceeded`` (injected), ``InvalidParameterValue.DomainNotExists``,
  ``InvalidParameter.DomainRecordExist``, ``ResourceNotFound.NoDataOfRecord``,
  ``ResourceNotFound.NoDataOfDomain``, ``InvalidParameter.RecordIdInvalid``;
* actions ``DescribeDomainList``, ``DescribeDomain``, ``DescribeRecordList``,
  ``CreateRecord``, ``DeleteRecord``.

``on_change(fqdn, values)`` is called whenever the TXT records at a name change, e.g.
:meth:`certsmith.testing.pebble.ChallTestSrv.set_txt_values`, so Pebble can validate.
The signature is recomputed with :mod:`certsmith.dns.tencentcloud_signing`'s pure
functions; the tests check those against the official SDK.
"""

from __future__ import annotations

import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from certsmith.dns import tencentcloud_signing as signing

LOOPBACK = "127.0.0.1"
VERSION = "2021-03-23"
SKEW = 300
OnChange = Callable[[str, list[str]], None]
ACTIONS = ("DescribeDomainList", "DescribeDomain", "DescribeRecordList", "CreateRecord", "DeleteRecord")
_AUTH = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<scope>[^,]+),\s*SignedHeaders=(?P<headers>[^,]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class TencentAccount:
    """A Tencent Cloud account seen through one API key; ``actions`` ``None`` allows all."""

    secret_id: str
    secret_key: str = field(repr=False)
    domains: tuple[str, ...] = ()
    session_token: str | None = field(default=None, repr=False)
    actions: frozenset[str] | None = None
    uin: str = "100000000001"

    def allows(self, action: str) -> bool:
        return self.actions is None or bool({"dnspod:*", f"dnspod:{action}"} & self.actions)


@dataclass
class Record:
    record_id: int
    domain: str
    name: str
    type: str
    value: str
    ttl: int
    line: str


@dataclass(frozen=True)
class Seen:
    action: str
    params: dict[str, Any]
    code: str | None
    secret_id: str | None


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class TencentCloudEmulator:
    """The DNSPod API on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        accounts: Iterable[TencentAccount],
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = {a.secret_id: a for a in accounts}
        self.on_change = on_change
        self.clock = clock
        self.requests: list[Seen] = []
        self.last_canonical_request: str | None = None
        self._records: dict[str, list[Record]] = {d.lower(): [] for a in self.accounts.values() for d in a.domains}
        self._ids = itertools.count(1000001)
        self._faults: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- life cycle --

    def __enter__(self) -> TencentCloudEmulator:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                emulator._handle(self)

            def do_GET(self) -> None:
                emulator._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"{LOOPBACK}:{self._server.server_address[1]}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    # -- test helpers --

    def inject(self, action: str, code: str = "RequestLimitExceeded", times: int = 1) -> None:
        """The next ``times`` calls of ``action`` (``"*"``: any) answer ``code``."""
        with self._lock:
            self._faults.setdefault(action, deque()).extend([code] * times)

    def add_txt(self, domain: str, name: str, value: str) -> int:
        """A record created behind the provider's back (someone else's)."""
        with self._lock:
            record = Record(next(self._ids), domain, name, "TXT", value, 600, "默认")
            self._records[domain.lower()].append(record)
            self._notify(domain, name)
            return record.record_id

    def records(self, domain: str) -> list[Record]:
        with self._lock:
            return list(self._records[domain.lower()])

    def txt_values(self, fqdn: str) -> list[str]:
        name = fqdn.lower().rstrip(".")
        with self._lock:
            return [
                r.value
                for domain, records in self._records.items()
                for r in records
                if r.type == "TXT" and _fqdn(r.name, domain) == name
            ]

    def calls(self, action: str, ok: bool = True) -> int:
        return sum(1 for r in self.requests if r.action == action and (r.code is None) == ok)

    # -- the wire --

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        action = handler.headers.get("x-tc-action", "")
        request_id = str(uuid.uuid4())
        params: dict[str, Any] = {}
        secret_id: str | None = None
        try:
            if handler.command == "GET":
                query = urlsplit(handler.path).query
                params = dict(parse_qsl(query, keep_blank_values=True))
            else:
                query = ""
                params = json.loads(body or b"{}")
                if not isinstance(params, dict):
                    raise ApiError("InvalidParameter", "The request body is not a JSON object.")
            account = self._authenticate(handler, query, body)
            secret_id = account.secret_id
            if handler.headers.get("x-tc-version") != VERSION:
                raise ApiError("NoSuchVersion", "The requested version does not exist or is not supported.")
            if action not in ACTIONS:
                raise ApiError("InvalidAction", f"The requested action `{action}` does not exist.")
            if not account.allows(action):
                raise ApiError(
                    "UnauthorizedOperation",
                    f"[request id:{request_id}]you are not authorized to perform operation (dnspod:{action})\n"
                    f"resource (qcs::dnspod::uin/{account.uin}:domain/*) has no permission",
                )
            with self._lock:
                queue = self._faults.get(action) or self._faults.get("*")
                fault = queue.popleft() if queue else None
            if fault is not None:
                raise ApiError(fault, "Your current request times exceeds limit, please try again later.")
            result = getattr(self, "_" + action)(account, params)
            code = None
            answer = {"Response": {**result, "RequestId": request_id}}
        except ApiError as exc:
            code = exc.code
            answer = {"Response": {"Error": {"Code": exc.code, "Message": exc.message}, "RequestId": request_id}}
        self.requests.append(Seen(action, params, code, secret_id))
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        handler.send_response(200)  # API 3.0 answers errors with 200 too
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _authenticate(self, handler: BaseHTTPRequestHandler, query: str, body: bytes) -> TencentAccount:
        match = _AUTH.fullmatch(handler.headers.get("authorization", "").strip())
        if match is None:
            raise ApiError("AuthFailure.InvalidAuthorization", "Authorization header is malformed.")
        account = self.accounts.get(match["id"])
        if account is None:
            raise ApiError("AuthFailure.SecretIdNotFound", "The SecretId is not found, please ensure it exists.")
        try:
            timestamp = int(handler.headers.get("x-tc-timestamp", ""))
        except ValueError:
            raise ApiError("InvalidParameter", "X-TC-Timestamp must be an integer.") from None
        if abs(self.clock() - timestamp) > SKEW:
            raise ApiError(
                "AuthFailure.SignatureExpire",
                f"Signature expire. Now is {int(self.clock())}, request timestamp is {timestamp}.",
            )
        if match["headers"] != signing.SIGNED_HEADERS:  # what the SDKs sign; the emulator knows no other
            raise ApiError("AuthFailure.SignatureFailure", "SignedHeaders must be content-type;host.")
        date = signing.utc_date(timestamp)
        if match["scope"] != signing.credential_scope(date, "dnspod"):
            raise ApiError(
                "AuthFailure.SignatureFailure",
                f"The provided credential scope does not match; expected {signing.credential_scope(date, 'dnspod')}.",
            )
        path = urlsplit(handler.path).path or "/"
        payload = b"" if handler.command == "GET" else body
        canonical = signing.canonical_request(
            handler.command,
            path,
            query,
            handler.headers.get("content-type", ""),
            handler.headers.get("host", ""),
            payload,
        )
        self.last_canonical_request = canonical
        to_sign = signing.string_to_sign(timestamp, match["scope"], canonical)
        expected = signing.signature(account.secret_key, date, "dnspod", to_sign)
        if not hmac.compare_digest(expected, match["signature"]):
            raise ApiError(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            )
        if (account.session_token or None) != (handler.headers.get("x-tc-token") or None):
            raise ApiError("AuthFailure.TokenFailure", "The token is invalid or expired.")
        return account

    # -- actions --

    def _domain(self, account: TencentAccount, params: dict[str, Any]) -> str:
        domain = str(params.get("Domain", "")).lower().rstrip(".")
        if not domain:
            raise ApiError("MissingParameter", "The request is missing a required parameter `Domain`.")
        if domain not in {d.lower() for d in account.domains}:
            raise ApiError("InvalidParameterValue.DomainNotExists", "当前域名有误，请返回重新操作。")  # noqa: RUF001 -- the service's own text
        return domain

    def _DescribeDomainList(self, account: TencentAccount, params: dict[str, Any]) -> dict[str, Any]:
        offset, limit = int(params.get("Offset", 0)), int(params.get("Limit", 20))
        if not 1 <= limit <= 3000:
            raise ApiError("InvalidParameterValue.LimitInvalid", "分页长度数量错误。")
        if not account.domains:
            raise ApiError("ResourceNotFound.NoDataOfDomain", "域名列表为空。")
        items = [
            {"DomainId": 10000 + i, "Name": d, "Status": "ENABLE", "TTL": 600, "Punycode": d, "RecordCount": 0}
            for i, d in enumerate(account.domains)
        ]
        total = len(items)
        return {
            "DomainCountInfo": {"DomainTotal": total, "AllTotal": total, "MineTotal": total, "ShareTotal": 0},
            "DomainList": items[offset : offset + limit],
        }

    def _DescribeDomain(self, account: TencentAccount, params: dict[str, Any]) -> dict[str, Any]:
        domain = self._domain(account, params)
        return {"DomainInfo": {"Domain": domain, "DomainId": 10000, "Status": "ENABLE", "Punycode": domain}}

    def _DescribeRecordList(self, account: TencentAccount, params: dict[str, Any]) -> dict[str, Any]:
        domain = self._domain(account, params)
        sub = str(params.get("Subdomain", "")).lower()
        kind = str(params.get("RecordType", "")).upper()
        with self._lock:
            found = [
                r for r in self._records[domain]
                if (not sub or r.name.lower() == sub) and (not kind or r.type == kind)
            ]  # fmt: skip
        if not found:
            raise ApiError("ResourceNotFound.NoDataOfRecord", "记录列表为空。")
        return {
            "RecordCountInfo": {"SubdomainCount": len(found), "ListCount": len(found), "TotalCount": len(found)},
            "RecordList": [
                {"RecordId": r.record_id, "Name": r.name, "Type": r.type, "Value": r.value, "TTL": r.ttl,
                 "Line": r.line, "LineId": "0", "Status": "ENABLE", "Weight": None, "MX": 0}
                for r in found
            ],
        }  # fmt: skip

    def _CreateRecord(self, account: TencentAccount, params: dict[str, Any]) -> dict[str, Any]:
        domain = self._domain(account, params)
        for name in ("RecordType", "RecordLine", "Value"):
            if not params.get(name):
                raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
        sub = str(params.get("SubDomain") or "@")
        kind, line, value = str(params["RecordType"]).upper(), str(params["RecordLine"]), str(params["Value"])
        if line not in ("默认", "0"):
            raise ApiError("InvalidParameter.LineNotExist", "线路不存在。")
        ttl = int(params.get("TTL", 600))
        with self._lock:
            for r in self._records[domain]:
                if (r.name.lower(), r.type, r.value) == (sub.lower(), kind, value):
                    raise ApiError("InvalidParameter.DomainRecordExist", "记录已经存在，无需再次添加。")  # noqa: RUF001 -- the service's own text
            record = Record(next(self._ids), domain, sub, kind, value, ttl, "默认")
            self._records[domain].append(record)
            self._notify(domain, sub)
        return {"RecordId": record.record_id}

    def _DeleteRecord(self, account: TencentAccount, params: dict[str, Any]) -> dict[str, Any]:
        domain = self._domain(account, params)
        record_id = int(params.get("RecordId", 0))
        with self._lock:
            for r in self._records[domain]:
                if r.record_id == record_id:
                    self._records[domain].remove(r)
                    self._notify(domain, r.name)
                    return {}
        raise ApiError("InvalidParameter.RecordIdInvalid", "记录编号错误。")

    def _notify(self, domain: str, name: str) -> None:
        """Call ``on_change`` with the TXT values now at ``name`` (lock held)."""
        if self.on_change is None:
            return
        fqdn = _fqdn(name, domain)
        values = [r.value for r in self._records[domain] if r.type == "TXT" and _fqdn(r.name, domain) == fqdn]
        self.on_change(fqdn + ".", values)


def _fqdn(name: str, domain: str) -> str:
    return domain if name == "@" else f"{name.lower()}.{domain}"
