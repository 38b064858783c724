"""Where certsmith keeps accounts and certificates, and their locks.

:class:`Store` is the contract the manager relies on (records and bytes, never
paths); :class:`FileStore` is the directory-tree implementation (atomic writes, 0600
keys, 0700 directories); :class:`certsmith.storage.redis.RedisStore` is the one several
hosts share. :func:`open_store` chooses between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
    "open_store",
    "validate_lineage_name",
]


def store_scheme(where: str) -> str:
    """The lower-case URL scheme of a store location (``redis``, ``rediss``...), or ``""`` for a directory."""
    return where.split("://", 1)[0].lower() if "://" in where else ""


def same_store(first: str, second: str) -> bool:
    """Whether two store locations name one store: the same directory however it is written, or one URL."""
    if store_scheme(first) or store_scheme(second):
        return first.rstrip("/") == second.rstrip("/")
    return Path(first).resolve() == Path(second).resolve()


def open_store(
    where: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    ca_bundle: str | None = None,
    insecure_keys: bool = False,
) -> Store:
    """The store at ``where``: a ``redis://`` or ``rediss://`` URL, or a directory (``None``: the default one).

    For Redis the store key comes from ``CERTSMITH_STORE_KEY`` or ``CERTSMITH_STORE_KEY_FILE``
    in ``env``; ``ca_bundle`` verifies a ``rediss://`` server; ``insecure_keys`` allows private
    keys to be kept unencrypted when there is no store key. Nothing is contacted yet.
    """
    from certsmith.errors import ConfigError

    text = str(where) if where is not None else ""
    scheme = store_scheme(text)
    if scheme in ("redis", "rediss"):
        from certsmith.storage.redis import RedisStore, load_store_key

        return RedisStore.from_url(
            text, ca_bundle=ca_bundle, store_key=load_store_key(env or {}), insecure_keys=insecure_keys
        )
    if scheme:
        raise ConfigError(f"unknown kind of store {scheme}://; use a directory, redis:// or rediss://")
    if ca_bundle is not None or insecure_keys:
        raise ConfigError("a CA bundle and unencrypted keys are options of a redis:// or rediss:// store only")
    return FileStore(Path(text) if text else FileStore.default_root())
