"""Route 53 for tests: moto's server, with an IAM-and-faults front door.

moto (``moto[server]``, a third-party implementation of the AWS APIs) holds the hosted
zones and record sets and answers Route 53's REST API. It accepts any credentials and
never throttles, so :class:`Route53Front` puts a small HTTP server before it that does
what AWS does at the door:

* checks the SigV4 ``Authorization`` header exactly (recomputed with botocore's signer
  from what arrived) against the known users: an unknown key gets
  ``InvalidClientTokenId``, a wrong secret ``SignatureDoesNotMatch``, a missing or wrong
  session token ``InvalidClientTokenId`` -- each as AWS's XML error document;
* enforces each user's IAM actions (``AccessDenied``, 403, naming the action the way
  IAM does);
* refuses a record set that lists a value twice (``InvalidChangeBatch``, ``Duplicate
  Resource Record``), as AWS does and moto does not;
* injects throttling (``Throttling``, ``PriorRequestNotComplete``) on request;
* after every accepted ``ChangeResourceRecordSets`` mirrors the zone's TXT records to
  ``on_change(fqdn, values)`` -- e.g. ``pebble-challtestsrv`` -- so Pebble can validate.

Everything listens on 127.0.0.1. Typical use::

    with Route53Front([AwsUser("AKIDTEST", "secret")]) as aws:
        zone_id = aws.create_zone("example.com")
        env = {**aws.env("AKIDTEST", "secret")}
        ...
        assert aws.txt_values("_acme-challenge.example.com.") == [...]
"""

from __future__ import annotations

import hmac
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.server import ThreadedMotoServer

LOOPBACK = "127.0.0.1"
_NS = "https://route53.amazonaws.com/doc/2013-04-01/"
OnChange = Callable[[str, list[str]], None]

_OPERATIONS = (
    ("GET", re.compile(r"/2013-04-01/hostedzonesbyname/?$"), "ListHostedZonesByName"),
    ("GET", re.compile(r"/2013-04-01/hostedzone/[^/]+/rrset/?$"), "ListResourceRecordSets"),
    ("POST", re.compile(r"/2013-04-01/hostedzone/[^/]+/rrset/?$"), "ChangeResourceRecordSets"),
    ("GET", re.compile(r"/2013-04-01/change/[^/]+$"), "GetChange"),
    ("GET", re.compile(r"/2013-04-01/hostedzone/[^/]+$"), "GetHostedZone"),
    ("GET", re.compile(r"/2013-04-01/hostedzone/?$"), "ListHostedZones"),
)
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<headers>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class AwsUser:
    """An IAM identity: its key, secret, optional session token and allowed actions.

    ``actions`` ``None`` allows everything; otherwise names like
    ``"route53:ChangeResourceRecordSets"`` (``"route53:*"`` allows all of Route 53).
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    actions: frozenset[str] | None = None
    arn: str = "arn:aws:iam::123456789012:user/certsmith-test"

    def allows(self, operation: str) -> bool:
        return self.actions is None or bool({"route53:*", f"route53:{operation}"} & self.actions)


@dataclass(frozen=True)
class Seen:
    """One request at the front door: the operation, the answer's status and error code."""

    operation: str
    method: str
    path: str
    status: int
    code: str | None
    body: bytes = b""


class Route53Front:
    """moto's Route 53 behind a front door that authenticates, authorises and throttles."""

    def __init__(self, users: Iterable[AwsUser], on_change: OnChange | None = None) -> None:
        self.users = {user.access_key_id: user for user in users}
        self.on_change = on_change
        self.requests: list[Seen] = []
        self._faults: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._published: dict[str, list[str]] = {}
        self._moto = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=30)
        self.moto: Any = None
        #: When true, ChangeResourceRecordSets answers say PENDING (as AWS does at first), so
        #: clients must follow the change with GetChange; moto itself reports INSYNC at once.
        self.pending_changes = False
        #: The zones created through :meth:`create_zone`: name -> ID (the latest of a name).
        self.zones: dict[str, str] = {}

    # -- life cycle --

    def start(self) -> Route53Front:
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.moto = boto3.client(
            "route53", endpoint_url=self.moto_url, region_name="us-east-1",
            aws_access_key_id="moto", aws_secret_access_key="moto",  # moto accepts any key
        )  # fmt: skip
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                front._handle(self)

            def do_POST(self) -> None:
                front._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._moto.stop()
        self._http.close()

    def __enter__(self) -> Route53Front:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every zone, request, fault and published record (moto's own reset)."""
        self._http.post(self.moto_url + "/moto-api/reset")
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.zones.clear()
            self.pending_changes = False
            for fqdn in list(self._published):
                if self.on_change is not None:
                    self.on_change(fqdn, [])
            self._published.clear()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def env(self, user: AwsUser | None = None, **extra: str) -> dict[str, str]:
        """Variables for the provider: a user's keys and this endpoint."""
        user = user or next(iter(self.users.values()))
        env = {
            "AWS_ACCESS_KEY_ID": user.access_key_id,
            "AWS_SECRET_ACCESS_KEY": user.secret_access_key,
            "AWS_ENDPOINT_URL_ROUTE_53": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if user.session_token:
            env["AWS_SESSION_TOKEN"] = user.session_token
        env.update(extra)
        return env

    # -- state, read and written straight in moto --

    def create_zone(self, name: str, *, private: bool = False) -> str:
        params: dict[str, Any] = {"Name": name, "CallerReference": uuid.uuid4().hex}
        if private:
            params["HostedZoneConfig"] = {"PrivateZone": True, "Comment": "private"}
            params["VPC"] = {"VPCRegion": "us-east-1", "VPCId": "vpc-0123456789abcdef0"}
        zone_id = str(self.moto.create_hosted_zone(**params)["HostedZone"]["Id"]).removeprefix("/hostedzone/")
        self.zones[name] = zone_id
        return zone_id

    def txt_sets(self, zone_id: str) -> dict[str, list[str]]:
        """Every TXT record set of a zone: name -> values (unquoted)."""
        sets: dict[str, list[str]] = {}
        for page in self.moto.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
            for rrset in page["ResourceRecordSets"]:
                if rrset["Type"] == "TXT":
                    values = [r["Value"].strip('"') for r in rrset.get("ResourceRecords", [])]
                    sets.setdefault(rrset["Name"].lower(), []).extend(values)
        return sets

    def txt_values(self, fqdn: str) -> list[str]:
        """The TXT values at ``fqdn`` in whichever zone holds them."""
        name = fqdn.lower().rstrip(".") + "."
        values: list[str] = []
        for zone in self.moto.list_hosted_zones()["HostedZones"]:
            values.extend(self.txt_sets(zone["Id"]).get(name, []))
        return values

    def put_txt(self, zone_id: str, fqdn: str, values: list[str], ttl: int = 300) -> None:
        """Write a record set behind the provider's back (someone else's records)."""
        self.moto.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                "Name": fqdn, "Type": "TXT", "TTL": ttl, "ResourceRecords": [{"Value": f'"{v}"'} for v in values],
            }}]},
        )  # fmt: skip
        self._publish()

    def inject(self, operation: str, code: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` (``"*"``: any) get error ``code``."""
        with self._lock:
            self._faults.setdefault(operation, deque()).extend([code] * times)

    def calls(self, operation: str, status: int | None = 200) -> int:
        return sum(1 for r in self.requests if r.operation == operation and (status is None or r.status == status))

    # -- the front door --

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = urlsplit(handler.path).path
        operation = next(
            (name for method, pattern, name in _OPERATIONS if method == handler.command and pattern.match(path)),
            "Unknown",
        )
        error = self._check(handler, operation, body)
        if error is None and operation == "ChangeResourceRecordSets":
            error = _duplicate_records(body)
        if error is None:
            with self._lock:
                queue = self._faults.get(operation) or self._faults.get("*")
                fault = queue.popleft() if queue else None
            if fault is not None:
                status = 400 if fault in ("Throttling", "PriorRequestNotComplete") else 500
                error = (status, fault, "Rate exceeded" if status == 400 else "Internal failure")
        if error is not None:
            status, code, message = error
            self._send(handler, status, _error_xml(code, message), "text/xml")
            self.requests.append(Seen(operation, handler.command, handler.path, status, code, body))
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        answer = self._http.request(handler.command, self.moto_url + handler.path, content=body, headers=headers)
        content = answer.content
        if operation == "ChangeResourceRecordSets" and answer.status_code == 200:
            self._publish()
            if self.pending_changes:
                content = content.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        code = None
        if answer.status_code >= 400:
            match = re.search(rb"<Code>([^<]+)</Code>", answer.content)
            code = match.group(1).decode() if match else f"HTTP{answer.status_code}"
        self.requests.append(Seen(operation, handler.command, handler.path, answer.status_code, code, body))
        self._send(handler, answer.status_code, content, answer.headers.get("content-type", "text/xml"))

    def _check(
        self, handler: BaseHTTPRequestHandler, operation: str, body: bytes
    ) -> tuple[int, str, str] | None:
        """AWS's door: a SigV4 signature by a known key (and its token), then IAM."""
        match = _AUTH.fullmatch(handler.headers.get("authorization", "").strip())
        if match is None:
            return 403, "MissingAuthenticationToken", "Missing Authentication Token"
        user = self.users.get(match["key"])
        invalid = (403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        if user is None:
            return invalid
        if (user.session_token or None) != (handler.headers.get("x-amz-security-token") or None):
            return invalid
        signed = match["headers"].split(";")
        request = AWSRequest(
            method=handler.command,
            url=f"http://{handler.headers.get('host', '')}{handler.path}",
            data=body,
            headers={name: handler.headers.get(name, "") for name in signed},
        )
        request.context["timestamp"] = handler.headers.get("x-amz-date", "")
        signer = SigV4Auth(
            Credentials(user.access_key_id, user.secret_access_key, user.session_token), match["service"],
            match["region"],
        )
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, match["signature"]):
            return (
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
            )
        if not user.allows(operation):
            return (
                403,
                "AccessDenied",
                f"User: {user.arn} is not authorized to perform: route53:{operation} "
                f"because no identity-based policy allows the route53:{operation} action",
            )
        return None

    def _publish(self) -> None:
        """Mirror every TXT record set in moto to ``on_change`` (changed names only)."""
        if self.on_change is None:
            return
        current: dict[str, list[str]] = {}
        for zone in self.moto.list_hosted_zones()["HostedZones"]:
            if zone["Config"].get("PrivateZone"):
                continue
            for name, values in self.txt_sets(zone["Id"]).items():
                current.setdefault(name, []).extend(values)
        with self._lock:
            for name in set(current) | set(self._published):
                values = sorted(current.get(name, []))
                if sorted(self._published.get(name, [])) != values:
                    self.on_change(name, values)
            self._published = current

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(body)))
        handler.send_header("x-amzn-requestid", str(uuid.uuid4()))
        handler.end_headers()
        handler.wfile.write(body)


def _duplicate_records(body: bytes) -> tuple[int, str, str] | None:
    """AWS refuses a record set that lists one value twice (moto accepts it)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None  # moto answers malformed XML itself
    duplicates = []
    for record_set in root.iter(f"{{{_NS}}}ResourceRecordSet"):
        values = [v.text or "" for v in record_set.iter(f"{{{_NS}}}Value")]
        duplicates += [v for i, v in enumerate(values) if v in values[:i]]
    if not duplicates:
        return None
    return 400, "InvalidChangeBatch", "[" + ", ".join(f"Duplicate Resource Record: '{v}'" for v in duplicates) + "]"


def _error_xml(code: str, message: str) -> bytes:
    kind = "Receiver" if code == "InternalFailure" else "Sender"
    return (
        '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<Error><Type>{kind}</Type><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()
