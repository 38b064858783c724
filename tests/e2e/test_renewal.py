"""Renewal end to end: ARI on Pebble 2.10, each lineage at its own CA, profiles, idempotent issue."""

from __future__ import annotations

import datetime
import json
import shutil
import socket
from pathlib import Path

import pytest
from cryptography import x509

from certsmith.testing.pebble import PebbleServer
from tests.conftest import CERTSMITH, Cli, clean_env


def lineage_dir(cli: Cli, name: str) -> Path:
    return cli.state_dir / "certificates" / name


def leaf(cli: Cli, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((lineage_dir(cli, name) / "cert.pem").read_bytes())


def meta(cli: Cli, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((lineage_dir(cli, name) / "meta.json").read_bytes())
    return data


def renew_json(cli: Cli, *args: str, state_only: bool = False, check: bool = True) -> dict[str, object]:
    """``renew`` with the usual global options, or with nothing but ``--state-dir`` (a timer's view)."""
    if state_only:
        import subprocess

        result = subprocess.run(
            [*CERTSMITH, "--state-dir", str(cli.state_dir), "--json", "renew", *args],
            capture_output=True, text=True, env=clean_env(), timeout=180, stdin=subprocess.DEVNULL,
        )
        if check:
            assert result.returncode == 0, result.stderr
    else:
        result = cli.run("--json", "renew", *args, check=check)
    data: dict[str, object] = json.loads(result.stdout)
    data["_stderr"] = result.stderr
    data["_status"] = result.returncode
    return data


def outcome(data: dict[str, object], name: str) -> dict[str, object]:
    results = data["results"]
    assert isinstance(results, list)
    found: dict[str, object] = next(r for r in results if r["name"] == name)
    return found


def window(start: datetime.timedelta, end: datetime.timedelta) -> dict[str, object]:
    now = datetime.datetime.now(datetime.UTC)
    return {"suggestedWindow": {"start": now + start, "end": now + end}}


# -- ARI -----------------------------------------------------------------------------


def test_ari_not_due_asks_once_then_waits_for_retry_after(registered_cli: Cli) -> None:
    cli, pebble = registered_cli, registered_cli.pebble
    cli.run("issue", "-d", "ari-wait.example.com", "--profile", "default", *cli.http_args())
    mark = pebble.log_mark()
    first = renew_json(cli, state_only=True)
    assert outcome(first, "ari-wait.example.com")["renewed"] is False
    assert "renewal window" in str(outcome(first, "ari-wait.example.com")["reason"])
    assert pebble.request_count("renewalInfo", mark) == 1
    assert pebble.orders_created(mark) == []
    renew_json(cli, state_only=True)
    assert pebble.request_count("renewalInfo", mark) == 1  # Retry-After (6 h) has not passed
    shown = json.loads(cli.run("--json", "show", "ari-wait.example.com").stdout)
    assert shown["status"] == "valid" and shown["renewal_source"] == "ari" and shown["profile"] == "default"


def test_a_window_in_the_past_renews_with_replaces(registered_cli: Cli) -> None:
    cli, pebble = registered_cli, registered_cli.pebble
    cli.run("issue", "-d", "ari-now.example.com", "--profile", "default", *cli.http_args())
    old = leaf(cli, "ari-now.example.com")
    pebble.set_renewal_info(
        (lineage_dir(cli, "ari-now.example.com") / "cert.pem").read_bytes(),
        {**window(-datetime.timedelta(days=2), -datetime.timedelta(days=1)), "explanationURL": "https://ca.test/why"},
    )
    mark = pebble.log_mark()
    data = renew_json(cli, state_only=True)
    assert outcome(data, "ari-now.example.com")["renewed"] is True, data
    assert "https://ca.test/why" in str(data["_stderr"])
    new = leaf(cli, "ari-now.example.com")
    issued = pebble.certificates_issued()
    assert (issued[new.serial_number], issued[old.serial_number]) in pebble.replacements(mark)
    assert meta(cli, "ari-now.example.com")["settings"]["profile"] == "default"  # type: ignore[index]


def test_a_revoked_certificate_is_renewed(registered_cli: Cli) -> None:
    cli, pebble = registered_cli, registered_cli.pebble
    cli.run("issue", "-d", "revoked-renew.example.com", "--profile", "default", *cli.http_args())
    old = leaf(cli, "revoked-renew.example.com")
    cli.run("revoke", "revoked-renew.example.com", "--reason", "keyCompromise")
    listed = json.loads(cli.run("--json", "list").stdout)["certificates"]
    assert [c["status"] for c in listed if c["name"] == "revoked-renew.example.com"] == ["revoked"]
    mark = pebble.log_mark()
    data = renew_json(cli, state_only=True)
    assert outcome(data, "revoked-renew.example.com")["renewed"] is True, data
    assert leaf(cli, "revoked-renew.example.com").serial_number != old.serial_number
    assert len(pebble.orders_created(mark)) == 1


def test_already_replaced_orders_again_without_replaces(registered_cli: Cli, tmp_path: Path) -> None:
    cli, pebble = registered_cli, registered_cli.pebble
    cli.run("issue", "-d", "replaced.example.com", "--profile", "default", *cli.http_args())
    twin = Cli(pebble, tmp_path / "twin")
    shutil.copytree(cli.state_dir, twin.state_dir, symlinks=True)
    cli.run("renew", "--force")  # the first replacement of the certificate
    mark = pebble.log_mark()
    data = renew_json(twin, "--force")  # the twin still holds the replaced certificate
    assert outcome(data, "replaced.example.com")["renewed"] is True, data
    assert "ordering without it" in str(data["_stderr"])
    assert pebble.replacements(mark) == [] and len(pebble.certificates_issued(mark)) == 1


def test_garbage_renewal_info_falls_back_to_the_lifetime_rule(registered_cli: Cli) -> None:
    cli, pebble = registered_cli, registered_cli.pebble
    cli.run("issue", "-d", "ari-garbage.example.com", "--profile", "default", *cli.http_args())
    pebble.set_renewal_info((lineage_dir(cli, "ari-garbage.example.com") / "cert.pem").read_bytes(), "{not json")
    mark = pebble.log_mark()
    data = renew_json(cli, state_only=True)
    result = outcome(data, "ari-garbage.example.com")
    assert result["renewed"] is False and "not due" in str(result["reason"])
    assert "cannot get the CA's renewal window" in str(data["_stderr"])
    assert pebble.orders_created(mark) == []
    shown = json.loads(cli.run("--json", "show", "ari-garbage.example.com").stdout)
    assert shown["renewal_source"] == "lifetime" and shown["ari_error"]


# -- profiles ------------------------------------------------------------------------


def test_shortlived_profile_is_remembered_on_renewal(registered_cli: Cli) -> None:
    cli = registered_cli
    cli.run("issue", "-d", "short.example.com", "--profile", "shortlived", *cli.http_args())
    first = leaf(cli, "short.example.com")
    assert first.not_valid_after_utc - first.not_valid_before_utc < datetime.timedelta(days=7)
    cli.run("renew", "--force", "short.example.com")
    second = leaf(cli, "short.example.com")
    assert second.serial_number != first.serial_number
    assert second.not_valid_after_utc - second.not_valid_before_utc < datetime.timedelta(days=7)
    assert "profile:" in cli.run("show", "short.example.com").stdout


def test_an_unoffered_profile_is_refused_before_anything_is_sent(cli: Cli) -> None:
    mark = cli.pebble.log_mark()
    result = cli.run(
        "issue", "-d", "noprofile.example.com", "--profile", "gold", "--email", "a@example.com", "--agree-tos",
        *cli.http_args(), check=False,
    )
    assert result.returncode == 1 and "gold" in result.stderr and "shortlived" in result.stderr
    assert cli.pebble.request_count("newAccount", mark) == 0 and cli.pebble.orders_created(mark) == []
    assert not (cli.state_dir / "accounts").exists()


def test_profiles_on_pebble_24(pebble24: PebbleServer, tmp_path: Path) -> None:
    cli = Cli(pebble24, tmp_path / "state")
    mark = pebble24.log_mark()
    refused = cli.run(
        "issue", "-d", "p24.example.com", "--profile", "shortlived", "--email", "a@example.com", "--agree-tos",
        *cli.http_args(), check=False,
    )
    assert refused.returncode == 1 and "--profile" in refused.stderr
    assert pebble24.request_count("newAccount", mark) == 0
    fallback = cli.run(
        "issue", "-d", "p24.example.com", "--preferred-profile", "shortlived", "--email", "a@example.com",
        "--agree-tos", *cli.http_args(),
    )
    assert "does not offer the profile 'shortlived'" in fallback.stderr
    assert (lineage_dir(cli, "p24.example.com") / "fullchain.pem").exists()


def _refused_before_anything_was_sent(cli: Cli, *args: str) -> str:
    """Run a first ``issue`` that registers an account; it must fail before the CA hears of it."""
    mark = cli.pebble.log_mark()
    result = cli.run("issue", "--email", "a@example.com", "--agree-tos", *args, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert cli.pebble.request_count("newAccount", mark) == 0 and cli.pebble.orders_created(mark) == []
    assert not (cli.state_dir / "accounts").exists()
    return result.stderr


def test_a_busy_port_is_refused_before_an_account_or_order(cli: Cli) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", cli.pebble.http_port))
        squatter.listen()
        stderr = _refused_before_anything_was_sent(cli, "-d", "busy.example.com", *cli.http_args())
    assert f"port {cli.pebble.http_port}" in stderr and "in use" in stderr and "--http-port" in stderr
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", cli.pebble.tls_port))
        squatter.listen()
        stderr = _refused_before_anything_was_sent(
            cli, "-d", "busy.example.com", "--challenge", "tls-alpn-01", "--tls-port", str(cli.pebble.tls_port)
        )
    assert f"port {cli.pebble.tls_port}" in stderr and "in use" in stderr and "--tls-port" in stderr


def test_a_missing_or_unwritable_webroot_is_refused_before_an_account_or_order(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-site"
    stderr = _refused_before_anything_was_sent(
        cli, "-d", "webroot.example.com", "--challenge", "http-01", "--webroot", str(missing)
    )
    assert str(missing) in stderr and "does not exist" in stderr
    assert not missing.exists()
    blocked = tmp_path / "site"
    blocked.mkdir()
    (blocked / ".well-known").write_text("a file where the directory should be")
    stderr = _refused_before_anything_was_sent(
        cli, "-d", "webroot.example.com", "--challenge", "http-01", "--webroot", str(blocked)
    )
    assert "is not a directory" in stderr
    assert (blocked / ".well-known").read_text() == "a file where the directory should be"


def test_manual_dns_without_a_terminal_is_refused_before_an_account_or_order(cli: Cli) -> None:
    stderr = _refused_before_anything_was_sent(cli, "-d", "manual.example.com", "--dns", "manual")
    assert "needs an interactive terminal" in stderr


# -- each lineage at its own CA ----------------------------------------------------------


def test_one_renew_renews_lineages_of_two_cas_and_reports_failures(
    pebble: PebbleServer, pebble24: PebbleServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    new, old = Cli(pebble, state), Cli(pebble24, state)
    new.register()
    old.register()
    new.run("issue", "-d", "ca-new.example.com", "--challenge", "tls-alpn-01", "--tls-port", str(pebble.tls_port))
    old.run("issue", "-d", "ca-old.example.com", *old.http_args())
    new.run("issue", "-d", "ca-fails.example.com", *new.http_args())
    before = {n: leaf(new, n).serial_number for n in ("ca-new.example.com", "ca-old.example.com")}
    with socket.socket() as squatter:  # another program now holds the port ca-fails' http-01 server needs
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", pebble.http_port))
        squatter.listen()
        result = renew_json(new, "--force", state_only=True, check=False)
    assert result["_status"] == 1
    assert outcome(result, "ca-new.example.com")["renewed"] is True
    assert outcome(result, "ca-old.example.com")["renewed"] is True
    assert outcome(result, "ca-fails.example.com")["error"]
    after = {n: leaf(new, n).serial_number for n in before}
    assert all(before[n] != after[n] for n in before)
    # --directory given explicitly narrows the run to one CA
    narrowed = renew_json(old, "--force")
    assert [r["name"] for r in narrowed["results"]] == ["ca-old.example.com"]  # type: ignore[union-attr]


# -- issue is idempotent ---------------------------------------------------------------


def test_issue_twice_keeps_the_certificate_force_and_expand_order(registered_cli: Cli) -> None:
    cli, pebble = registered_cli, registered_cli.pebble
    args = ["issue", "-d", "idem.example.com", "--profile", "default", *cli.http_args()]
    cli.run(*args)
    first = leaf(cli, "idem.example.com")
    mark = pebble.log_mark()
    again = cli.run(*args)
    assert "certificate kept" in again.stdout and "valid until" in again.stdout
    assert pebble.orders_created(mark) == [] and leaf(cli, "idem.example.com").serial_number == first.serial_number
    cli.run(*args, "--force")
    assert len(pebble.orders_created(mark)) == 1
    expanded = cli.run("issue", "-d", "idem.example.com", "-d", "www.idem.example.com", "--profile", "default",
                       *cli.http_args())
    assert "replacing the certificate for idem.example.com" in expanded.stderr
    names = leaf(cli, "idem.example.com").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"idem.example.com", "www.idem.example.com"}


def test_a_missing_dns_configuration_is_refused_before_registration(cli: Cli) -> None:
    mark = cli.pebble.log_mark()
    result = cli.run(
        "issue", "-d", "preflight.example.com", "--dns", "exec", "--email", "a@example.com", "--agree-tos",
        check=False,
    )
    assert result.returncode == 1 and "EXEC_PATH" in result.stderr
    assert cli.pebble.request_count("newAccount", mark) == 0 and not (cli.state_dir / "accounts").exists()


# -- lifecycle commands and statuses ------------------------------------------------------


def test_delete_and_statuses(registered_cli: Cli) -> None:
    cli = registered_cli
    for name in ("keep.example.com", "gone.example.com", "broken.example.com"):
        cli.run("issue", "-d", name, "--profile", "default", *cli.http_args())
    (lineage_dir(cli, "broken.example.com") / "archive" / "1" / "meta.json").write_text('{"name": 5}')
    listed = {c["name"]: c for c in json.loads(cli.run("--json", "list").stdout)["certificates"]}
    assert listed["keep.example.com"]["status"] == "valid"
    assert listed["broken.example.com"]["status"] == "damaged" and "invalid" in listed["broken.example.com"]["error"]
    assert "renewal_at" in listed["keep.example.com"] and listed["keep.example.com"]["renewal_source"] == "lifetime"

    refused = cli.run("delete", "gone.example.com", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    cli.run("delete", "GONE.example.com", "--revoke", "--yes")
    assert not lineage_dir(cli, "gone.example.com").exists()
    assert cli.run("show", "gone.example.com", check=False).returncode == 1
    # a damaged lineage does not stop renew for the others, and issue can replace it
    data = renew_json(cli, check=False)
    assert outcome(data, "broken.example.com")["error"] and data["_status"] == 1
    assert outcome(data, "keep.example.com")["renewed"] is False
    cli.run("issue", "-d", "broken.example.com", "--profile", "default", *cli.http_args())
    assert json.loads(cli.run("--json", "show", "broken.example.com").stdout)["status"] == "valid"


@pytest.mark.parametrize("name", ["MiXed.Example.COM", "mixed.example.com."])
def test_lineage_names_are_normalised_on_the_command_line(registered_cli: Cli, name: str) -> None:
    cli = registered_cli
    if not lineage_dir(cli, "mixed.example.com").exists():
        cli.run("issue", "-d", "mixed.example.com", *cli.http_args())
    assert json.loads(cli.run("--json", "show", name).stdout)["name"] == "mixed.example.com"


def test_an_ipv6_address_gets_a_usable_lineage_name(registered_cli: Cli) -> None:
    cli = registered_cli
    result = cli.run("issue", "-d", "::1", *cli.http_args(), check=False)
    assert "invalid certificate name" not in result.stderr


# -- unattended dns-01: stored non-secret settings and the env file -------------------------


def test_an_exec_lineage_renews_with_only_the_env_file(registered_cli: Cli, tmp_path: Path) -> None:
    from tests.e2e.helpers import hook_calls, write_challtestsrv_hook

    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = write_challtestsrv_hook(first_dir, srv.management_url, first_dir / "hook.log")
    cli.run("issue", "-d", "envfile.example.com", "--dns", "exec", "--dns-resolver", srv.dns_address,
            env=clean_env(EXEC_PATH=str(first)))
    stored = meta(cli, "envfile.example.com")["settings"]["challenge"]  # type: ignore[index]
    assert stored["dns_env"] == {"EXEC_PATH": str(first)}

    # a timer's shell: no variables at all; the stored EXEC_PATH is enough
    cli.run("renew", "--force", env=clean_env())
    assert any(call[0] == "present" for call in hook_calls(first_dir / "hook.log"))

    # the hook moved: the env file says where, and wins over what was stored
    second = write_challtestsrv_hook(second_dir, srv.management_url, second_dir / "hook.log")
    first.unlink()
    env_file = tmp_path / "certsmith.env"
    env_file.write_text(f"# certsmith's unattended settings\nexport EXEC_PATH='{second}'\n")
    env_file.chmod(0o644)
    refused = cli.run("--env-file", str(env_file), "renew", "--force", env=clean_env(), check=False)
    assert refused.returncode == 1 and "chmod 600" in refused.stderr
    env_file.chmod(0o600)
    cli.run("--env-file", str(env_file), "renew", "--force", env=clean_env())
    assert any(call[0] == "present" for call in hook_calls(second_dir / "hook.log"))
