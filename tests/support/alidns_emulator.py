"""An Alibaba Cloud DNS (Alidns 2015-01-09) API emulator for tests.

:class:`AlidnsEmulator` is a small HTTP server on 127.0.0.1 that speaks the real RPC
API closely enough for Alibaba's own SDKs, acme.sh-style GET clients and certsmith's
provider: GET and POST, parameters in the query and/or a form body, signatures V1
(HMAC-SHA1) and V3 (ACS3-HMAC-SHA256) verified exactly as the service does, JSON or
XML answers, the service's error codes, HTTP statuses and messages, nonce replay and
timestamp window checks, several accounts with RAM permissions, and throttling
injection. Signatures are recomputed from what arrived, using only the pure
canonicalisation functions of :mod:`certsmith.dns.alidns_signing`.

Typical use in a test::

    from tests.support.alidns_emulator import AlidnsAccount, AlidnsEmulator

    account = AlidnsAccount("LTAI-test", "secret", domains=["example.com"])
    with AlidnsEmulator([account]) as emulator:
        env = {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-test",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret",
            "ALIDNS_ENDPOINT": emulator.endpoint,
        }
        ...  # run the code under test
        assert emulator.txt_values("_acme-challenge.example.com.") == [...]

``on_change(fqdn, values)`` is called (in a server thread, with the emulator's lock
held) whenever the TXT records at a name change, e.g. to publish them to
``pebble-challtestsrv`` so a real ACME server can validate dns-01 challenges.

Where the reference marks the service's behaviour as unconfirmed, the emulator picks
one plausible behaviour and documents it (see the notes on the methods).
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import idna

from certsmith.dns import alidns_signing as signing

LOOPBACK = "127.0.0.1"
TIMESTAMP_WINDOW = timedelta(minutes=15)
NONCE_RETENTION = timedelta(minutes=30)

OnChange = Callable[[str, list[str]], None]

ACTIONS = (
    "DescribeDomains",
    "DescribeDomainInfo",
    "DescribeDomainRecords",
    "DescribeSubDomainRecords",
    "AddDomainRecord",
    "DeleteDomainRecord",
    "DeleteSubDomainRecords",
    "UpdateDomainRecord",
    "GetMainDomainName",
)
RECORD_TYPES = frozenset(
    {"A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "REDIRECT_URL", "FORWARD_URL", "SVCB", "HTTPS"}
)
#: TXT characters the documentation lists, plus ``_`` (base64url, so every ACME value) and ``"``.
TXT_CHARACTERS = re.compile(r'[A-Za-z0-9 \-~=:;/.@+^!*_"]{1,511}')
RR_PATTERN = re.compile(
    r"@|(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*"
)
STRICT_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
ALL_TTLS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 43200, 86400)
#: Second-level suffixes for GetMainDomainName (the service's full list is not public).
MULTI_LABEL_SUFFIXES = frozenset(
    {"com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "ac.cn", "com.hk", "co.uk", "co.jp", "com.au", "com.tw"}
)


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class AlidnsDomain:
    """A domain (zone) of an account. ``name`` may be Unicode or punycode; ``min_ttl``
    is the edition's minimum TTL (600 free, 60 enterprise standard, 1 ultimate)."""

    name: str
    min_ttl: int = 600
    version_code: str = "mianfei"
    version_name: str = "Alibaba Cloud DNS Free"


@dataclass(frozen=True)
class AlidnsAccount:
    """An Alibaba Cloud account as seen through one AccessKey.

    ``security_token`` makes the key an STS credential: every request must carry that
    token. ``allowed_actions`` is the RAM policy: ``None`` allows everything, otherwise
    a set of action names (``"AddDomainRecord"`` or ``"alidns:AddDomainRecord"``; ``"*"``
    allows all); any other action gets ``Forbidden.RAM``.
    """

    access_key_id: str
    access_key_secret: str = field(repr=False)
    domains: tuple[str | AlidnsDomain, ...] | list[str | AlidnsDomain] = ()
    security_token: str | None = field(default=None, repr=False)
    allowed_actions: frozenset[str] | set[str] | None = None
    owner_id: str = "1234567890123456"

    def allows(self, action: str) -> bool:
        """Whether the RAM policy lets this key call ``action``."""
        if self.allowed_actions is None:
            return True
        names = {a.removeprefix("alidns:") for a in self.allowed_actions}
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


SIGNATURE_MISMATCH = "Specified signature is not matched with our calculation. server string to sign is:"


def _no_such_domain() -> ApiError:
    return ApiError(
        "InvalidDomainName.NoExist", 400, "The specified domain name does not exist. Refresh the page and try again."
    )


def _other_users_domain() -> ApiError:
    return ApiError(
        "IncorrectDomainUser",
        400,
        "The domain name belongs to other users. Transfer the domain name to the current user and then try the "
        "binding and setting actions.",
    )


def _not_your_record() -> ApiError:
    return ApiError("DomainRecordNotBelongToUser", 400, "The DNS record does not exist in your account.")


def _duplicate() -> ApiError:
    return ApiError("DomainRecordDuplicate", 400, "The DNS record already exists.")


# --- state ---------------------------------------------------------------------------


def _ascii_name(name: str) -> str:
    """Lower-case A-label form without the trailing dot; non-ASCII labels via IDNA 2008."""
    labels = []
    for label in name.strip().rstrip(".").split("."):
        if label.isascii():
            labels.append(label.lower())
        else:
            try:
                labels.append(idna.encode(label, uts46=True).decode("ascii"))
            except idna.IDNAError:
                raise ApiError("InvalidDomainName.Format", 400, "The specified domain name is invalid.") from None
    return ".".join(labels)


def _unicode_name(ascii_name: str) -> str:
    labels = []
    for label in ascii_name.split("."):
        try:
            labels.append(idna.decode(label) if label.startswith("xn--") else label)
        except idna.IDNAError:
            labels.append(label)
    return ".".join(labels)


@dataclass
class _Zone:
    account: AlidnsAccount
    domain: AlidnsDomain
    ascii: str
    unicode: str
    domain_id: str
    instance_id: str
    created: datetime
    records: dict[int, _Record] = field(default_factory=dict)


@dataclass
class _Record:
    record_id: int
    zone: _Zone
    rr: str
    type: str
    value: str
    ttl: int
    line: str
    priority: int | None
    created_ms: int
    updated_ms: int
    status: str = "ENABLE"
    locked: bool = False

    @property
    def fqdn(self) -> str:
        if self.rr == "@":
            return self.zone.ascii + "."
        return f"{_ascii_name(self.rr)}.{self.zone.ascii}."

    def as_api(self) -> dict[str, Any]:
        """The record as DescribeDomainRecords returns it (IDs as strings, TTL as int)."""
        data: dict[str, Any] = {
            "DomainName": self.zone.unicode,
            "RecordId": str(self.record_id),
            "RR": self.rr,
            "Type": self.type,
            "Value": self.value,
            "TTL": self.ttl,
            "Line": self.line,
            "Status": self.status,
            "Locked": self.locked,
            "Weight": 1,
            "LbaStatus": False,
            "CreateTimestamp": self.created_ms,
            "UpdateTimestamp": self.updated_ms,
        }
        if self.priority is not None:
            data["Priority"] = self.priority
        return data


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
    account: AlidnsAccount
    action: str
    version: int


@dataclass
class _Injected:
    code: str
    status: int
    message: str
    remaining: int


# --- the emulator --------------------------------------------------------------------


class AlidnsEmulator:
    """The Alidns RPC API on ``http://127.0.0.1:<port>`` (see the module docstring).

    Args:
        accounts: initial accounts (more with :meth:`add_account`).
        clock_skew: how far the emulator's clock is ahead of the real one (negative:
            behind); it decides the ±15-minute timestamp window and the ``Date`` header.
        throttle_every: every N-th authenticated call answers ``Throttling.User``
            (0 = never).
        throttle_status: HTTP status of the throttling answer (the service's is not
            confirmed; 429 by default).
        on_change: ``on_change(fqdn, values)`` after every TXT change at ``fqdn``
            (absolute, lower case, punycode, trailing dot).
        lenient_timestamps: also accept ISO 8601 timestamps other than
            ``yyyy-MM-ddTHH:mm:ssZ`` (lexicon sends ``...+00:00Z``).
        port: the port to listen on; 0 picks a free one.
    """

    HOST_ID: ClassVar[str] = "alidns.aliyuncs.com"

    def __init__(
        self,
        accounts: Iterable[AlidnsAccount] = (),
        *,
        clock_skew: timedelta = timedelta(0),
        throttle_every: int = 0,
        throttle_status: int = 429,
        on_change: OnChange | None = None,
        lenient_timestamps: bool = False,
        port: int = 0,
    ) -> None:
        self.clock_skew = clock_skew
        self.throttle_every = throttle_every
        self.throttle_status = throttle_status
        self.on_change = on_change
        self.lenient_timestamps = lenient_timestamps
        self._port = port
        self._lock = threading.RLock()
        self._accounts: dict[str, AlidnsAccount] = {}
        self._zones: dict[str, _Zone] = {}
        self._nonces: dict[tuple[str, str], datetime] = {}
        self._log: list[LoggedRequest] = []
        self._injected: list[_Injected] = []
        self._calls = 0
        self._ids = itertools.count(10**17 + 1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for account in accounts:
            self.add_account(account)

    # -- lifecycle --

    def start(self) -> AlidnsEmulator:
        """Listen on 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            return self
        server = _Server((LOOPBACK, self._port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="alidns-emulator", daemon=True
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

    def __enter__(self) -> AlidnsEmulator:
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
        """``http://127.0.0.1:PORT``, the value for ``ALIDNS_ENDPOINT``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the endpoint form Alibaba's Tea SDK expects."""
        return f"{LOOPBACK}:{self.port}"

    def now(self) -> datetime:
        """The emulator's clock: real UTC time plus ``clock_skew``."""
        return datetime.now(UTC) + self.clock_skew

    # -- state set-up and inspection --

    def add_account(self, account: AlidnsAccount) -> None:
        """Add an account and its domains (a domain belongs to one account)."""
        with self._lock:
            if account.access_key_id in self._accounts:
                raise ValueError(f"AccessKey {account.access_key_id} already exists")
            self._accounts[account.access_key_id] = account
            for entry in account.domains:
                domain = AlidnsDomain(entry) if isinstance(entry, str) else entry
                ascii_name = _ascii_name(domain.name)
                if ascii_name in self._zones:
                    raise ValueError(f"domain {domain.name} already belongs to an account")
                self._zones[ascii_name] = _Zone(
                    account=account,
                    domain=domain,
                    ascii=ascii_name,
                    unicode=_unicode_name(ascii_name),
                    domain_id=str(uuid.uuid4()),
                    instance_id="dns-" + uuid.uuid4().hex[:12],
                    created=self.now(),
                )

    def records(self, zone: str) -> list[dict[str, Any]]:
        """Every record of ``zone`` in DescribeDomainRecords form, oldest first."""
        with self._lock:
            found = self._zones.get(_ascii_name(zone))
            if found is None:
                raise KeyError(zone)
            return [r.as_api() for r in sorted(found.records.values(), key=lambda r: r.record_id)]

    def txt_values(self, fqdn: str) -> list[str]:
        """The TXT values at ``fqdn`` (with or without the trailing dot), oldest first."""
        name = _ascii_name(fqdn) + "."
        with self._lock:
            return [r.value for r in self._all_records() if r.type == "TXT" and r.fqdn == name]

    def add_record(self, zone: str, rr: str, type: str, value: str, ttl: int = 600) -> str:
        """Create a record directly (as if made in the console); returns its RecordId."""
        with self._lock:
            found = self._zones[_ascii_name(zone)]
            record = self._insert(found, rr, type.upper(), value, ttl, "default", None)
            self._changed({record.fqdn} if record.type == "TXT" else set())
            return str(record.record_id)

    def delete_record(self, record_id: str) -> None:
        """Delete a record directly (as if removed in the console)."""
        with self._lock:
            record = self._find_record(int(record_id))
            if record is None:
                raise KeyError(record_id)
            del record.zone.records[record.record_id]
            self._changed({record.fqdn} if record.type == "TXT" else set())

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
            if not auth.account.allows(auth.action):
                raise ApiError(
                    "Forbidden.RAM",
                    400,
                    "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
                    {
                        "AccessDeniedDetail": {
                            "AuthAction": f"alidns:{auth.action}",
                            "AuthPrincipalOwnerId": auth.account.owner_id,
                            "AuthPrincipalType": "SubUser",
                            "AuthPrincipalDisplayName": auth.account.access_key_id,
                            "NoPermissionType": "ImplicitDeny",
                            "EncodedDiagnosticMessage": "AQEAAAAA" + uuid.uuid4().hex,
                        }
                    },
                )
            business = {k: v for k, v in params.items() if k not in _COMMON_PARAMS}
            result = getattr(self, "_do_" + auth.action)(auth.account, business)
            status = 200
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
                "Recommend": f"https://api.aliyun.com/troubleshoot?q={exc.code}&product=Alidns&requestId={request_id}",
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
        if version != signing.API_VERSION:
            raise ApiError("InvalidVersion", 400, "Specified parameter Version is not valid.")
        if action not in ACTIONS:
            raise ApiError("InvalidApi.NotFound", 404, "Specified api is not found,please check your url and method.")
        return action

    def _check_timestamp(self, text: str) -> None:
        moment = _parse_timestamp(text, self.lenient_timestamps)
        if moment is None:
            raise ApiError("InvalidTimeStamp.Format", 400, "Specified time stamp or date value is not well formatted.")
        if abs(moment - self.now()) > TIMESTAMP_WINDOW:
            raise ApiError("InvalidTimeStamp.Expired", 400, "Specified time stamp or date value is expired.")

    def _account(self, access_key_id: str) -> AlidnsAccount:
        account = self._accounts.get(access_key_id)
        if account is None:
            raise ApiError("InvalidAccessKeyId.NotFound", 404, "Specified access key is not found.")
        return account

    @staticmethod
    def _check_token(account: AlidnsAccount, token: str | None) -> None:
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

    def _check_nonce(self, account: AlidnsAccount, nonce: str) -> None:
        now = self.now()
        for key, seen in list(self._nonces.items()):
            if now - seen > NONCE_RETENTION:
                del self._nonces[key]
        key = (account.access_key_id, nonce)
        if key in self._nonces:
            raise ApiError("SignatureNonceUsed", 400, "Specified signature nonce was used already.")
        self._nonces[key] = now

    # -- helpers for the actions --

    def _all_records(self) -> Iterable[_Record]:
        for zone in self._zones.values():
            yield from sorted(zone.records.values(), key=lambda r: r.record_id)

    def _find_record(self, record_id: int) -> _Record | None:
        for zone in self._zones.values():
            if record_id in zone.records:
                return zone.records[record_id]
        return None

    def _zone(self, account: AlidnsAccount, name: str | None) -> _Zone:
        if not name:
            raise _missing("DomainName")
        zone = self._zones.get(_ascii_name(name))
        if zone is None:
            raise _no_such_domain()
        if zone.account is not account:
            raise _other_users_domain()
        return zone

    def _insert(
        self, zone: _Zone, rr: str, type: str, value: str, ttl: int, line: str, priority: int | None
    ) -> _Record:
        now_ms = int(self.now().timestamp() * 1000)
        record = _Record(next(self._ids), zone, rr, type, value, ttl, line, priority, now_ms, now_ms)
        zone.records[record.record_id] = record
        return record

    def _changed(self, names: set[str]) -> None:
        if self.on_change is None:
            return
        for name in sorted(names):
            self.on_change(name, self.txt_values(name))

    def _validated(self, zone: _Zone, params: Mapping[str, str]) -> tuple[str, str, str, int, str, int | None]:
        """RR, Type, Value, TTL, Line and Priority of an Add/Update call, checked."""
        for name in ("RR", "Type", "Value"):
            if not params.get(name):
                raise _missing(name)
        rr, type_, value = params["RR"], params["Type"].upper(), params["Value"]
        if type_ not in RECORD_TYPES:
            raise _invalid("Type")
        if not RR_PATTERN.fullmatch(rr) or len(rr) > 253:
            raise _invalid("RR")
        if type_ == "TXT" and not TXT_CHARACTERS.fullmatch(value):
            raise _invalid("Value")
        if (type_ == "A" and not _is_ip(value, 4)) or (type_ == "AAAA" and not _is_ip(value, 6)):
            raise _invalid("Value")
        ttl = _int_param(params, "TTL", 600)
        if ttl <= 0:
            raise _invalid("TTL")
        if not zone.domain.min_ttl <= ttl <= 86400:
            raise ApiError(
                "QuotaExceeded.TTL",
                400,
                f"The specified TTL is invalid. A valid TTL must be in the range of {zone.domain.min_ttl} to 86400.",
            )
        priority = None
        if type_ == "MX":
            priority = _int_param(params, "Priority", 5)
            if not 1 <= priority <= 50:
                raise _invalid("Priority")
        return rr, type_, value, ttl, params.get("Line") or "default", priority

    @staticmethod
    def _same(record: _Record, rr: str, type_: str, value: str, line: str) -> bool:
        return (
            record.rr.lower() == rr.lower() and record.type == type_ and record.value == value and record.line == line
        )

    @staticmethod
    def _page(params: Mapping[str, str], limit: int, default: int = 20) -> tuple[int, int]:
        number = _int_param(params, "PageNumber", 1)
        size = _int_param(params, "PageSize", default)
        if number < 1:
            raise _invalid("PageNumber")
        if not 1 <= size <= limit:
            raise _invalid("PageSize")
        return number, size

    @staticmethod
    def _paged(items: list[Any], number: int, size: int) -> list[Any]:
        return items[(number - 1) * size : number * size]

    # -- the actions (each returns the body without RequestId) --

    def _do_DescribeDomains(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        number, size = self._page(params, 100)
        zones = [z for z in self._zones.values() if z.account is account]
        keyword = params.get("KeyWord", "").lower()
        if keyword:
            exact = params.get("SearchMode", "LIKE").upper() == "EXACT"
            zones = [
                z
                for z in zones
                if (keyword in (z.ascii, z.unicode.lower()) if exact else keyword in z.ascii or keyword in z.unicode)
            ]
        domains = [
            {
                "DomainId": z.domain_id,
                "DomainName": z.unicode,
                "PunyCode": z.ascii,
                "AliDomain": False,
                "RecordCount": len(z.records),
                "VersionCode": z.domain.version_code,
                "VersionName": z.domain.version_name,
                "InstanceId": z.instance_id,
                "DnsServers": {"DnsServer": ["ns1.alidns.com", "ns2.alidns.com"]},
                "CreateTime": z.created.strftime("%Y-%m-%dT%H:%MZ"),
                "CreateTimestamp": int(z.created.timestamp() * 1000),
                "Starmark": False,
                "ResourceGroupId": "rg-default",
                "Tags": {"Tag": []},
            }
            for z in sorted(zones, key=lambda z: z.ascii)
        ]
        return {
            "TotalCount": len(domains),
            "PageNumber": number,
            "PageSize": size,
            "Domains": {"Domain": self._paged(domains, number, size)},
        }

    def _do_DescribeDomainInfo(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        zone = self._zone(account, params.get("DomainName"))
        return {
            "DomainId": zone.domain_id,
            "DomainName": zone.unicode,
            "PunyCode": zone.ascii,
            "AliDomain": False,
            "VersionCode": zone.domain.version_code,
            "VersionName": zone.domain.version_name,
            "MinTtl": zone.domain.min_ttl,
            "AvailableTtls": {"AvailableTtl": [str(t) for t in ALL_TTLS if t >= zone.domain.min_ttl]},
            "DnsServers": {"DnsServer": ["ns1.alidns.com", "ns2.alidns.com"]},
            "InstanceId": zone.instance_id,
            "CreateTime": zone.created.strftime("%Y-%m-%dT%H:%MZ"),
            "RecordLines": {
                "RecordLine": [{"LineCode": "default", "LineName": "Default", "LineDisplayName": "Default"}]
            },
        }

    def _describe(self, records: list[_Record], params: Mapping[str, str], number: int, size: int) -> dict[str, Any]:
        descending = params.get("Direction", "DESC").upper() != "ASC"
        records = sorted(records, key=lambda r: r.record_id, reverse=descending)
        return {
            "TotalCount": len(records),
            "PageNumber": number,
            "PageSize": size,
            "DomainRecords": {"Record": [r.as_api() for r in self._paged(records, number, size)]},
        }

    def _do_DescribeDomainRecords(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Filters: ``KeyWord`` (``SearchMode`` LIKE, the default, or EXACT) on RR or Value;
        otherwise ``RRKeyWord``/``ValueKeyWord`` as case-insensitive substrings and
        ``TypeKeyWord`` exact; ``Type``, ``Line`` and ``Status`` exact. Empty values are
        no filter. Newest first unless ``Direction=ASC``."""
        zone = self._zone(account, params.get("DomainName"))
        number, size = self._page(params, 500)
        records = list(zone.records.values())
        keyword = params.get("KeyWord", "").lower()
        mode = params.get("SearchMode", "").upper()
        if keyword and mode != "ADVANCED":
            if mode == "EXACT":
                records = [r for r in records if keyword in (r.rr.lower(), r.value.lower())]
            else:
                records = [r for r in records if keyword in r.rr.lower() or keyword in r.value.lower()]
        if rr_kw := params.get("RRKeyWord", "").lower():
            records = [r for r in records if rr_kw in r.rr.lower()]
        if type_kw := params.get("TypeKeyWord", "").upper():
            records = [r for r in records if r.type == type_kw]
        if value_kw := params.get("ValueKeyWord", "").lower():
            records = [r for r in records if value_kw in r.value.lower()]
        records = _exact_filters(records, params)
        return self._describe(records, params, number, size)

    def _do_DescribeSubDomainRecords(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Without ``DomainName`` the zone is the account's longest domain containing
        ``SubDomain`` (the service's own rule is not documented)."""
        sub = params.get("SubDomain")
        if not sub:
            raise _missing("SubDomain")
        number, size = self._page(params, 100)
        name = _ascii_name(sub)
        if params.get("DomainName"):
            zone = self._zone(account, params["DomainName"])
        else:
            candidates = [
                z
                for z in self._zones.values()
                if z.account is account and (name == z.ascii or name.endswith("." + z.ascii))
            ]
            if not candidates:
                raise _no_such_domain()
            zone = max(candidates, key=lambda z: len(z.ascii))
        if name != zone.ascii and not name.endswith("." + zone.ascii):
            raise _invalid("SubDomain")
        fqdn = name + "."
        records = _exact_filters([r for r in zone.records.values() if r.fqdn == fqdn], params)
        return self._describe(records, params, number, size)

    def _do_AddDomainRecord(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        zone = self._zone(account, params.get("DomainName"))
        rr, type_, value, ttl, line, priority = self._validated(zone, params)
        same_name = [
            r for r in zone.records.values() if r.rr.lower() == rr.lower() and r.type == type_ and r.line == line
        ]
        if any(r.value == value for r in same_name):
            raise _duplicate()
        if len(same_name) >= 90:
            raise ApiError("QuotaExceeded.Record", 400, "The number of records exceeds the limit.")
        record = self._insert(zone, rr, type_, value, ttl, line, priority)
        self._changed({record.fqdn} if type_ == "TXT" else set())
        return {"RecordId": str(record.record_id)}

    def _do_DeleteDomainRecord(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        record = self._owned_record(account, params)
        del record.zone.records[record.record_id]
        self._changed({record.fqdn} if record.type == "TXT" else set())
        return {"RecordId": str(record.record_id)}

    def _do_UpdateDomainRecord(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        record = self._owned_record(account, params)
        rr, type_, value, ttl, line, priority = self._validated(record.zone, params)
        if self._same(record, rr, type_, value, line) and record.ttl == ttl and record.priority == priority:
            raise _duplicate()
        if any(self._same(r, rr, type_, value, line) for r in record.zone.records.values() if r is not record):
            raise _duplicate()
        touched = {record.fqdn} if record.type == "TXT" else set()
        record.rr, record.type, record.value, record.ttl, record.line, record.priority = (
            rr,
            type_,
            value,
            ttl,
            line,
            priority,
        )
        record.updated_ms = int(self.now().timestamp() * 1000)
        self._changed(touched | ({record.fqdn} if type_ == "TXT" else set()))
        return {"RecordId": str(record.record_id)}

    def _do_DeleteSubDomainRecords(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Deletes every unlocked record at ``RR`` (of ``Type`` when given); ``TotalCount`` is a string."""
        zone = self._zone(account, params.get("DomainName"))
        rr = params.get("RR")
        if not rr:
            raise _missing("RR")
        type_ = params.get("Type", "").upper()
        doomed = [
            r
            for r in zone.records.values()
            if r.rr.lower() == rr.lower() and (not type_ or r.type == type_) and not r.locked
        ]
        for record in doomed:
            del zone.records[record.record_id]
        self._changed({r.fqdn for r in doomed if r.type == "TXT"})
        return {"RR": rr, "TotalCount": str(len(doomed))}

    def _do_GetMainDomainName(self, account: AlidnsAccount, params: Mapping[str, str]) -> dict[str, Any]:
        """Splits by public suffix (a short built-in list), not by the account's domains."""
        text = params.get("InputString")
        if not text:
            raise _missing("InputString")
        if len(text) > 128:
            raise ApiError("QuotaExceeded.StringLength", 400, "The length of the input string exceeds the limit.")
        labels = text.strip().rstrip(".").lower().split(".")
        if len(labels) < 2 or not all(labels):
            raise ApiError("InvalidDomainName.Format", 400, "The specified domain name is invalid.")
        keep = 3 if ".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES and len(labels) >= 3 else 2
        main, rest = labels[-keep:], labels[:-keep]
        return {"RR": ".".join(rest) or "@", "DomainName": ".".join(main), "DomainLevel": len(rest) + 1}

    def _owned_record(self, account: AlidnsAccount, params: Mapping[str, str]) -> _Record:
        text = params.get("RecordId")
        if not text:
            raise _missing("RecordId")
        record = self._find_record(int(text)) if text.isdigit() else None
        if record is None or record.zone.account is not account:
            raise _not_your_record()
        return record


_COMMON_PARAMS = frozenset(
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


_SECRET_HEADERS = frozenset({"authorization", "x-acs-security-token"})


def _incomplete() -> ApiError:
    return ApiError("IncompleteSignature", 400, "The request signature does not conform to Aliyun standards.")


def _exact_filters(records: list[_Record], params: Mapping[str, str]) -> list[_Record]:
    if type_ := params.get("Type", "").upper():
        records = [r for r in records if r.type == type_]
    if line := params.get("Line", ""):
        records = [r for r in records if r.line == line]
    if status := params.get("Status", "").upper():
        records = [r for r in records if r.status == status]
    return records


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name, "")
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise _invalid(name) from None


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


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
    emulator: AlidnsEmulator


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
