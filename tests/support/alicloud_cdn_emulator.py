"""Alibaba Cloud CDN (2018-05-10) and DCDN (2018-01-15) emulators: a domain's HTTPS certificate.

The two APIs are the same call under two names, so :class:`CdnEmulator` does the work
and :class:`DcdnEmulator` only renames: ``Set[Dcdn]DomainSSLCertificate`` (DomainName,
SSLProtocol on/off, CertType cas/upload, CertId [+CertRegion] or SSLPub+SSLPri,
CertName) and ``Describe[Dcdn]DomainCertificateInfo`` (``CertInfos.CertInfo[]``, field
names from the official SDKs ``alibabacloud-cdn20180510`` / ``alibabacloud-dcdn20180115``).

Linked to a :class:`~tests.support.alicloud_cas_emulator.CasEmulator` (``cas=``), as the
real services are to CAS: ``CertType=cas`` looks the certificate up there (same owner)
and binds it to the domain, so CAS refuses to delete it while in use; ``CertType=upload``
stores the certificate in CAS under ``CertName`` (the real console lists such uploads
in CAS), reusing an upload of the same name and content. Without ``cas`` the emulator
numbers uploads itself and refuses ``CertType=cas``.

Error codes where the documentation gives none are this emulator's choice:
``InvalidDomain.NotFound`` (unknown domain), ``InvalidCertificate.NotFound`` (unknown
CertId), ``InvalidCertName.Duplicate`` (an upload name already used by another certificate),
``SSLPub.MissingParameter`` / ``SSLPri.MissingParameter``, ``KeyCertMismatch``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from tests.support.alicloud_cas_emulator import CasCertificate, CasEmulator, _parse
from tests.support.alicloud_emulator import AliCloudAccount, AliCloudRpcEmulator, ApiError, _int_param, _missing

__all__ = ["CdnDomainCert", "CdnEmulator", "DcdnEmulator"]


@dataclass
class CdnDomainCert:
    """A domain's HTTPS setting as the service keeps it."""

    domain: str
    owner_id: str
    ssl: bool = False
    cert_type: str = ""
    cert_id: int | None = None
    cert_name: str = ""
    cert_region: str = ""
    cert: CasCertificate | None = None
    updated: int = 0


class CdnEmulator(AliCloudRpcEmulator):
    """The CDN API's certificate calls; ``domains`` are the accelerated domains of the default owner."""

    PRODUCT: ClassVar[str] = "Cdn"
    RAM_PREFIX: ClassVar[str] = "cdn"
    API_VERSION: ClassVar[str] = "2018-05-10"
    SET_ACTION: ClassVar[str] = "SetCdnDomainSSLCertificate"
    DESCRIBE_ACTION: ClassVar[str] = "DescribeDomainCertificateInfo"
    ACTIONS: ClassVar[tuple[str, ...]] = (SET_ACTION, DESCRIBE_ACTION)
    HOST_ID: ClassVar[str] = "cdn.aliyuncs.com"
    #: ``SecurityToken`` is also a (legacy) business parameter of the set call; it is never the domain's.
    COMMON_PARAMS: ClassVar[frozenset[str]] = AliCloudRpcEmulator.COMMON_PARAMS | {"OwnerId"}

    def __init__(
        self,
        accounts: Iterable[AliCloudAccount] = (),
        *,
        domains: Iterable[str] = (),
        owner_id: str = "1234567890123456",
        cas: CasEmulator | None = None,
        clock_skew: timedelta = timedelta(0),
        port: int = 0,
    ) -> None:
        self.cas = cas
        self._domains: dict[str, CdnDomainCert] = {d.lower(): CdnDomainCert(d.lower(), owner_id) for d in domains}
        self._ids = itertools.count(19_000_001)
        super().__init__(accounts, clock_skew=clock_skew, port=port)
        # every action name is dispatched to the generic handlers below
        setattr(self, "_do_" + self.SET_ACTION, self._set)
        setattr(self, "_do_" + self.DESCRIBE_ACTION, self._describe)

    # -- inspection --

    def domain(self, name: str) -> CdnDomainCert:
        with self._lock:
            return self._domains[name.lower()]

    def add_domain(self, name: str, owner_id: str = "1234567890123456") -> None:
        with self._lock:
            self._domains[name.lower()] = CdnDomainCert(name.lower(), owner_id)

    # -- actions --

    def _owned(self, account: AliCloudAccount, params: Mapping[str, str]) -> CdnDomainCert:
        if not params.get("DomainName"):
            raise _missing("DomainName")
        entry = self._domains.get(params["DomainName"].lower())
        if entry is None or entry.owner_id != account.owner_id:
            raise ApiError("InvalidDomain.NotFound", 404, "The specified domain does not exist.")
        return entry

    def _set(self, account: AliCloudAccount, params: Mapping[str, str]) -> dict[str, Any]:
        entry = self._owned(account, params)
        protocol = params.get("SSLProtocol", "")
        if protocol not in ("on", "off"):
            raise _missing("SSLProtocol") if not protocol else ApiError(
                "InvalidSSLProtocol.ValueNotSupported", 400, "The specified SSLProtocol is not supported."
            )
        user = f"{self.RAM_PREFIX}:{entry.domain}"
        if protocol == "off":
            self._unbind(user)
            entry.ssl, entry.cert_type, entry.cert_id, entry.cert_name, entry.cert = False, "", None, "", None
            return {}
        cert_type = params.get("CertType", "upload")
        if cert_type == "cas":
            if self.cas is None or not params.get("CertId"):
                raise _missing("CertId")
            cert = self.cas.certificate(_int_param(params, "CertId", 0))
            if cert is None or cert.owner_id != account.owner_id:
                raise ApiError("InvalidCertificate.NotFound", 404, "The specified certificate does not exist.")
            region = params.get("CertRegion", "cn-hangzhou")
            if region not in ("cn-hangzhou", "ap-southeast-1"):
                raise ApiError("InvalidCertRegion.ValueNotSupported", 400, "The specified CertRegion is not supported.")
            name = cert.name
        elif cert_type == "upload":
            for field_name in ("SSLPub", "SSLPri"):
                if not params.get(field_name):
                    raise ApiError(f"{field_name}.MissingParameter", 400, f"The parameter {field_name} is required.")
            name = params.get("CertName") or f"cert-{next(self._ids)}"
            cert = self._upload(account.owner_id, name, params["SSLPub"], params["SSLPri"])
            region = "cn-hangzhou"
        else:
            raise ApiError("InvalidCertType.ValueNotSupported", 400, "The specified CertType is not supported.")
        self._unbind(user)
        if self.cas is not None:
            self.cas.bind(cert.cert_id, user)
        entry.ssl, entry.cert_type, entry.cert_id, entry.cert_name, entry.cert_region, entry.cert = (
            True, cert_type, cert.cert_id, name, region, cert,
        )
        entry.updated = int(self.now().timestamp() * 1000)
        return {}

    def _unbind(self, user: str) -> None:
        if self.cas is not None:
            self.cas.unbind(user)

    def _upload(self, owner_id: str, name: str, cert_pem: str, key_pem: str) -> CasCertificate:
        if self.cas is None:
            return _parse(next(self._ids), owner_id, name, cert_pem, key_pem)
        same = [c for c in self.cas.certificates(owner_id) if c.name == name]
        if same:
            if same[0].cert_pem.strip() == cert_pem.strip():
                return same[0]
            raise ApiError("InvalidCertName.Duplicate", 400, "The certificate name already exists.")
        return self.cas.upload(owner_id, name, cert_pem, key_pem)

    def _describe(self, account: AliCloudAccount, params: Mapping[str, str]) -> dict[str, Any]:
        entry = self._owned(account, params)
        return {"CertInfos": {"CertInfo": [self._cert_info(entry)]}}

    def _cert_info(self, entry: CdnDomainCert) -> dict[str, Any]:
        info: dict[str, Any] = {
            "DomainName": entry.domain,
            "ServerCertificateStatus": "on" if entry.ssl else "off",
            "Status": "success" if entry.ssl else "",
            "DomainCnameStatus": "online",
        }
        cert = entry.cert
        if entry.ssl and cert is not None:
            info.update(
                {
                    "CertId": str(entry.cert_id),
                    "CertName": entry.cert_name,
                    "CertType": entry.cert_type,
                    "CertRegion": entry.cert_region,
                    "CertDomainName": cert.common_name,
                    "CertOrg": cert.issuer,
                    "CertStartTime": _iso(cert.not_before),
                    "CertExpireTime": _iso(cert.not_after),
                    "CertUpdateTime": _iso(entry.updated),
                    "CertLife": f"{max(1, (cert.not_after - cert.not_before) // 86_400_000)} days",
                    "ServerCertificate": cert.cert_pem,
                }
            )
        return info


class DcdnEmulator(CdnEmulator):
    """The DCDN API: the CDN calls under DCDN's names, with DCDN's describe fields."""

    PRODUCT: ClassVar[str] = "dcdn"
    RAM_PREFIX: ClassVar[str] = "dcdn"
    API_VERSION: ClassVar[str] = "2018-01-15"
    SET_ACTION: ClassVar[str] = "SetDcdnDomainSSLCertificate"
    DESCRIBE_ACTION: ClassVar[str] = "DescribeDcdnDomainCertificateInfo"
    ACTIONS: ClassVar[tuple[str, ...]] = (SET_ACTION, DESCRIBE_ACTION)
    HOST_ID: ClassVar[str] = "dcdn.aliyuncs.com"

    def _cert_info(self, entry: CdnDomainCert) -> dict[str, Any]:
        info = super()._cert_info(entry)
        info["SSLProtocol"] = info.pop("ServerCertificateStatus")
        if "ServerCertificate" in info:
            info["SSLPub"] = info.pop("ServerCertificate")
        for name in ("DomainCnameStatus", "CertUpdateTime"):
            info.pop(name, None)
        return info


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
