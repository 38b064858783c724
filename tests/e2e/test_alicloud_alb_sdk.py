"""Alibaba's official ALB SDK (``alibabacloud-alb20200616``) drives the ALB emulator (with the CAS emulator)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alibabacloud_alb20200616 import models
from alibabacloud_alb20200616.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.exceptions import ClientException

from tests.e2e.test_alicloud_slb_sdk import self_signed
from tests.support.alicloud_alb_emulator import AlbEmulator
from tests.support.alicloud_cas_emulator import CasEmulator
from tests.support.alicloud_emulator import AliCloudAccount

AK, SECRET = "LTAI5tAlbSdk", "alb-sdk-Secret-0123456789"
LSN = "lsn-sdk000000000000000"


@pytest.fixture
def emulators() -> Iterator[tuple[AlbEmulator, CasEmulator]]:
    account = AliCloudAccount(AK, SECRET)
    with CasEmulator([account]) as cas, AlbEmulator([account], cas=cas, configuring_polls=1) as alb:
        alb.add_listener(LSN)
        yield alb, cas


def client(alb: AlbEmulator, secret: str = SECRET, algorithm: str | None = None) -> Client:
    config = openapi_models.Config(access_key_id=AK, access_key_secret=secret, endpoint=alb.host, protocol="http")
    if algorithm is not None:
        config.signature_algorithm = algorithm
    return Client(config)


def cas_id(cas: CasEmulator, name: str) -> str:
    pem, key, _ = self_signed(name)
    return f"{cas.upload(AliCloudAccount(AK, SECRET).owner_id, name, pem, key).cert_id}-cn-hangzhou"


@pytest.mark.parametrize(("algorithm", "version"), [(None, 3), ("v2", 1)])
def test_default_and_additional_certificates_round_trip(
    emulators: tuple[AlbEmulator, CasEmulator], algorithm: str | None, version: int
) -> None:
    alb, cas = emulators
    sdk = client(alb, algorithm=algorithm)
    first, second = cas_id(cas, "a.example.com"), cas_id(cas, "b.example.com")
    job = sdk.update_listener_attribute(
        models.UpdateListenerAttributeRequest(
            listener_id=LSN, certificates=[models.UpdateListenerAttributeRequestCertificates(certificate_id=first)]
        )
    ).body.job_id
    assert job
    # asynchronous: Configuring, and a second change is refused until it is Running again
    with pytest.raises(ClientException) as busy:
        sdk.associate_additional_certificates_with_listener(
            models.AssociateAdditionalCertificatesWithListenerRequest(
                listener_id=LSN,
                certificates=[models.AssociateAdditionalCertificatesWithListenerRequestCertificates(
                    certificate_id=second)],
            )
        )
    assert busy.value.code == "IncorrectStatus.Listener"
    statuses = [sdk.get_listener_attribute(models.GetListenerAttributeRequest(listener_id=LSN)).body
                for _ in range(2)]
    assert [s.listener_status for s in statuses] == ["Configuring", "Running"]
    assert [c.certificate_id for c in statuses[1].certificates] == [first]
    assert statuses[1].listener_protocol == "HTTPS"

    sdk.associate_additional_certificates_with_listener(
        models.AssociateAdditionalCertificatesWithListenerRequest(
            listener_id=LSN,
            certificates=[models.AssociateAdditionalCertificatesWithListenerRequestCertificates(
                certificate_id=second)],
        )
    )
    sdk.get_listener_attribute(models.GetListenerAttributeRequest(listener_id=LSN))
    sdk.get_listener_attribute(models.GetListenerAttributeRequest(listener_id=LSN))
    listed = sdk.list_listener_certificates(
        models.ListListenerCertificatesRequest(listener_id=LSN, certificate_type="Server")
    ).body
    assert [(c.certificate_id, c.is_default, c.status) for c in listed.certificates] == [
        (first, True, "Associated"), (second, False, "Associated")
    ]
    assert {c.cert_id for c in cas.certificates() if c.bound_by} == {int(first.split("-")[0]),
                                                                      int(second.split("-")[0])}
    sdk.dissociate_additional_certificates_from_listener(
        models.DissociateAdditionalCertificatesFromListenerRequest(
            listener_id=LSN,
            certificates=[models.DissociateAdditionalCertificatesFromListenerRequestCertificates(
                certificate_id=second)],
        )
    )
    for _ in range(2):
        sdk.get_listener_attribute(models.GetListenerAttributeRequest(listener_id=LSN))
    assert alb.listener(LSN).additional == {}
    assert {c.cert_id for c in cas.certificates() if c.bound_by} == {int(first.split("-")[0])}
    assert {r.signature_version for r in alb.requests} == {version}


def test_errors_the_sdk_sees(emulators: tuple[AlbEmulator, CasEmulator]) -> None:
    alb, _ = emulators
    sdk = client(alb)
    with pytest.raises(ClientException) as unknown:
        sdk.get_listener_attribute(models.GetListenerAttributeRequest(listener_id="lsn-nothing"))
    assert (unknown.value.code, unknown.value.status_code) == ("ResourceNotFound.Listener", 404)
    with pytest.raises(ClientException) as no_cert:
        sdk.update_listener_attribute(
            models.UpdateListenerAttributeRequest(
                listener_id=LSN,
                certificates=[models.UpdateListenerAttributeRequestCertificates(certificate_id="999-cn-hangzhou")],
            )
        )
    assert no_cert.value.code == "ResourceNotFound.Certificate"
    with pytest.raises(ClientException) as wrong:
        client(alb, secret="not-the-secret").get_listener_attribute(
            models.GetListenerAttributeRequest(listener_id=LSN)
        )
    assert (wrong.value.code, wrong.value.status_code) == ("SignatureDoesNotMatch", 400)
