"""Turn facts raised by the library into advice that names the command line's flags.

Lower layers say what failed in their own terms (a URL, a problem type, a parameter
name); only here do flags and commands appear.
"""

from __future__ import annotations

from certsmith.errors import AccountError


def advice(exc: BaseException) -> str | None:
    """One line telling a command-line user what to do about ``exc``, or ``None``."""
    if isinstance(exc, AccountError):
        return {
            "missing": "run 'certsmith account register --email you@example.com --agree-tos', "
            "or add --email and --agree-tos to this command",
            "not-valid": "register a new account with 'certsmith account register'",
            "terms-not-agreed": "add --agree-tos to accept them",
            "eab-required": "pass --eab-kid and --eab-hmac-key (or set CERTSMITH_EAB_KID and CERTSMITH_EAB_HMAC_KEY)",
        }.get(exc.reason)
    return None
