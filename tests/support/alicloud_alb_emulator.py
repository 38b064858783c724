"""An Alibaba Cloud Application Load Balancer (ALB 2020-06-16) API emulator for the ``alicloud-alb`` tests.

It keeps listeners with their default certificate and additional certificates, by the
CAS ID form ALB uses (``<CertId>-<region>``), and their asynchronous life: a change
(``UpdateListenerAttribute``, ``AssociateAdditionalCertificatesWithListener``,
``DissociateAdditionalCertificatesFromListener``) answers a ``JobId`` and puts the
listener in ``Configuring`` for the next ``configuring_polls`` ``GetListenerAttribute``
calls; meanwhile another change is refused with ``IncorrectStatus.Listener``. Field names
and shapes follow ``alibabacloud-alb20200616``'s models. Given a :class:`CasEmulator`,
certificate IDs must name one of its certificates (``ResourceNotFound.Certificate``
otherwise) and the certificates a listener uses are marked as in use there, so CAS
refuses to delete them.

Codes not confirmed for ALB itself (taken from NLB's reference and the Terraform
provider's retry lists, which use the same names): ``IncorrectStatus.Listener``,
``ResourceNotFound.Listener``, ``ResourceNotFound.Certificate``,
``ResourceAlreadyAssociated.Certificate``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tests.support.alicloud_cas_emulator import CasEmulator
from tests.support.alicloud_emulator import AliCloudAccount, AliCloudRpcEmulator, ApiError, _int_param, _missing

ACTIONS = (
    "GetListenerAttribute",
    "UpdateListenerAttribute",
    "ListListenerCertificates",
    "AssociateAdditionalCertificatesWithListener",
    "DissociateAdditionalCertificatesFromListener",
)
_CAS_ID = re.compile(r"(\d+)-([a-z0-9-]+)")


@dataclass
class Listener:
    id: str
    load_balancer: str
    port: int = 443
    protocol: str = "HTTPS"
    status: str = "Running"
    default: str | None = None
    additional: dict[str, str] = field(default_factory=dict)  # id -> Associating / Associated
    settings: dict[str, Any] = field(default_factory=dict)
    polls_left: int = 0


class AlbEmulator(AliCloudRpcEmulator):
    """ALB on ``http://127.0.0.1:<port>`` (see the module docstring)."""

    PRODUCT: ClassVar[str] = "Alb"
    RAM_PREFIX: ClassVar[str] = "alb"
    API_VERSION: ClassVar[str] = "2020-06-16"
    ACTIONS: ClassVar[tuple[str, ...]] = ACTIONS
    HOST_ID: ClassVar[str] = "alb.cn-hangzhou.aliyuncs.com"

    def __init__(
        self,
        accounts: Iterable[AliCloudAccount] = (),
        *,
        cas: CasEmulator | None = None,
        configuring_polls: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(accounts, **kwargs)
        self.cas = cas
        self.configuring_polls = configuring_polls
        self.listeners: dict[str, Listener] = {}
        self.jobs: list[tuple[str, str]] = []  # (action, listener) per accepted change

    def add_listener(self, listener_id: str, protocol: str = "HTTPS", default: str | None = None,
                     load_balancer: str = "alb-e2e0000000000000") -> Listener:
        with self._lock:
            listener = Listener(listener_id, load_balancer, 443 if protocol == "HTTPS" else 80, protocol,
                                default=default, settings={"GzipEnabled": True, "Http2Enabled": True,
                                                           "IdleTimeout": 15, "RequestTimeout": 60,
                                                           "SecurityPolicyId": "tls_cipher_policy_1_0"})
            self.listeners[listener_id] = listener
            self._bind(listener)
            return listener

    def listener(self, listener_id: str) -> Listener:
        with self._lock:
            return self.listeners[listener_id]

    # -- actions --

    def _listener(self, params: dict[str, str]) -> Listener:
        listener_id = params.get("ListenerId")
        if not listener_id:
            raise _missing("ListenerId")
        listener = self.listeners.get(listener_id)
        if listener is None:
            raise ApiError("ResourceNotFound.Listener", 404, f"The specified resource {listener_id} is not found.")
        return listener

    def _changeable(self, params: dict[str, str]) -> Listener:
        listener = self._listener(params)
        if listener.status != "Running":
            raise ApiError("IncorrectStatus.Listener", 400, f"The status of listener [{listener.id}] is incorrect.")
        return listener

    def _certificates(self, params: dict[str, str]) -> list[str]:
        found = []
        for n in range(1, 21):
            value = params.get(f"Certificates.{n}.CertificateId")
            if value is None:
                break
            self._check_certificate(value)
            found.append(value)
        return found

    def _check_certificate(self, cert_id: str) -> None:
        if self.cas is None:
            return
        match = _CAS_ID.fullmatch(cert_id)
        if match is None or match.group(2) != self.cas.REGION or self.cas.certificate(int(match.group(1))) is None:
            raise ApiError("ResourceNotFound.Certificate", 404, f"The specified resource {cert_id} is not found.")

    def _configuring(self, listener: Listener, action: str) -> dict[str, Any]:
        listener.status = "Configuring"
        listener.polls_left = self.configuring_polls
        job = str(uuid.uuid4())
        self.jobs.append((action, listener.id))
        if self.configuring_polls <= 0:
            self._settle(listener)
        return {"JobId": job}

    def _settle(self, listener: Listener) -> None:
        listener.status = "Running"
        listener.additional = {k: "Associated" for k, v in listener.additional.items() if v != "Dissociating"}
        self._bind(listener)

    def _bind(self, listener: Listener) -> None:
        if self.cas is None:
            return
        self.cas.unbind(f"alb:{listener.id}")
        for cert_id in [listener.default, *listener.additional]:
            match = _CAS_ID.fullmatch(cert_id or "")
            if match and self.cas.certificate(int(match.group(1))) is not None:
                self.cas.bind(int(match.group(1)), f"alb:{listener.id}")

    def _do_GetListenerAttribute(self, account: AliCloudAccount, params: dict[str, str]) -> dict[str, Any]:
        listener = self._listener(params)
        if listener.status == "Configuring":
            listener.polls_left -= 1
            if listener.polls_left < 0:
                self._settle(listener)
        return {
            "ListenerId": listener.id,
            "LoadBalancerId": listener.load_balancer,
            "ListenerPort": listener.port,
            "ListenerProtocol": listener.protocol,
            "ListenerStatus": listener.status,
            "ListenerDescription": f"{listener.protocol}_{listener.port}",
            "Certificates": [{"CertificateId": listener.default}] if listener.default else [],
            "CaCertificates": [],
            "CaEnabled": False,
            "DefaultActions": [{"Type": "ForwardGroup", "ForwardGroupConfig": {
                "ServerGroupTuples": [{"ServerGroupId": "sgp-e2e000000000"}]}}],
            "XForwardedForConfig": {"XForwardedForEnabled": True},
            "Tags": [],
            **listener.settings,
        }

    def _do_UpdateListenerAttribute(self, account: AliCloudAccount, params: dict[str, str]) -> dict[str, Any]:
        listener = self._changeable(params)
        certificates = self._certificates(params)
        if len(certificates) > 1:
            raise ApiError("OperationFailed.CertificateNumExceeded", 400, "Only one default certificate is supported.")
        if certificates:
            if listener.protocol not in ("HTTPS", "QUIC"):
                raise ApiError("OperationDenied.NotHttpsListener", 400, "The listener is not an HTTPS listener.")
            listener.default = certificates[0]
        return self._configuring(listener, "UpdateListenerAttribute")

    def _do_ListListenerCertificates(self, account: AliCloudAccount, params: dict[str, str]) -> dict[str, Any]:
        listener = self._listener(params)
        kind = params.get("CertificateType")
        items: list[dict[str, Any]] = []
        if kind in (None, "", "Server"):
            if listener.default:
                items.append({"CertificateId": listener.default, "CertificateType": "Server", "IsDefault": True,
                              "Status": "Associated"})
            items += [{"CertificateId": k, "CertificateType": "Server", "IsDefault": False, "Status": v}
                      for k, v in listener.additional.items()]
        size = _int_param(params, "MaxResults", 20)
        start = _int_param(params, "NextToken", 0) if params.get("NextToken") else 0
        page = items[start : start + size]
        token = str(start + size) if start + size < len(items) else ""
        return {"Certificates": page, "MaxResults": size, "NextToken": token, "TotalCount": len(items)}

    def _do_AssociateAdditionalCertificatesWithListener(
        self, account: AliCloudAccount, params: dict[str, str]
    ) -> dict[str, Any]:
        listener = self._changeable(params)
        certificates = self._certificates(params)
        if not certificates:
            raise _missing("Certificates")
        for cert_id in certificates:
            if cert_id in listener.additional:
                raise ApiError("ResourceAlreadyAssociated.Certificate", 400,
                               f"The specified resource {cert_id} is already associated.")
        for cert_id in certificates:
            listener.additional[cert_id] = "Associating"
        return self._configuring(listener, "AssociateAdditionalCertificatesWithListener")

    def _do_DissociateAdditionalCertificatesFromListener(
        self, account: AliCloudAccount, params: dict[str, str]
    ) -> dict[str, Any]:
        listener = self._changeable(params)
        certificates = self._certificates(params)
        if not certificates:
            raise _missing("Certificates")
        for cert_id in certificates:
            if cert_id not in listener.additional:
                raise ApiError("ResourceNotFound.Certificate", 404, f"The specified resource {cert_id} is not found.")
        for cert_id in certificates:
            listener.additional[cert_id] = "Dissociating"
        return self._configuring(listener, "DissociateAdditionalCertificatesFromListener")
