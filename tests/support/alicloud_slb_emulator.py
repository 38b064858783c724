"""An Alibaba Cloud Classic Load Balancer (SLB 2014-05-15) API emulator for the ``alicloud-slb`` tests.

It keeps load balancers (by region) with their HTTPS listeners and every listener
setting, and server certificates with what SLB derives from the PEM (SHA-1 fingerprint,
common name, alternative names, expiry). The calls are the ones the deploy target and
Alibaba's SDK use: ``DescribeLoadBalancerHTTPSListenerAttribute``,
``SetLoadBalancerHTTPSListenerAttribute``, ``UploadServerCertificate``,
``DescribeServerCertificates``, ``DeleteServerCertificate``; field names and shapes as
in ``alibabacloud-slb20140515``'s models, error codes from SLB's error code list
(``InvalidLoadBalancerId.NotFound``, ``ListenerNotFound``, ``ServerCertificateId.NotFound``,
``CertificateAndPrivateKeyIsRefered``, ``CertificateNotMatchPrivateKey``,
``KeyFormatError``, ``InvalidParameter``); signatures, RAM (``slb:<Action>``) and faults
come from :class:`tests.support.alicloud_emulator.AliCloudRpcEmulator`.

``reset_omitted=True`` (the default) makes ``SetLoadBalancerHTTPSListenerAttribute``
reset every setting the call leaves out to its default, as older API versions did; a
client that does not send the listener's settings back loses them, and tests see it.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support.alicloud_emulator import AliCloudAccount, AliCloudRpcEmulator, ApiError, _invalid, _missing

ACTIONS = (
    "DescribeLoadBalancerHTTPSListenerAttribute",
    "SetLoadBalancerHTTPSListenerAttribute",
    "UploadServerCertificate",
    "DescribeServerCertificates",
    "DeleteServerCertificate",
)

#: What a new HTTPS listener has, and what a setting left out of a Set call returns to.
LISTENER_DEFAULTS: dict[str, Any] = {
    "Bandwidth": -1,
    "Scheduler": "wrr",
    "StickySession": "off",
    "HealthCheck": "off",
    "XForwardedFor": "on",
    "XForwardedFor_SLBIP": "off",
    "XForwardedFor_SLBID": "off",
    "XForwardedFor_proto": "off",
    "XForwardedFor_SLBPORT": "off",
    "XForwardedFor_ClientSrcPort": "off",
    "Gzip": "on",
    "EnableHttp2": "on",
    "TLSCipherPolicy": "tls_cipher_policy_1_0",
    "IdleTimeout": 15,
    "RequestTimeout": 60,
    "AclStatus": "off",
}
_SWITCHES = frozenset(
    {"StickySession", "HealthCheck", "XForwardedFor", "XForwardedFor_SLBIP", "XForwardedFor_SLBID",
     "XForwardedFor_proto", "XForwardedFor_SLBPORT", "XForwardedFor_ClientSrcPort", "Gzip", "EnableHttp2",
     "AclStatus", "VServerGroup"}
)
_INTS = frozenset(
    {"Bandwidth", "IdleTimeout", "RequestTimeout", "CookieTimeout", "HealthCheckConnectPort", "HealthyThreshold",
     "UnhealthyThreshold", "HealthCheckTimeout", "HealthCheckInterval"}
)
_SETTABLE = frozenset(
    set(LISTENER_DEFAULTS)
    | _INTS
    | {"StickySessionType", "Cookie", "HealthCheckDomain", "HealthCheckURI", "HealthCheckHttpCode",
       "HealthCheckMethod", "Description", "CACertificateId", "AclType", "AclId", "VServerGroupId",
       "ServerCertificateId"}
)


@dataclass
class ServerCertificate:
    """One uploaded server certificate (``pem`` is ``None`` for one referencing a CAS certificate)."""

    id: str
    name: str
    region: str
    fingerprint: str
    common_name: str
    alt_names: list[str]
    expire: Any
    created: Any
    pem: str | None = None
    cas_id: str | None = None
    cas_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ServerCertificateId": self.id,
            "ServerCertificateName": self.name,
            "RegionId": self.region,
            "RegionIdAlias": self.region,
            "Fingerprint": self.fingerprint,
            "CommonName": self.common_name,
            "SubjectAlternativeNames": {"SubjectAlternativeName": list(self.alt_names)},
            "ExpireTime": self.expire.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ExpireTimeStamp": int(self.expire.timestamp() * 1000),
            "CreateTime": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "CreateTimeStamp": int(self.created.timestamp() * 1000),
            "IsAliCloudCertificate": 1 if self.cas_id else 0,
            "ResourceGroupId": "rg-acfmxazb4ph6aiy",
            "Tags": {"Tag": []},
        }
        if self.cas_id:
            data.update(AliCloudCertificateId=self.cas_id, AliCloudCertificateName=self.cas_name or "")
        return data


@dataclass
class LoadBalancer:
    id: str
    region: str
    listeners: dict[int, dict[str, Any]] = field(default_factory=dict)


class SlbEmulator(AliCloudRpcEmulator):
    """Classic SLB on ``http://127.0.0.1:<port>``; ``cas_lookup(cert_id)`` resolves a CAS certificate's PEM."""

    PRODUCT: ClassVar[str] = "Slb"
    RAM_PREFIX: ClassVar[str] = "slb"
    API_VERSION: ClassVar[str] = "2014-05-15"
    ACTIONS: ClassVar[tuple[str, ...]] = ACTIONS
    HOST_ID: ClassVar[str] = "slb.aliyuncs.com"
    #: RegionId reaches the actions: SLB's resources live in a region.
    COMMON_PARAMS: ClassVar[frozenset[str]] = AliCloudRpcEmulator.COMMON_PARAMS - {"RegionId"}

    def __init__(
        self,
        accounts: Iterable[AliCloudAccount] = (),
        *,
        reset_omitted: bool = True,
        cas_lookup: Callable[[str], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(accounts, **kwargs)
        self.reset_omitted = reset_omitted
        self.cas_lookup = cas_lookup
        self.load_balancers: dict[str, LoadBalancer] = {}
        self.certificates: dict[str, ServerCertificate] = {}
        self._serial = itertools.count(1)

    # -- set-up and inspection --

    def add_load_balancer(self, lb_id: str, region: str = "cn-hangzhou", ports: Iterable[int] = (443,),
                          **settings: Any) -> LoadBalancer:
        """A load balancer with an HTTPS listener on each of ``ports`` (``settings`` override the defaults)."""
        with self._lock:
            balancer = LoadBalancer(lb_id, region)
            for port in ports:
                balancer.listeners[port] = {**LISTENER_DEFAULTS, "BackendServerPort": 80, "Status": "running",
                                            **settings}
            self.load_balancers[lb_id] = balancer
            return balancer

    def listener(self, lb_id: str, port: int = 443) -> dict[str, Any]:
        with self._lock:
            return dict(self.load_balancers[lb_id].listeners[port])

    def add_certificate(self, pem: str, key: str, region: str = "cn-hangzhou", name: str = "manual") -> str:
        """Upload a certificate as a user would by hand; its ID."""
        with self._lock:
            return self._store_pem(pem, key, region, name).id

    # -- actions --

    def _region(self, params: Mapping[str, str]) -> str | None:
        return params.get("RegionId") or None

    def _balancer(self, params: Mapping[str, str]) -> LoadBalancer:
        lb_id = params.get("LoadBalancerId")
        if not lb_id:
            raise _missing("LoadBalancerId")
        balancer = self.load_balancers.get(lb_id)
        region = self._region(params)
        if balancer is None or (region is not None and region != balancer.region):
            raise ApiError("InvalidLoadBalancerId.NotFound", 404, "The specified LoadBalancerId does not exist.")
        return balancer

    def _listener(self, params: Mapping[str, str]) -> tuple[LoadBalancer, int, dict[str, Any]]:
        balancer = self._balancer(params)
        text = params.get("ListenerPort")
        if not text:
            raise _missing("ListenerPort")
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ApiError("InvalidParameter", 400, "The specified port is not valid.")
        listener = balancer.listeners.get(int(text))
        if listener is None:
            raise ApiError(
                "ListenerNotFound", 404, "You have not created a listener for the specified port of the load balancer."
            )
        return balancer, int(text), listener

    def _do_DescribeLoadBalancerHTTPSListenerAttribute(
        self, account: AliCloudAccount, params: dict[str, str]
    ) -> dict[str, Any]:
        balancer, port, listener = self._listener(params)
        return {"LoadBalancerId": balancer.id, "ListenerPort": port, "SecurityStatus": "on", **listener,
                "AclIds": {"AclId": [listener["AclId"]] if listener.get("AclId") else []},
                "DomainExtensions": {"DomainExtension": []}, "Rules": {"Rule": []}, "Tags": {"Tag": []}}

    def _do_SetLoadBalancerHTTPSListenerAttribute(
        self, account: AliCloudAccount, params: dict[str, str]
    ) -> dict[str, Any]:
        balancer, _, listener = self._listener(params)
        given = {k: v for k, v in params.items() if k in _SETTABLE or k == "VServerGroup"}
        for name, value in given.items():
            if name in _SWITCHES and value not in ("on", "off"):
                raise _invalid(name)
            if name in _INTS:
                try:
                    int(value)
                except ValueError:
                    raise _invalid(name) from None
        if "ServerCertificateId" in given:
            cert = self.certificates.get(given["ServerCertificateId"])
            if cert is None or cert.region != balancer.region:
                raise ApiError("ServerCertificateId.NotFound", 404, "The specified ServerCertificateId does not exist.")
        if self.reset_omitted:  # the listener keeps its certificate, every other setting left out is reset
            new: dict[str, Any] = {**LISTENER_DEFAULTS, "ServerCertificateId": listener.get("ServerCertificateId")}
        else:
            new = {k: v for k, v in listener.items() if k not in ("BackendServerPort", "Status")}
        for name, value in given.items():
            if name == "VServerGroup":
                continue
            new[name] = int(value) if name in _INTS else value
        if given.get("VServerGroup") == "off":
            new.pop("VServerGroupId", None)
        if new.get("StickySession") == "on":
            kind = new.get("StickySessionType")
            if kind not in ("insert", "server"):
                raise ApiError("InvalidParameter", 400, "The specified parameter StickySessionType is not valid.")
            if kind == "insert" and "CookieTimeout" not in new:
                raise ApiError("MissingParameter", 400, "The combination of some parameters violates the spec.")
            if kind == "server" and not new.get("Cookie"):
                raise ApiError("MissingParameter", 400, "The combination of some parameters violates the spec.")
        if new.get("AclStatus") == "on" and not (new.get("AclId") and new.get("AclType")):
            raise ApiError("MissingParameter", 400, "The combination of some parameters violates the spec.")
        new["BackendServerPort"] = listener.get("BackendServerPort", 80)
        new["Status"] = listener.get("Status", "running")
        listener.clear()
        listener.update(new)
        return {}

    def _do_UploadServerCertificate(self, account: AliCloudAccount, params: dict[str, str]) -> dict[str, Any]:
        region = self._region(params)
        if region is None:
            raise _missing("RegionId")
        name = params.get("ServerCertificateName") or ""
        if params.get("AliCloudCertificateId"):
            cert = self._store_cas(params, region, name)
        else:
            pem, key = params.get("ServerCertificate"), params.get("PrivateKey")
            if not pem or not key:
                raise ApiError("InvalidParameter", 400, "The specified parameter ServerCertificate or Key is empty.")
            cert = self._store_pem(pem, key, region, name)
        return {**cert.to_json()}

    def _do_DescribeServerCertificates(self, account: AliCloudAccount, params: dict[str, str]) -> dict[str, Any]:
        region = self._region(params)
        wanted = params.get("ServerCertificateId")
        items = [
            cert.to_json()
            for cert in self.certificates.values()
            if (region is None or cert.region == region) and (not wanted or cert.id == wanted)
        ]
        return {"ServerCertificates": {"ServerCertificate": items}}

    def _do_DeleteServerCertificate(self, account: AliCloudAccount, params: dict[str, str]) -> dict[str, Any]:
        cert_id = params.get("ServerCertificateId")
        if not cert_id:
            raise _missing("ServerCertificateId")
        cert = self.certificates.get(cert_id)
        region = self._region(params)
        if cert is None or (region is not None and cert.region != region):
            raise ApiError("ServerCertificateId.NotFound", 404, "The specified ServerCertificateId does not exist.")
        for balancer in self.load_balancers.values():
            for listener in balancer.listeners.values():
                if listener.get("ServerCertificateId") == cert_id:
                    raise ApiError("CertificateAndPrivateKeyIsRefered", 400, "Certificate and PrivateKey Is Refered.")
        del self.certificates[cert_id]
        return {}

    # -- certificates --

    def _new_id(self) -> str:
        # SLB's IDs look like 1231579085529123_166f8204689_1714763408_70998****
        return f"1231579085529123_{uuid.uuid4().hex[:11]}_{next(self._serial):010d}_{uuid.uuid4().int % 10**9}"

    def _store_pem(self, pem: str, key: str, region: str, name: str) -> ServerCertificate:
        try:
            chain = x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            raise ApiError("KeyFormatError", 400, "The specified ServerCertificate is incorrectly formatted.") from None
        try:
            private = serialization.load_pem_private_key(key.encode(), password=None)
        except TypeError:
            raise ApiError("PrivateKeyEncryption", 400, "Key has Encrypted .") from None
        except ValueError:
            raise ApiError("InvalidParameter", 400, "The specified parameter key format is error.") from None
        leaf = chain[0]
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or (
            private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki)
        ):
            raise ApiError("CertificateNotMatchPrivateKey", 400, "Certificate and key does not match.")
        cert = self._certificate(leaf, region, name, pem=pem)
        self.certificates[cert.id] = cert
        return cert

    def _store_cas(self, params: Mapping[str, str], region: str, name: str) -> ServerCertificate:
        cas_id = params["AliCloudCertificateId"]
        pem = self.cas_lookup(cas_id) if self.cas_lookup is not None else None
        if self.cas_lookup is not None and pem is None:
            raise ApiError("InvalidParameter", 400, "The specified AliCloudCertificateId does not exist.")
        if pem is None:
            cert = ServerCertificate(self._new_id(), name or params.get("AliCloudCertificateName", ""), region,
                                     "", "", [], self.now(), self.now())
        else:
            cert = self._certificate(x509.load_pem_x509_certificates(pem.encode())[0], region, name)
        cert.cas_id, cert.cas_name = cas_id, params.get("AliCloudCertificateName") or None
        self.certificates[cert.id] = cert
        return cert

    def _certificate(self, leaf: x509.Certificate, region: str, name: str, pem: str | None = None) -> ServerCertificate:
        digest = hashlib.sha1(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
        common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName)
        except x509.ExtensionNotFound:
            sans = []
        return ServerCertificate(
            id=self._new_id(),
            name=name or f"cert-{next(self._serial)}",
            region=region,
            fingerprint=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
            common_name=str(common[0].value) if common else "",
            alt_names=list(sans),
            expire=leaf.not_valid_after_utc.astimezone(UTC),
            created=self.now(),
            pem=pem,
        )
