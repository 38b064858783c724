"""certsmith: a fast, complete ACME client and command-line tool.

The public API is imported lazily so that ``import certsmith`` (and the CLI's
start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from certsmith._version import __version__ as __version__

if TYPE_CHECKING:
    from certsmith.acme import AcmeClient, AcmeError, Problem, ProblemError
    from certsmith.api import issue, renew
    from certsmith.crypto import Identifier, generate_key, make_csr
    from certsmith.errors import AccountError, CertsmithError, ConfigError, DnsError, LockedError, StorageError
    from certsmith.manager import IssueResult, Manager, RenewOutcome
    from certsmith.settings import CertificateRequest, ChallengeSettings
    from certsmith.storage.base import Store
    from certsmith.storage.files import FileStore

_EXPORTS = {
    "AcmeClient": "certsmith.acme",
    "AcmeError": "certsmith.acme",
    "Problem": "certsmith.acme",
    "ProblemError": "certsmith.acme",
    "issue": "certsmith.api",
    "renew": "certsmith.api",
    "Identifier": "certsmith.crypto",
    "generate_key": "certsmith.crypto",
    "make_csr": "certsmith.crypto",
    "AccountError": "certsmith.errors",
    "CertsmithError": "certsmith.errors",
    "LockedError": "certsmith.errors",
    "StorageError": "certsmith.errors",
    "ConfigError": "certsmith.errors",
    "DnsError": "certsmith.errors",
    "CertificateRequest": "certsmith.settings",
    "ChallengeSettings": "certsmith.settings",
    "IssueResult": "certsmith.manager",
    "Manager": "certsmith.manager",
    "RenewOutcome": "certsmith.manager",
    "Store": "certsmith.storage.base",
    "FileStore": "certsmith.storage.files",
}

__all__ = [
    "AccountError",
    "AcmeClient",
    "AcmeError",
    "CertificateRequest",
    "CertsmithError",
    "ChallengeSettings",
    "ConfigError",
    "DnsError",
    "FileStore",
    "Identifier",
    "IssueResult",
    "LockedError",
    "Manager",
    "Problem",
    "ProblemError",
    "RenewOutcome",
    "StorageError",
    "Store",
    "generate_key",
    "issue",
    "make_csr",
    "renew",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certsmith' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
