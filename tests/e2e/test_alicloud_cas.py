"""The alicloud-cas deploy target end to end: the real CLI against Pebble 2.10 and the CAS emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography import x509

from tests.conftest import Cli, clean_env
from tests.e2e.test_alicloud_slb_sdk import self_signed
from tests.support.alicloud_cas_emulator import CasEmulator
from tests.support.alicloud_emulator import DROPPED, AliCloudAccount

AK, SECRET = "LTAI5tCasDeploy", "cas-Secret-0123456789"
LIMITED_AK = "LTAI5tCasNoDelete"


@pytest.fixture
def cas() -> Iterator[CasEmulator]:
    accounts = [
        AliCloudAccount(AK, SECRET),
        AliCloudAccount(
            LIMITED_AK,
            SECRET,
            allowed_actions={"yundun-cert:UploadUserCertificate", "yundun-cert:ListUserCertificateOrder",
                             "yundun-cert:GetUserCertificateDetail"},
        ),
    ]
    with CasEmulator(accounts) as emulator:
        yield emulator


def cas_env(cas: CasEmulator, ak: str = AK, secret: str = SECRET) -> dict[str, str]:
    return clean_env(
        ALIBABA_CLOUD_ACCESS_KEY_ID=ak, ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret, ALICLOUD_CAS_ENDPOINT=cas.endpoint
    )


def stored_leaf(cli: Cli, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((cli.state_dir / "certificates" / name / "cert.pem").read_bytes())


def test_upload_once_per_version_then_renewal_deletes_the_replaced(registered_cli: Cli, cas: CasEmulator) -> None:
    cli = registered_cli
    env = cas_env(cas)
    issued = json.loads(
        cli.run("--json", "issue", "-d", "cas.example.com", "--deploy", "alicloud-cas", *cli.http_args(),
                env=env).stdout
    )
    [outcome] = issued["deploy"]
    [first] = cas.certificates()
    leaf = stored_leaf(cli, "cas.example.com")
    assert first.leaf() == leaf and first.name == f"certsmith-cas.example.com-{format(leaf.serial_number, 'x')[:16]}"
    assert outcome["ok"] and outcome["changed"] == [f"uploaded CAS certificate {first.name} (CertId {first.cert_id})"]
    state = json.loads((cli.state_dir / "certificates" / "cas.example.com" / "deploy.json").read_text())
    assert SECRET not in json.dumps(state)

    # deploy twice: nothing uploaded, nothing deleted
    for _ in range(2):
        again = json.loads(cli.run("--json", "deploy", "cas.example.com", env=env).stdout)
        assert again["deploy"][0]["changed"] == [] and again["deploy"][0]["unchanged"], again
    assert cas.calls("UploadUserCertificate") == 1 and len(cas.certificates()) == 1

    # the lineage's deploy state lost: the upload of this version is found by its name, not uploaded again
    (cli.state_dir / "certificates" / "cas.example.com" / "deploy.json").unlink()
    adopted = json.loads(cli.run("--json", "deploy", "cas.example.com", env=env).stdout)
    assert adopted["deploy"][0]["changed"] == [] and cas.calls("UploadUserCertificate") == 1

    renewed = json.loads(cli.run("--json", "renew", "cas.example.com", "--force", env=env).stdout)
    [result] = renewed["results"]
    [second] = cas.certificates()
    assert second.leaf() == stored_leaf(cli, "cas.example.com") and second.cert_id != first.cert_id
    assert result["deploy"][0]["changed"] == [
        f"uploaded CAS certificate {second.name} (CertId {second.cert_id})",
        f"deleted CAS certificate {first.cert_id}",
    ]
    assert cas.deleted == [first.cert_id]


def test_a_certificate_in_use_is_kept_and_deleted_on_a_later_run(registered_cli: Cli, cas: CasEmulator) -> None:
    cli = registered_cli
    env = cas_env(cas)
    cli.run("issue", "-d", "inuse.example.com", "--deploy", "alicloud-cas", *cli.http_args(), env=env)
    [first] = cas.certificates()
    cas.bind(first.cert_id, "cdn:inuse.example.com")
    renewed = json.loads(cli.run("--json", "renew", "inuse.example.com", "--force", env=env).stdout)
    [result] = renewed["results"]
    assert result["deploy"][0]["ok"] and renewed["results"][0]["renewed"]
    assert any(line.startswith(f"kept CAS certificate {first.cert_id}: CAS refused to delete it (CertInUse")
               for line in result["deploy"][0]["changed"])
    assert len(cas.certificates()) == 2
    cas.unbind("cdn:inuse.example.com")
    later = json.loads(cli.run("--json", "deploy", "inuse.example.com", env=env).stdout)
    assert later["deploy"][0]["changed"] == [f"deleted CAS certificate {first.cert_id}"]
    assert cas.deleted == [first.cert_id]


def test_ram_forbidden_and_wrong_secret_explain_in_one_line(registered_cli: Cli, cas: CasEmulator) -> None:
    cli = registered_cli
    wrong = cli.run("issue", "-d", "casbad.example.com", "--deploy", "alicloud-cas", *cli.http_args(),
                    env=cas_env(cas, secret="not-the-secret"), check=False)
    assert wrong.returncode == 1
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: deploy target alicloud-cas failed: CAS ListUserCertificateOrder failed (SignatureDoesNotMatch): "
        f"the request signature does not match; the AccessKey secret is not the one of AccessKey ID {AK}"
    ), errors
    stored_leaf(cli, "casbad.example.com")  # the new certificate is stored all the same
    assert cas.certificates() == []

    # a RAM user that may upload but not delete: the upload works, the renewal's clean-up fails clearly
    limited = cas_env(cas, ak=LIMITED_AK)
    cli.run("deploy", "casbad.example.com", env=limited)
    renewed = cli.run("renew", "casbad.example.com", "--force", env=limited, check=False)
    assert renewed.returncode == 1, renewed.stderr
    errors = [line for line in renewed.stderr.splitlines() if "deploy target alicloud-cas failed" in line]
    assert len(errors) == 1 and "CAS DeleteUserCertificate failed (Forbidden.RAM): the RAM user of AccessKey " \
        f"{LIMITED_AK} may not call DeleteUserCertificate. Grant it the actions yundun-cert:UploadUserCertificate" \
        in errors[0], errors
    assert len(cas.certificates()) == 2  # nothing lost; the next run with the right key deletes the old one
    fixed = json.loads(cli.run("--json", "deploy", "casbad.example.com", env=cas_env(cas)).stdout)
    assert len(fixed["deploy"][0]["changed"]) == 1 and fixed["deploy"][0]["changed"][0].startswith("deleted")
    assert len(cas.certificates()) == 1 and cas.certificates()[0].leaf() == stored_leaf(cli, "casbad.example.com")


def test_a_damaged_deploy_state_is_started_afresh_without_a_traceback(registered_cli: Cli, cas: CasEmulator) -> None:
    cli = registered_cli
    env = cas_env(cas)
    cli.run("issue", "-d", "damaged-state.example.com", "--deploy", "alicloud-cas", *cli.http_args(), env=env)
    path = cli.state_dir / "certificates" / "damaged-state.example.com" / "deploy.json"
    state = json.loads(path.read_text())
    [key] = state
    state[key]["previous"] = 5  # someone's edit: not a list
    path.write_text(json.dumps(state))
    result = cli.run("--json", "renew", "damaged-state.example.com", "--force", env=env, check=False)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["results"][0]["renewed"] is True


@pytest.mark.parametrize("lost_status", [DROPPED, 503], ids=["connection-cut", "503-after-acting"])
def test_an_upload_whose_answer_was_lost_is_found_and_adopted(
    registered_cli: Cli, cas: CasEmulator, lost_status: int
) -> None:
    """CAS stored the upload but its answer never arrived; the client's retry is refused (name taken): the upload is
    looked up by its name and adopted, once its serial is checked, instead of failing or uploading twice."""
    cli = registered_cli
    cas.lose_answer("UploadUserCertificate", status=lost_status)
    issued = json.loads(
        cli.run("--json", "issue", "-d", "lost.example.com", "--deploy", "alicloud-cas", *cli.http_args(),
                env=cas_env(cas)).stdout
    )
    [outcome] = issued["deploy"]
    [upload] = cas.certificates()  # exactly one upload
    assert upload.leaf() == stored_leaf(cli, "lost.example.com")
    assert outcome["ok"] and outcome["changed"] == [f"uploaded CAS certificate {upload.name} (CertId {upload.cert_id})"]
    uploads = [r for r in cas.requests if r.action == "UploadUserCertificate"]
    # the lost one; perhaps the same request sent again by the HTTP layer (SignatureNonceUsed); a new one refused
    assert uploads[0].status == lost_status and uploads[-1].code == "NameRepeat", uploads
    assert {r.code for r in uploads[1:-1]} <= {"SignatureNonceUsed"}
    state = json.loads((cli.state_dir / "certificates" / "lost.example.com" / "deploy.json").read_text())
    assert [s["cert_id"] for s in state.values()] == [upload.cert_id]
    again = json.loads(cli.run("--json", "deploy", "lost.example.com", env=cas_env(cas)).stdout)
    assert again["deploy"][0]["changed"] == [] and cas.calls("UploadUserCertificate") == len(uploads)


@pytest.mark.parametrize("planted_for", ["elsewhere.example.org", "taken.example.com"],
                         ids=["not-found-by-keyword", "found-by-keyword"])
def test_a_same_named_certificate_with_another_serial_is_an_error(
    registered_cli: Cli, cas: CasEmulator, planted_for: str
) -> None:
    """A certificate under this version's name that is not this version (another serial) is never adopted."""
    cli = registered_cli
    failed = cli.run("issue", "-d", "taken.example.com", "--deploy", "alicloud-cas", *cli.http_args(),
                     env=cas_env(cas, secret="not-the-secret"), check=False)
    assert failed.returncode == 1 and cas.certificates() == []
    leaf = stored_leaf(cli, "taken.example.com")
    name = f"certsmith-taken.example.com-{format(leaf.serial_number, 'x')[:16]}"
    cert_pem, key_pem = self_signed(planted_for)[:2]
    planted = cas.upload(AliCloudAccount(AK, SECRET).owner_id, name, cert_pem, key_pem)
    result = cli.run("deploy", "taken.example.com", env=cas_env(cas), check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: deploy target alicloud-cas failed: CAS already holds a certificate named {name} "
        f"(CertId {planted.cert_id}) with the serial {planted.serial.lower().lstrip('0')}, not this "
        f"certificate's {format(leaf.serial_number, 'x')}; rename or delete it in the CAS console"
    ], result.stderr
    assert [c.cert_id for c in cas.certificates()] == [planted.cert_id]  # nothing uploaded, nothing deleted
    assert stored_leaf(cli, "taken.example.com") == leaf


def test_a_name_taken_by_nothing_certsmith_can_list_is_one_line_naming_the_search(
    registered_cli: Cli, cas: CasEmulator
) -> None:
    """CAS refuses the upload as a name taken, yet no upload of that name is listed: the error says what was searched
    (every upload, not the keyword), and nothing is uploaded or recorded."""
    cli = registered_cli
    cas.fail_call("UploadUserCertificate", code="NameRepeat", status=400,
                  message="The certificate name already exists.")
    failed = cli.run("issue", "-d", "ghost.example.com", "--deploy", "alicloud-cas", *cli.http_args(),
                     env=cas_env(cas), check=False)
    assert failed.returncode == 1 and cas.certificates() == []
    name = f"certsmith-ghost.example.com-{format(stored_leaf(cli, 'ghost.example.com').serial_number, 'x')[:16]}"
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: deploy target alicloud-cas failed: CAS already holds a certificate named {name} that certsmith "
        "cannot find among its uploaded certificates (ListUserCertificateOrder); delete it in the CAS console"
    ], failed.stderr
    state = cli.state_dir / "certificates" / "ghost.example.com" / "deploy.json"
    assert not state.exists() or all("cert_id" not in s for s in json.loads(state.read_text()).values())


def test_a_signature_refusal_while_deleting_is_a_failure_not_kept_in_use(registered_cli: Cli, cas: CasEmulator) -> None:
    """IncompleteSignature is about the credentials, like SignatureDoesNotMatch: never "probably still in use"."""
    cli = registered_cli
    env = cas_env(cas)
    cli.run("issue", "-d", "incomplete.example.com", "--deploy", "alicloud-cas", *cli.http_args(), env=env)
    cas.fail_call("DeleteUserCertificate", code="IncompleteSignature", status=400,
                  message="The request signature does not conform to Aliyun standards.")
    renewed = cli.run("--json", "renew", "incomplete.example.com", "--force", env=env, check=False)
    assert renewed.returncode == 1, renewed.stderr
    assert "deploy target alicloud-cas failed" in renewed.stderr and "IncompleteSignature" in renewed.stderr
    assert "probably still in use" not in renewed.stdout + renewed.stderr
    assert len(cas.certificates()) == 2  # the old upload stays listed; the next run deletes it
    fixed = json.loads(cli.run("--json", "deploy", "incomplete.example.com", env=env).stdout)
    assert fixed["deploy"][0]["changed"][0].startswith("deleted") and len(cas.certificates()) == 1
