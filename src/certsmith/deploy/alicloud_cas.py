"""The ``alicloud-cas`` deploy target: the certificate uploaded to Alibaba Cloud's Certificate Management Service.

Each certificate version is uploaded once (``UploadUserCertificate``, API 2020-04-07)
under a name derived from the lineage and the serial (``certsmith-<lineage>-<serial>``,
at most 64 characters), so a second run, or a run after the state was lost, finds the
upload instead of making another one. An upload whose answer was lost after CAS stored
it (the client's retry is then refused: the name is taken) is looked up by that name
among all the uploads and adopted once CAS confirms its serial; a certificate of another
serial under the name is an error, never adopted. The certificate ID is kept with the lineage, and
the other Alibaba Cloud targets of the same run (CDN, DCDN, SLB, ALB) reference it
through ``DeployContext.shared["alicloud-cas"]`` -- which is why this target runs
first whatever order the targets were given in.

Uploads of earlier versions are deleted in :meth:`AliCloudCasTarget.retire`, which runs
only after every target of the lineage switched to the new certificate. A deletion the
service refuses (the certificate is still bound to a product certsmith does not manage)
is reported and retried on the next run, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from certsmith._text import clean
from certsmith.deploy.base import (
    BaseTarget,
    DeployContext,
    DeployOutcome,
    EnvVar,
    TargetInfo,
    TargetOption,
    stored_list,
)
from certsmith.dns import base as dns_base
from certsmith.dns.alicloud_rpc import (
    CREDENTIAL_ENV,
    SIGNATURE_ENV,
    AliCloudError,
    ApiSettings,
    Product,
    RpcClient,
)
from certsmith.errors import ConfigError, DeployError

CAS = Product(
    name="CAS",
    version="2020-04-07",
    endpoint="cas.aliyuncs.com",
    endpoint_var="ALICLOUD_CAS_ENDPOINT",
    ram_actions=(
        "yundun-cert:UploadUserCertificate",
        "yundun-cert:ListUserCertificateOrder",
        "yundun-cert:GetUserCertificateDetail",
        "yundun-cert:DeleteUserCertificate",
    ),
    ram_policy="AliyunYundunCertFullAccess",
)

#: The region CAS certificates live in unless the international endpoint is used.
DEFAULT_REGION = "cn-hangzhou"
INTERNATIONAL_REGION = "ap-southeast-1"
SHARED_KEY = "alicloud-cas"
NAME_LIMIT = 64
_SERIAL_CHARS = 16
#: Codes meaning "no such certificate" (the service's exact code is not documented; both seen forms).
NOT_FOUND_CODES = frozenset({"NotFound", "CertNotExist", "InvalidParameter.CertNotExist"})
#: Codes the service may use for a certificate name already taken (not documented either).
NAME_TAKEN_CODES = frozenset({"NameRepeat", "NameRepeated", "CertNameRepeat"})
#: Refusals that are about credentials or permissions: never "still in use", always fatal.
_AUTH_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId",
        "Forbidden.RAM",
        "Forbidden",
        "NoPermission",
        "Forbidden.NoPermission",
        "InvalidTimeStamp.Expired",
    }
)

OPTIONS = (
    TargetOption(
        "region",
        "region of the CAS certificate as CDN/SLB/ALB reference it (cn-hangzhou; ap-southeast-1 for the "
        "international site, the default with its endpoint)",
    ),
)


def deploy_env(product: Product) -> tuple[EnvVar, ...]:
    """The variables an Alibaba Cloud target reads, for ``certsmith deploy list`` (aliases named)."""

    def convert(var: dns_base.EnvVar) -> EnvVar:
        also = f" (also {', '.join(var.aliases)})" if var.aliases else ""
        return EnvVar(var.name, var.description + also, var.required, var.secret, var.default)

    return tuple(convert(var) for var in (*CREDENTIAL_ENV, product.endpoint_env(), SIGNATURE_ENV))


ENV = deploy_env(CAS)

RAM_POLICY: dict[str, Any] = {
    "Version": "1",
    "Statement": [{"Effect": "Allow", "Action": list(CAS.ram_actions), "Resource": "*"}],
}


def certificate_name(lineage: str, serial: str) -> str:
    """``certsmith-<lineage>-<first 16 hex digits of the serial>``, at most 64 characters.

    Characters other than letters, digits, ``.``, ``-`` and ``_`` become ``-`` (a
    wildcard lineage's ``*``); a long lineage is shortened from the left, keeping its
    most specific labels' end (the serial keeps the name unique).
    """
    serial_part = normalise_serial(serial)[:_SERIAL_CHARS] or "0"
    clean = re.sub(r"[^A-Za-z0-9._-]", "-", lineage).strip("-.") or "cert"
    room = NAME_LIMIT - len("certsmith--") - len(serial_part)
    if len(clean) > room:
        clean = clean[-room:].lstrip("-.")
    return f"certsmith-{clean}-{serial_part}"


def normalise_serial(serial: str) -> str:
    """A serial as lower-case hex without separators or leading zeros (``0A:1B`` and ``a1b`` are equal)."""
    text = re.sub(r"[^0-9a-fA-F]", "", serial).lower().lstrip("0")
    return text


def region_for(endpoint: str, option: str | None) -> str:
    if option:
        if not re.fullmatch(r"[a-z]{2,}(-[a-z0-9]+)+", option):
            raise ConfigError(f"alicloud-cas: region={option} is not a region ID such as cn-hangzhou")
        return option
    return INTERNATIONAL_REGION if INTERNATIONAL_REGION in endpoint else DEFAULT_REGION


@dataclass(frozen=True)
class CasConfig:
    settings: ApiSettings
    region: str

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        settings = ApiSettings.from_env(CAS, env, target="alicloud-cas")
        return cls(settings, region_for(settings.endpoint, options.get("region") or None))


def cas_client(settings: ApiSettings) -> RpcClient:
    return RpcClient(settings)


async def find_upload(client: RpcClient, name: str, keyword: str | None) -> dict[str, Any] | None:
    """The uploaded certificate called ``name``, searched among the uploads matching ``keyword`` (a domain), or
    among all the uploads, page after page, when ``keyword`` is ``None``."""
    page, size = 1, 50
    while True:
        params: dict[str, str | int | bool] = {"OrderType": "UPLOAD", "CurrentPage": page, "ShowSize": size}
        if keyword is not None:
            params["Keyword"] = keyword
        body = await client.call("ListUserCertificateOrder", params)
        items = body.get("CertificateOrderList") or []
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, dict) and item.get("Name") == name:
                return item
        total = body.get("TotalCount")
        if not items or not isinstance(total, int) or page * size >= total:
            return None
        page += 1


async def certificate_detail(client: RpcClient, cert_id: int) -> dict[str, Any] | None:
    """``GetUserCertificateDetail`` without the PEM contents; ``None`` when the certificate is gone."""
    try:
        return await client.call("GetUserCertificateDetail", {"CertId": cert_id, "CertFilter": True})
    except AliCloudError as exc:
        if exc.code in NOT_FOUND_CODES:
            return None
        raise


async def _adopt(client: RpcClient, cert_id: int, name: str, serial: str) -> int:
    """``cert_id``, found under this version's ``name``, once CAS confirms it holds this serial.

    An empty ``SerialNo`` cannot contradict the name (which carries the serial); another
    serial is a certificate certsmith did not upload for this version, never adopted.
    """
    detail = await certificate_detail(client, cert_id)
    if detail is None:
        raise DeployError(
            f"CAS listed a certificate named {name} (CertId {cert_id}) that it then did not find; run the deploy again"
        )
    held, wanted = normalise_serial(str(detail.get("SerialNo", ""))), normalise_serial(serial)
    if held not in ("", wanted):
        raise DeployError(
            f"CAS already holds a certificate named {name} (CertId {cert_id}) with the serial {held}, not this "
            f"certificate's {wanted}; rename or delete it in the CAS console"
        )
    return cert_id


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _fail(exc: AliCloudError) -> DeployError:
    return DeployError(str(exc))


class AliCloudCasTarget(BaseTarget[CasConfig]):
    info: ClassVar[TargetInfo] = TargetInfo(
        name="alicloud-cas",
        title="Alibaba Cloud Certificate Management Service (CAS)",
        description=(
            "Uploads each certificate version once to CAS (UploadUserCertificate) under the name "
            "certsmith-<lineage>-<serial>, remembers its ID, shares it with the alicloud-cdn/dcdn/slb/alb "
            "targets of the same run (it runs first) and deletes the previous uploads once every target "
            "switched. Credentials as for the alidns DNS provider. RAM actions: "
            + ", ".join(CAS.ram_actions)
            + f" (or the policy {CAS.ram_policy})."
        ),
        options=OPTIONS,
        env=ENV,
        example="alicloud-cas",
        links=("https://www.alibabacloud.com/help/en/ssl-certificate/developer-reference/api-cas-2020-04-07-uploadusercertificate",),
        runs_first=True,
    )

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        return cls(CasConfig.from_options(options, env))

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        if context.key_pem is None:
            raise DeployError(
                "alicloud-cas needs the private key, and this certificate was issued for your own CSR "
                "(certsmith never had its key)"
            )
        name = certificate_name(context.lineage, context.serial)
        state = context.state
        async with cas_client(self.config.settings) as client:
            try:
                cert_id, changed = await self._ensure(client, context, name)
            except AliCloudError as exc:
                raise _fail(exc) from None
        old = _as_int(state.get("cert_id"))
        stored = (_as_int(p) for p in stored_list(state.get("previous")))
        previous = [i for i in stored if i is not None and i != cert_id]
        if old is not None and old != cert_id and old not in previous:
            previous.append(old)
        state.clear()
        state.update({"cert_id": cert_id, "name": name, "serial": context.serial, "previous": previous})
        context.shared[SHARED_KEY] = {
            "cert_id": cert_id,
            "name": name,
            "region": self.config.region,
            "resource_id": f"{cert_id}-{self.config.region}",
        }
        what = f"CAS certificate {name} (CertId {cert_id})"
        if changed:
            return DeployOutcome(changed=[f"uploaded {what}"])
        return DeployOutcome(unchanged=[f"{what} already uploaded"])

    async def _ensure(self, client: RpcClient, context: DeployContext, name: str) -> tuple[int, bool]:
        """The CertId of this version's upload, and whether it was uploaded now."""
        state = context.state
        known = _as_int(state.get("cert_id"))
        if known is not None and state.get("name") == name:
            detail = await certificate_detail(client, known)
            if detail is not None and normalise_serial(str(detail.get("SerialNo", ""))) in (
                "",
                normalise_serial(context.serial),
            ):
                return known, False
        keyword = context.names[0].removeprefix("*.") if context.names else context.lineage
        found = await find_upload(client, name, keyword)
        if found is not None and _as_int(found.get("CertificateId")) is not None:
            return await _adopt(client, int(found["CertificateId"]), name, context.serial), False
        key_pem = context.key_pem or b""
        try:
            body = await client.call(
                "UploadUserCertificate",
                {"Name": name, "Cert": context.fullchain_pem.decode("ascii"), "Key": key_pem.decode("ascii")},
            )
        except AliCloudError as exc:
            if exc.code not in NAME_TAKEN_CODES:
                raise
            # Taken since the search: most often by this very upload, whose answer was lost (a time-out, a cut
            # connection) and which the client sent again. Looked up by its exact name among all the uploads
            # (the keyword's matching is the service's own), and adopted when it is this version.
            found = await find_upload(client, name, None)
            if found is None or _as_int(found.get("CertificateId")) is None:
                raise DeployError(
                    f"CAS already holds a certificate named {name} that certsmith cannot find among its uploaded "
                    "certificates (ListUserCertificateOrder); delete it in the CAS console"
                ) from None
            return await _adopt(client, int(found["CertificateId"]), name, context.serial), True
        cert_id = _as_int(body.get("CertId"))
        if cert_id is None:
            raise DeployError(f"CAS UploadUserCertificate answered without a CertId ({sorted(body)})")
        return cert_id, True

    async def retire(self, context: DeployContext) -> list[str]:
        """Delete the uploads of earlier versions; one still in use stays listed, to be retried next run."""
        current = _as_int(context.state.get("cert_id"))
        previous = [i for i in (_as_int(p) for p in stored_list(context.state.get("previous"))) if i is not None]
        if not previous:
            return []
        done: list[str] = []
        kept: list[int] = []
        async with cas_client(self.config.settings) as client:
            for cert_id in previous:
                if cert_id == current:
                    continue
                try:
                    await client.call("DeleteUserCertificate", {"CertId": cert_id})
                except AliCloudError as exc:
                    if exc.code in NOT_FOUND_CODES:
                        done.append(f"CAS certificate {cert_id} was already deleted")
                        continue
                    if exc.code is None or exc.code in _AUTH_CODES:
                        context.state["previous"] = [*kept, *previous[previous.index(cert_id):]]
                        raise _fail(exc) from None
                    kept.append(cert_id)
                    done.append(
                        f"kept CAS certificate {cert_id}: CAS refused to delete it ({exc.code}: "
                        f"{clean(exc.server_message, 120)}), probably still in use; retried on the next run"
                    )
                    continue
                done.append(f"deleted CAS certificate {cert_id}")
        context.state["previous"] = kept
        return done
