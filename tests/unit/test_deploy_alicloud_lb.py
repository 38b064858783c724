"""The alicloud-slb and alicloud-alb targets' options, names and the CAS requirement (no network)."""

from __future__ import annotations

import asyncio

import pytest

from certsmith.deploy.alicloud_alb import AlbTarget
from certsmith.deploy.alicloud_slb import SlbTarget, _carried, upload_name
from certsmith.deploy.base import DeployContext, check_requirements, load_target, parse_deploy_spec
from certsmith.errors import ConfigError
from certsmith.storage.base import CertificateFiles

CREDS = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tUnit", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "unit-secret"}
REGION = {**CREDS, "ALICLOUD_REGION": "cn-hangzhou"}


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("alicloud-slb", REGION, "deploy target 'alicloud-slb' needs load-balancer=..."),
        ("alicloud-slb:load-balancer=lb-1", {}, "needs the environment variable ALIBABA_CLOUD_ACCESS_KEY_ID"),
        ("alicloud-slb:load-balancer=lb-1", CREDS, "needs ALICLOUD_REGION (e.g. cn-hangzhou): SLB is regional"),
        ("alicloud-slb:load-balancer=lb 1", REGION, "load-balancer='lb 1' is not a load balancer ID"),
        ("alicloud-slb:load-balancer=lb-1,port=0", REGION, "port='0' must be the HTTPS listener's port"),
        ("alicloud-slb:load-balancer=lb-1,listener=x", REGION, "has no option listener"),
        ("alicloud-alb", REGION, "deploy target 'alicloud-alb' needs listener=..."),
        ("alicloud-alb:listener=abc", REGION, "listener='abc' is not an ALB listener ID (lsn-...)"),
        ("alicloud-alb:listener=lsn-1,mode=sni", REGION, "mode='sni' must be default or additional"),
        ("alicloud-alb:listener=lsn-1,wait=0", REGION, "wait must be between 0 and 86400 seconds"),
        ("alicloud-alb:listener=lsn-1", CREDS, "ALICLOUD_ALB_ENDPOINT names {region}: set ALICLOUD_REGION"),
        ("alicloud-alb:listener=lsn-1", {**REGION, "ALICLOUD_ALB_ENDPOINT": "http://alb.example.com"},
         "plain http is only allowed for loopback"),
    ],
)
def test_bad_options_are_one_line_errors(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_target(parse_deploy_spec(text), env)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_good_options() -> None:
    slb = load_target(parse_deploy_spec("alicloud-slb:load-balancer=lb-bp1x"), REGION)
    assert isinstance(slb, SlbTarget) and (slb.config.load_balancer, slb.config.port) == ("lb-bp1x", 443)
    alb = load_target(parse_deploy_spec("alicloud-alb:listener=lsn-1,mode=Additional"), REGION)
    assert isinstance(alb, AlbTarget) and alb.config.mode == "additional"
    assert alb.config.settings.endpoint == "https://alb.cn-hangzhou.aliyuncs.com"


def test_alb_requires_cas_among_the_specs() -> None:
    with pytest.raises(ConfigError, match=r"add --deploy alicloud-cas before alicloud-alb$"):
        check_requirements([parse_deploy_spec("alicloud-alb:listener=lsn-1"), parse_deploy_spec("files:cert=/a")])
    check_requirements([parse_deploy_spec("alicloud-alb:listener=lsn-1"), parse_deploy_spec("alicloud-cas")])


def test_alb_without_the_cas_upload_in_this_run_says_what_to_add() -> None:
    target = AlbTarget.from_options({"listener": "lsn-1"}, REGION)
    context = DeployContext("x.example.com", ("x.example.com",), 1, "ab", "", CertificateFiles(b"", b"", b"", None),
                            {}, REGION)
    with pytest.raises(ConfigError, match="add --deploy alicloud-cas before alicloud-alb"):
        asyncio.run(target.deploy(context))
    assert context.state == {}


def test_upload_names_fit_slb_rules() -> None:
    assert upload_name("*.example.com", "0A1B2C3D4E5F60718293") == "certsmith-_.example.com-0a1b2c3d4e5f6071"
    long = upload_name("a" * 100 + ".example.com", "ff")
    assert len(long) == 80 and long.endswith("-ff")


def test_listener_settings_sent_back_follow_their_switches() -> None:
    listener = {"Bandwidth": -1, "StickySession": "on", "StickySessionType": "server", "Cookie": "sid",
                "CookieTimeout": 300, "HealthCheck": "off", "HealthCheckURI": "/h", "VServerGroupId": "rsp-1",
                "ServerCertificateId": "old", "Status": "running", "AclStatus": "off", "AclId": "acl-1"}
    assert _carried(listener) == {"Bandwidth": -1, "StickySession": "on", "HealthCheck": "off", "AclStatus": "off",
                                  "StickySessionType": "server", "Cookie": "sid", "VServerGroup": "on",
                                  "VServerGroupId": "rsp-1"}
