"""The ACME layer raises facts without flag names; the CLI's advice names the flags.

Every error here is raised by the real client against an in-test CA on
``httpx.MockTransport``, so the facts checked are the ones the client really attaches.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from certsmith._redact import redact
from certsmith.acme.client import AcmeClient
from certsmith.acme.errors import (
    ACME_ERROR_PREFIX,
    AccountDoesNotExist,
    CertificateVerifyFailed,
    ExternalAccountRequired,
    IncompleteExternalAccountBinding,
    InvalidProfile,
    NotADirectory,
    ProfileNotOffered,
    RateLimited,
    RequestTimeout,
    TransportError,
    UserActionRequired,
)
from certsmith.cli.advice import EAB_FLAGS, advice
from certsmith.crypto import Identifier, generate_key
from certsmith.errors import CertsmithError, ConfigError, ListenError
from tests.unit.test_acme_client import BASE, DIRECTORY, FakeCa, ok

NAME = [Identifier("dns", "x.test")]


def raised(client: AcmeClient, call: Callable[[AcmeClient], Awaitable[Any]]) -> CertsmithError:
    """The certsmith error ``call`` raises; the message must never name a command-line flag."""

    async def run() -> None:
        async with client:
            await call(client)

    with pytest.raises(CertsmithError) as info:
        asyncio.run(run())
    assert not re.search(r"--[a-z]", str(info.value)), str(info.value)
    return info.value


def client_on(handler: Callable[[httpx.Request], httpx.Response]) -> AcmeClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AcmeClient(f"{BASE}/dir", generate_key(), account_url=f"{BASE}/acct/1", http=http, sleep=no_sleep)


async def no_sleep(seconds: float) -> None:
    """The retry back-off, without the wait."""


def acme_problem(status: int, kind: str, **extra: Any) -> Callable[[str, dict[str, Any], int], httpx.Response]:
    headers = {"Content-Type": "application/problem+json", "Replay-Nonce": "n"}
    headers.update(extra.pop("headers", {}))
    document = {"type": ACME_ERROR_PREFIX + kind, "detail": f"{kind} detail", **extra}
    return lambda url, body, n: httpx.Response(status, json=document, headers=headers)


# -- transport -------------------------------------------------------------------------


def failing_tls(code: int, message: str) -> Callable[[httpx.Request], httpx.Response]:
    """A handler failing as httpx does when OpenSSL rejects the server's certificate."""

    def handler(request: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
        cause.verify_code = code
        cause.verify_message = message
        raise httpx.ConnectError(str(cause), request=request) from cause

    return handler


def test_untrusted_certificate_carries_host_and_reason_and_advises_ca_bundle() -> None:
    error = raised(client_on(failing_tls(20, "unable to get local issuer certificate")), AcmeClient.directory)
    assert isinstance(error, CertificateVerifyFailed)
    assert (error.host, error.reason, error.verify_code, error.ca_bundle) == (
        "ca.test",
        "unable to get local issuer certificate",
        20,
        None,
    )
    assert error.method == "GET" and error.url == f"{BASE}/dir"
    assert str(error) == "cannot verify the TLS certificate of ca.test (unable to get local issuer certificate)"
    assert advice(error) == "if the CA uses a private root, pass it with --ca-bundle FILE"


def test_untrusted_certificate_with_a_bundle_names_the_bundle() -> None:
    error = CertificateVerifyFailed(
        method="GET", url=f"{BASE}/dir", reason="self-signed certificate in certificate chain", verify_code=19,
        ca_bundle="/etc/ca.pem",
    )
    assert str(error).endswith("with the roots in /etc/ca.pem")
    assert advice(error) == "that file does not hold the CA's root; pass the right one with --ca-bundle FILE"


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (62, "Hostname mismatch, certificate is not valid for 'ca.test'.", "is for another name; check --directory"),
        (64, "IP address mismatch, certificate is not valid for '127.0.0.2'.", "check --directory"),
        (10, "certificate has expired", "check this machine's clock"),
    ],
)
def test_certificate_problems_a_bundle_cannot_fix_get_other_advice(code: int, message: str, expected: str) -> None:
    error = raised(client_on(failing_tls(code, message)), AcmeClient.directory)
    text = advice(error)
    assert text is not None and expected in text and "--ca-bundle" not in text


def test_unreachable_ca_and_time_out() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    refused = raised(client_on(refuse), AcmeClient.directory)
    assert type(refused) is TransportError and refused.host == "ca.test"
    assert str(refused) == "cannot reach the CA at ca.test: connection refused (4 tries)"
    assert advice(refused) == "check --directory and that ca.test can be reached from here"
    slow = raised(client_on(stall), AcmeClient.directory)
    assert isinstance(slow, RequestTimeout) and "timed out" in str(slow) and advice(slow) is None


# -- directory -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "fact"),
    [
        (httpx.Response(404, text="not found"), "GET answered HTTP 404"),
        (httpx.Response(200, text="<html>welcome</html>"), "its answer is not JSON"),
        (httpx.Response(200, json=["a", "list"]), "the document is not a JSON object"),
        (httpx.Response(200, json={"newNonce": f"{BASE}/n"}), "it has no newAccount, newOrder"),
    ],
)
def test_a_url_that_is_no_directory_says_so(response: httpx.Response, fact: str) -> None:
    error = raised(client_on(lambda request: response), AcmeClient.directory)
    assert isinstance(error, NotADirectory) and error.url == f"{BASE}/dir"
    assert str(error) == f"{BASE}/dir is not an ACME directory: {fact}"
    text = advice(error)
    assert text is not None and text.startswith("check --directory")


def test_directory_status_is_kept() -> None:
    error = raised(client_on(lambda request: httpx.Response(503, text="busy")), AcmeClient.directory)
    assert isinstance(error, NotADirectory) and error.status == 503


# -- profiles --------------------------------------------------------------------------

PROFILES = {**DIRECTORY, "meta": {"profiles": {"shortlived": "6 days", "classic": "90 days"}}}


def test_profile_on_a_ca_without_profiles() -> None:
    ca = FakeCa(lambda url, body, n: ok("x"))
    error = raised(ca.client(), lambda client: client.new_order(NAME, profile="shortlived"))
    assert isinstance(error, ProfileNotOffered) and isinstance(error, ConfigError)
    assert (error.profile, error.offered, error.directory_url) == ("shortlived", (), f"{BASE}/dir")
    assert "advertises no profiles" in str(error)
    assert advice(error) == "drop --profile"
    assert ca.posts == [], "nothing is ordered"


def test_profile_not_among_the_offered_ones() -> None:
    ca = FakeCa(lambda url, body, n: ok("x"), directory=PROFILES)
    error = raised(ca.client(), lambda client: client.new_order(NAME, profile="tlsserver"))
    assert isinstance(error, ProfileNotOffered) and error.offered == ("classic", "shortlived")
    assert str(error).endswith("it offers: classic, shortlived")
    assert advice(error) == "choose --profile from: classic, shortlived"


def test_profile_refused_by_the_ca_knows_the_offered_ones() -> None:
    ca = FakeCa(acme_problem(400, "invalidProfile"), directory=PROFILES)
    error = raised(ca.client(), lambda client: client.new_order(NAME, profile="classic"))
    assert isinstance(error, InvalidProfile) and error.offered == ("classic", "shortlived")
    assert advice(error) == "choose --profile from: classic, shortlived"


# -- accounts --------------------------------------------------------------------------


def new_client(ca: FakeCa) -> AcmeClient:
    client = ca.client()
    client.account_url = None
    return client


def test_external_account_required() -> None:
    ca = FakeCa(acme_problem(403, "externalAccountRequired"))
    error = raised(new_client(ca), lambda client: client.register(agree_tos=True))
    assert isinstance(error, ExternalAccountRequired) and error.short_type == "externalAccountRequired"
    assert error.url == DIRECTORY["newAccount"] and error.status == 403
    assert "eab_kid and eab_hmac_key" in str(error)
    assert advice(error) == EAB_FLAGS
    assert "--eab-kid" in EAB_FLAGS and "CERTSMITH_EAB_HMAC_KEY" in EAB_FLAGS


def test_half_an_external_account_binding_names_the_missing_half_and_never_the_key() -> None:
    ca = FakeCa(lambda url, body, n: ok("x"))
    no_key = raised(new_client(ca), lambda client: client.register(eab_kid="kid-1"))
    assert isinstance(no_key, IncompleteExternalAccountBinding) and no_key.missing == "eab_hmac_key"
    secret = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cy1vbmx5"
    no_kid = raised(new_client(ca), lambda client: client.register(eab_hmac_key=secret))
    assert isinstance(no_kid, IncompleteExternalAccountBinding) and no_kid.missing == "eab_kid"
    assert secret not in str(no_kid) and redact(f"key={secret}") == "key=***"
    assert advice(no_key) == advice(no_kid) == EAB_FLAGS
    assert ca.posts == []


def test_unknown_account_advises_registration() -> None:
    ca = FakeCa(acme_problem(400, "accountDoesNotExist"))
    error = raised(new_client(ca), AcmeClient.lookup_account)
    assert isinstance(error, AccountDoesNotExist)
    assert "the CA knows no account for this key" in str(error)
    text = advice(error)
    assert text is not None and "certsmith account register" in text and "--agree-tos" in text


def test_user_action_required_carries_instance_and_terms() -> None:
    tos = f"{BASE}/terms/v2"
    ca = FakeCa(
        acme_problem(
            403,
            "userActionRequired",
            instance=f"{BASE}/agree?account=1",
            headers={"Link": f'<{tos}>;rel="terms-of-service", <{BASE}/dir>;rel="index"'},
        )
    )
    error = raised(ca.client(), AcmeClient.fetch_account)
    assert isinstance(error, UserActionRequired)
    assert error.terms_of_service == tos and error.instance == f"{BASE}/agree?account=1"
    assert error.link("index") == f"{BASE}/dir"
    assert tos in str(error) and error.instance in str(error)
    assert advice(error) == f"follow the CA's instructions at {BASE}/agree?account=1, then run the command again"


@pytest.mark.parametrize("kind", ["userActionRequired", "agreementRequired"])
def test_user_action_without_instance_advises_agreeing_to_the_terms(kind: str) -> None:
    ca = FakeCa(acme_problem(403, kind))
    error = raised(new_client(ca), lambda client: client.register())
    assert isinstance(error, UserActionRequired) and error.instance is None and error.terms_of_service is None
    assert advice(error) == "add --agree-tos to accept the CA's terms of service"


def test_rate_limit_advice_gives_the_wait() -> None:
    ca = FakeCa(acme_problem(429, "rateLimited", headers={"Retry-After": "3600"}))
    error = raised(ca.client(max_server_retries=0), AcmeClient.fetch_account)
    assert isinstance(error, RateLimited) and error.retry_after == 3600
    assert advice(error) == "the CA asks to wait about 60 minutes before trying again"
    no_header = raised(FakeCa(acme_problem(429, "rateLimited")).client(max_server_retries=0), AcmeClient.fetch_account)
    assert advice(no_header) is None


def test_errors_without_facts_to_advise_on_get_none() -> None:
    assert advice(ConfigError("something else")) is None
    assert advice(ValueError("not ours")) is None
    malformed = raised(FakeCa(acme_problem(400, "malformed")).client(), AcmeClient.fetch_account)
    assert advice(malformed) is None


def test_advice_on_an_error_path_without_acme_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from certsmith.cli.advice import advice\n"
        "from certsmith.errors import ConfigError\n"
        "assert advice(ConfigError('x')) is None\n"
        "loaded = [m for m in ('httpx', 'certsmith.acme.errors', 'cryptography') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("challenge", "cause", "expected"),
    [
        ("http-01", "in-use", "or use --webroot DIR to use the web server that runs there, or --http-port N"),
        ("tls-alpn-01", "in-use", "or use another --challenge, or --tls-port N"),
        ("http-01", "permission", "CAP_NET_BIND_SERVICE), or use --http-port N"),
        ("tls-alpn-01", "address", "addresses with --tls-address"),
    ],
)
def test_a_server_that_cannot_listen_gets_the_flags_that_change_it(challenge: str, cause: str, expected: str) -> None:
    error = ListenError("port 80 is in use", challenge_type=challenge, host="", port=80, cause=cause)
    said = advice(error)
    assert said is not None and expected in said
    assert advice(ListenError("x", challenge_type=challenge, host="", port=80, cause="other")) is None


def test_server_text_is_cleaned_before_it_reaches_a_terminal() -> None:
    from certsmith._text import clean
    from certsmith.acme.errors import Problem

    hostile = "\x1b]0;pwned\x07\x1b[2Jdetail\u202eevil\r\n" + "x" * 1_000_000
    problem = Problem.from_json({"type": "urn:ietf:params:acme:error:malformed", "detail": hostile,
                                 "subproblems": [{"detail": "\x1b[31mred"}] * 1000})
    assert problem.detail.isprintable() and len(problem.detail) <= 500
    assert "\x1b" not in problem.describe() and len(problem.subproblems) == 20
    assert clean("fine text") == "fine text"
    assert clean("two\nlines", keep_newlines=True) == "two\nlines" and clean("two\nlines") == "two?lines"
