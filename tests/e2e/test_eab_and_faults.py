"""A second Pebble that requires external account binding and rejects half the nonces."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from certsmith.testing.pebble import PebbleServer
from tests.conftest import Cli
from tests.e2e.helpers import verify_chain

EAB_KID = "kid-certsmith"
EAB_KEY = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def strict_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    server = PebbleServer(
        workdir=tmp_path_factory.mktemp("pebble-eab"),
        env={"PEBBLE_WFE_NONCEREJECT": "90"},
        config={"externalAccountBindingRequired": True, "externalAccountMACKeys": {EAB_KID: EAB_KEY}},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_eab_required_and_issuance_at_90_percent_nonce_rejection(strict_pebble: PebbleServer, tmp_path: Path) -> None:
    cli = Cli(strict_pebble, tmp_path / "state")
    refused = cli.run("account", "register", "--email", "a@example.com", "--agree-tos", check=False)
    assert refused.returncode == 1 and "--eab-kid" in refused.stderr
    assert not list((tmp_path / "state").rglob("account.key"))

    wrong = cli.run(
        "account", "register", "--email", "a@example.com", "--agree-tos",
        "--eab-kid", EAB_KID, "--eab-hmac-key", base64.urlsafe_b64encode(b"x" * 32).rstrip(b"=").decode(),
        check=False,
    )
    assert wrong.returncode == 1 and "error:" in wrong.stderr

    from tests.conftest import clean_env

    registered = cli.run(
        "-vvv", "account", "register", "--email", "a@example.com", "--agree-tos",
        env=clean_env(CERTSMITH_EAB_KID=EAB_KID, CERTSMITH_EAB_HMAC_KEY=EAB_KEY),
    )
    binding = f'"externalAccountBinding": {{"protected": {{"alg": "HS256", "kid": "{EAB_KID}", "url": '
    assert binding in registered.stderr, "the wire log shows the binding's protected header"
    assert EAB_KEY not in registered.stderr
    assert json.loads(cli.run("--json", "account", "show").stdout)["status"] == "valid"
    names = ["nonce1.example.com", "nonce2.example.com", "nonce3.example.com"]
    cli.run("issue", *[a for n in names for a in ("-d", n)], *cli.http_args())
    verify_chain(strict_pebble, tmp_path / "state" / "certificates" / names[0], tmp_path)
    cli.run("renew", "--force")
    cli.run("revoke", names[0])
