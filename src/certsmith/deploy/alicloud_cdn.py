"""The ``alicloud-cdn`` and ``alicloud-dcdn`` deploy targets: a domain's HTTPS certificate on CDN or DCDN.

Both APIs are the same call under two names: ``SetCdnDomainSSLCertificate`` (CDN,
2018-05-10) and ``SetDcdnDomainSSLCertificate`` (DCDN, 2018-01-15), with the current
certificate read back by ``DescribeDomainCertificateInfo`` /
``DescribeDcdnDomainCertificateInfo``. So one class does the work and the two targets
differ only in their :class:`CdnApi` value.

When ``alicloud-cas`` ran in the same run (it runs first), the domain gets that CAS
certificate (``CertType=cas``, ``CertId``, ``CertRegion``); otherwise the certificate and
key are uploaded with the call (``CertType=upload``) under the CAS-style name
``certsmith-<lineage>-<serial>``. The service keeps such an upload in the Certificate
Management Service; the replaced one is deleted there in :meth:`retire` (which needs
``yundun-cert:DeleteUserCertificate``; without it the old upload is reported and kept).

Idempotent: a domain whose current certificate already is this one (same CAS CertId,
or same name, or the same serial in the PEM the service shows) is left alone. Each
domain's new certificate, and the upload it replaced, is recorded as soon as that domain
is done: after a failure on a later domain (or a lost answer the service had acted on),
the next run sends nothing to the domains already switched and still deletes what they
replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from certsmith.deploy.alicloud_cas import (
    CAS,
    NOT_FOUND_CODES,
    SHARED_KEY,
    certificate_name,
    deploy_env,
    normalise_serial,
)
from certsmith.deploy.base import BaseTarget, DeployContext, DeployOutcome, TargetInfo, TargetOption, stored_list
from certsmith.dns.alicloud_rpc import AliCloudError, ApiSettings, Product, RpcClient
from certsmith.errors import ConfigError, DeployError


@dataclass(frozen=True)
class CdnApi:
    """What differs between CDN and DCDN: the product and the two actions' names."""

    target: str
    product: Product
    set_action: str
    describe_action: str
    ssl_field: str  # the describe answer's "HTTPS is on" field
    pem_field: str  # the describe answer's certificate PEM field


CDN_PRODUCT = Product(
    name="CDN",
    version="2018-05-10",
    endpoint="cdn.aliyuncs.com",
    endpoint_var="ALICLOUD_CDN_ENDPOINT",
    ram_actions=("cdn:SetCdnDomainSSLCertificate", "cdn:DescribeDomainCertificateInfo"),
    ram_policy="AliyunCDNFullAccess",
)
DCDN_PRODUCT = Product(
    name="DCDN",
    version="2018-01-15",
    endpoint="dcdn.aliyuncs.com",
    endpoint_var="ALICLOUD_DCDN_ENDPOINT",
    ram_actions=("dcdn:SetDcdnDomainSSLCertificate", "dcdn:DescribeDcdnDomainCertificateInfo"),
    ram_policy="AliyunDCDNFullAccess",
)
CDN = CdnApi(
    "alicloud-cdn",
    CDN_PRODUCT,
    "SetCdnDomainSSLCertificate",
    "DescribeDomainCertificateInfo",
    "ServerCertificateStatus",
    "ServerCertificate",
)
DCDN = CdnApi(
    "alicloud-dcdn",
    DCDN_PRODUCT,
    "SetDcdnDomainSSLCertificate",
    "DescribeDcdnDomainCertificateInfo",
    "SSLProtocol",
    "SSLPub",
)

#: The CAS action a direct upload's clean-up needs (optional: without it old uploads are kept).
CLEANUP_ACTION = "yundun-cert:DeleteUserCertificate"


def ram_policy(api: CdnApi) -> dict[str, Any]:
    """The RAM policy a target needs (CAS delete for the clean-up of direct uploads)."""
    return {
        "Version": "1",
        "Statement": [{"Effect": "Allow", "Action": [*api.product.ram_actions, CLEANUP_ACTION], "Resource": "*"}],
    }


def parse_domains(target: str, text: str) -> tuple[str, ...]:
    """``a.example.com;b.example.com`` -> the names, lower case, each once; ConfigError when unusable."""
    names: list[str] = []
    for part in text.split(";"):
        name = part.strip().rstrip(".").lower()
        if not name:
            continue
        labels = name.removeprefix("*.").split(".")
        if len(labels) < 2 or not all(
            label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) for label in labels
        ):
            raise ConfigError(f"{target}: domain={part.strip()} is not a domain name (e.g. cdn.example.com)")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError(f"{target}: domain= names no domain; give e.g. domain=cdn.example.com")
    return tuple(names)


@dataclass(frozen=True)
class CdnConfig:
    api: CdnApi
    domains: tuple[str, ...]
    settings: ApiSettings
    cas_settings: ApiSettings

    @classmethod
    def build(cls, api: CdnApi, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        domains = parse_domains(api.target, options.get("domain", ""))
        settings = ApiSettings.from_env(api.product, env, target=api.target)
        return cls(api, domains, settings, ApiSettings.from_env(CAS, env, target=api.target))


def _serial_of(pem: str) -> str | None:
    from cryptography import x509

    try:
        return normalise_serial(format(x509.load_pem_x509_certificates(pem.encode())[0].serial_number, "x"))
    except ValueError:
        return None


def _cert_infos(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    infos = body.get("CertInfos")
    items = infos.get("CertInfo") if isinstance(infos, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


class _CdnTarget(BaseTarget[CdnConfig]):
    api: ClassVar[CdnApi]

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        return cls(CdnConfig.build(cls.api, options, env))

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        api = self.config.api
        cas = context.shared.get(SHARED_KEY)
        if cas is None and context.key_pem is None:
            raise DeployError(
                f"{api.target} needs the private key to upload the certificate, and this certificate was issued "
                "for your own CSR; add --deploy alicloud-cas with the key uploaded there, or issue with certsmith's key"
            )
        name = cas["name"] if cas else certificate_name(context.lineage, context.serial)
        if not isinstance(context.state.get("domains"), dict):
            context.state["domains"] = {}  # damaged: start afresh
        domains_state: dict[str, Any] = context.state["domains"]
        previous: list[int] = [p for p in stored_list(context.state.get("previous_uploads")) if isinstance(p, int)]
        outcome = DeployOutcome()

        def switched(domain: str, current: dict[str, Any] | None) -> None:
            """Record ``domain`` as serving this version, and the upload it replaced as one to delete; saved as each
            domain is done, so a failure on a later domain loses neither (a second run leaves this one alone)."""
            old = domains_state.get(domain)
            old = old if isinstance(old, dict) else {}
            replaced = old.get("cert_id") if old.get("type") == "upload" else None
            if isinstance(replaced, int) and replaced not in previous and old.get("serial") != context.serial:
                previous.append(replaced)
            domains_state[domain] = self._record(current, context, cas, name)
            keep_deletable()

        def keep_deletable() -> None:
            """Store the replaced uploads that no domain serves any more (they are deleted after the run)."""
            current_ids = {d.get("cert_id") for d in domains_state.values() if isinstance(d, dict)}
            context.state["previous_uploads"] = [p for p in previous if p not in current_ids]

        async with RpcClient(self.config.settings) as client:
            for domain in self.config.domains:
                try:
                    current = await self._current(client, domain)
                    if self._matches(current, context, cas, name):
                        outcome.unchanged.append(f"{api.product.name} {domain} already serves {name}")
                        known = domains_state.get(domain)
                        if not isinstance(known, dict) or known.get("serial") != context.serial:
                            switched(domain, current)  # by a run that failed before it recorded it
                        continue
                    await client.call(api.set_action, self._set_params(domain, context, cas, name))
                    after = await self._current(client, domain)
                except AliCloudError as exc:
                    raise DeployError(f"{domain}: {exc}") from None
                switched(domain, after)
                kind = f"CAS certificate {cas['cert_id']}" if cas else "an upload"
                outcome.changed.append(f"set {api.product.name} {domain} to {name} ({kind})")
        keep_deletable()  # also drops what a damaged state listed that is not an upload id
        return outcome

    async def _current(self, client: RpcClient, domain: str) -> dict[str, Any] | None:
        body = await client.call(self.config.api.describe_action, {"DomainName": domain})
        infos = _cert_infos(body)
        mine = next((i for i in infos if str(i.get("DomainName", "")).lower() == domain), None)
        if mine is None and len(infos) == 1 and not infos[0].get("DomainName"):
            mine = infos[0]  # an answer that does not name the domain it was asked for; never another domain's
        return mine

    def _matches(
        self, current: dict[str, Any] | None, context: DeployContext, cas: dict[str, Any] | None, name: str
    ) -> bool:
        if current is None or str(current.get(self.config.api.ssl_field, "")).lower() != "on":
            return False
        pem = current.get(self.config.api.pem_field)
        if isinstance(pem, str) and pem.strip():
            serial = _serial_of(pem)
            if serial is not None and serial != normalise_serial(context.serial):
                return False
        if cas is not None:
            return str(current.get("CertType", "")).lower() == "cas" and str(current.get("CertId")) == str(
                cas["cert_id"]
            )
        return current.get("CertName") == name

    @staticmethod
    def _record(
        current: dict[str, Any] | None, context: DeployContext, cas: dict[str, Any] | None, name: str
    ) -> dict[str, Any]:
        cert_id = str((current or {}).get("CertId", ""))
        return {
            "type": "cas" if cas else "upload",
            "cert_id": int(cert_id) if cert_id.isdigit() else None,
            "name": name,
            "serial": context.serial,
        }

    def _set_params(
        self, domain: str, context: DeployContext, cas: dict[str, Any] | None, name: str
    ) -> dict[str, str | int]:
        params: dict[str, str | int] = {"DomainName": domain, "SSLProtocol": "on"}
        if cas is not None:
            params.update({"CertType": "cas", "CertId": int(cas["cert_id"]), "CertName": name})
            if cas.get("region"):
                params["CertRegion"] = str(cas["region"])
            return params
        params.update(
            {
                "CertType": "upload",
                "CertName": name,
                "SSLPub": context.fullchain_pem.decode("ascii"),
                "SSLPri": (context.key_pem or b"").decode("ascii"),
            }
        )
        return params

    async def retire(self, context: DeployContext) -> list[str]:
        """Delete the direct uploads the new certificate replaced (through CAS); refusals are reported, not fatal."""
        previous = [p for p in stored_list(context.state.get("previous_uploads")) if isinstance(p, int)]
        if not previous:
            return []
        done: list[str] = []
        kept: list[int] = []
        async with RpcClient(self.config.cas_settings) as cas:
            for cert_id in previous:
                try:
                    await cas.call("DeleteUserCertificate", {"CertId": cert_id})
                except AliCloudError as exc:
                    if exc.code in NOT_FOUND_CODES:
                        done.append(f"replaced upload {cert_id} was already deleted")
                        continue
                    kept.append(cert_id)
                    done.append(f"kept replaced upload {cert_id}: {exc}")
                    continue
                done.append(f"deleted replaced upload {cert_id} (CAS)")
        context.state["previous_uploads"] = kept
        return done


def _info(api: CdnApi, title: str) -> TargetInfo:
    return TargetInfo(
        name=api.target,
        title=title,
        description=(
            f"Sets the HTTPS certificate of {api.product.name} domains ({api.set_action}, SSL on): the CAS "
            "certificate when alicloud-cas is also given, else the certificate uploaded with the call and the "
            "replaced upload deleted afterwards. Leaves a domain alone when it already serves this certificate. "
            f"RAM actions: {', '.join(api.product.ram_actions)} (and {CLEANUP_ACTION} for the clean-up of direct "
            f"uploads), or the policy {api.product.ram_policy}."
        ),
        options=(
            TargetOption(
                "domain", "the accelerated domain name(s), several separated by ';' (or give the target again)",
                required=True,
            ),
        ),
        env=deploy_env(api.product) + tuple(v for v in deploy_env(CAS) if v.name == CAS.endpoint_var),
        example=f"{api.target}:domain=cdn.example.com",
        links=(
            f"https://api.aliyun.com/api/{api.product.name.capitalize()}/{api.product.version}/{api.set_action}",
        ),
    )


class AliCloudCdnTarget(_CdnTarget):
    api: ClassVar[CdnApi] = CDN
    info: ClassVar[TargetInfo] = _info(CDN, "Alibaba Cloud CDN domain certificate")


class AliCloudDcdnTarget(_CdnTarget):
    api: ClassVar[CdnApi] = DCDN
    info: ClassVar[TargetInfo] = _info(DCDN, "Alibaba Cloud DCDN domain certificate")
