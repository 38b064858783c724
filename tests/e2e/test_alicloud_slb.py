"""The ``alicloud-slb`` deploy target end to end: the real CLI against Pebble 2.10 and the SLB emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import Cli, clean_env
from tests.e2e.test_alicloud_slb_sdk import self_signed
from tests.support.alicloud_emulator import DROPPED, AliCloudAccount
from tests.support.alicloud_slb_emulator import SlbEmulator

AK, SECRET = "LTAI5tSlbE2e", "slb-e2e-Secret-0123456789"
LB = "lb-bp1e2e00000000000000"
LISTENER = {
    "StickySession": "on", "StickySessionType": "insert", "CookieTimeout": 600, "HealthCheck": "on",
    "HealthCheckURI": "/healthz", "HealthyThreshold": 3, "UnhealthyThreshold": 4, "HealthCheckInterval": 5,
    "HealthCheckHttpCode": "http_2xx", "Bandwidth": 80, "TLSCipherPolicy": "tls_cipher_policy_1_2", "Gzip": "off",
}


@pytest.fixture
def emulator() -> Iterator[SlbEmulator]:
    with SlbEmulator([AliCloudAccount(AK, SECRET)]) as em:
        em.add_load_balancer(LB, "cn-hangzhou", ports=(443, 8443), **LISTENER)
        yield em


def slb_env(emulator: SlbEmulator, ak: str = AK, secret: str = SECRET) -> dict[str, str]:
    return clean_env(
        ALIBABA_CLOUD_ACCESS_KEY_ID=ak,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret,
        ALICLOUD_SLB_ENDPOINT=emulator.endpoint,
        ALICLOUD_REGION="cn-hangzhou",
    )


def stored_leaf(cli: Cli, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((cli.state_dir / "certificates" / name / "cert.pem").read_bytes())


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex(":")


def test_issue_renew_and_deploy_again(registered_cli: Cli, emulator: SlbEmulator, tmp_path: Path) -> None:
    cli, env = registered_cli, slb_env(emulator)
    manual = emulator.add_certificate(*self_signed("slb.example.com")[:2], name="set-by-hand")
    emulator.load_balancers[LB].listeners[443]["ServerCertificateId"] = manual
    emulator.load_balancers[LB].listeners[8443]["ServerCertificateId"] = manual

    spec = f"alicloud-slb:load-balancer={LB}"
    issued = json.loads(
        cli.run("--json", "issue", "-d", "slb.example.com", "--deploy", spec, *cli.http_args(), env=env).stdout
    )
    [outcome] = issued["deploy"]
    first = emulator.listener(LB)["ServerCertificateId"]
    assert outcome["ok"] and outcome["changed"] == [
        f"uploaded server certificate {first}", f"set server certificate {first} on listener {LB}:443"
    ]
    leaf = stored_leaf(cli, "slb.example.com")
    assert emulator.certificates[first].fingerprint == fingerprint(leaf)
    assert emulator.certificates[first].name == f"certsmith-slb.example.com-{format(leaf.serial_number, 'x')[:16]}"
    listener = emulator.listener(LB)
    assert {k: listener[k] for k in LISTENER} == LISTENER  # the other settings survived the Set call
    assert emulator.listener(LB, 8443)["ServerCertificateId"] == manual  # another port: untouched
    assert set(emulator.certificates) == {manual, first}  # the hand-made certificate is not ours to delete

    # deploy twice: nothing uploaded, nothing set
    emulator.clear_log()
    for _ in range(2):
        again = json.loads(cli.run("--json", "deploy", "slb.example.com", env=env).stdout)
        assert again["ok"] and again["deploy"][0]["changed"] == []
        assert again["deploy"][0]["unchanged"] == [f"listener {LB}:443 uses server certificate {first}"]
    assert [r.action for r in emulator.requests] == ["DescribeLoadBalancerHTTPSListenerAttribute"] * 2

    # renewal: a new upload, the listener switched, exactly the replaced upload deleted
    renewed = json.loads(cli.run("--json", "renew", "slb.example.com", "--force", env=env).stdout)
    [result] = renewed["results"]
    second = emulator.listener(LB)["ServerCertificateId"]
    assert result["renewed"] and second != first
    assert result["deploy"][0]["changed"] == [
        f"uploaded server certificate {second}", f"set server certificate {second} on listener {LB}:443",
        f"deleted server certificate {first}",
    ]
    assert set(emulator.certificates) == {manual, second}
    assert emulator.certificates[second].fingerprint == fingerprint(stored_leaf(cli, "slb.example.com"))
    assert {k: emulator.listener(LB)[k] for k in LISTENER} == LISTENER
    state = json.loads((cli.state_dir / "certificates" / "slb.example.com" / "deploy.json").read_text())
    assert json.dumps(state).count(second) == 1 and SECRET not in json.dumps(state)


def test_ram_forbidden_and_wrong_secret_keep_the_new_certificate(registered_cli: Cli, emulator: SlbEmulator) -> None:
    cli, env = registered_cli, slb_env(emulator)
    spec = f"alicloud-slb:load-balancer={LB},port=8443"
    cli.run("issue", "-d", "slbram.example.com", "--deploy", spec, *cli.http_args(), env=env)
    first = emulator.listener(LB, 8443)["ServerCertificateId"]

    # a RAM user that may upload but not change the listener
    emulator.add_account(AliCloudAccount("LTAI5tNoSet", "noset-secret", allowed_actions={
        "slb:DescribeLoadBalancerHTTPSListenerAttribute", "slb:DescribeServerCertificates",
        "slb:UploadServerCertificate"}))
    before = stored_leaf(cli, "slbram.example.com")
    refused = cli.run("renew", "slbram.example.com", "--force", env=slb_env(emulator, "LTAI5tNoSet", "noset-secret"),
                      check=False)
    assert refused.returncode != 0
    errors = [line.partition("alicloud-slb: ")[2] for line in refused.stderr.splitlines() if "failed (" in line]
    assert len(errors) == 1, refused.stderr
    assert errors[0].startswith(
        "deploy target alicloud-slb failed: SLB SetLoadBalancerHTTPSListenerAttribute failed (Forbidden.RAM): "
        "the RAM user of AccessKey LTAI5tNoSet may not call SetLoadBalancerHTTPSListenerAttribute. Grant it the "
        "actions slb:DescribeLoadBalancerHTTPSListenerAttribute, slb:SetLoadBalancerHTTPSListenerAttribute"
    )
    renewed = stored_leaf(cli, "slbram.example.com")
    assert renewed.serial_number != before.serial_number  # the new certificate is stored all the same
    assert emulator.listener(LB, 8443)["ServerCertificateId"] == first
    assert len(emulator.certificates) == 2  # the upload happened and is remembered, the old one kept

    wrong = cli.run("deploy", "slbram.example.com", env=slb_env(emulator, secret="not-the-secret"), check=False)
    assert wrong.returncode != 0
    [line] = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert "(SignatureDoesNotMatch): the request signature does not match" in line and "not-the-secret" not in line

    # fixed credentials: the remembered upload is used (no second one) and the old one goes
    emulator.clear_log()
    fixed = json.loads(cli.run("--json", "deploy", "slbram.example.com", env=env).stdout)
    second = emulator.listener(LB, 8443)["ServerCertificateId"]
    assert fixed["ok"] and emulator.calls("UploadServerCertificate") == 0
    assert fixed["deploy"][0]["changed"] == [
        f"set server certificate {second} on listener {LB}:8443", f"deleted server certificate {first}"
    ]
    assert set(emulator.certificates) == {second}
    assert emulator.certificates[second].fingerprint == fingerprint(renewed)


def test_a_missing_listener_or_bad_option(registered_cli: Cli, emulator: SlbEmulator) -> None:
    cli, env = registered_cli, slb_env(emulator)
    missing = cli.run("issue", "-d", "slbnone.example.com", "--deploy", f"alicloud-slb:load-balancer={LB},port=9443",
                      *cli.http_args(), env=env, check=False)
    assert missing.returncode != 0
    assert ("error: deploy target alicloud-slb failed: SLB DescribeLoadBalancerHTTPSListenerAttribute failed "
            "(ListenerNotFound): You have not created a listener") in missing.stderr
    assert emulator.certificates == {}
    bad = cli.run("issue", "-d", "slbbad.example.com", "--deploy", f"alicloud-slb:load-balancer={LB},port=https",
                  *cli.http_args(), env=env, check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "alicloud-slb: port='https' must be the HTTPS listener's port, 1 to 65535" in bad.stderr
    noregion = dict(env)
    del noregion["ALICLOUD_REGION"]
    region = cli.run("issue", "-d", "slbbad.example.com", "--deploy", f"alicloud-slb:load-balancer={LB}",
                     *cli.http_args(), env=noregion, check=False)
    assert region.returncode == 1 and "needs ALICLOUD_REGION (e.g. cn-hangzhou): SLB is regional" in region.stderr
    assert not (cli.state_dir / "certificates" / "slbbad.example.com").exists()


def test_from_the_cas_certificate(registered_cli: Cli) -> None:
    from tests.support.alicloud_cas_emulator import CasEmulator

    cli, account = registered_cli, AliCloudAccount(AK, SECRET)

    def cas_pem(cert_id: str) -> str | None:
        found = cas.certificate(int(cert_id)) if cert_id.isdigit() else None
        return found.cert_pem if found else None

    with CasEmulator([account]) as cas, SlbEmulator([account], cas_lookup=cas_pem) as slb:
        slb.add_load_balancer(LB, "cn-hangzhou")
        env = {**slb_env(slb), "ALICLOUD_CAS_ENDPOINT": cas.endpoint}
        cli.run("issue", "-d", "slbcas.example.com", "--deploy", f"alicloud-slb:load-balancer={LB}",
                "--deploy", "alicloud-cas", *cli.http_args(), env=env)
        [first] = cas.certificates()
        server = slb.certificates[slb.listener(LB)["ServerCertificateId"]]
        assert server.cas_id == str(first.cert_id) and server.pem is None  # a reference, no key sent to SLB
        assert server.fingerprint == fingerprint(stored_leaf(cli, "slbcas.example.com"))
        [upload] = [r for r in slb.requests if r.action == "UploadServerCertificate"]
        assert upload.params["AliCloudCertificateRegionId"] == "cn-hangzhou" and "PrivateKey" not in upload.params

        cli.run("renew", "slbcas.example.com", "--force", env=env)
        [second] = cas.certificates()
        assert cas.deleted == [first.cert_id]
        [server] = slb.certificates.values()
        assert server.cas_id == str(second.cert_id) and slb.listener(LB)["ServerCertificateId"] == server.id


@pytest.mark.parametrize("lost_status", [DROPPED, 503], ids=["connection-cut", "503-after-acting"])
def test_an_upload_whose_answer_was_lost_is_found_by_name_not_uploaded_twice(
    registered_cli: Cli, emulator: SlbEmulator, lost_status: int
) -> None:
    """SLB stored the server certificate but the answer never arrived: SLB allows one name twice, so a blind retry
    would leave two server certificates for one version. The upload is found by its name and used instead."""
    cli, env = registered_cli, slb_env(emulator)
    emulator.lose_answer("UploadServerCertificate", status=lost_status)
    issued = json.loads(cli.run("--json", "issue", "-d", "slblost.example.com", "--deploy",
                                f"alicloud-slb:load-balancer={LB}", *cli.http_args(), env=env).stdout)
    [outcome] = issued["deploy"]
    [upload] = emulator.certificates.values()  # exactly one server certificate
    leaf = stored_leaf(cli, "slblost.example.com")
    assert upload.fingerprint == fingerprint(leaf) and upload.name.endswith(format(leaf.serial_number, "x")[:16])
    assert emulator.listener(LB)["ServerCertificateId"] == upload.id
    assert outcome["ok"] and outcome["changed"] == [
        f"uploaded server certificate {upload.id}", f"set server certificate {upload.id} on listener {LB}:443"
    ]
    uploads = [r for r in emulator.requests if r.action == "UploadServerCertificate"]
    # the lost one, perhaps sent again as it was by the HTTP layer (refused as a replay); no other upload
    assert uploads[0].status == lost_status and {r.code for r in uploads[1:]} <= {"SignatureNonceUsed"}, uploads

    # the next version's upload is lost too: still one server certificate per version, the replaced one deleted
    emulator.lose_answer("UploadServerCertificate", status=lost_status)
    renewed = json.loads(cli.run("--json", "renew", "slblost.example.com", "--force", env=env).stdout)
    [result] = renewed["results"]
    [second] = emulator.certificates.values()
    assert result["deploy"][0]["ok"] and second.id != upload.id
    assert second.fingerprint == fingerprint(stored_leaf(cli, "slblost.example.com"))
    assert emulator.listener(LB)["ServerCertificateId"] == second.id


def test_create_looks_for_the_result_only_after_a_transient_failure(emulator: SlbEmulator) -> None:
    """RpcClient.create: a refusal is raised at once (no lookup, no second call); throttling or a lost answer is
    followed by the lookup, and the call is repeated only when the lookup finds nothing."""
    import asyncio

    from certsmith.deploy.alicloud_slb import SLB
    from certsmith.dns.alicloud_rpc import AliCloudError, ApiSettings, RpcClient
    from certsmith.dns.http_api import RetryPolicy

    settings = ApiSettings.from_env(SLB, slb_env(emulator), target="test")
    pem, key = self_signed("create.example.com")[:2]
    params = {"ServerCertificateName": "create-test", "ServerCertificate": pem, "PrivateKey": key}
    lookups: list[str] = []

    async def scenario(find_result: dict[str, str] | None) -> tuple[dict[str, object], bool]:
        async def find() -> dict[str, object] | None:
            lookups.append("find")
            return find_result

        async with RpcClient(settings, retry=RetryPolicy(max_attempts=3, retry_delay=0.01)) as client:
            return await client.create("UploadServerCertificate", params, find)

    emulator.fail_next("InvalidParameter", 400, "refused")
    with pytest.raises(AliCloudError) as refused:
        asyncio.run(scenario(None))
    assert refused.value.code == "InvalidParameter" and not refused.value.transient and lookups == []
    assert emulator.certificates == {}

    emulator.fail_next("Throttling.User", 400, "Request was denied due to user flow control.")
    answer, adopted = asyncio.run(scenario(None))
    assert not adopted and lookups == ["find"] and list(emulator.certificates) == [answer["ServerCertificateId"]]

    emulator.lose_answer("UploadServerCertificate", status=503)
    answer, adopted = asyncio.run(scenario({"ServerCertificateId": "found"}))
    assert adopted and answer == {"ServerCertificateId": "found"} and lookups == ["find", "find"]
    assert len(emulator.certificates) == 2 and emulator.calls("UploadServerCertificate") == 4  # 1 + 2 + 1
