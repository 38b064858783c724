"""What to type next: the facts the ACME layer raises, turned into advice that names flags.

The protocol layer says what failed (the host whose certificate did not verify, the
profiles the CA offers, the problem type, the URL to visit); only the command line
knows which flag changes that, so the flag names live here and nowhere below.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from certsmith.errors import AccountError, LeaseLostError, ListenError, LockedError, StoreKeyMissing

if TYPE_CHECKING:
    from certsmith.acme.errors import CertificateVerifyFailed

EAB_FLAGS = (
    "pass --eab-kid and --eab-hmac-key (or CERTSMITH_EAB_KID / CERTSMITH_EAB_HMAC_KEY) from your account at the CA"
)
REGISTER = "register an account first: certsmith account register --email you@example.com --agree-tos"
CHECK_DIRECTORY = "check --directory: it must be the URL of the CA's ACME directory or a CA name from certsmith --help"

_ACCOUNT_ADVICE = {
    "missing": "run 'certsmith account register --email you@example.com --agree-tos' "
    "(issue also registers one when given --email and --agree-tos)",
    "not-valid": "register a new account with 'certsmith account register'",
    "terms-not-agreed": "add --agree-tos to accept them",
    "eab-required": EAB_FLAGS,
}

# OpenSSL's X509_V_ERR_* codes for a certificate that is not valid for the host or IP address asked for.
_NAME_MISMATCH_CODES = frozenset({62, 64})
_EXPIRED_CODE = 10


def advice(exc: BaseException) -> str | None:
    """One line of advice naming flags for ``exc``, or ``None`` when there is nothing to add."""
    if isinstance(exc, AccountError):
        return _ACCOUNT_ADVICE.get(exc.reason)
    if isinstance(exc, ListenError):
        return _listen(exc)
    if isinstance(exc, LockedError):
        return "or add --wait SECONDS to wait for it"
    if isinstance(exc, StoreKeyMissing):
        return ("set CERTSMITH_STORE_KEY or CERTSMITH_STORE_KEY_FILE (the key every host of this --store uses), "
                "or add --store-insecure-keys to keep private keys unencrypted in it")
    if isinstance(exc, LeaseLostError):
        return "this run stalled (a paused VM, a stopped process?); run it again: it sees the newer work"
    if "certsmith.acme.errors" not in sys.modules:
        return None  # nothing from the ACME layer ran, so it raised nothing; keeps error paths light
    from certsmith.acme import errors

    if isinstance(exc, errors.CertificateVerifyFailed):
        return _untrusted_certificate(exc)
    if isinstance(exc, errors.RequestTimeout):
        return None
    if isinstance(exc, errors.TransportError):
        return f"check --directory and that {exc.host} can be reached from here"
    if isinstance(exc, errors.NotADirectory):
        return CHECK_DIRECTORY
    if isinstance(exc, errors.ProfileNotOffered | errors.InvalidProfile):
        return _profiles(exc.offered)
    if isinstance(exc, errors.IncompleteExternalAccountBinding | errors.ExternalAccountRequired):
        return EAB_FLAGS
    if isinstance(exc, errors.AccountDoesNotExist):
        return REGISTER
    if isinstance(exc, errors.UserActionRequired):
        if exc.instance:
            return f"follow the CA's instructions at {exc.instance}, then run the command again"
        return "add --agree-tos to accept the CA's terms of service"
    if isinstance(exc, errors.ValidationFailed) and exc.challenge_type == "dns-persist-01":
        names = " ".join(f"-d {_shell_word(name)}" for name in exc.failures)
        return f"check the standing _validation-persist records with: certsmith persist check {names}"
    if isinstance(exc, errors.RateLimited) and exc.retry_after is not None:
        minutes = max(1, round(exc.retry_after / 60))
        return f"the CA asks to wait about {minutes} minute{'s' if minutes != 1 else ''} before trying again"
    return None


_PORT_FLAGS = {"http-01": "--http-port", "tls-alpn-01": "--tls-port"}
_HOST_FLAGS = {"http-01": "--http-address", "tls-alpn-01": "--tls-address"}


def _listen(exc: ListenError) -> str | None:
    port_flag = _PORT_FLAGS.get(exc.challenge_type, "--http-port")
    host_flag = _HOST_FLAGS.get(exc.challenge_type, "--http-address")
    elsewhere = "--webroot DIR to use the web server that runs there" if exc.challenge_type == "http-01" else (
        "another --challenge"
    )
    if exc.cause == "in-use":
        return f"stop the program on port {exc.port}, or use {elsewhere}, or {port_flag} N behind a forwarded port"
    if exc.cause == "permission":
        return f"run certsmith as root (or give it CAP_NET_BIND_SERVICE), or use {port_flag} N behind a forwarded port"
    if exc.cause == "address":
        return f"pass one of this machine's addresses with {host_flag}, or leave it out to listen on all of them"
    return None


def _untrusted_certificate(exc: CertificateVerifyFailed) -> str:
    if exc.verify_code in _NAME_MISMATCH_CODES:
        return f"the certificate served at {exc.host} is for another name; check --directory"
    if exc.verify_code == _EXPIRED_CODE:
        return "check this machine's clock; if it is right, the CA's TLS certificate has expired"
    if exc.ca_bundle:
        return "that file does not hold the CA's root; pass the right one with --ca-bundle FILE"
    return "if the CA uses a private root, pass it with --ca-bundle FILE"


def _profiles(offered: tuple[str, ...]) -> str:
    if not offered:
        return "drop --profile"
    return "choose --profile from: " + ", ".join(offered)


def _shell_word(text: str) -> str:
    """``text`` quoted for a shell when it needs it (a wildcard name does)."""
    return text if text.replace(".", "").replace("-", "").isalnum() else f"'{text}'"
