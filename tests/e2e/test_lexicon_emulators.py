"""``--dns lexicon:cloudflare`` and ``--dns lexicon:route53``: lexicon's own providers,
unchanged, against the emulators the built-in providers are tested on.

* Cloudflare: lexicon always calls ``https://api.cloudflare.com/client/v4`` (no option or
  variable changes it), so the test does what a user behind a company proxy has:
  ``HTTPS_PROXY`` names :class:`~tests.support.connect_proxy.InterceptingProxy`, which
  answers ``CONNECT api.cloudflare.com:443`` with a certificate of its own CA (trusted
  through ``REQUESTS_CA_BUNDLE``) and hands the requests to the Cloudflare emulator.
  ``NO_PROXY`` keeps Pebble direct. Neither certsmith nor lexicon is patched.
* Route 53: lexicon's boto3 client honours ``AWS_ENDPOINT_URL_ROUTE_53`` (and, for a
  custom endpoint, needs a region: ``AWS_DEFAULT_REGION``), so it reaches moto behind the
  SigV4-checking front door of ``tests/support/route53_front.py``.

Emulators start once per module; the CLI tests issue apex + wildcard on Pebble with the
records mirrored to ``pebble-challtestsrv``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from certsmith.dns.base import load_provider
from certsmith.errors import DnsError, ProviderConfigError
from certsmith.testing.conformance import ReadTxt, check_provider
from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, tree_snapshot, verify_chain
from tests.support.cloudflare_emulator import CloudflareAccount, CloudflareEmulator, CloudflareToken
from tests.support.connect_proxy import InterceptingProxy
from tests.support.route53_front import AwsUser, Route53Front

CF_TOKEN = "cf-lexicon-token-0123456789abcdefghijklmn"
CF_NO_EDIT = "cf-lexicon-read-only-0123456789abcdefghi"
CF_EMAIL, CF_KEY = "owner@example.com", "0123456789abcdef0123456789abcdef01234"
AWS_KEY, AWS_SECRET = "AKIAIOSFODNN7LEXICON", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYlexicon0"
AWS_NO_CHANGE = AwsUser(
    "AKIAIOSFODNN7READONL", "read-Only-Secret-0123",
    actions=frozenset({"route53:ListHostedZonesByName", "route53:ListResourceRecordSets"}),
)  # fmt: skip

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise


# --- the emulators, once per module -----------------------------------------------------------


@pytest.fixture(scope="module")
def cloudflare() -> Iterator[CloudflareEmulator]:
    account = CloudflareAccount(
        zones=["example.com", "lexicon-cf.com"],
        tokens=[CloudflareToken(CF_TOKEN), CloudflareToken(CF_NO_EDIT, permissions={"Zone:Read", "DNS:Read"})],
        global_keys={CF_EMAIL: CF_KEY},
    )
    with CloudflareEmulator([account]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def proxy(cloudflare: CloudflareEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InterceptingProxy]:
    port = urlsplit(cloudflare.base_url).port
    assert port is not None
    routes = {"api.cloudflare.com:443": ("127.0.0.1", port)}
    with InterceptingProxy(routes, tmp_path_factory.mktemp("proxy")) as server:
        yield server


@pytest.fixture
def cf_env(proxy: InterceptingProxy, monkeypatch: pytest.MonkeyPatch) -> InterceptingProxy:
    """The proxy variables in this process too: lexicon runs in the test's own threads here."""
    for name, value in proxy.env().items():
        monkeypatch.setenv(name, value)
    proxy.connects.clear()
    return proxy


@pytest.fixture(scope="module")
def front() -> Iterator[Route53Front]:
    with Route53Front([AwsUser(AWS_KEY, AWS_SECRET), AWS_NO_CHANGE]) as server:
        yield server


def aws_process_env(front: Route53Front) -> dict[str, str]:
    """What boto3 reads from the environment: the endpoint (a custom one needs a region)."""
    return {
        "AWS_ENDPOINT_URL_ROUTE_53": front.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


@pytest.fixture
def aws(front: Route53Front, monkeypatch: pytest.MonkeyPatch) -> Route53Front:
    front.reset()
    front.on_change = None
    for name, value in aws_process_env(front).items():
        monkeypatch.setenv(name, value)
    front.create_zone("example.com")
    return front


def r53_options(access_key: str = AWS_KEY, secret: str = AWS_SECRET) -> dict[str, str]:
    return {"LEXICON_ROUTE53_AUTH_ACCESS_KEY": access_key, "LEXICON_ROUTE53_AUTH_ACCESS_SECRET": secret}


async def _conformance(name: str, env: Mapping[str, str], zone: str, read_txt: ReadTxt) -> None:
    provider = load_provider(name, env)
    try:
        await check_provider(provider, zone, read_txt)
    finally:
        await provider.aclose()


def present_error(name: str, env: Mapping[str, str], fqdn: str) -> str:
    """The DnsError of one present, checked to be one line."""
    provider = load_provider(name, env)
    with pytest.raises(DnsError) as caught:
        asyncio.run(provider.present(fqdn, "v" * 43))
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the conformance check through the bridge ------------------------------------------------


def test_conformance_through_lexicon_cloudflare(cloudflare: CloudflareEmulator, cf_env: InterceptingProxy) -> None:
    async def read_txt(fqdn: str) -> set[str]:
        return set(cloudflare.txt_values(fqdn))

    asyncio.run(
        _conformance("lexicon:cloudflare", {"LEXICON_CLOUDFLARE_AUTH_TOKEN": CF_TOKEN}, "example.com.", read_txt)
    )
    assert cf_env.connects and set(cf_env.connects) == {"api.cloudflare.com:443"}  # lexicon's own URL, proxied
    assert cloudflare.records("example.com") == []
    # The global API key (e-mail + key) and a zone id given up front work the same way.
    legacy = {
        "LEXICON_CLOUDFLARE_USERNAME": CF_EMAIL,  # lexicon's older spelling of AUTH_USERNAME
        "LEXICON_CLOUDFLARE_AUTH_TOKEN": CF_KEY,
        "LEXICON_CLOUDFLARE_ZONE_ID": cloudflare.zone_id("example.com"),
    }
    asyncio.run(_conformance("lexicon:cloudflare", legacy, "example.com.", read_txt))
    assert cloudflare.records("example.com") == []
    assert cloudflare.requests[-1].auth == "key"


def test_conformance_through_lexicon_route53(aws: Route53Front) -> None:
    async def read_txt(fqdn: str) -> set[str]:
        return set(aws.txt_values(fqdn))

    asyncio.run(_conformance("lexicon:route53", r53_options(), "example.com.", read_txt))
    assert aws.txt_sets(aws.zones["example.com"]) == {}
    # lexicon makes a repeated create a no-op by AWS's refusal of a duplicate value in a set
    assert aws.calls("ChangeResourceRecordSets", 400) == 1
    assert [r.code for r in aws.requests if r.status == 400] == ["InvalidChangeBatch"]


# --- failures: one line, secrets kept out ----------------------------------------------------


def test_missing_lexicon_options_are_named() -> None:
    with pytest.raises(ProviderConfigError) as cf:
        load_provider("lexicon:cloudflare", {"LEXICON_CLOUDFLARE_ZONE_ID": "0123"})
    assert "LEXICON_CLOUDFLARE_AUTH_TOKEN" in str(cf.value) and "\n" not in str(cf.value)
    with pytest.raises(ProviderConfigError) as r53:
        load_provider("lexicon:route53", {"LEXICON_ROUTE53_ZONE_ID": "Z123"})
    message = str(r53.value)
    assert "\n" not in message
    for name in ("LEXICON_ROUTE53_AUTH_ACCESS_KEY", "LEXICON_ROUTE53_AUTH_ACCESS_SECRET"):
        assert name in message


def test_lexicon_cloudflare_refusals_are_one_line(cloudflare: CloudflareEmulator, cf_env: InterceptingProxy) -> None:
    wrong = present_error(
        "lexicon:cloudflare", {"LEXICON_CLOUDFLARE_AUTH_TOKEN": "not-a-token"}, "_acme-challenge.example.com"
    )
    assert wrong.startswith("lexicon:cloudflare: could not create TXT _acme-challenge.example.com: HTTPError: 403")
    assert "not-a-token" not in wrong and "-- the API answered: {" in wrong
    read_only = present_error(
        "lexicon:cloudflare", {"LEXICON_CLOUDFLARE_AUTH_TOKEN": CF_NO_EDIT}, "_acme-challenge.example.com"
    )
    assert "HTTPError: 403" in read_only and CF_NO_EDIT not in read_only
    assert '"message": "Authentication error"' in read_only  # Cloudflare's reason, from the response body
    no_zone = present_error(
        "lexicon:cloudflare", {"LEXICON_CLOUDFLARE_AUTH_TOKEN": CF_TOKEN}, "_acme-challenge.not-ours.org"
    )
    assert "AuthenticationError: No domain found" in no_zone
    assert cloudflare.records("example.com") == []


def test_lexicon_route53_refusals_are_one_line(aws: Route53Front, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="certsmith.dns.lexicon_bridge")
    wrong = present_error("lexicon:route53", r53_options(secret="wrong-secret"), "_acme-challenge.example.com")
    assert "SignatureDoesNotMatch" in wrong and "wrong-secret" not in wrong
    denied = present_error(
        "lexicon:route53",
        r53_options(AWS_NO_CHANGE.access_key_id, AWS_NO_CHANGE.secret_access_key),
        "_acme-challenge.example.com",
    )
    # lexicon logs AccessDenied with a traceback and answers False: the logged reason is the error's
    assert denied.startswith("lexicon:route53: could not create TXT _acme-challenge.example.com: "), denied
    assert "AccessDenied" in denied and "route53:ChangeResourceRecordSets" in denied
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no traceback on the console
    assert any(r.exc_info for r in caplog.records if r.name == "certsmith.dns.lexicon_bridge")  # it is at DEBUG
    lexicon_log = logging.getLogger("lexicon")
    assert lexicon_log.propagate and not lexicon_log.handlers  # lexicon's logging is as it was
    assert aws.txt_sets(aws.zones["example.com"]) == {}


# --- the whole path: the CLI on Pebble --------------------------------------------------------


def test_cli_issues_apex_and_wildcard_through_lexicon_cloudflare(
    registered_cli: Cli, cloudflare: CloudflareEmulator, proxy: InterceptingProxy, tmp_path: Path
) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    proxy.connects.clear()
    seen = len(cloudflare.requests)  # the emulator serves the whole module
    cloudflare.on_change = srv.set_txt_values
    try:
        cli.run(
            "issue", "-d", "lexicon-cf.com", "-d", "*.lexicon-cf.com",
            "--dns", "lexicon:cloudflare", "--dns-resolver", srv.dns_address,
            env=clean_env(**proxy.env(), LEXICON_CLOUDFLARE_AUTH_TOKEN=CF_TOKEN),
        )  # fmt: skip
    finally:
        cloudflare.on_change = None
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "lexicon-cf.com", tmp_path)
    assert san_names(leaf) == {"lexicon-cf.com", "*.lexicon-cf.com"}
    assert proxy.connects and set(proxy.connects) == {"api.cloudflare.com:443"}  # Pebble stayed direct
    created = [r for r in cloudflare.requests[seen:] if r.method == "POST" and r.status == 200]
    assert {r.body["name"] for r in created} == {"_acme-challenge.lexicon-cf.com"} and len(created) == 2
    assert cloudflare.records("lexicon-cf.com") == []


def test_cli_issues_apex_and_wildcard_through_lexicon_route53(
    registered_cli: Cli, front: Route53Front, tmp_path: Path
) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    front.reset()
    zone_id = front.create_zone("lexicon-r53.com")
    front.on_change = srv.set_txt_values
    try:
        cli.run(
            "issue", "-d", "lexicon-r53.com", "-d", "*.lexicon-r53.com",
            "--dns", "lexicon:route53", "--dns-resolver", srv.dns_address,
            env=clean_env(**aws_process_env(front), **r53_options()),
        )  # fmt: skip
    finally:
        front.on_change = None
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "lexicon-r53.com", tmp_path)
    assert san_names(leaf) == {"lexicon-r53.com", "*.lexicon-r53.com"}
    assert front.calls("ChangeResourceRecordSets") >= 3  # CREATE, UPSERT of both values, then removals
    assert front.txt_sets(zone_id) == {}


def test_cli_lexicon_refusal_is_one_line(registered_cli: Cli, front: Route53Front) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    front.reset()
    front.create_zone("lexicon-r53.com")
    denied = r53_options(AWS_NO_CHANGE.access_key_id, AWS_NO_CHANGE.secret_access_key)
    result = cli.run(
        "issue", "-d", "lexicon-r53.com", "--dns", "lexicon:route53", "--dns-resolver", srv.dns_address,
        env=clean_env(**aws_process_env(front), **denied), check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and AWS_NO_CHANGE.secret_access_key not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not authorized to perform: route53:ChangeResourceRecordSets" in errors[0], errors
    assert not (cli.state_dir / "certificates" / "lexicon-r53.com").exists()


@pytest.mark.parametrize(
    ("dns", "env", "complaint"),
    [
        ("lexicon:cloudflare", {}, "LEXICON_CLOUDFLARE_AUTH_TOKEN"),
        ("lexicon:route53", {"AWS_ACCESS_KEY_ID": AWS_KEY}, "LEXICON_ROUTE53_AUTH_ACCESS_KEY"),
        ("lexicon:cloudflair", {}, "unknown lexicon provider 'cloudflair'"),
    ],
)
def test_cli_refuses_before_ordering(registered_cli: Cli, dns: str, env: dict[str, str], complaint: str) -> None:
    cli = registered_cli
    before = tree_snapshot(cli.state_dir)
    mark = cli.pebble.log_mark()
    result = cli.run("issue", "-d", "refused.example.com", "--dns", dns, env=clean_env(**env), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert tree_snapshot(cli.state_dir) == before
    assert cli.pebble.orders_created(mark) == []
