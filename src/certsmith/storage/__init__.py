"""Where certsmith keeps accounts and certificates, and the per-certificate lock.

:class:`Store` is the contract the manager relies on; :class:`FileStore` is the
directory-tree implementation (atomic writes, 0600 keys, 0700 directories).
"""

from __future__ import annotations

from certsmith.storage.base import (
    Lineage,
    LineageMeta,
    Store,
    StoredAccount,
    utc_now,
    validate_lineage_name,
)
from certsmith.storage.files import FileStore, atomic_write

__all__ = [
    "FileStore",
    "Lineage",
    "LineageMeta",
    "Store",
    "StoredAccount",
    "atomic_write",
    "utc_now",
    "validate_lineage_name",
]
