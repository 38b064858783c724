"""RFC 8555 and nothing else: usable alone as an async ACME client."""

from certsmith._constants import REVOCATION_REASONS
from certsmith.acme.client import AcmeClient, PollPolicy, parse_retry_after
from certsmith.acme.errors import AcmeError, Problem, ProblemError
from certsmith.acme.resources import Account, Authorization, Challenge, Directory, Order

__all__ = [
    "REVOCATION_REASONS",
    "Account",
    "AcmeClient",
    "AcmeError",
    "Authorization",
    "Challenge",
    "Directory",
    "Order",
    "PollPolicy",
    "Problem",
    "ProblemError",
    "parse_retry_after",
]
