"""``--dns lexicon:PROVIDER`` drives a real dns-lexicon provider: lexicon's ``ddns``
(RFC 2136 with TSIG, through dnspython) against BIND 9.

Lexicon's ddns provider always talks to port 53, so BIND listens on 127.0.0.1:53 (named
binds only addresses an interface has, so another 127.x address is not an option); a
Pebble that resolves through that BIND validates the challenges, so the whole path a user
takes -- ``certsmith issue --dns lexicon:ddns`` -- is exercised, apex and wildcard.
Issuance through ``lexicon:cloudflare`` and ``lexicon:route53`` against the emulators is in
``test_lexicon_emulators.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certsmith.dns.base import load_provider, provider_class
from certsmith.errors import ConfigError, DnsError, ProviderConfigError
from certsmith.testing.conformance import check_provider
from certsmith.testing.pebble import PebbleServer
from tests.conftest import CERTSMITH, Cli, clean_env
from tests.e2e.helpers import san_names, tree_snapshot, verify_chain
from tests.support.bind import BindError, BindServer

ZONE = "example.com."  # a public suffix lexicon's zone guess (tldextract) gets right offline
DELEGATED_ZONE = "lexicon.example.net."  # needs LEXICON_DELEGATED


@pytest.fixture(scope="module")
def bind() -> Iterator[BindServer]:
    if os.geteuid() != 0:
        pytest.skip("lexicon's ddns provider needs a DNS server on port 53, which needs root")
    server = BindServer(zones=(ZONE, DELEGATED_ZONE), port=53)
    try:
        server.start()
    except BindError:
        if "address in use" in server.log_tail():
            pytest.skip("port 53 of 127.0.0.1 is taken by another DNS server")
        raise
    try:
        yield server
    finally:
        server.stop()


def lexicon_env(bind: BindServer, **extra: str) -> dict[str, str]:
    return {
        "LEXICON_DDNS_AUTH_TOKEN": f"{bind.tsig_algorithm}:{bind.tsig_key_name}:{bind.tsig_secret}",
        "LEXICON_DDNS_DDNS_SERVER": "127.0.0.1",
        **extra,
    }


def test_conformance_through_lexicon_ddns(bind: BindServer) -> None:
    async def run(env: dict[str, str], zone: str) -> None:
        provider = load_provider("lexicon:ddns", env)
        try:
            await check_provider(provider, zone, bind.read_txt)
        finally:
            await provider.aclose()

    asyncio.run(run(lexicon_env(bind), ZONE))
    asyncio.run(run(lexicon_env(bind, LEXICON_DELEGATED=DELEGATED_ZONE), DELEGATED_ZONE))


def test_metadata_comes_from_lexicons_options() -> None:
    info = provider_class("lexicon:ddns").info
    variables = {v.name: v for v in info.env}
    assert variables["LEXICON_DDNS_AUTH_TOKEN"].secret
    assert variables["LEXICON_DDNS_AUTH_TOKEN"].aliases == ("LEXICON_DDNS_TOKEN",)  # lexicon's legacy name
    assert not variables["LEXICON_DDNS_DDNS_SERVER"].secret
    cloudflare = {v.name: v for v in provider_class("lexicon:cloudflare").info.env}
    assert cloudflare["LEXICON_CLOUDFLARE_AUTH_TOKEN"].secret
    assert not cloudflare["LEXICON_CLOUDFLARE_ZONE_ID"].secret


def test_unknown_provider_and_missing_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown lexicon provider 'cloudflair'.*lexicon:cloudflare"):
        provider_class("lexicon:cloudflair")
    with pytest.raises(ProviderConfigError) as missing:
        load_provider("lexicon:cloudflare", {})
    assert "LEXICON_CLOUDFLARE_AUTH_TOKEN" in str(missing.value)
    assert "LEXICON_CLOUDFLARE_AUTH_USERNAME" in str(missing.value)


def test_lexicon_failures_are_one_line_and_name_unset_options(bind: BindServer) -> None:
    env = {"LEXICON_DDNS_AUTH_TOKEN": f"{bind.tsig_algorithm}:{bind.tsig_key_name}:{bind.tsig_secret}"}
    provider = load_provider("lexicon:ddns", env)  # no server set
    with pytest.raises(DnsError) as info:
        asyncio.run(provider.present(f"_acme-challenge.{ZONE}", "value"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("lexicon:ddns: could not create TXT _acme-challenge.example.com")
    assert "options not set: LEXICON_DDNS_DDNS_SERVER" in message
    assert bind.tsig_secret not in message

    wrong = load_provider("lexicon:ddns", lexicon_env(bind, LEXICON_DDNS_AUTH_TOKEN="hmac-sha256:wrong-key.:c2VjcmV0"))
    with pytest.raises(DnsError, match=r"^lexicon:ddns: could not create TXT") as refused:
        asyncio.run(wrong.present(f"_acme-challenge.{ZONE}", "value"))
    assert "\n" not in str(refused.value)


def test_without_lexicon_the_install_hint_is_given(tmp_path: Path) -> None:
    """A Python that cannot import lexicon (a stub package shadows it) is told what to install."""
    stub = tmp_path / "nolexicon"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'lexicon' or name.startswith('lexicon.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = clean_env(PYTHONPATH=os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")]))
    state = tmp_path / "state"
    result = subprocess.run(
        [*CERTSMITH, "--state-dir", str(state), "issue", "-d", "example.com", "--dns", "lexicon:cloudflare"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pip install 'certsmith[lexicon]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree_snapshot(state) == {}  # refused before anything was written
    listed = subprocess.run(
        [*CERTSMITH, "dns", "list"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert "pip install 'certsmith[lexicon]'" in listed.stdout


def test_dns_list_summarises_lexicon_and_lists_it_on_request(cli: Cli) -> None:
    plain = cli.run("dns", "list")
    assert "lexicon:<provider>" in plain.stdout and "providers via dns-lexicon" in plain.stdout
    assert "lexicon:cloudflare" not in plain.stdout
    full = cli.run("--json", "dns", "list", "--lexicon")
    assert '"name": "lexicon:cloudflare"' in full.stdout and '"LEXICON_CLOUDFLARE_AUTH_TOKEN"' in full.stdout


def test_cli_issues_apex_and_wildcard_through_lexicon(bind: BindServer, tmp_path: Path) -> None:
    with PebbleServer(workdir=tmp_path / "pebble", dns_server=bind.address) as pebble:
        cli = Cli(pebble, tmp_path / "state")
        cli.register()
        env = clean_env(**lexicon_env(bind))
        cli.run(
            "issue", "-d", "lx.example.com", "-d", "*.lx.example.com",
            "--dns", "lexicon:ddns", "--dns-resolver", bind.address, env=env,
        )  # fmt: skip
        leaf = verify_chain(pebble, cli.state_dir / "certificates" / "lx.example.com", tmp_path)
        assert san_names(leaf) == {"lx.example.com", "*.lx.example.com"}
    assert asyncio.run(bind.read_txt("_acme-challenge.lx.example.com.")) == set()  # cleaned up
