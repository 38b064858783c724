"""End to end through the real CLI against Pebble (5% nonce rejection left on)."""

from __future__ import annotations

import datetime
import json
import socket
import stat
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certsmith.crypto import generate_key, make_csr, parse_identifiers
from certsmith.testing.pebble import ChallTestSrv, PebbleServer, free_port
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import hook_calls, san_names, tree_snapshot, verify_chain, write_challtestsrv_hook


def lineage_dir(cli: Cli, name: str) -> Path:
    return cli.state_dir / "certificates" / name


def test_single_name_http01_issue_show_list(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    result = cli.run("--json", "issue", "-d", "single.example.com", *cli.http_args())
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["names"] == ["single.example.com"]
    directory = lineage_dir(cli, "single.example.com")
    leaf = verify_chain(cli.pebble, directory, tmp_path)
    assert san_names(leaf) == {"single.example.com"}
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert stat.S_IMODE((directory / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.state_dir.stat().st_mode) == 0o700

    shown = json.loads(cli.run("--json", "show", "single.example.com").stdout)
    assert shown["names"] == ["single.example.com"] and shown["key_type"] == "ec256"
    # Pebble 2.10 picks a random profile, so compare with the leaf instead of a fixed lifetime.
    assert shown["days_left"] == (leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days
    assert shown["issuer"]
    listed = json.loads(cli.run("--json", "list").stdout)
    assert [c["name"] for c in listed["certificates"]] == ["single.example.com"]
    human = cli.run("list").stdout
    assert "single.example.com" in human and "days left" in human


def test_multi_name_http01_with_ip_and_rsa_key(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    names = ["multi.example.com", "www.multi.example.com", "api.multi.example.com", "127.0.0.1"]
    args = [a for n in names for a in ("-d", n)]
    cli.run("issue", *args, "--key-type", "rsa2048", *cli.http_args())
    leaf = verify_chain(cli.pebble, lineage_dir(cli, "multi.example.com"), tmp_path)
    assert san_names(leaf) == set(names)
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


def test_wildcard_and_apex_over_dns01_exec(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    log = tmp_path / "hook.log"
    hook = write_challtestsrv_hook(tmp_path, srv.management_url, log)
    env = clean_env(EXEC_PATH=str(hook))
    cli.run(
        "issue", "-d", "dnsapex.example.com", "-d", "*.dnsapex.example.com",
        "--dns", "exec", "--dns-resolver", srv.dns_address, env=env,
    )
    leaf = verify_chain(cli.pebble, lineage_dir(cli, "dnsapex.example.com"), tmp_path)
    assert san_names(leaf) == {"dnsapex.example.com", "*.dnsapex.example.com"}
    calls = hook_calls(log)
    presents = [c for c in calls if c[0] == "present"]
    cleanups = [c for c in calls if c[0] == "cleanup"]
    # Pebble may reuse an earlier valid authorization for the apex; whatever was presented was cleaned.
    assert presents and sorted(presents, key=lambda c: c[2]) == sorted(
        [("present", f, v) for _, f, v in cleanups], key=lambda c: c[2]
    )
    assert all(f == "_acme-challenge.dnsapex.example.com." for _, f, _ in presents)


def test_wildcard_lineage_name(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    hook = write_challtestsrv_hook(tmp_path, srv.management_url, tmp_path / "hook.log")
    cli.run(
        "issue", "-d", "*.wild.example.com", "--dns", "exec", "--dns-resolver", srv.dns_address,
        env=clean_env(EXEC_PATH=str(hook)),
    )
    verify_chain(cli.pebble, lineage_dir(cli, "_.wild.example.com"), tmp_path)


def test_tls_alpn01(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    cli.run(
        "issue", "-d", "alpn.example.com", "-d", "127.0.0.2",
        "--challenge", "tls-alpn-01", "--tls-port", str(cli.pebble.tls_port),
    )
    leaf = verify_chain(cli.pebble, lineage_dir(cli, "alpn.example.com"), tmp_path)
    assert san_names(leaf) == {"alpn.example.com", "127.0.0.2"}


@pytest.mark.parametrize("account_key", ["rsa2048", "ec256", "ec384"])
def test_account_key_types(cli: Cli, tmp_path: Path, account_key: str) -> None:
    cli.register("--key-type", account_key)
    account = json.loads(cli.run("--json", "account", "show").stdout)
    assert account["key_type"] == account_key and account["status"] == "valid"
    cli.run("issue", "-d", f"acct-{account_key}.example.com", "--key-type", "ec384", *cli.http_args())
    verify_chain(cli.pebble, lineage_dir(cli, f"acct-{account_key}.example.com"), tmp_path)


def test_own_csr(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    key = generate_key("rsa3072")
    csr = tmp_path / "request.csr"
    csr_der = make_csr(key, parse_identifiers(["csr.example.com", "alt.csr.example.com"]))
    csr.write_bytes(x509.load_der_x509_csr(csr_der).public_bytes(serialization.Encoding.PEM))
    cli.run("issue", "--csr", str(csr), *cli.http_args())
    directory = lineage_dir(cli, "csr.example.com")
    leaf = verify_chain(cli.pebble, directory, tmp_path)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert not (directory / "privkey.pem").exists()


def test_preferred_chain(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    root2 = x509.load_pem_x509_certificate(cli.pebble.management_get("/roots/2"))
    root2_cn = root2.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert isinstance(root2_cn, str)
    cli.run("issue", "-d", "chain.example.com", "--preferred-chain", root2_cn, *cli.http_args())
    directory = lineage_dir(cli, "chain.example.com")
    verify_chain(cli.pebble, directory, tmp_path, root_index=2)
    chain = (directory / "chain.pem").read_bytes()
    assert chain.count(b"BEGIN CERTIFICATE") == 3  # PEBBLE_CHAIN_LENGTH=3 intermediates
    # the default chain leads to root 0
    cli.run("issue", "-d", "chain0.example.com", *cli.http_args())
    verify_chain(cli.pebble, lineage_dir(cli, "chain0.example.com"), tmp_path, root_index=0)


def test_renew_not_due_then_forced_with_deploy_hook(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    marker = tmp_path / "deployed"
    hook = f"echo \"$CERTSMITH_NAME $RENEWED_DOMAINS\" >> {marker}"
    cli.run("issue", "-d", "renew.example.com", "--profile", "default", "--deploy-hook", hook, *cli.http_args())
    first = lineage_dir(cli, "renew.example.com")
    first_serial = verify_chain(cli.pebble, first, tmp_path).serial_number
    assert marker.read_text().split("\n")[0] == "renew.example.com renew.example.com"

    kept = json.loads(cli.run("--json", "renew").stdout)
    assert kept["results"][0]["renewed"] is False and "not due" in kept["results"][0]["reason"]

    renewed = json.loads(cli.run("--json", "renew", "renew.example.com", "--force").stdout)
    assert renewed["results"][0]["renewed"] is True
    second = verify_chain(cli.pebble, first, tmp_path)
    assert second.serial_number != first_serial
    assert len(marker.read_text().splitlines()) == 2
    archived = list((first / "archive").glob("*/cert.pem"))
    assert archived, "the previous version must be archived"
    assert json.loads(cli.run("--json", "show", "renew.example.com").stdout)["version"] == 2


def test_revoke_with_reason(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    cli.run("issue", "-d", "revoke.example.com", *cli.http_args())
    leaf = verify_chain(cli.pebble, lineage_dir(cli, "revoke.example.com"), tmp_path)
    cli.run("revoke", "revoke.example.com", "--reason", "keyCompromise")
    status = json.loads(cli.pebble.management_get(f"/cert-status-by-serial/{leaf.serial_number:x}"))
    assert status["Status"] == "Revoked" and status["Reason"] == 1
    again = cli.run("revoke", "revoke.example.com", check=False)
    assert again.returncode != 0 and "alreadyRevoked" in again.stderr


def test_account_update_rollover_deactivate(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    updated = json.loads(cli.run("--json", "account", "update", "--email", "new@example.com").stdout)
    assert updated["contact"] == ["mailto:new@example.com"]
    assert json.loads(cli.run("--json", "account", "show").stdout)["contact"] == ["mailto:new@example.com"]

    key_files = list(cli.state_dir.rglob("account.key"))
    old_key = key_files[0].read_bytes()
    cli.run("account", "rollover", "--key-type", "rsa2048")
    assert key_files[0].read_bytes() != old_key
    assert [p for p in key_files[0].parent.iterdir() if p.name.startswith("account.key.")], "old key archived"
    assert json.loads(cli.run("--json", "account", "show").stdout)["key_type"] == "rsa2048"
    cli.run("issue", "-d", "rolled.example.com", *cli.http_args())
    verify_chain(cli.pebble, lineage_dir(cli, "rolled.example.com"), tmp_path)

    cli.run("account", "deactivate", "--yes")
    refused = cli.run("issue", "-d", "after.example.com", *cli.http_args(), check=False)
    assert refused.returncode != 0 and "deactivated" in refused.stderr


def test_authorization_failure_reports_problem_and_cleans_dns(registered_cli: Cli, tmp_path: Path) -> None:
    """The propagation check sees the records (second DNS server) but Pebble's DNS never does."""
    cli = registered_cli
    other = ChallTestSrv(free_port(kind=socket.SOCK_DGRAM), free_port())
    other.start(tmp_path / "other.log")
    try:
        log = tmp_path / "hook.log"
        hook = write_challtestsrv_hook(tmp_path, other.management_url, log)
        before = tree_snapshot(cli.state_dir)
        result = cli.run(
            "issue", "-d", "fails.example.com", "--dns", "exec", "--dns-resolver", other.dns_address,
            env=clean_env(EXEC_PATH=str(hook)), check=False,
        )
        assert result.returncode == 1
        assert "fails.example.com" in result.stderr and "TXT" in result.stderr, result.stderr
        calls = hook_calls(log)
        assert [c[0] for c in calls] == ["present", "cleanup"]
        query = dns.message.make_query("_acme-challenge.fails.example.com.", dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=other.dns_port, timeout=2)
        assert not answer.answer, "the record must be removed after the failure"
        after = tree_snapshot(cli.state_dir)
        assert not [p for p in after if p.startswith("certificates/")], "no lineage may be written"
        assert {k: v for k, v in before.items() if not k.startswith("locks/")} == {
            k: v for k, v in after.items() if not k.startswith("locks/")
        }
    finally:
        other.stop()


def test_http01_failure_names_the_ca_problem(registered_cli: Cli) -> None:
    cli = registered_cli
    result = cli.run("issue", "-d", "nohttp.example.com", "--http-port", str(free_port()), check=False)
    assert result.returncode == 1
    assert "nohttp.example.com" in result.stderr and "connection" in result.stderr.lower(), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "bad_name.example.com"], "not a valid domain name"),
        (["-d", "*.*.example.com"], "wildcard"),
        (["-d", "a.*.example.com"], "wildcard"),
        (["-d", "*.example.com"], "dns-01"),
        (["-d", "127.0.0.1", "--dns", "exec"], "IP address"),
        (["-d", "nolabel"], "not a valid domain name"),
        (["--csr", "/nonexistent/request.csr"], "cannot read the CSR"),
        (["-d", "x.example.com", "--dns", "no-such-provider"], "unknown DNS provider"),
        (["-d", "x.example.com", "--dns", "exec"], "EXEC_PATH"),
        ([], "at least one name"),
    ],
)
def test_bad_input_is_refused_with_nothing_written(
    registered_cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    cli = registered_cli
    before = tree_snapshot(cli.state_dir)
    result = cli.run("issue", *args, *cli.http_args()[2:], check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert tree_snapshot(cli.state_dir) == before


def test_garbage_csr_is_refused(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    bad = tmp_path / "bad.csr"
    bad.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n")
    before = tree_snapshot(cli.state_dir)
    result = cli.run("issue", "--csr", str(bad), check=False)
    assert result.returncode == 1 and "not a PEM or DER certificate signing request" in result.stderr
    assert tree_snapshot(cli.state_dir) == before


def test_wrong_ca_bundle_fails_with_tls_error(cli: Cli, pebble: PebbleServer, tmp_path: Path) -> None:
    """Trust comes only from --ca-bundle: environment bundles must not rescue or confuse it."""
    from certsmith.testing.pebble import write_test_ca

    unrelated_ca, _, _ = write_test_ca(tmp_path / "unrelated-ca")
    env = clean_env(REQUESTS_CA_BUNDLE=str(pebble.ca_bundle), SSL_CERT_FILE=str(pebble.ca_bundle))
    args = ["--directory", pebble.directory_url, "--ca-bundle", str(unrelated_ca), "--state-dir", str(cli.state_dir)]
    import subprocess

    from tests.conftest import CERTSMITH

    result = subprocess.run(
        [*CERTSMITH, *args, "account", "register", "--email", "a@example.com", "--agree-tos"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 1
    assert "cannot verify the TLS certificate" in result.stderr and "--ca-bundle" in result.stderr
    assert not list(cli.state_dir.rglob("account.key")), "nothing may be stored after a TLS failure"


def test_no_account_gives_guidance(cli: Cli) -> None:
    result = cli.run("issue", "-d", "noacct.example.com", *cli.http_args(), check=False)
    assert result.returncode == 1 and "account register" in result.stderr


def test_issue_registers_with_email_and_agree_tos(cli: Cli, tmp_path: Path) -> None:
    cli.run("issue", "-d", "auto.example.com", "--email", "a@example.com", "--agree-tos", *cli.http_args())
    verify_chain(cli.pebble, lineage_dir(cli, "auto.example.com"), tmp_path)


def test_terms_must_be_agreed(cli: Cli) -> None:
    result = cli.run("account", "register", "--email", "a@example.com", check=False)
    assert result.returncode == 1 and "--agree-tos" in result.stderr
    assert not list(cli.state_dir.rglob("account.*"))


def test_webroot_served_by_a_separate_web_server(registered_cli: Cli, tmp_path: Path) -> None:
    """--webroot writes the token where a real web server (python -m http.server) serves it."""
    import subprocess
    import sys
    import time

    cli = registered_cli
    webroot = tmp_path / "www"
    webroot.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(cli.pebble.http_port), "--bind", "127.0.0.1",
         "--directory", str(webroot)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cli.pebble.http_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        cli.run("issue", "-d", "webroot.example.com", "--webroot", str(webroot))
        verify_chain(cli.pebble, lineage_dir(cli, "webroot.example.com"), tmp_path)
        assert list(webroot.rglob("*")) == [], "tokens and the directories made for them are removed"
        meta = json.loads((lineage_dir(cli, "webroot.example.com") / "meta.json").read_text())
        assert meta["settings"]["challenge"]["webroot"] == str(webroot)
    finally:
        server.terminate()
        server.wait()


def test_reuse_key_keeps_the_key_across_renewal(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    cli.run("issue", "-d", "reuse.example.com", "--reuse-key", "--key-type", "rsa2048", *cli.http_args())
    directory = lineage_dir(cli, "reuse.example.com")
    first_key = (directory / "privkey.pem").read_bytes()
    first = verify_chain(cli.pebble, directory, tmp_path)
    cli.run("renew", "--force")
    second = verify_chain(cli.pebble, directory, tmp_path)
    assert second.serial_number != first.serial_number
    assert (directory / "privkey.pem").read_bytes() == first_key
    assert second.public_key().public_numbers() == first.public_key().public_numbers()  # type: ignore[union-attr]


def test_revoke_with_the_certificate_key_when_the_account_is_gone(registered_cli: Cli, tmp_path: Path) -> None:
    import shutil

    cli = registered_cli
    cli.run("issue", "-d", "lostacct.example.com", *cli.http_args())
    leaf = verify_chain(cli.pebble, lineage_dir(cli, "lostacct.example.com"), tmp_path)
    shutil.rmtree(cli.state_dir / "accounts")
    cli.run("revoke", "lostacct.example.com", "--reason", "superseded")
    status = json.loads(cli.pebble.management_get(f"/cert-status-by-serial/{leaf.serial_number:x}"))
    assert status["Status"] == "Revoked" and status["Reason"] == 4


def test_dns_list_shows_every_provider(cli: Cli) -> None:
    data = json.loads(cli.run("--json", "dns", "list").stdout)
    by_name = {p["name"]: p for p in data["providers"]}
    assert {"exec", "manual", "rfc2136"} <= set(by_name)
    assert any(v["name"] == "EXEC_PATH" and v["required"] for v in by_name["exec"]["env"])
    human = cli.run("dns", "list").stdout
    assert "EXEC_PATH" in human and "RFC2136_NAMESERVER" in human


@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_during_propagation_removes_the_records(
    registered_cli: Cli, tmp_path: Path, signame: str, status: int
) -> None:
    """Ctrl-C, systemd's or timeout's SIGTERM, a closed terminal's SIGHUP while waiting for DNS:
    the records created are deleted and the exit status is 128 + the signal's number."""
    import signal
    import subprocess
    import time

    from tests.conftest import CERTSMITH

    cli = registered_cli
    log = tmp_path / "hook.log"
    hook = write_challtestsrv_hook(tmp_path, "http://127.0.0.1:9", log, publish=False)  # records never appear
    srv = cli.pebble.challtestsrv
    assert srv is not None
    process = subprocess.Popen(
        [*CERTSMITH, *cli.global_args(), "issue", "-d", f"{signame}.example.com", "-d", f"*.{signame}.example.com",
         "--dns", "exec", "--dns-resolver", srv.dns_address, "--propagation-timeout", "60"],
        env=clean_env(EXEC_PATH=str(hook)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while len([c for c in hook_calls(log) if c[0] == "present"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(getattr(signal, signame))
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    calls = hook_calls(log)
    presented = sorted(c[1:] for c in calls if c[0] == "present")
    cleaned = sorted(c[1:] for c in calls if c[0] == "cleanup")
    assert len(presented) == 2 and presented == cleaned
    assert not (cli.state_dir / "certificates" / f"{signame.lower()}.example.com").exists()


def test_records_left_by_a_killed_run_are_removed_by_the_next(registered_cli: Cli, tmp_path: Path) -> None:
    """SIGKILL while waiting for DNS: nothing runs the cleanup, but the journal remembers; the
    next run (here `certsmith cleanup`) deletes the records through the same provider."""
    import signal
    import subprocess
    import time

    from tests.conftest import CERTSMITH

    cli = registered_cli
    log = tmp_path / "hook.log"
    hook = write_challtestsrv_hook(tmp_path, "http://127.0.0.1:9", log, publish=False)  # records never appear
    srv = cli.pebble.challtestsrv
    assert srv is not None
    process = subprocess.Popen(
        [*CERTSMITH, *cli.global_args(), "issue", "-d", "killed.example.com", "-d", "*.killed.example.com",
         "--dns", "exec", "--dns-resolver", srv.dns_address, "--propagation-timeout", "60"],
        env=clean_env(EXEC_PATH=str(hook)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len([c for c in hook_calls(log) if c[0] == "present"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert [c for c in hook_calls(log) if c[0] == "cleanup"] == []
    assert len(list((cli.state_dir / "journal").glob("*.json"))) == 2

    result = cli.run("--json", "cleanup", env=clean_env())  # EXEC_PATH was stored with the note
    removed = json.loads(result.stdout)["removed"]
    assert sorted(removed) == ["the TXT record _acme-challenge.killed.example.com."] * 2
    presented = sorted(c[1:] for c in hook_calls(log) if c[0] == "present")
    cleaned = sorted(c[1:] for c in hook_calls(log) if c[0] == "cleanup")
    assert len(cleaned) == 2 and set(cleaned) <= set(presented)
    assert list((cli.state_dir / "journal").glob("*.json")) == []
    assert json.loads(cli.run("--json", "cleanup").stdout)["removed"] == []
