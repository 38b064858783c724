"""The contract between the manager and the challenge solvers.

The manager collects every pending authorization of an order, hands all of their
jobs to one solver at once (so dns-01 can publish every record and wait for
propagation a single time), answers the challenges concurrently, and finally calls
``cleanup`` with the same jobs -- also when validation failed or the task was
cancelled. A solver instance may serve several orders at the same time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from certsmith.jose import b64u_encode


@dataclass(frozen=True)
class ChallengeJob:
    """One challenge to make visible: for ``identifier_type``/``identifier`` answer ``token``."""

    identifier_type: str  # "dns" or "ip"
    identifier: str  # as in the authorization, without a "*." prefix
    token: str
    key_authorization: str
    wildcard: bool = False

    @property
    def dns01_value(self) -> str:
        """The TXT value of dns-01: base64url(SHA-256(key authorization)) (RFC 8555 §8.4)."""
        return b64u_encode(hashlib.sha256(self.key_authorization.encode()).digest())

    @property
    def key_authorization_digest(self) -> bytes:
        """SHA-256 of the key authorization, as put into the tls-alpn-01 certificate."""
        return hashlib.sha256(self.key_authorization.encode()).digest()


class ChallengeSolver(Protocol):
    """Provisions one challenge type."""

    challenge_type: ClassVar[str]

    def supports(self, identifier_type: str, wildcard: bool) -> bool:
        """Whether this solver can answer for such an identifier."""
        ...

    async def present(self, jobs: Sequence[ChallengeJob]) -> None:
        """Make every job visible; returns when the CA can validate all of them."""
        ...

    async def cleanup(self, jobs: Sequence[ChallengeJob]) -> None:
        """Undo ``present`` for these jobs; never raises for jobs already gone."""
        ...

    async def aclose(self) -> None:
        """Stop servers and release resources."""
        ...
