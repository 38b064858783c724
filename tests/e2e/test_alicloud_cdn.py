"""The alicloud-cdn and alicloud-dcdn deploy targets end to end: the real CLI, Pebble 2.10 and the emulators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import Cli, clean_env
from tests.support.alicloud_cas_emulator import CasEmulator
from tests.support.alicloud_cdn_emulator import CdnEmulator, DcdnEmulator
from tests.support.alicloud_emulator import AliCloudAccount
from tests.support.alidns_emulator import AlidnsAccount, AlidnsEmulator

AK, SECRET = "LTAI5tCdnDeploy", "cdn-Secret-0123456789"
CAS_ONLY = "LTAI5tCasOnly"
NO_CLEANUP = "LTAI5tCdnNoCasDelete"
DOMAINS = ("cdn.example.com", "img.example.com", "dcdn.example.com", "bad.example.com", "keep.example.com")


@dataclass
class Cloud:
    cas: CasEmulator
    cdn: CdnEmulator
    dcdn: DcdnEmulator

    def env(self, ak: str = AK, secret: str = SECRET) -> dict[str, str]:
        return clean_env(
            ALIBABA_CLOUD_ACCESS_KEY_ID=ak,
            ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret,
            ALICLOUD_CAS_ENDPOINT=self.cas.endpoint,
            ALICLOUD_CDN_ENDPOINT=self.cdn.endpoint,
            ALICLOUD_DCDN_ENDPOINT=self.dcdn.endpoint,
        )


def accounts() -> list[AliCloudAccount]:
    return [
        AliCloudAccount(AK, SECRET),
        AliCloudAccount(CAS_ONLY, SECRET, allowed_actions={"yundun-cert:*", "cdn:DescribeDomainCertificateInfo"}),
        AliCloudAccount(NO_CLEANUP, SECRET, allowed_actions={"dcdn:*"}),
    ]


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    with CasEmulator(accounts()) as cas, CdnEmulator(accounts(), domains=DOMAINS, cas=cas) as cdn, \
            DcdnEmulator(accounts(), domains=DOMAINS, cas=cas) as dcdn:
        yield Cloud(cas, cdn, dcdn)


def stored_leaf(cli: Cli, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((cli.state_dir / "certificates" / name / "cert.pem").read_bytes())


def test_cdn_takes_the_cas_certificate_and_renewal_switches_and_cleans_up(registered_cli: Cli, cloud: Cloud) -> None:
    cli = registered_cli
    env = cloud.env()
    issued = json.loads(cli.run(
        "--json", "issue", "-d", "cdn.example.com", "-d", "img.example.com",
        "--deploy", "alicloud-cdn:domain=cdn.example.com;img.example.com",  # given first, runs after CAS
        "--deploy", "alicloud-cas", *cli.http_args(), env=env,
    ).stdout)
    assert [t["target"] for t in issued["deploy"]] == ["alicloud-cas", "alicloud-cdn"]
    [first] = cloud.cas.certificates()
    assert first.leaf() == stored_leaf(cli, "cdn.example.com")
    for domain in ("cdn.example.com", "img.example.com"):
        entry = cloud.cdn.domain(domain)
        assert (entry.ssl, entry.cert_type, entry.cert_id, entry.cert_region) == (True, "cas", first.cert_id,
                                                                                   "cn-hangzhou")
    assert issued["deploy"][1]["changed"] == [
        f"set CDN {d} to {first.name} (CAS certificate {first.cert_id})" for d in ("cdn.example.com", "img.example.com")
    ]
    sets = cloud.cdn.calls("SetCdnDomainSSLCertificate")
    assert sets == 2

    for _ in range(2):  # deploy again: nothing set, nothing uploaded
        again = json.loads(cli.run("--json", "deploy", "cdn.example.com", env=env).stdout)
        assert [t["changed"] for t in again["deploy"]] == [[], []] and len(again["deploy"][1]["unchanged"]) == 2
    assert cloud.cdn.calls("SetCdnDomainSSLCertificate") == sets and cloud.cas.calls("UploadUserCertificate") == 1

    renewed = json.loads(cli.run("--json", "renew", "cdn.example.com", "--force", env=env).stdout)
    [result] = renewed["results"]
    assert all(t["ok"] for t in result["deploy"]), result
    [second] = cloud.cas.certificates()
    assert second.leaf() == stored_leaf(cli, "cdn.example.com") and second.cert_id != first.cert_id
    assert {cloud.cdn.domain(d).cert_id for d in ("cdn.example.com", "img.example.com")} == {second.cert_id}
    assert cloud.cas.deleted == [first.cert_id]  # exactly the replaced upload
    assert result["deploy"][0]["changed"][-1] == f"deleted CAS certificate {first.cert_id}"


def test_dcdn_direct_upload_then_renewal_replaces_and_deletes_the_old_upload(registered_cli: Cli, cloud: Cloud) -> None:
    cli = registered_cli
    env = cloud.env()
    cli.run("issue", "-d", "dcdn.example.com", "--deploy", "alicloud-dcdn:domain=dcdn.example.com",
            *cli.http_args(), env=env)
    entry = cloud.dcdn.domain("dcdn.example.com")
    leaf = stored_leaf(cli, "dcdn.example.com")
    assert entry.ssl and entry.cert_type == "upload" and entry.cert is not None and entry.cert.leaf() == leaf
    assert entry.cert_name == f"certsmith-dcdn.example.com-{format(leaf.serial_number, 'x')[:16]}"
    old_id = entry.cert_id
    again = json.loads(cli.run("--json", "deploy", "dcdn.example.com", env=env).stdout)
    assert again["deploy"][0]["changed"] == [] and cloud.dcdn.calls("SetDcdnDomainSSLCertificate") == 1

    renewed = json.loads(cli.run("--json", "renew", "dcdn.example.com", "--force", env=env).stdout)
    [result] = renewed["results"]
    entry = cloud.dcdn.domain("dcdn.example.com")
    assert entry.cert is not None and entry.cert.leaf() == stored_leaf(cli, "dcdn.example.com")
    assert entry.cert_id != old_id and cloud.cas.deleted == [old_id]
    assert result["deploy"][0]["changed"][-1] == f"deleted replaced upload {old_id} (CAS)"
    assert [c.cert_id for c in cloud.cas.certificates()] == [entry.cert_id]

    # a RAM user without the CAS delete: the renewal still delivers; the old upload is reported and kept
    kept_id = entry.cert_id
    limited = cli.run("--json", "renew", "dcdn.example.com", "--force", env=cloud.env(ak=NO_CLEANUP))
    [result] = json.loads(limited.stdout)["results"]
    assert result["deploy"][0]["ok"]
    assert result["deploy"][0]["changed"][-1].startswith(f"kept replaced upload {kept_id}: CAS DeleteUserCertificate "
                                                         "failed (Forbidden.RAM)")
    assert cloud.dcdn.domain("dcdn.example.com").cert_id != kept_id and cloud.cas.certificate(kept_id) is not None


def test_ram_forbidden_and_wrong_secret_keep_the_certificate(registered_cli: Cli, cloud: Cloud) -> None:
    cli = registered_cli
    forbidden = cli.run("issue", "-d", "bad.example.com", "--deploy", "alicloud-cas",
                        "--deploy", "alicloud-cdn:domain=bad.example.com", *cli.http_args(),
                        env=cloud.env(ak=CAS_ONLY), check=False)
    assert forbidden.returncode == 1
    errors = [line for line in forbidden.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: deploy target alicloud-cdn failed: bad.example.com: CDN SetCdnDomainSSLCertificate failed "
        f"(Forbidden.RAM): the RAM user of AccessKey {CAS_ONLY} may not call SetCdnDomainSSLCertificate. Grant it "
        "the actions cdn:SetCdnDomainSSLCertificate, cdn:DescribeDomainCertificateInfo, or attach the system "
        "policy AliyunCDNFullAccess" + errors[0][errors[0].index(" [RequestId"):]
    ]
    stored_leaf(cli, "bad.example.com")
    assert not cloud.cdn.domain("bad.example.com").ssl and len(cloud.cas.certificates()) == 1

    wrong = cli.run("deploy", "bad.example.com", env=cloud.env(secret="wrong-secret"), check=False)
    assert wrong.returncode == 1
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "(SignatureDoesNotMatch): the request signature does not match" in errors[0]
    assert "wrong-secret" not in wrong.stderr + wrong.stdout

    fixed = json.loads(cli.run("--json", "deploy", "bad.example.com", env=cloud.env()).stdout)
    assert fixed["ok"] and cloud.cdn.domain("bad.example.com").cert_id == cloud.cas.certificates()[0].cert_id


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("alicloud-cdn", "deploy target 'alicloud-cdn' needs domain=..."),
        ("alicloud-cdn:domain=;", "alicloud-cdn: domain= names no domain"),
        ("alicloud-dcdn:domain=not_a domain", "alicloud-dcdn: domain=not_a domain is not a domain name"),
    ],
)
def test_bad_cdn_options_are_refused_before_any_order(cli: Cli, spec: str, message: str) -> None:
    mark = cli.pebble.log_mark()
    env = clean_env(ALIBABA_CLOUD_ACCESS_KEY_ID=AK, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET)
    result = cli.run("issue", "-d", "x.example.com", "--deploy", spec, "--email", "a@example.com", "--agree-tos",
                     *cli.http_args(), env=env, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert cli.pebble.orders_created(mark) == []


def test_readme_path_persist_record_once_then_renewals_deliver_to_cas_and_cdn(
    registered_cli: Cli, cloud: Cloud, tmp_path: Path
) -> None:
    """The README's Alibaba Cloud path: the dns-persist-01 record created once with Alidns, then issuance and
    unattended renewals with only the CAS/CDN key in the env file, delivering to CAS + CDN."""
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    names = ("www.persist-cdn.com", "*.persist-cdn.com")
    dns_key = ("LTAI5tDnsOnce", "dns-Secret-once")
    with AlidnsEmulator([AlidnsAccount(*dns_key, domains=["persist-cdn.com"])], on_change=srv.set_txt_values) as em:
        cli.run("persist", "create", "-d", names[0], "-d", names[1], "--dns", "alidns", "--dns-resolver",
                srv.dns_address, env=clean_env(ALIBABA_CLOUD_ACCESS_KEY_ID=dns_key[0],
                                               ALIBABA_CLOUD_ACCESS_KEY_SECRET=dns_key[1], ALIDNS_ENDPOINT=em.endpoint))
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in cloud.env().items() if k.startswith("ALI")))
    env_file.chmod(0o600)
    assert dns_key[1] not in env_file.read_text()
    cloud.cdn.add_domain("www.persist-cdn.com")
    cli.run("--env-file", str(env_file), "issue", "-d", names[0], "-d", names[1], "--challenge", "dns-persist-01",
            "--deploy", "alicloud-cas", "--deploy", "alicloud-cdn:domain=www.persist-cdn.com", env=clean_env())
    [first] = cloud.cas.certificates()
    assert cloud.cdn.domain("www.persist-cdn.com").cert_id == first.cert_id

    # what the timer runs: `certsmith -q renew` with the env file, no DNS variable anywhere
    cli.run("--env-file", str(env_file), "-q", "renew", "--force", env=clean_env())
    [second] = cloud.cas.certificates()
    assert second.leaf() == stored_leaf(cli, "www.persist-cdn.com") and second.cert_id != first.cert_id
    assert cloud.cdn.domain("www.persist-cdn.com").cert_id == second.cert_id and cloud.cas.deleted == [first.cert_id]


def test_direct_upload_to_several_domains_interrupted_after_the_service_acted(
    registered_cli: Cli, cloud: Cloud
) -> None:
    """The renewal's second domain is switched but its answer is lost and the retry refused: the run fails. The next
    run sends nothing to either domain (both already serve the new version) and still deletes the replaced upload:
    one upload is left, the current one."""
    cli, env = registered_cli, cloud.env()
    spec = "alicloud-cdn:domain=cdn.example.com;img.example.com"
    cli.run("issue", "-d", "cdn.example.com", "-d", "img.example.com", "--deploy", spec, *cli.http_args(), env=env)
    [first] = cloud.cas.certificates()
    assert {cloud.cdn.domain(d).cert_id for d in ("cdn.example.com", "img.example.com")} == {first.cert_id}

    set_action = "SetCdnDomainSSLCertificate"
    cloud.cdn.lose_answer(set_action, nth=2)  # img.example.com switched, the answer never arrives
    cloud.cdn.fail_call(set_action, nth=3, code="InvalidCertName.Duplicate", status=400,
                        message="The certificate name already exists.")  # and the client's new attempt is refused
    failed = cli.run("--json", "renew", "cdn.example.com", "--force", env=env, check=False)
    assert failed.returncode == 1
    [result] = json.loads(failed.stdout)["results"]
    assert result["renewed"] and result["deploy"][0]["error"].startswith(
        f"deploy target alicloud-cdn failed: img.example.com: CDN {set_action} failed (InvalidCertName.Duplicate)"
    )
    leaf = stored_leaf(cli, "cdn.example.com")
    second = next(c for c in cloud.cas.certificates() if c.cert_id != first.cert_id)
    assert second.leaf() == leaf
    assert {cloud.cdn.domain(d).cert_id for d in ("cdn.example.com", "img.example.com")} == {second.cert_id}

    sets = cloud.cdn.calls(set_action)
    again = json.loads(cli.run("--json", "deploy", "cdn.example.com", env=env).stdout)
    [outcome] = again["deploy"]
    assert again["ok"] and cloud.cdn.calls(set_action) == sets  # no domain sent again
    assert outcome["unchanged"] == [f"CDN {d} already serves {second.name}" for d in ("cdn.example.com",
                                                                                       "img.example.com")]
    assert outcome["changed"] == [f"deleted replaced upload {first.cert_id} (CAS)"]
    assert [c.cert_id for c in cloud.cas.certificates()] == [second.cert_id]  # exactly one upload, the current one
