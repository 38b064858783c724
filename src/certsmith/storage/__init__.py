"""Where certsmith keeps accounts and certificates, and their locks.

:class:`Store` is the contract the manager relies on (records and bytes, never
paths); :class:`FileStore` is the directory-tree implementation (atomic writes, 0600
keys, 0700 directories).
"""

from __future__ import annotations

from certsmith.storage.base import (
    CertificateFiles,
    LineageMeta,
    RenewalState,
    Store,
    StoredAccount,
    validate_lineage_name,
)
from certsmith.storage.files import FileStore, atomic_write

__all__ = [
    "CertificateFiles",
    "FileStore",
    "LineageMeta",
    "RenewalState",
    "Store",
    "StoredAccount",
    "atomic_write",
    "validate_lineage_name",
]
