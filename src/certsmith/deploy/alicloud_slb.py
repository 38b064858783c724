"""The ``alicloud-slb`` deploy target: the certificate of a Classic Load Balancer's HTTPS listener.

Classic SLB (API 2014-05-15) serves HTTPS with a *server certificate* uploaded to SLB in
the load balancer's region. One deploy:

1. reads the listener (``DescribeLoadBalancerHTTPSListenerAttribute``); when it already
   uses the server certificate this target uploaded for the current serial, nothing
   changes;
2. uploads the certificate once per serial (``UploadServerCertificate``, named
   ``certsmith-<lineage>-<serial[:16]>``): by reference to the CAS certificate when the
   ``alicloud-cas`` target ran before it in this run, else the PEM full chain and key.
   An upload for this serial left by an earlier run (recorded in the state, or found by
   its name) is reused, never duplicated. SLB accepts one name twice, so the upload is
   not resent blindly either: after a failure that may hide a stored upload (no answer,
   HTTP 5xx) it is looked up by its name first (:meth:`RpcClient.create`);
3. sets it on the listener (``SetLoadBalancerHTTPSListenerAttribute``), sending back the
   listener's other settings read in step 1: older API versions reset the settings a
   call leaves out to their defaults, and the service's current reference lists only
   ``LoadBalancerId`` and ``ListenerPort`` as required, so sending them back is the one
   behaviour right for both;
4. remembers the new ID in the state; the server certificate it replaced (only one this
   target uploaded, never one set by hand) is deleted by :meth:`retire`, after every
   target of the lineage succeeded. A certificate SLB still uses elsewhere
   (``CertificateAndPrivateKeyIsRefered``) is kept, reported, and tried again next time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from certsmith.deploy import base
from certsmith.deploy.base import BaseTarget, DeployContext, DeployOutcome, TargetInfo, TargetOption, stored_list
from certsmith.dns.alicloud_rpc import CREDENTIAL_ENV, REGION_ENV, SIGNATURE_ENV, AliCloudError, ApiSettings, Product
from certsmith.errors import ConfigError, DeployError

if TYPE_CHECKING:
    from certsmith.dns.alicloud_rpc import RpcClient
    from certsmith.dns.base import EnvVar as ProviderEnvVar

log = logging.getLogger(__name__)

NAME = "alicloud-slb"

SLB = Product(
    name="SLB",
    version="2014-05-15",
    endpoint="slb.aliyuncs.com",
    endpoint_var="ALICLOUD_SLB_ENDPOINT",
    ram_actions=(
        "slb:DescribeLoadBalancerHTTPSListenerAttribute",
        "slb:SetLoadBalancerHTTPSListenerAttribute",
        "slb:UploadServerCertificate",
        "slb:DescribeServerCertificates",
        "slb:DeleteServerCertificate",
    ),
    ram_policy="AliyunSLBFullAccess",
    needs_region=True,
)

#: The listener settings sent back with the new certificate, always (when the listener has them).
_CARRIED = (
    "Bandwidth",
    "Scheduler",
    "StickySession",
    "HealthCheck",
    "XForwardedFor",
    "XForwardedFor_SLBIP",
    "XForwardedFor_SLBID",
    "XForwardedFor_proto",
    "XForwardedFor_SLBPORT",
    "XForwardedFor_ClientSrcPort",
    "Gzip",
    "EnableHttp2",
    "TLSCipherPolicy",
    "IdleTimeout",
    "RequestTimeout",
    "Description",
    "CACertificateId",
    "AclStatus",
)
#: Settings that only apply (and are only accepted) when another one has a given value.
_CONDITIONAL: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("StickySession", "on", ("StickySessionType",)),
    ("StickySessionType", "insert", ("CookieTimeout",)),
    ("StickySessionType", "server", ("Cookie",)),
    (
        "HealthCheck",
        "on",
        (
            "HealthCheckDomain",
            "HealthCheckURI",
            "HealthCheckConnectPort",
            "HealthyThreshold",
            "UnhealthyThreshold",
            "HealthCheckTimeout",
            "HealthCheckInterval",
            "HealthCheckHttpCode",
            "HealthCheckMethod",
        ),
    ),
    ("AclStatus", "on", ("AclType", "AclId")),
)

_IN_USE = "CertificateAndPrivateKeyIsRefered"
_GONE = "ServerCertificateId.NotFound"
_LOAD_BALANCER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def target_env(product: Product) -> tuple[base.EnvVar, ...]:
    """The environment an Alibaba Cloud target reads, as ``certsmith deploy list`` shows it."""
    variables: tuple[ProviderEnvVar, ...] = (*CREDENTIAL_ENV, product.endpoint_env(), REGION_ENV, SIGNATURE_ENV)
    shown = []
    for var in variables:
        description = var.description
        if var.aliases:
            description += f" (also read as {', '.join(var.aliases)})"
        required = var.required or (var is REGION_ENV and product.needs_region)
        shown.append(base.EnvVar(var.name, description, required=required, secret=var.secret, default=var.default))
    return tuple(shown)


def upload_name(lineage: str, serial: str, limit: int = 80) -> str:
    """``certsmith-<lineage>-<serial[:16]>`` in the characters SLB allows (letters, digits, ``.``, ``_``, ``-``)."""
    tail = "-" + serial.lower()[:16]
    stem = "certsmith-" + re.sub(r"[^A-Za-z0-9._-]", "_", lineage)
    return stem[: limit - len(tail)] + tail


@dataclass(frozen=True)
class SlbConfig:
    load_balancer: str
    port: int
    settings: ApiSettings

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        load_balancer = options["load-balancer"].strip()
        if not _LOAD_BALANCER_ID.fullmatch(load_balancer):
            raise ConfigError(f"{NAME}: load-balancer={load_balancer!r} is not a load balancer ID (e.g. lb-bp1...)")
        text = options.get("port") or "443"
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ConfigError(f"{NAME}: port={text!r} must be the HTTPS listener's port, 1 to 65535")
        return cls(load_balancer, int(text), ApiSettings.from_env(SLB, env, target=NAME))


class SlbTarget(BaseTarget[SlbConfig]):
    info: ClassVar[TargetInfo] = TargetInfo(
        name=NAME,
        title="Alibaba Cloud Classic Load Balancer (SLB/CLB) HTTPS listener",
        description="Uploads the certificate as an SLB server certificate in ALICLOUD_REGION (by reference to the "
        "CAS certificate when alicloud-cas is also configured) and sets it on the HTTPS listener, keeping the "
        "listener's other settings; the server certificate it replaced is deleted once every target succeeded. "
        "RAM actions: " + ", ".join(SLB.ram_actions) + ".",
        options=(
            TargetOption("load-balancer", "ID of the load balancer (lb-...)", required=True),
            TargetOption("port", "front-end port of its HTTPS listener", default="443"),
        ),
        env=target_env(SLB),
        example="certsmith issue -d www.example.com --deploy alicloud-slb:load-balancer=lb-bp1abc,port=443",
        links=(
            "https://www.alibabacloud.com/help/en/slb/classic-load-balancer/developer-reference/"
            "api-slb-2014-05-15-setloadbalancerhttpslistenerattribute",
        ),
    )

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        return cls(SlbConfig.from_options(options, env))

    def _client(self) -> RpcClient:
        from certsmith.dns.alicloud_rpc import RpcClient

        return RpcClient(self.config.settings)

    @property
    def _where(self) -> str:
        return f"listener {self.config.load_balancer}:{self.config.port}"

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        state = context.state
        async with self._client() as client:
            listener = await client.call(
                "DescribeLoadBalancerHTTPSListenerAttribute",
                {"LoadBalancerId": self.config.load_balancer, "ListenerPort": self.config.port},
            )
            current = str(listener.get("ServerCertificateId") or "")
            if state.get("serial") == context.serial and current and state.get("server_certificate_id") == current:
                return DeployOutcome(unchanged=[f"{self._where} uses server certificate {current}"])

            changed: list[str] = []
            cert_id = await self._existing_upload(client, context)
            if cert_id is None:
                cert_id = await self._upload(client, context)
                changed.append(f"uploaded server certificate {cert_id}")
            # Remember the upload before using it: a failure below must not lose it.
            previous = [str(p) for p in stored_list(state.get("previous")) if str(p) != cert_id]
            ours = state.get("server_certificate_id")
            if ours and ours != cert_id and ours not in previous:
                previous.append(str(ours))
            state.update(server_certificate_id=cert_id, serial=context.serial, previous=previous)

            if current != cert_id:
                params = _carried(listener)
                params.update(
                    LoadBalancerId=self.config.load_balancer,
                    ListenerPort=self.config.port,
                    ServerCertificateId=cert_id,
                )
                await client.call("SetLoadBalancerHTTPSListenerAttribute", params)
                changed.append(f"set server certificate {cert_id} on {self._where}")
            return DeployOutcome(changed=changed, unchanged=[] if changed else [f"{self._where} uses {cert_id}"])

    async def _existing_upload(self, client: RpcClient, context: DeployContext) -> str | None:
        """This serial's server certificate from an earlier run (the state's, or one with our name)."""
        name = upload_name(context.lineage, context.serial)
        answer = await client.call("DescribeServerCertificates", {})
        certificates = _listed(answer)
        recorded = context.state.get("server_certificate_id") if context.state.get("serial") == context.serial else None
        for item in certificates:
            if recorded and item.get("ServerCertificateId") == recorded:
                return str(recorded)
        for item in certificates:
            if item.get("ServerCertificateName") == name and item.get("ServerCertificateId"):
                return str(item["ServerCertificateId"])
        return None

    async def _upload(self, client: RpcClient, context: DeployContext) -> str:
        params: dict[str, str | int | bool] = {"ServerCertificateName": upload_name(context.lineage, context.serial)}
        cas = context.shared.get("alicloud-cas")
        if isinstance(cas, Mapping) and cas.get("cert_id"):
            params.update(
                AliCloudCertificateId=str(cas["cert_id"]),
                AliCloudCertificateName=str(cas.get("name") or params["ServerCertificateName"]),
                AliCloudCertificateRegionId=str(cas.get("region") or self.config.settings.region or ""),
            )
        else:
            if context.key_pem is None:
                raise DeployError(
                    f"{NAME}: this certificate was issued for your own CSR, so certsmith has no private key to upload"
                )
            params.update(
                ServerCertificate=context.fullchain_pem.decode("ascii"),
                PrivateKey=context.key_pem.decode("ascii"),
            )
        name = str(params["ServerCertificateName"])

        async def find() -> dict[str, Any] | None:  # SLB takes one name twice: never upload blindly again
            listed = _listed(await client.call("DescribeServerCertificates", {}))
            return next((dict(i) for i in listed if i.get("ServerCertificateName") == name), None)

        answer, _ = await client.create("UploadServerCertificate", params, find)
        cert_id = answer.get("ServerCertificateId")
        if not cert_id:
            raise DeployError(f"{NAME}: UploadServerCertificate answered without a ServerCertificateId")
        return str(cert_id)

    async def retire(self, context: DeployContext) -> list[str]:
        previous = [str(p) for p in stored_list(context.state.get("previous"))]
        if not previous:
            return []
        done: list[str] = []
        kept: list[str] = []
        async with self._client() as client:
            for cert_id in previous:
                if cert_id == context.state.get("server_certificate_id"):
                    continue  # never the one in use
                try:
                    await client.call("DeleteServerCertificate", {"ServerCertificateId": cert_id})
                except AliCloudError as exc:
                    if exc.code == _GONE:
                        done.append(f"server certificate {cert_id} was already deleted")
                        continue
                    if exc.code == _IN_USE:
                        log.warning("%s: server certificate %s is still in use; kept", NAME, cert_id)
                        done.append(f"kept server certificate {cert_id}: SLB still uses it (retried next run)")
                        kept.append(cert_id)
                        continue
                    context.state["previous"] = kept + previous[previous.index(cert_id) :]
                    raise
                done.append(f"deleted server certificate {cert_id}")
        context.state["previous"] = kept
        return done


def _listed(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    box = answer.get("ServerCertificates")
    items = box.get("ServerCertificate") if isinstance(box, Mapping) else None
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _carried(listener: Mapping[str, Any]) -> dict[str, str | int | bool]:
    """The listener's settings to send back with the new certificate (see the module docstring)."""
    params: dict[str, str | int | bool] = {}

    def put(name: str) -> None:
        value = listener.get(name)
        if isinstance(value, str | int | bool) and value != "":
            params[name] = value

    for name in _CARRIED:
        put(name)
    for switch, value, names in _CONDITIONAL:
        if listener.get(switch) == value:
            for name in names:
                put(name)
    if listener.get("VServerGroupId"):
        params["VServerGroup"] = "on"
        params["VServerGroupId"] = str(listener["VServerGroupId"])
    return params
