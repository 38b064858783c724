"""``-vvv`` against Pebble: the whole ACME exchange on stderr, key material shortened, secrets never shown;
and the advice the CLI adds to the facts the protocol layer raises."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certsmith.jose import b64u_encode, jwk_thumbprint, public_jwk
from certsmith.testing.pebble import PebbleServer
from tests.conftest import CERTSMITH, Cli, clean_env


def requests_to(stderr: str, path_pattern: str) -> list[tuple[dict[str, Any], str]]:
    """(protected header, payload text) of every logged POST whose URL path matches ``path_pattern``."""
    found = []
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if re.search(rf"certsmith\.wire: -> #\d+ POST https://[^/]+{path_pattern}$", line):
            protected = json.loads(lines[i + 1].removeprefix("   protected: "))
            found.append((protected, lines[i + 2].removeprefix("   payload: ")))
    return found


def pem_body(pem: bytes) -> str:
    return "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))


def test_vvv_logs_the_exchange_without_key_material(cli: Cli) -> None:
    name = "wire.example.com"
    result = cli.run("-vvv", "issue", "-d", name, "--email", "a@example.com", "--agree-tos", *cli.http_args())
    log = result.stderr
    [account_key_file] = cli.state_dir.rglob("account.key")
    account_key = serialization.load_pem_private_key(account_key_file.read_bytes(), None)
    assert isinstance(account_key, ec.EllipticCurvePrivateKey)

    new_accounts = requests_to(log, "/sign-me-up")  # more than one when Pebble rejected a nonce
    assert new_accounts, log
    for header, _ in new_accounts:
        assert set(header) == {"alg", "url", "nonce", "jwk_thumbprint"}
        assert header["jwk_thumbprint"] == jwk_thumbprint(account_key)

    orders = requests_to(log, "/order-plz")
    assert orders, log
    protected, payload = orders[-1]
    assert protected["kid"].startswith("https://") and "jwk_thumbprint" not in protected
    assert json.loads(payload) == {"identifiers": [{"type": "dns", "value": name}]}

    [*_, (_, finalize)] = requests_to(log, r"/finalize-order/\S+")
    assert re.fullmatch(r'\{"csr": "[A-Za-z0-9_-]{16}\.\.\.\(\d+ chars\)"\}', finalize), finalize
    assert re.search(r"body: \d PEM blocks: CERTIFICATE [A-Za-z0-9+/]{16}\.\.\.\(\d+ chars\)", log)

    lineage = cli.state_dir / "certificates" / name
    never_shown = [
        b64u_encode(account_key.private_numbers().private_value.to_bytes(32, "big")),
        pem_body(account_key_file.read_bytes())[20:80],
        public_jwk(account_key)["x"],
        pem_body((lineage / "privkey.pem").read_bytes())[20:80],
        pem_body((lineage / "cert.pem").read_bytes())[20:80],
    ]
    for secret in never_shown:
        assert secret not in log

    quieter = cli.run("-vv", "renew", "--force").stderr
    assert "DEBUG certsmith" in quieter and "certsmith.wire" not in quieter


def run_cli(pebble: PebbleServer, state_dir: Path, directory: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CERTSMITH, "--directory", directory, "--ca-bundle", str(pebble.ca_bundle), "--state-dir", str(state_dir),
         *args],
        capture_output=True, text=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL,
    )


def test_a_url_that_is_not_a_directory_gets_advice(pebble: PebbleServer, tmp_path: Path) -> None:
    wrong = pebble.directory_url.rsplit("/", 1)[0] + "/not-the-directory"
    result = run_cli(pebble, tmp_path / "state", wrong, "account", "register", "--email", "a@example.com",
                     "--agree-tos")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {wrong} is not an ACME directory: GET answered HTTP 404; check --directory")

    as_json = run_cli(pebble, tmp_path / "state", wrong, "--json", "account", "register", "--agree-tos")
    document = json.loads(as_json.stdout)
    assert document["ok"] is False and document["error"] == f"{wrong} is not an ACME directory: GET answered HTTP 404"
    assert document["advice"].startswith("check --directory")
    assert not list((tmp_path / "state").rglob("account.key"))
