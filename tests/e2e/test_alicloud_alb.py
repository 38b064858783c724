"""``alicloud-alb`` end to end: the real CLI against Pebble 2.10, the CAS emulator and the ALB emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Cli, clean_env
from tests.support.alicloud_alb_emulator import AlbEmulator
from tests.support.alicloud_cas_emulator import CasEmulator
from tests.support.alicloud_emulator import AliCloudAccount

AK, SECRET = "LTAI5tAlbE2e", "alb-e2e-Secret-0123456789"
LSN = "lsn-e2e000000000000000"
CAS_ONLY = {"yundun-cert:UploadUserCertificate", "yundun-cert:ListUserCertificateOrder",
            "yundun-cert:GetUserCertificateDetail", "yundun-cert:DeleteUserCertificate"}


@pytest.fixture
def clouds() -> Iterator[tuple[CasEmulator, AlbEmulator]]:
    accounts = [AliCloudAccount(AK, SECRET), AliCloudAccount("LTAI5tAlbRead", SECRET, allowed_actions={
        *CAS_ONLY, "alb:GetListenerAttribute", "alb:ListListenerCertificates"})]
    with CasEmulator(accounts) as cas, AlbEmulator(accounts, cas=cas, configuring_polls=2) as alb:
        alb.add_listener(LSN)
        yield cas, alb


def env_for(cas: CasEmulator, alb: AlbEmulator, ak: str = AK, secret: str = SECRET) -> dict[str, str]:
    return clean_env(
        ALIBABA_CLOUD_ACCESS_KEY_ID=ak, ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret, ALICLOUD_CAS_ENDPOINT=cas.endpoint,
        ALICLOUD_ALB_ENDPOINT=alb.endpoint, ALICLOUD_REGION="cn-hangzhou",
    )


@pytest.mark.parametrize("mode", ["default", "additional"])
def test_issue_renew_deploy_again(registered_cli: Cli, clouds: tuple[CasEmulator, AlbEmulator], mode: str) -> None:
    cli, (cas, alb) = registered_cli, clouds
    env = env_for(cas, alb)
    name = f"alb-{mode}.example.com"
    # given after alb: alicloud-cas runs first all the same
    spec = f"alicloud-alb:listener={LSN},mode={mode}"
    issued = json.loads(cli.run("--json", "issue", "-d", name, "--deploy", spec, "--deploy", "alicloud-cas",
                                *cli.http_args(), env=env).stdout)
    assert [t["target"] for t in issued["deploy"]] == ["alicloud-cas", "alicloud-alb"]
    [first] = cas.certificates()
    first_id = f"{first.cert_id}-cn-hangzhou"
    listener = alb.listener(LSN)
    assert listener.status == "Running"  # the target waited for the change to finish
    if mode == "default":
        assert listener.default == first_id and listener.additional == {}
        assert issued["deploy"][1]["changed"] == [f"set default certificate {first_id} on listener {LSN}"]
    else:
        assert listener.default is None and listener.additional == {first_id: "Associated"}
        assert issued["deploy"][1]["changed"] == [f"associated additional certificate {first_id} with listener {LSN}"]

    alb.clear_log()
    for _ in range(2):
        again = json.loads(cli.run("--json", "deploy", name, env=env).stdout)
        assert again["ok"] and all(t["changed"] == [] for t in again["deploy"])
    assert not {r.action for r in alb.requests} - {"GetListenerAttribute", "ListListenerCertificates"}

    renewed = json.loads(cli.run("--json", "renew", name, "--force", env=env).stdout)
    [result] = renewed["results"]
    assert result["renewed"] and all(t["ok"] for t in result["deploy"]), result
    [second] = cas.certificates()  # exactly the replaced upload is gone from CAS
    second_id = f"{second.cert_id}-cn-hangzhou"
    assert second.cert_id != first.cert_id and cas.deleted == [first.cert_id]
    listener = alb.listener(LSN)
    assert listener.status == "Running"
    if mode == "default":
        assert listener.default == second_id
    else:
        assert listener.additional == {second_id: "Associated"}
        assert f"dissociated additional certificate {first_id} from listener {LSN}" in result["deploy"][1]["changed"]


def test_without_cas_the_command_is_refused_before_ordering(registered_cli: Cli,
                                                             clouds: tuple[CasEmulator, AlbEmulator]) -> None:
    cli, (cas, alb) = registered_cli, clouds
    mark = cli.pebble.log_mark()
    result = cli.run("issue", "-d", "albnocas.example.com", "--deploy", f"alicloud-alb:listener={LSN}",
                     *cli.http_args(), env=env_for(cas, alb), check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr == ("error: deploy target 'alicloud-alb' uses alicloud-cas's upload: add --deploy "
                             "alicloud-cas before alicloud-alb\n")
    assert cli.pebble.orders_created(mark) == [] and alb.requests == []


def test_ram_forbidden_and_wrong_secret(registered_cli: Cli, clouds: tuple[CasEmulator, AlbEmulator]) -> None:
    cli, (cas, alb) = registered_cli, clouds
    name = "albram.example.com"
    spec = ("--deploy", "alicloud-cas", "--deploy", f"alicloud-alb:listener={LSN}")
    refused = cli.run("issue", "-d", name, *spec, *cli.http_args(), env=env_for(cas, alb, "LTAI5tAlbRead"),
                      check=False)
    assert refused.returncode != 0
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert ("deploy target alicloud-alb failed: ALB UpdateListenerAttribute failed (Forbidden.RAM): the RAM user of "
            "AccessKey LTAI5tAlbRead may not call UpdateListenerAttribute. Grant it the actions "
            "alb:GetListenerAttribute, alb:UpdateListenerAttribute") in line
    assert (cli.state_dir / "certificates" / name / "cert.pem").exists()
    assert len(cas.certificates()) == 1 and alb.listener(LSN).default is None

    wrong = cli.run("deploy", name, env=env_for(cas, alb, secret="not-the-secret"), check=False)
    assert wrong.returncode != 0 and "(SignatureDoesNotMatch): the request signature does not match" in wrong.stderr
    assert "not-the-secret" not in wrong.stderr

    fixed = json.loads(cli.run("--json", "deploy", name, env=env_for(cas, alb)).stdout)
    [cert] = cas.certificates()
    assert fixed["ok"] and alb.listener(LSN).default == f"{cert.cert_id}-cn-hangzhou"
