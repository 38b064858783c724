"""Alibaba's official CAS, CDN and DCDN SDKs drive the emulators.

The SDKs sign with their own code (V3 ``ACS3-HMAC-SHA256`` by default, V1 with
``signature_algorithm='v2'``) and parse the answers into their own models, so these
tests check the emulators' signature verification, field names and response shapes
independently of certsmith.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alibabacloud_cas20200407 import models as cas_models
from alibabacloud_cas20200407.client import Client as CasClient
from alibabacloud_cdn20180510 import models as cdn_models
from alibabacloud_cdn20180510.client import Client as CdnClient
from alibabacloud_dcdn20180115 import models as dcdn_models
from alibabacloud_dcdn20180115.client import Client as DcdnClient
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.exceptions import ClientException as TeaClientException
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.alicloud_cas_emulator import CasEmulator
from tests.support.alicloud_cdn_emulator import CdnEmulator, DcdnEmulator
from tests.support.alicloud_emulator import AliCloudAccount, AliCloudRpcEmulator

AK, SECRET = "LTAI5tSdkDeploy", "sdk-Secret-abcdef0123"


def self_signed(name: str) -> tuple[str, str, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode(), cert.serial_number


@pytest.fixture(scope="module")
def cas() -> Iterator[CasEmulator]:
    with CasEmulator([AliCloudAccount(AK, SECRET)]) as emulator:
        yield emulator


def config(emulator: AliCloudRpcEmulator, algorithm: str | None, secret: str = SECRET) -> openapi_models.Config:
    cfg = openapi_models.Config(access_key_id=AK, access_key_secret=secret, endpoint=emulator.host, protocol="http")
    if algorithm is not None:
        cfg.signature_algorithm = algorithm
    return cfg


@pytest.mark.parametrize(("algorithm", "version"), [(None, 3), ("v2", 1)])
def test_cas_sdk_upload_list_detail_delete(cas: CasEmulator, algorithm: str | None, version: int) -> None:
    client = CasClient(config(cas, algorithm))
    domain = f"sdk{version}.example.com"
    cert_pem, key_pem, serial = self_signed(domain)
    before = len(cas.requests)
    uploaded = client.upload_user_certificate(
        cas_models.UploadUserCertificateRequest(name=f"sdk-{version}", cert=cert_pem, key=key_pem)
    )
    cert_id = uploaded.body.cert_id
    assert isinstance(cert_id, int) and uploaded.body.resource_id == f"cas-upload-{cert_id}"
    assert cas.certificate(cert_id) is not None

    listed = client.list_user_certificate_order(
        cas_models.ListUserCertificateOrderRequest(order_type="UPLOAD", keyword=domain, current_page=1, show_size=10)
    )
    assert listed.body.total_count == 1
    [item] = listed.body.certificate_order_list
    assert (item.certificate_id, item.name, item.common_name, item.upload) == (cert_id, f"sdk-{version}", domain, True)
    assert int(item.serial_no, 16) == serial

    detail = client.get_user_certificate_detail(cas_models.GetUserCertificateDetailRequest(cert_id=cert_id))
    assert (detail.body.id, detail.body.name, detail.body.cert, detail.body.key) == (
        cert_id, f"sdk-{version}", cert_pem, key_pem
    )
    assert detail.body.cert_identifier == f"{cert_id}-cn-hangzhou"
    filtered = client.get_user_certificate_detail(
        cas_models.GetUserCertificateDetailRequest(cert_id=cert_id, cert_filter=True)
    )
    assert filtered.body.cert is None and filtered.body.key is None and int(filtered.body.serial_no, 16) == serial

    with pytest.raises(TeaClientException) as info:
        client.upload_user_certificate(
            cas_models.UploadUserCertificateRequest(name=f"sdk-{version}", cert=cert_pem, key=key_pem)
        )
    assert info.value.code == "NameRepeat"
    _, other_key, _ = self_signed("other.example.com")
    with pytest.raises(TeaClientException) as info:
        client.upload_user_certificate(cas_models.UploadUserCertificateRequest(name="x", cert=cert_pem, key=other_key))
    assert info.value.code == "KeyCertMismatch"

    client.delete_user_certificate(cas_models.DeleteUserCertificateRequest(cert_id=cert_id))
    assert cas.certificate(cert_id) is None
    with pytest.raises(TeaClientException) as info:
        client.delete_user_certificate(cas_models.DeleteUserCertificateRequest(cert_id=cert_id))
    assert info.value.code == "NotFound"
    assert {r.signature_version for r in cas.requests[before:]} == {version}


@pytest.mark.parametrize("emulator_class", [CasEmulator, CdnEmulator, DcdnEmulator])
def test_sdk_request_with_a_wrong_secret_is_refused(emulator_class: type[AliCloudRpcEmulator]) -> None:
    with emulator_class([AliCloudAccount(AK, SECRET)]) as emulator:
        wrong = config(emulator, None, "wrong")
        with pytest.raises(TeaClientException) as info:
            if isinstance(emulator, DcdnEmulator):
                DcdnClient(wrong).describe_dcdn_domain_certificate_info(
                    dcdn_models.DescribeDcdnDomainCertificateInfoRequest(domain_name="a.example.com"))
            elif isinstance(emulator, CdnEmulator):
                CdnClient(wrong).describe_domain_certificate_info(
                    cdn_models.DescribeDomainCertificateInfoRequest(domain_name="a.example.com"))
            else:
                CasClient(wrong).delete_user_certificate(cas_models.DeleteUserCertificateRequest(cert_id=1))
        assert info.value.code == "SignatureDoesNotMatch" and info.value.status_code == 400
        assert emulator.requests[-1].code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_cdn_sdk_sets_a_cas_certificate_then_an_upload(cas: CasEmulator, algorithm: str | None) -> None:
    domain = f"cdn-{algorithm or 'v3'}.example.com"
    with CdnEmulator([AliCloudAccount(AK, SECRET)], domains=[domain], cas=cas) as cdn:
        client = CdnClient(config(cdn, algorithm))
        cert_pem, key_pem, serial = self_signed(domain)
        cert_id = CasClient(config(cas, None)).upload_user_certificate(
            cas_models.UploadUserCertificateRequest(name=f"for-{domain}", cert=cert_pem, key=key_pem)
        ).body.cert_id
        client.set_cdn_domain_sslcertificate(cdn_models.SetCdnDomainSSLCertificateRequest(
            domain_name=domain, sslprotocol="on", cert_type="cas", cert_id=cert_id, cert_region="cn-hangzhou"))
        [info] = client.describe_domain_certificate_info(
            cdn_models.DescribeDomainCertificateInfoRequest(domain_name=domain)).body.cert_infos.cert_info
        assert (info.domain_name, info.cert_type, info.cert_id, info.cert_name, info.server_certificate_status) == (
            domain, "cas", str(cert_id), f"for-{domain}", "on")
        assert x509.load_pem_x509_certificate(info.server_certificate.encode()).serial_number == serial
        with pytest.raises(TeaClientException) as refused:  # in use by the domain
            CasClient(config(cas, None)).delete_user_certificate(
                cas_models.DeleteUserCertificateRequest(cert_id=cert_id))
        assert refused.value.code == "CertInUse"

        new_pem, new_key, new_serial = self_signed(domain)
        client.set_cdn_domain_sslcertificate(cdn_models.SetCdnDomainSSLCertificateRequest(
            domain_name=domain, sslprotocol="on", cert_type="upload", cert_name=f"up-{domain}", sslpub=new_pem,
            sslpri=new_key))
        [info] = client.describe_domain_certificate_info(
            cdn_models.DescribeDomainCertificateInfoRequest(domain_name=domain)).body.cert_infos.cert_info
        assert (info.cert_type, info.cert_name) == ("upload", f"up-{domain}")
        assert x509.load_pem_x509_certificate(info.server_certificate.encode()).serial_number == new_serial
        CasClient(config(cas, None)).delete_user_certificate(cas_models.DeleteUserCertificateRequest(cert_id=cert_id))

        with pytest.raises(TeaClientException) as missing:
            client.describe_domain_certificate_info(
                cdn_models.DescribeDomainCertificateInfoRequest(domain_name="nope.example.com"))
        assert missing.value.code == "InvalidDomain.NotFound"


def test_dcdn_sdk_upload_and_describe(cas: CasEmulator) -> None:
    domain = "dcdn-sdk.example.com"
    with DcdnEmulator([AliCloudAccount(AK, SECRET)], domains=[domain], cas=cas) as dcdn:
        client = DcdnClient(config(dcdn, None))
        cert_pem, key_pem, serial = self_signed(domain)
        client.set_dcdn_domain_sslcertificate(dcdn_models.SetDcdnDomainSSLCertificateRequest(
            domain_name=domain, sslprotocol="on", cert_type="upload", cert_name="dcdn-up", sslpub=cert_pem,
            sslpri=key_pem))
        [info] = client.describe_dcdn_domain_certificate_info(
            dcdn_models.DescribeDcdnDomainCertificateInfoRequest(domain_name=domain)).body.cert_infos.cert_info
        assert (info.domain_name, info.sslprotocol, info.cert_type, info.cert_name) == (domain, "on", "upload",
                                                                                        "dcdn-up")
        assert x509.load_pem_x509_certificate(info.sslpub.encode()).serial_number == serial
        client.set_dcdn_domain_sslcertificate(dcdn_models.SetDcdnDomainSSLCertificateRequest(
            domain_name=domain, sslprotocol="off"))
        [info] = client.describe_dcdn_domain_certificate_info(
            dcdn_models.DescribeDcdnDomainCertificateInfoRequest(domain_name=domain)).body.cert_infos.cert_info
        assert info.sslprotocol == "off" and info.sslpub is None
