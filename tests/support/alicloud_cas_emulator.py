"""An Alibaba Cloud Certificate Management Service (CAS, API 2020-04-07) emulator for tests.

The uploaded-certificate part of CAS that deploy targets use: ``UploadUserCertificate``,
``GetUserCertificateDetail``, ``ListUserCertificateOrder`` (``OrderType=UPLOAD``/``CERT``)
and ``DeleteUserCertificate``, with the authentication, RAM and error shape of
:class:`tests.support.alicloud_emulator.AliCloudRpcEmulator`. Field names and response
shapes are those of the official SDK (``alibabacloud-cas20200407``), which drives it in
``tests/e2e/test_alicloud_sdk.py``.

Certificates belong to the account owner (every AccessKey with the same ``owner_id``
sees them). The uploaded PEM is parsed with ``cryptography``: the key must match the
certificate, and names must be unique per owner. Other emulators (CDN, DCDN...) mark a
certificate in use with :meth:`CasEmulator.bind`; deleting it is then refused.

Error codes the documentation does not list are this emulator's choice, kept in the
module constants below: ``NameRepeat`` for a name already taken, ``NotFound`` for an
unknown CertId, ``CertInUse`` for deleting a bound certificate, ``InvalidCert`` /
``KeyCertMismatch`` for unusable PEM.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.support.alicloud_emulator import AliCloudAccount, AliCloudRpcEmulator, ApiError, _int_param, _missing

__all__ = ["CasCertificate", "CasEmulator"]

NAME_TAKEN = "NameRepeat"
NOT_FOUND = "NotFound"
IN_USE = "CertInUse"


@dataclass
class CasCertificate:
    """One uploaded certificate: what CAS keeps and answers about it."""

    cert_id: int
    owner_id: str
    name: str
    cert_pem: str
    key_pem: str = field(repr=False)
    common_name: str
    sans: list[str]
    serial: str
    issuer: str
    not_before: int  # milliseconds
    not_after: int
    fingerprint: str
    sha2: str
    bound_by: set[str] = field(default_factory=set)

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.cert_pem.encode())[0]

    def order_item(self) -> dict[str, Any]:
        """The ``CertificateOrderList`` entry of ``ListUserCertificateOrder`` (OrderType UPLOAD/CERT)."""
        return {
            "CertificateId": self.cert_id,
            "Name": self.name,
            "CommonName": self.common_name,
            "Sans": ",".join(self.sans),
            "SerialNo": self.serial,
            "Issuer": self.issuer,
            "StartDate": _date(self.not_before),
            "EndDate": _date(self.not_after),
            "CertStartTime": self.not_before,
            "CertEndTime": self.not_after,
            "Expired": False,
            "Fingerprint": self.fingerprint,
            "Sha2": self.sha2,
            "Upload": True,
            "InstanceId": f"cas-upload-{self.cert_id}",
            "Status": "ISSUED",
            "ResourceGroupId": "rg-default",
        }


def _date(millis: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d")


class CasEmulator(AliCloudRpcEmulator):
    """The CAS RPC API (uploaded certificates) on ``http://127.0.0.1:<port>``."""

    PRODUCT: ClassVar[str] = "cas"
    RAM_PREFIX: ClassVar[str] = "yundun-cert"
    API_VERSION: ClassVar[str] = "2020-04-07"
    ACTIONS: ClassVar[tuple[str, ...]] = (
        "UploadUserCertificate",
        "GetUserCertificateDetail",
        "ListUserCertificateOrder",
        "DeleteUserCertificate",
    )
    HOST_ID: ClassVar[str] = "cas.aliyuncs.com"
    REGION: ClassVar[str] = "cn-hangzhou"

    def __init__(
        self,
        accounts: Iterable[AliCloudAccount] = (),
        *,
        clock_skew: timedelta = timedelta(0),
        port: int = 0,
    ) -> None:
        self._certs: dict[int, CasCertificate] = {}
        self._ids = itertools.count(14_000_001)
        self.deleted: list[int] = []
        super().__init__(accounts, clock_skew=clock_skew, port=port)

    # -- inspection and set-up --

    def certificates(self, owner_id: str | None = None) -> list[CasCertificate]:
        """The uploaded certificates (of one owner), oldest first."""
        with self._lock:
            return [c for c in self._certs.values() if owner_id is None or c.owner_id == owner_id]

    def certificate(self, cert_id: int) -> CasCertificate | None:
        with self._lock:
            return self._certs.get(cert_id)

    def bind(self, cert_id: int, user: str) -> None:
        """Mark ``cert_id`` as used by ``user`` (a CDN domain, a listener): it can no longer be deleted."""
        with self._lock:
            self._certs[cert_id].bound_by.add(user)

    def unbind(self, user: str) -> None:
        """``user`` no longer uses any certificate."""
        with self._lock:
            for cert in self._certs.values():
                cert.bound_by.discard(user)

    def upload(self, owner_id: str, name: str, cert_pem: str, key_pem: str) -> CasCertificate:
        """What ``UploadUserCertificate`` does (also used by the CDN emulator's direct uploads)."""
        with self._lock:
            if any(c.owner_id == owner_id and c.name == name for c in self._certs.values()):
                raise ApiError(NAME_TAKEN, 400, "The certificate name already exists.")
            cert = _parse(next(self._ids), owner_id, name, cert_pem, key_pem)
            self._certs[cert.cert_id] = cert
            return cert

    # -- actions --

    def _owned(self, account: AliCloudAccount, params: Mapping[str, str]) -> CasCertificate:
        if not params.get("CertId"):
            raise _missing("CertId")
        cert_id = _int_param(params, "CertId", 0)
        cert = self._certs.get(cert_id)
        if cert is None or cert.owner_id != account.owner_id:
            raise ApiError(NOT_FOUND, 404, f"The certificate {cert_id} does not exist.")
        return cert

    def _do_UploadUserCertificate(self, account: AliCloudAccount, params: Mapping[str, str]) -> dict[str, Any]:
        for name in ("Name", "Cert", "Key"):
            if not params.get(name):
                raise _missing(name)
        if len(params["Name"]) > 64:
            raise ApiError("InvalidParameter", 400, "Specified parameter Name is not valid.")
        cert = self.upload(account.owner_id, params["Name"], params["Cert"], params["Key"])
        return {"CertId": cert.cert_id, "ResourceId": f"cas-upload-{cert.cert_id}"}

    def _do_GetUserCertificateDetail(self, account: AliCloudAccount, params: Mapping[str, str]) -> dict[str, Any]:
        cert = self._owned(account, params)
        leaf = cert.leaf()
        body: dict[str, Any] = {
            "Id": cert.cert_id,
            "Name": cert.name,
            "Common": cert.common_name,
            "Sans": ",".join(cert.sans),
            "SerialNo": cert.serial,
            "Issuer": cert.issuer,
            "OrgName": "",
            "StartDate": _date(cert.not_before),
            "EndDate": _date(cert.not_after),
            "NotBefore": cert.not_before,
            "NotAfter": cert.not_after,
            "Expired": False,
            "Fingerprint": cert.fingerprint,
            "Sha2": cert.sha2,
            "BuyInAliyun": False,
            "CertIdentifier": f"{cert.cert_id}-{self.REGION}",
            "InstanceId": f"cas-upload-{cert.cert_id}",
            "Algorithm": "RSA" if "RSA" in type(leaf.public_key()).__name__ else "ECC",
        }
        if params.get("CertFilter", "false").lower() != "true":
            body["Cert"] = cert.cert_pem
            body["Key"] = cert.key_pem
        return body

    def _do_ListUserCertificateOrder(self, account: AliCloudAccount, params: Mapping[str, str]) -> dict[str, Any]:
        order_type = params.get("OrderType", "CPACK")
        page = max(1, _int_param(params, "CurrentPage", 1))
        size = max(1, min(500, _int_param(params, "ShowSize", 50)))
        keyword = params.get("Keyword", "").lower()
        items: list[CasCertificate] = []
        if order_type in ("UPLOAD", "CERT"):
            items = [
                c
                for c in self._certs.values()
                if c.owner_id == account.owner_id
                and (
                    not keyword
                    or any(keyword in n.lower() for n in (c.common_name, *c.sans))
                    or keyword == f"cas-upload-{c.cert_id}"
                )
            ]
        window = items[(page - 1) * size : page * size]
        return {
            "CertificateOrderList": [c.order_item() for c in window],
            "TotalCount": len(items),
            "CurrentPage": page,
            "ShowSize": size,
        }

    def _do_DeleteUserCertificate(self, account: AliCloudAccount, params: Mapping[str, str]) -> dict[str, Any]:
        cert = self._owned(account, params)
        if cert.bound_by:
            raise ApiError(
                IN_USE, 400, f"The certificate is in use by {', '.join(sorted(cert.bound_by))} and cannot be deleted."
            )
        del self._certs[cert.cert_id]
        self.deleted.append(cert.cert_id)
        return {}


def _parse(cert_id: int, owner_id: str, name: str, cert_pem: str, key_pem: str) -> CasCertificate:
    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        raise ApiError("InvalidCert", 400, "The certificate content is not valid PEM.") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ApiError("InvalidKey", 400, "The private key is not valid PEM.") from None
    leaf = chain[0]
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ApiError("KeyCertMismatch", 400, "The private key does not match the certificate.")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        sans = []
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer_cn = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    der = leaf.public_bytes(serialization.Encoding.DER)
    return CasCertificate(
        cert_id=cert_id,
        owner_id=owner_id,
        name=name,
        cert_pem=cert_pem,
        key_pem=key_pem,
        common_name=str(cn[0].value) if cn else (sans[0] if sans else ""),
        sans=list(sans),
        serial=format(leaf.serial_number, "X"),
        issuer=str(issuer_cn[0].value) if issuer_cn else leaf.issuer.rfc4514_string(),
        not_before=int(leaf.not_valid_before_utc.timestamp() * 1000),
        not_after=int(leaf.not_valid_after_utc.timestamp() * 1000),
        fingerprint=hashlib.sha1(der).hexdigest().upper(),  # the service's fingerprint field
        sha2=hashlib.sha256(der).hexdigest().upper(),
    )
