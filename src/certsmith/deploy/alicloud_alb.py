"""The ``alicloud-alb`` deploy target: the CAS certificate on an Application Load Balancer's HTTPS listener.

ALB (API 2020-06-16) takes certificates only from CAS, by the globally unique ID
``<CertId>-<region>`` (the SDK's ``CertificateId`` docs: "ends with a region ID, for
example, 1011****-cn-hangzhou"). So this target needs ``alicloud-cas`` in the same
lineage: it uses what that target uploaded in this run (``DeployContext.shared``).
Without it the command is refused before anything is ordered
(:func:`certsmith.deploy.base.check_requirements`, from ``TargetInfo.requires``), and a
run where the CAS target did not provide a certificate fails with the same advice.

``mode=default`` makes it the listener's default certificate (``UpdateListenerAttribute``
with ``Certificates.1.CertificateId``); ``mode=additional`` associates it as an
additional (SNI) certificate (``AssociateAdditionalCertificatesWithListener``) and
:meth:`retire` dissociates the one it replaced. Both calls are asynchronous: the
listener goes ``Configuring`` and refuses other changes (``IncorrectStatus.Listener``)
until it is ``Running`` again, so the target waits for that -- polling
``GetListenerAttribute``, bounded by ``wait=`` seconds -- before and after a change.
The certificate already in place (``GetListenerAttribute`` for the default one,
``ListListenerCertificates`` for additional ones) means nothing changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from certsmith.deploy.alicloud_slb import target_env
from certsmith.deploy.base import (
    BaseTarget,
    DeployContext,
    DeployOutcome,
    TargetInfo,
    TargetOption,
    parse_seconds,
    stored_list,
)
from certsmith.dns.alicloud_rpc import AliCloudError, ApiSettings, Product
from certsmith.errors import ConfigError, DeployError

if TYPE_CHECKING:
    from certsmith.dns.alicloud_rpc import RpcClient

NAME = "alicloud-alb"
CAS_KEY = "alicloud-cas"

ALB = Product(
    name="ALB",
    version="2020-06-16",
    endpoint="alb.{region}.aliyuncs.com",
    endpoint_var="ALICLOUD_ALB_ENDPOINT",
    ram_actions=(
        "alb:GetListenerAttribute",
        "alb:UpdateListenerAttribute",
        "alb:ListListenerCertificates",
        "alb:AssociateAdditionalCertificatesWithListener",
        "alb:DissociateAdditionalCertificatesFromListener",
    ),
    ram_policy="AliyunALBFullAccess",
    needs_region=False,  # the region is in the endpoint (ALICLOUD_REGION fills {region}); no RegionId parameter
)

MODES = ("default", "additional")
_BUSY = frozenset({"Configuring", "Provisioning"})
_CONFLICT = "IncorrectStatus.Listener"
_NOT_ASSOCIATED = frozenset({"ResourceNotFound.Certificate", "ResourceNotFound.ListenerCertificate"})
FIRST_POLL = 0.2
MAX_POLL = 3.0


@dataclass(frozen=True)
class AlbConfig:
    listener: str
    mode: str
    wait: float
    settings: ApiSettings

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        listener = options["listener"].strip()
        if not listener.startswith("lsn-") or any(c.isspace() or c in "/?#&=" for c in listener):
            raise ConfigError(f"{NAME}: listener={listener!r} is not an ALB listener ID (lsn-...)")
        mode = (options.get("mode") or "default").strip().lower()
        if mode not in MODES:
            raise ConfigError(f"{NAME}: mode={options['mode']!r} must be default or additional")
        wait = parse_seconds(f"{NAME}: wait", options["wait"]) if options.get("wait") else 120.0
        return cls(listener, mode, wait, ApiSettings.from_env(ALB, env, target=NAME))


class AlbTarget(BaseTarget[AlbConfig]):
    info: ClassVar[TargetInfo] = TargetInfo(
        name=NAME,
        title="Alibaba Cloud Application Load Balancer (ALB) HTTPS listener",
        description="Sets the certificate alicloud-cas uploaded as the listener's default certificate, or "
        "associates it as an additional one (mode=additional, the replaced one is dissociated), and waits "
        "until the listener is Running again. Needs --deploy alicloud-cas too. RAM actions: "
        + ", ".join(ALB.ram_actions) + ".",
        options=(
            TargetOption("listener", "ID of the HTTPS listener (lsn-...)", required=True),
            TargetOption("mode", "default: the listener's default certificate; additional: an SNI certificate",
                         default="default"),
            TargetOption("wait", "seconds to wait for the listener to finish configuring", default="120"),
        ),
        env=target_env(ALB),
        example="certsmith issue -d www.example.com --deploy alicloud-cas --deploy alicloud-alb:listener=lsn-abc",
        links=(
            "https://www.alibabacloud.com/help/en/slb/application-load-balancer/developer-reference/"
            "api-alb-2020-06-16-updatelistenerattribute",
        ),
        requires=(CAS_KEY,),
    )

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        return cls(AlbConfig.from_options(options, env))

    def _client(self) -> RpcClient:
        from certsmith.dns.alicloud_rpc import RpcClient

        return RpcClient(self.config.settings)

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        cert_id = _cas_certificate(context)
        listener_id = self.config.listener
        state = context.state
        async with self._client() as client:
            listener = await self._settled(client)
            protocol = str(listener.get("ListenerProtocol") or "")
            if protocol and protocol.upper() not in ("HTTPS", "QUIC"):
                raise DeployError(f"{NAME}: listener {listener_id} is {protocol}; certificates go on HTTPS listeners")
            if self.config.mode == "default":
                default = [str(c.get("CertificateId")) for c in listener.get("Certificates") or []
                           if isinstance(c, Mapping)]
                if default[:1] == [cert_id]:
                    state.update(certificate_id=cert_id, serial=context.serial)
                    return DeployOutcome(unchanged=[f"listener {listener_id} has default certificate {cert_id}"])
                await self._change(client, "UpdateListenerAttribute",
                                   {"ListenerId": listener_id, "Certificates.1.CertificateId": cert_id})
                state.update(certificate_id=cert_id, serial=context.serial)
                return DeployOutcome(changed=[f"set default certificate {cert_id} on listener {listener_id}"])

            associated = await self._additional(client)
            previous = [str(p) for p in stored_list(state.get("previous")) if str(p) != cert_id]
            ours = state.get("certificate_id")
            if ours and ours != cert_id and ours not in previous:
                previous.append(str(ours))
            if cert_id in associated:
                state.update(certificate_id=cert_id, serial=context.serial, previous=previous)
                return DeployOutcome(unchanged=[f"listener {listener_id} has additional certificate {cert_id}"])
            await self._change(client, "AssociateAdditionalCertificatesWithListener",
                               {"ListenerId": listener_id, "Certificates.1.CertificateId": cert_id})
            state.update(certificate_id=cert_id, serial=context.serial, previous=previous)
            return DeployOutcome(changed=[f"associated additional certificate {cert_id} with listener {listener_id}"])

    async def retire(self, context: DeployContext) -> list[str]:
        """``mode=additional``: dissociate the certificates this target associated before."""
        previous = [str(p) for p in stored_list(context.state.get("previous"))]
        if self.config.mode != "additional" or not previous:
            return []
        done: list[str] = []
        async with self._client() as client:
            associated = await self._additional(client)
            for index, cert_id in enumerate(previous):
                if cert_id == context.state.get("certificate_id"):
                    continue
                if cert_id not in associated:
                    done.append(f"additional certificate {cert_id} was already dissociated")
                    continue
                try:
                    await self._settled(client)
                    await self._change(client, "DissociateAdditionalCertificatesFromListener",
                                       {"ListenerId": self.config.listener, "Certificates.1.CertificateId": cert_id})
                except (AliCloudError, DeployError):
                    context.state["previous"] = previous[index:]
                    raise
                done.append(f"dissociated additional certificate {cert_id} from listener {self.config.listener}")
        context.state["previous"] = []
        return done

    async def _additional(self, client: RpcClient) -> set[str]:
        """The IDs of the listener's additional server certificates (associated or being associated)."""
        found: set[str] = set()
        token = ""
        for _ in range(100):  # pages of 100; a listener holds far fewer
            params: dict[str, str | int | bool] = {
                "ListenerId": self.config.listener, "CertificateType": "Server", "MaxResults": 100}
            if token:
                params["NextToken"] = token
            answer = await client.call("ListListenerCertificates", params)
            for item in answer.get("Certificates") or []:
                if isinstance(item, Mapping) and not item.get("IsDefault") and item.get("Status") != "Dissociating":
                    found.add(str(item.get("CertificateId")))
            token = str(answer.get("NextToken") or "")
            if not token:
                break
        return found

    async def _change(self, client: RpcClient, action: str, params: Mapping[str, str | int | bool]) -> None:
        """Send an asynchronous change, retrying while another change is still configuring; wait for Running."""
        deadline = time.monotonic() + self.config.wait
        delay = FIRST_POLL
        while True:
            try:
                await client.call(action, params)
                break
            except AliCloudError as exc:
                if exc.code != _CONFLICT or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(MAX_POLL, delay * 2)
        await self._settled(client, deadline)

    async def _settled(self, client: RpcClient, deadline: float | None = None) -> dict[str, Any]:
        """``GetListenerAttribute`` once the listener is no longer configuring (bounded by ``wait``)."""
        deadline = deadline if deadline is not None else time.monotonic() + self.config.wait
        delay = FIRST_POLL
        while True:
            listener = await client.call("GetListenerAttribute", {"ListenerId": self.config.listener})
            status = str(listener.get("ListenerStatus") or "")
            if status not in _BUSY:
                return listener
            if time.monotonic() + delay > deadline:
                raise DeployError(
                    f"{NAME}: listener {self.config.listener} is still {status} after {self.config.wait:g} s; "
                    "run certsmith deploy again later (or raise wait=)"
                )
            await asyncio.sleep(delay)
            delay = min(MAX_POLL, delay * 2)


def _cas_certificate(context: DeployContext) -> str:
    """The ALB form (``<CertId>-<region>``) of the certificate alicloud-cas uploaded in this run."""
    cas = context.shared.get(CAS_KEY)
    if not isinstance(cas, Mapping) or not cas.get("cert_id"):
        raise ConfigError(f"{NAME} uses the CAS certificate: add --deploy alicloud-cas before alicloud-alb "
                          "(or fix the alicloud-cas failure reported above)")
    resource = cas.get("resource_id")
    if resource:
        return str(resource)
    if not cas.get("region"):
        raise DeployError(f"{NAME}: alicloud-cas gave no region for CertId {cas['cert_id']}")
    return f"{cas['cert_id']}-{cas['region']}"
