"""The Alibaba Cloud deploy targets' options, names and order (no network)."""

from __future__ import annotations

import pytest

from certsmith.deploy.alicloud_cas import certificate_name, normalise_serial
from certsmith.deploy.base import load_target, ordered, parse_deploy_spec
from certsmith.errors import ConfigError

CREDS = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tUnit", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "unit-secret"}


def test_alicloud_cas_runs_first_and_reload_last_whatever_the_order_given() -> None:
    specs = [parse_deploy_spec(t) for t in ("reload:command=x", "files:cert=/a", "alicloud-cas", "files:cert=/b")]
    assert [s.text for s in ordered(specs)] == ["alicloud-cas", "files:cert=/a", "files:cert=/b", "reload:command=x"]


@pytest.mark.parametrize(
    ("lineage", "serial", "expected"),
    [
        ("example.com", "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "certsmith-example.com-a1b2c3d4e5f60718"),
        ("*.example.com", "ff", "certsmith-example.com-ff"),
        ("a" * 70 + ".example.com", "1", "certsmith-" + ("a" * 70 + ".example.com")[-52:] + "-1"),
    ],
)
def test_certificate_names_are_short_unique_and_clean(lineage: str, serial: str, expected: str) -> None:
    name = certificate_name(lineage, serial)
    assert name == expected and len(name) <= 64


def test_serials_compare_in_any_spelling() -> None:
    assert normalise_serial("0A:1B:ff") == normalise_serial("a1bFF") == "a1bff"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("alicloud-cas", {}, "deploy target 'alicloud-cas' needs the environment variable ALIBABA_CLOUD_ACCESS_KEY_ID"),
        ("alicloud-cas:region=Hangzhou", CREDS, "alicloud-cas: region=Hangzhou is not a region ID"),
        ("alicloud-cas:colour=red", CREDS, "deploy target 'alicloud-cas' has no option colour"),
        ("alicloud-cas", {**CREDS, "ALICLOUD_CAS_ENDPOINT": "http://cas.example.com"}, "ALICLOUD_CAS_ENDPOINT"),
        ("alicloud-cas", {**CREDS, "ALICLOUD_SIGNATURE_VERSION": "2.5"}, "ALICLOUD_SIGNATURE_VERSION must be 3 or 1"),
    ],
)
def test_bad_alicloud_options_are_refused_in_one_line(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_target(parse_deploy_spec(text), env)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cas_region_follows_the_endpoint_unless_given() -> None:
    from certsmith.deploy.alicloud_cas import AliCloudCasTarget

    plain = load_target(parse_deploy_spec("alicloud-cas"), CREDS)
    assert isinstance(plain, AliCloudCasTarget) and plain.config.region == "cn-hangzhou"
    intl_env = {**CREDS, "ALICLOUD_CAS_ENDPOINT": "cas.ap-southeast-1.aliyuncs.com"}
    intl = load_target(parse_deploy_spec("alicloud-cas"), intl_env)
    assert isinstance(intl, AliCloudCasTarget) and intl.config.region == "ap-southeast-1"
    assert "unit-secret" not in repr(plain.config)
