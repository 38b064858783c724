"""The shared part of the Alibaba Cloud RPC API emulators used in tests.

Every Alibaba Cloud RPC product (Alidns, CAS, CDN, DCDN, SLB, ALB) authenticates and
answers the same way; only the actions differ. :class:`AliCloudRpcEmulator` is that
common part: a small HTTP server on 127.0.0.1 taking GET and POST with parameters in
the query and/or a form body, signatures V1 (HMAC-SHA1) and V3 (ACS3-HMAC-SHA256)
recomputed from what arrived with the pure functions of
:mod:`certsmith.dns.alidns_signing` and checked exactly, nonce replay and the
±15-minute timestamp window, STS tokens, RAM permissions per action
(``Forbidden.RAM``), JSON or XML answers with the services' error shape, a request log
and fault injection: errors instead of the work (:meth:`~AliCloudRpcEmulator.fail_next`,
:meth:`~AliCloudRpcEmulator.fail_call`) and answers lost after the work was done
(:meth:`~AliCloudRpcEmulator.lose_answer`).

A product's emulator subclasses it, sets ``PRODUCT``, ``RAM_PREFIX``, ``API_VERSION``,
``ACTIONS`` and ``HOST_ID``, and implements ``_do_<Action>(account, params)`` returning
the answer's fields (or raising :class:`ApiError`). See
:mod:`tests.support.alidns_emulator` and :mod:`tests.support.alicloud_deploy_emulators`.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from certsmith.dns import alidns_signing as signing

LOOPBACK = "127.0.0.1"
TIMESTAMP_WINDOW = timedelta(minutes=15)
NONCE_RETENTION = timedelta(minutes=30)
STRICT_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
SIGNATURE_MISMATCH = "Specified signature is not matched with our calculation. server string to sign is:"


@dataclass(frozen=True)
class AliCloudAccount:
    """An Alibaba Cloud account as seen through one AccessKey.

    ``security_token`` makes the key an STS credential: every request must carry that
    token. ``allowed_actions`` is the RAM policy: ``None`` allows everything, otherwise
    a set of action names (``"AddDomainRecord"`` or ``"alidns:AddDomainRecord"``; ``"*"``
    or ``"cdn:*"`` allows all of one product); any other action gets ``Forbidden.RAM``.
    """

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False, kw_only=True)
    allowed_actions: frozenset[str] | set[str] | None = field(default=None, kw_only=True)
    owner_id: str = field(default="1234567890123456", kw_only=True)

    def allows(self, action: str, prefix: str) -> bool:
        """Whether the RAM policy lets this key call ``prefix:action``."""
        if self.allowed_actions is None:
            return True
        names = set()
        for entry in self.allowed_actions:
            product, colon, name = entry.partition(":")
            if not colon:
                names.add(entry)
            elif product == prefix:
                names.add(name)
        return "*" in names or action in names


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it (``Signature`` and secrets left out).

    ``string_to_sign`` (and for V3 ``canonical_request``) is what the emulator
    computed, handy when a client's signature does not match.
    """

    method: str
    action: str | None
    params: dict[str, str]
    headers: dict[str, str]
    signature_version: int | None
    access_key_id: str | None
    status: int
    code: str | None
    string_to_sign: str | None = None
    canonical_request: str | None = None


class ApiError(Exception):
    """An error answer: code, HTTP status and the service's message."""

    def __init__(self, code: str, status: int, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.detail = dict(detail or {})


def _missing(param: str) -> ApiError:
    return ApiError(f"Missing{param}", 400, f"{param} is mandatory for this action.")


def _invalid(param: str) -> ApiError:
    # The service's code for a malformed business parameter is not documented; this
    # follows the "Specified parameter X is not valid." message seen in the wild.
    return ApiError("InvalidParameter", 400, f"Specified parameter {param} is not valid.")


@dataclass
class _Incoming:
    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class _Auth:
    account: AliCloudAccount
    action: str
    version: int


@dataclass
class _Injected:
    code: str
    status: int
    message: str
    remaining: int


@dataclass
class _Fault:
    """The ``skip + 1``-th call of ``action`` is refused with ``error``, or else processed and its answer lost
    (``status`` 0: no answer at all)."""

    action: str
    skip: int
    status: int
    error: ApiError | None = None


#: The logged status of a call whose connection was closed without an answer (:meth:`lose_answer`).
DROPPED = 0


class AliCloudRpcEmulator:
    """One Alibaba Cloud RPC product's API on ``http://127.0.0.1:<port>`` (see the module docstring).

    Args:
        accounts: initial accounts (more with :meth:`add_account`).
        clock_skew: how far the emulator's clock is ahead of the real one (negative:
            behind); it decides the ±15-minute timestamp window and the ``Date`` header.
        throttle_every: every N-th authenticated call answers ``Throttling.User``
            (0 = never).
        throttle_status: HTTP status of the throttling answer (the service's is not
            confirmed; 429 by default).
        lenient_timestamps: also accept ISO 8601 timestamps other than
            ``yyyy-MM-ddTHH:mm:ssZ`` (lexicon sends ``...+00:00Z``).
        port: the port to listen on; 0 picks a free one.
    """

    #: The product's name as the service spells it in ``Recommend`` links.
    PRODUCT: ClassVar[str] = ""
    #: The prefix of the product's RAM actions (``alidns``, ``yundun-cert``, ``cdn``...).
    RAM_PREFIX: ClassVar[str] = ""
    API_VERSION: ClassVar[str] = ""
    ACTIONS: ClassVar[tuple[str, ...]] = ()
    HOST_ID: ClassVar[str] = ""
    #: Parameters every call may carry that are not the action's own (left out of ``params``).
    COMMON_PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "Action",
            "Version",
            "Format",
            "AccessKeyId",
            "Signature",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
            "SignatureType",
            "Timestamp",
            "SecurityToken",
            "RegionId",
            "Lang",
            "UserClientIp",
        }
    )

    def __init__(
        self,
        accounts: Iterable[AliCloudAccount] = (),
        *,
        clock_skew: timedelta = timedelta(0),
        throttle_every: int = 0,
        throttle_status: int = 429,
        lenient_timestamps: bool = False,
        port: int = 0,
    ) -> None:
        self.clock_skew = clock_skew
        self.throttle_every = throttle_every
        self.throttle_status = throttle_status
        self.lenient_timestamps = lenient_timestamps
        self._port = port
        self._lock = threading.RLock()
        self._accounts: dict[str, AliCloudAccount] = {}
        self._nonces: dict[tuple[str, str], datetime] = {}
        self._log: list[LoggedRequest] = []
        self._injected: list[_Injected] = []
        self._faults: list[_Fault] = []
        self._calls = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for account in accounts:
            self.add_account(account)

    # -- lifecycle --

    def start(self) -> Self:
        """Listen on 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            return self
        server = _Server((LOOPBACK, self._port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.RAM_PREFIX}-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        port: int = self._server.server_address[1]
        return port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the value for the product's endpoint variable."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the endpoint form Alibaba's Tea SDK expects."""
        return f"{LOOPBACK}:{self.port}"

    def now(self) -> datetime:
        """The emulator's clock: real UTC time plus ``clock_skew``."""
        return datetime.now(UTC) + self.clock_skew

    # -- state set-up and inspection --

    def add_account(self, account: AliCloudAccount) -> None:
        """Add an account (and, through :meth:`_account_added`, what the product keeps for it)."""
        with self._lock:
            if account.access_key_id in self._accounts:
                raise ValueError(f"AccessKey {account.access_key_id} already exists")
            self._accounts[account.access_key_id] = account
            self._account_added(account)

    def _account_added(self, account: AliCloudAccount) -> None:
        """Hook for products that keep per-account state (Alidns' domains)."""

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._log)

    def calls(self, action: str) -> int:
        """How many requests named ``action`` arrived (whatever their outcome)."""
        with self._lock:
            return sum(1 for r in self._log if r.action == action)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def fail_next(
        self,
        code: str = "ServiceUnavailable",
        status: int = 503,
        message: str = "The request has failed due to a temporary failure of the server.",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` authenticated calls with this error."""
        with self._lock:
            self._injected.append(_Injected(code, status, message, times))

    def lose_answer(self, action: str, nth: int = 1, *, status: int = DROPPED) -> None:
        """The ``nth`` call of ``action`` from now on (counting the authenticated ones) does its work, then its
        answer is lost: the connection is closed without a response (``status`` 0, as after a time-out or a cut
        connection), or it is answered ``status`` (e.g. 503 ``ServiceUnavailable``) as a service failing after
        it acted. A call the action refuses is answered as usual (the fault is used up all the same). The
        request log records such a call with that status (0: dropped).
        """
        if nth < 1:
            raise ValueError("nth counts from 1")
        with self._lock:
            self._faults.append(_Fault(action, nth - 1, status))

    def fail_call(
        self,
        action: str,
        nth: int = 1,
        *,
        code: str = "ServiceUnavailable",
        status: int = 503,
        message: str = "The request has failed due to a temporary failure of the server.",
    ) -> None:
        """The ``nth`` call of ``action`` from now on (counting the authenticated ones) is answered with this error
        instead of being processed (:meth:`fail_next` counts the calls of every action)."""
        if nth < 1:
            raise ValueError("nth counts from 1")
        with self._lock:
            self._faults.append(_Fault(action, nth - 1, status, ApiError(code, status, message)))

    def _fault_due(self, action: str) -> _Fault | None:
        """Count one call of ``action`` against :meth:`lose_answer` and :meth:`fail_call`; the fault due, if any."""
        fired: _Fault | None = None
        for fault in list(self._faults):
            if fault.action != action:
                continue
            if fault.skip > 0:
                fault.skip -= 1
            elif fired is None:  # a second one due now waits for the next call
                fired = fault
                self._faults.remove(fault)
        return fired

    # -- request handling --

    def _dispatch(self, incoming: _Incoming) -> tuple[int, dict[str, str], bytes]:
        """Process one HTTP request (one at a time); returns status, headers and body."""
        with self._lock:
            return self._handle(incoming)

    def _handle(self, incoming: _Incoming) -> tuple[int, dict[str, str], bytes]:
        request_id = str(uuid.uuid4()).upper()
        log: dict[str, Any] = {"string_to_sign": None, "canonical_request": None}
        params: dict[str, str] = {}
        auth: _Auth | None = None
        v3 = (incoming.header("authorization") or "").startswith("ACS3-")
        as_json = v3
        action: str | None = incoming.header("x-acs-action") if v3 else None
        try:
            params = self._params(incoming)
            action = action if v3 else params.get("Action")
            fmt = params.get("Format")
            if fmt is not None:
                as_json = fmt.upper() == "JSON"
            if incoming.path not in ("", "/"):
                raise ApiError(
                    "InvalidApi.NotFound", 404, "Specified api is not found,please check your url and method."
                )
            auth = self._authenticate_v3(incoming, params, log) if v3 else self._authenticate_v1(incoming, params, log)
            action = auth.action
            self._calls += 1
            self._inject()
            if not auth.account.allows(auth.action, self.RAM_PREFIX):
                raise ApiError(
                    "Forbidden.RAM",
                    400,
                    "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
                    {
                        "AccessDeniedDetail": {
                            "AuthAction": f"{self.RAM_PREFIX}:{auth.action}",
                            "AuthPrincipalOwnerId": auth.account.owner_id,
                            "AuthPrincipalType": "SubUser",
                            "AuthPrincipalDisplayName": auth.account.access_key_id,
                            "NoPermissionType": "ImplicitDeny",
                            "EncodedDiagnosticMessage": "AQEAAAAA" + uuid.uuid4().hex,
                        }
                    },
                )
            business = {k: v for k, v in params.items() if k not in self.COMMON_PARAMS}
            lost = self._fault_due(auth.action)
            if lost is not None and lost.error is not None:
                raise lost.error
            result = getattr(self, "_do_" + auth.action)(auth.account, business)
            if lost is not None and lost.status != DROPPED:
                raise ApiError("ServiceUnavailable", lost.status, "The request has failed due to a temporary failure.")
            status = DROPPED if lost is not None else 200
            body: dict[str, Any] = {"RequestId": request_id, **result}
            payload = _json_bytes(body) if as_json else _xml_bytes(auth.action + "Response", body)
            code = None
        except Exception as exc:
            if not isinstance(exc, ApiError):  # an emulator bug: answer like the service's 500
                exc = ApiError("InternalError", 500, f"The request processing has failed ({exc!r}).")
            status, code = exc.status, exc.code
            body = {
                "RequestId": request_id,
                "HostId": self.HOST_ID,
                "Code": exc.code,
                "Message": exc.message,
                "Recommend": f"https://api.aliyun.com/troubleshoot?q={exc.code}&product={self.PRODUCT}&requestId={request_id}",
                **exc.detail,
            }
            payload = _json_bytes(body) if as_json else _xml_bytes("Error", body)
        self._log.append(
            LoggedRequest(
                method=incoming.method,
                action=action,
                params={k: v for k, v in params.items() if k not in ("Signature", "SecurityToken")},
                headers={k: ",".join(v) for k, v in incoming.headers.items() if k not in _SECRET_HEADERS},
                signature_version=(auth.version if auth else (3 if v3 else 1 if "Signature" in params else None)),
                access_key_id=auth.account.access_key_id if auth else params.get("AccessKeyId"),
                status=status,
                code=code,
                string_to_sign=log["string_to_sign"],
                canonical_request=log["canonical_request"],
            )
        )
        headers = {
            "Content-Type": "application/json;charset=utf-8" if as_json else "text/xml;charset=utf-8",
            "X-Acs-Request-Id": request_id,
            "X-Acs-Trace-Id": uuid.uuid4().hex,
        }
        return status, headers, payload

    def _params(self, incoming: _Incoming) -> dict[str, str]:
        """Query plus form body, form-decoded (``+`` is a space); the last duplicate wins."""
        try:
            pairs = parse_qsl(incoming.query, keep_blank_values=True, errors="strict")
            content_type = (incoming.header("content-type") or "").lower()
            if incoming.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
                pairs += parse_qsl(incoming.body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise ApiError("InvalidParameter", 400, "The request parameters are not valid UTF-8.") from None
        return dict(pairs)

    def _inject(self) -> None:
        if self._injected:
            injected = self._injected[0]
            injected.remaining -= 1
            if injected.remaining <= 0:
                self._injected.pop(0)
            raise ApiError(injected.code, injected.status, injected.message)
        if self.throttle_every and self._calls % self.throttle_every == 0:
            raise ApiError("Throttling.User", self.throttle_status, "Request was denied due to user flow control.")

    # -- authentication --

    def _authenticate_v1(self, incoming: _Incoming, params: dict[str, str], log: dict[str, Any]) -> _Auth:
        for name in (
            "Action",
            "Version",
            "AccessKeyId",
            "Signature",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
        ):
            if not params.get(name):
                raise _missing(name)
        if "Timestamp" not in params:
            raise _missing("Timestamp")
        action = self._check_action(params["Action"], params["Version"])
        if params["SignatureMethod"] != signing.V1_SIGNATURE_METHOD:
            raise ApiError("InvalidSignatureMethod", 400, "Specified signature method is not supported.")
        if params["SignatureVersion"] != signing.V1_SIGNATURE_VERSION:
            raise ApiError("InvalidSignatureVersion", 400, "Specified signature version is not supported.")
        self._check_timestamp(params["Timestamp"])
        account = self._account(params["AccessKeyId"])
        self._check_token(account, params.get("SecurityToken"))
        string_to_sign = signing.v1_string_to_sign(incoming.method, params)
        log["string_to_sign"] = string_to_sign
        expected = signing.v1_signature(account.access_key_secret, string_to_sign)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise ApiError("SignatureDoesNotMatch", 400, SIGNATURE_MISMATCH + string_to_sign)
        self._check_nonce(account, params["SignatureNonce"])
        return _Auth(account, action, 1)

    def _authenticate_v3(self, incoming: _Incoming, params: dict[str, str], log: dict[str, Any]) -> _Auth:
        algorithm, _, rest = (incoming.header("authorization") or "").strip().partition(" ")
        if algorithm != signing.V3_ALGORITHM:
            raise ApiError("InvalidSignatureMethod", 400, "Specified signature method is not supported.")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            key, eq, value = part.strip().partition("=")
            if eq:
                fields[key] = value
        credential, signed_text, signature = (fields.get(k) for k in ("Credential", "SignedHeaders", "Signature"))
        if not credential or not signed_text or not signature:
            raise _incomplete()
        for header, param in (
            ("x-acs-action", "Action"),
            ("x-acs-version", "Version"),
            ("x-acs-date", "Timestamp"),
            ("x-acs-signature-nonce", "SignatureNonce"),
        ):
            if not incoming.header(header):
                raise _missing(param)
        action = self._check_action(incoming.header("x-acs-action") or "", incoming.header("x-acs-version") or "")
        signed = signed_text.split(";")
        if signed != sorted(signed) or any(name != name.lower() or not name for name in signed):
            raise _incomplete()
        required = {"host"} | {name for name in incoming.headers if name.startswith("x-acs-")}
        if not required <= set(signed) or any(name not in incoming.headers for name in signed):
            raise _incomplete()
        self._check_timestamp(incoming.header("x-acs-date") or "")
        account = self._account(credential)
        self._check_token(account, incoming.header("x-acs-security-token"))
        payload_hash = signing.sha256_hex(incoming.body)
        query = dict(parse_qsl(incoming.query, keep_blank_values=True))  # the form body is covered by its hash
        canonical = signing.v3_canonical_request(
            incoming.method, incoming.path or "/", query, incoming.headers, signed, payload_hash
        )
        string_to_sign = signing.v3_string_to_sign(canonical)
        log["canonical_request"], log["string_to_sign"] = canonical, string_to_sign
        expected = signing.v3_signature(account.access_key_secret, string_to_sign)
        declared_hash = incoming.header("x-acs-content-sha256")
        if not hmac.compare_digest(expected, signature.lower()) or declared_hash not in (None, payload_hash):
            raise ApiError("SignatureDoesNotMatch", 400, SIGNATURE_MISMATCH + string_to_sign)
        self._check_nonce(account, incoming.header("x-acs-signature-nonce") or "")
        return _Auth(account, action, 3)

    def _check_action(self, action: str, version: str) -> str:
        if version != self.API_VERSION:
            raise ApiError("InvalidVersion", 400, "Specified parameter Version is not valid.")
        if action not in self.ACTIONS:
            raise ApiError("InvalidApi.NotFound", 404, "Specified api is not found,please check your url and method.")
        return action

    def _check_timestamp(self, text: str) -> None:
        moment = _parse_timestamp(text, self.lenient_timestamps)
        if moment is None:
            raise ApiError("InvalidTimeStamp.Format", 400, "Specified time stamp or date value is not well formatted.")
        if abs(moment - self.now()) > TIMESTAMP_WINDOW:
            raise ApiError("InvalidTimeStamp.Expired", 400, "Specified time stamp or date value is expired.")

    def _account(self, access_key_id: str) -> AliCloudAccount:
        account = self._accounts.get(access_key_id)
        if account is None:
            raise ApiError("InvalidAccessKeyId.NotFound", 404, "Specified access key is not found.")
        return account

    @staticmethod
    def _check_token(account: AliCloudAccount, token: str | None) -> None:
        # Codes as for real STS keys; which one the service picks for each case is not confirmed.
        if account.security_token is None and token is None:
            return
        if token is None:
            raise _missing("SecurityToken")
        if account.security_token is None or not hmac.compare_digest(account.security_token, token):
            raise ApiError(
                "InvalidSecurityToken.MismatchWithAccessKey",
                400,
                "Specified SecurityToken mismatch with the AccessKey.",
            )

    def _check_nonce(self, account: AliCloudAccount, nonce: str) -> None:
        now = self.now()
        for key, seen in list(self._nonces.items()):
            if now - seen > NONCE_RETENTION:
                del self._nonces[key]
        key = (account.access_key_id, nonce)
        if key in self._nonces:
            raise ApiError("SignatureNonceUsed", 400, "Specified signature nonce was used already.")
        self._nonces[key] = now



_SECRET_HEADERS = frozenset({"authorization", "x-acs-security-token"})


def _incomplete() -> ApiError:
    return ApiError("IncompleteSignature", 400, "The request signature does not conform to Aliyun standards.")



def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name, "")
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise _invalid(name) from None




def _parse_timestamp(text: str, lenient: bool) -> datetime | None:
    if STRICT_TIMESTAMP.fullmatch(text):
        return datetime.strptime(text, signing.TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    if not lenient:
        return None
    candidate = text[:-1] if text.endswith("Z") and ("+" in text or text.count("-") > 2) else text
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _xml_bytes(root: str, body: Mapping[str, Any]) -> bytes:
    """The service's XML form: objects as elements, lists as repeated elements."""
    parts = ["<?xml version='1.0' encoding='UTF-8'?>", f"<{root}>"]
    for key, value in body.items():
        _xml_value(parts, key, value)
    parts.append(f"</{root}>")
    return "".join(parts).encode("utf-8")


def _xml_value(parts: list[str], key: str, value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _xml_value(parts, key, item)
    elif isinstance(value, dict):
        parts.append(f"<{key}>")
        for inner_key, inner in value.items():
            _xml_value(parts, inner_key, inner)
        parts.append(f"</{key}>")
    elif key == "Recommend":
        parts.append(f"<{key}><![CDATA[{value}]]></{key}>")
    else:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append(f"<{key}>{escape(text)}</{key}>")


# --- HTTP plumbing -------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: AliCloudRpcEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one write per response: no Nagle/delayed-ACK stall between headers and body

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        split = urlsplit(self.path)
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        incoming = _Incoming(self.command, split.path, split.query, headers, self._read_body())
        status, response_headers, payload = self.server.emulator._dispatch(incoming)
        if status == DROPPED:  # processed, and the answer lost: close the connection without a response
            self.close_connection = True
            return
        self.send_response(status)
        for name, value in response_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header from the emulator's (possibly skewed) clock."""
        return format_datetime(self.server.emulator.now(), usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator keeps its own request log."""
