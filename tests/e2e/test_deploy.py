"""Deploy targets end to end: the real CLI against Pebble 2.10, files checked with openssl and cryptography."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

import certsmith
from certsmith.settings import ChallengeSettings
from certsmith.testing.pebble import PebbleServer
from tests.conftest import Cli, clean_env

PASSWORD = "p12 pass, with comma"


def lineage_dir(cli: Cli, name: str) -> Path:
    return cli.state_dir / "certificates" / name


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_files_in_every_format_then_deploy_changes_nothing(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    out = tmp_path / "out"
    out.mkdir()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    env = clean_env(CERTSMITH_PKCS12_PASSWORD_FILE=str(password_file))
    spec = (
        f"files:cert={out}/cert.pem,chain={out}/chain.pem,fullchain={out}/full.pem,key={out}/key.pem,"
        f"der={out}/cert.der,pkcs12={out}/bundle.p12,owner=65534,group=65534,mode=0644"
    )
    issued = json.loads(
        cli.run("--json", "issue", "-d", "files.example.com", "--deploy", spec, *cli.http_args(), env=env).stdout
    )
    [files] = issued["deploy"]
    assert files["ok"] and len(files["changed"]) == 6, files
    stored = lineage_dir(cli, "files.example.com")
    assert (out / "cert.pem").read_bytes() == (stored / "cert.pem").read_bytes()
    assert (out / "chain.pem").read_bytes() == (stored / "chain.pem").read_bytes()
    assert (out / "full.pem").read_bytes() == (stored / "fullchain.pem").read_bytes()
    assert (out / "key.pem").read_bytes() == (stored / "privkey.pem").read_bytes()
    leaf = x509.load_pem_x509_certificate((stored / "cert.pem").read_bytes())
    assert x509.load_der_x509_certificate((out / "cert.der").read_bytes()) == leaf
    for name, mode in [("cert.pem", 0o644), ("chain.pem", 0o644), ("full.pem", 0o644), ("cert.der", 0o644),
                       ("key.pem", 0o640), ("bundle.p12", 0o640)]:
        info = (out / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, mode), name

    # PKCS#12: openssl opens it with the password (AES-256 by default), and so does cryptography
    listing = subprocess.run(
        ["openssl", "pkcs12", "-info", "-nokeys", "-in", str(out / "bundle.p12"), "-passin", f"file:{password_file}"],
        capture_output=True, text=True,
    )
    assert listing.returncode == 0, listing.stderr
    assert "AES-256-CBC" in listing.stderr and "friendlyName: files.example.com" in listing.stdout
    key, cert, chain = pkcs12.load_key_and_certificates((out / "bundle.p12").read_bytes(), PASSWORD.encode())
    assert cert == leaf and key is not None
    assert chain == x509.load_pem_x509_certificates((stored / "chain.pem").read_bytes())
    assert PASSWORD not in (stored / "meta.json").read_text()
    assert PASSWORD not in (stored / "deploy.json").read_text()

    # running the targets again changes nothing, twice
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for _ in range(2):
        again = json.loads(cli.run("--json", "deploy", "files.example.com", env=env).stdout)
        assert again["ok"] and again["deploy"][0]["changed"] == [] and len(again["deploy"][0]["unchanged"]) == 6
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    human = cli.run("deploy", "files.example.com", env=env)
    assert human.stdout.startswith("files.example.com: files:cert=") and human.stdout.endswith(": unchanged\n")

    # the password is a secret of the environment: without it, deploy fails and says what is missing
    missing = cli.run("deploy", "files.example.com", check=False)
    assert missing.returncode == 1
    assert "error: deploy target files failed: files: pkcs12= needs the password in CERTSMITH_PKCS12_PASSWORD" \
        in missing.stderr


def test_reload_runs_once_per_certificate(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "reloads"
    script = tmp_path / "reload.sh"
    script.write_text(f'printf "%s|%s|%s\\n" "$1" "$CERTSMITH_NAME" "$(echo $CERTSMITH_CHANGED)" >> {log}\n')
    command = f"sh {script} x,y"  # a comma: the value must be quoted
    cli.run(
        "issue", "-d", "reload.example.com",
        "--deploy", f"reload:command='{command}'",  # given first, runs last
        "--deploy", f"files:fullchain={out}/full.pem,key={out}/key.pem",
        *cli.http_args(),
    )
    assert log.read_text().splitlines() == [f"x,y|reload.example.com|wrote {out}/full.pem wrote {out}/key.pem"]
    deployed = json.loads(cli.run("--json", "deploy", "reload.example.com").stdout)
    assert [t["target"] for t in deployed["deploy"]] == ["files", "reload"]
    assert deployed["deploy"][1]["skipped"]
    assert len(log.read_text().splitlines()) == 1

    renewed = json.loads(cli.run("--json", "renew", "reload.example.com", "--force").stdout)
    [outcome] = renewed["results"]
    assert outcome["renewed"] and [t["ok"] for t in outcome["deploy"]] == [True, True]
    assert outcome["deploy"][1]["changed"] == [f"ran {command}"]
    assert len(log.read_text().splitlines()) == 2
    assert (out / "full.pem").read_bytes() == (lineage_dir(cli, "reload.example.com") / "fullchain.pem").read_bytes()


def test_a_failing_target_keeps_the_certificate_and_fails_the_command(registered_cli: Cli, tmp_path: Path) -> None:
    cli = registered_cli
    marker = tmp_path / "reloaded"
    result = cli.run(
        "issue", "-d", "fail.example.com",
        "--deploy", f"files:cert={tmp_path}/no-such-dir/cert.pem",
        "--deploy", f"reload:command='touch {marker}'",
        "--deploy-hook", f"touch {tmp_path}/hook-ran",
        *cli.http_args(), check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: deploy target files failed: cannot write {tmp_path}/no-such-dir/cert.pem: "
        f"the directory {tmp_path}/no-such-dir does not exist"
    ]
    assert "Certificate for fail.example.com" in result.stdout
    stored = lineage_dir(cli, "fail.example.com")
    x509.load_pem_x509_certificate((stored / "cert.pem").read_bytes())
    assert marker.exists() and (tmp_path / "hook-ran").exists()  # the other target and the hook still ran
    shown = json.loads(cli.run("--json", "show", "fail.example.com").stdout)
    assert shown["status"] == "valid"

    (tmp_path / "no-such-dir").mkdir()
    fixed = json.loads(cli.run("--json", "deploy", "fail.example.com").stdout)
    assert fixed["ok"] and fixed["deploy"][0]["changed"] == [f"wrote {tmp_path}/no-such-dir/cert.pem"]
    assert fixed["deploy"][1]["changed"]  # files changed, so reload ran again


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nginx:path=/x", "unknown deploy target 'nginx'; available: alicloud-"),
        ("files:cert=/tmp/c.pem,colour=red", "deploy target 'files' has no option colour"),
        ("files:pkcs12=/tmp/a.p12", "files: pkcs12= needs the password in CERTSMITH_PKCS12_PASSWORD"),
        ("reload:command='unclosed", "--deploy \"reload:command='unclosed\": the quote ' opened"),
        ("files:cert=rel.pem", "files: cert=rel.pem must be an absolute path"),
    ],
)
def test_a_bad_deploy_is_refused_before_any_account_or_order(cli: Cli, spec: str, message: str) -> None:
    mark = cli.pebble.log_mark()
    result = cli.run(
        "issue", "-d", "bad.example.com", "--deploy", spec, "--email", "a@example.com", "--agree-tos",
        *cli.http_args(), check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr
    assert cli.pebble.request_count("newAccount", mark) == 0
    assert cli.pebble.orders_created(mark) == []
    assert not (cli.state_dir / "certificates").exists() or not any((cli.state_dir / "certificates").iterdir())


def test_deploy_of_an_unknown_lineage_or_one_without_targets(registered_cli: Cli) -> None:
    cli = registered_cli
    unknown = cli.run("deploy", "nothing.example.com", check=False)
    assert unknown.returncode == 1 and "no certificate named 'nothing.example.com'" in unknown.stderr
    cli.run("issue", "-d", "plain.example.com", *cli.http_args())
    plain = cli.run("deploy", "plain.example.com", check=False)
    assert plain.returncode == 1 and "has no deploy targets; give them with issue --deploy" in plain.stderr
    listed = json.loads(cli.run("--json", "deploy", "list").stdout)
    names = [t["name"] for t in listed["targets"]]
    assert names == sorted(names) and {"alicloud-cas", "alicloud-slb", "files", "reload"} <= set(names)
    files = listed["targets"][names.index("files")]
    assert {"name": "CERTSMITH_PKCS12_PASSWORD", "secret": True}.items() <= files["env"][0].items()
    assert {o["name"] for o in files["options"]} >= {"cert", "chain", "fullchain", "key", "der", "pkcs12", "owner",
                                                      "group", "mode", "legacy"}


def test_library_issue_with_deploy_targets(pebble: PebbleServer, tmp_path: Path) -> None:
    from certsmith.errors import ConfigError

    common: dict[str, Any] = {
        "state_dir": tmp_path / "state", "directory": pebble.directory_url, "ca_bundle": pebble.ca_bundle,
        "email": ["lib@example.com"], "agree_tos": True, "challenge": ChallengeSettings(http_port=pebble.http_port),
    }
    mark = pebble.log_mark()
    with pytest.raises(ConfigError, match="needs at least one of cert"):
        certsmith.issue(["libdeploy.example.com"], deploy=["files:mode=0600"], **common)
    assert pebble.request_count("newAccount", mark) == 0 and pebble.orders_created(mark) == []
    result = certsmith.issue(["libdeploy.example.com"], deploy=[f"files:fullchain={tmp_path}/full.pem"], **common)
    assert result.deploy_error is None
    [files] = result.deployed
    assert files.changed == (f"wrote {tmp_path}/full.pem",)
    assert (tmp_path / "full.pem").read_bytes() == (result.directory / "fullchain.pem").read_bytes()
