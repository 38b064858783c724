"""What this host has delivered: host-local state for ``certsmith sync``.

With a shared store (Redis) one host orders a certificate and every host serves it:
each runs ``sync``, which runs the lineage's deploy targets only when *this host* has
not delivered the current version through those targets yet. What a host delivered
is a fact about its own disk, so it is kept on that disk, in ``delivered.json`` under
the host's local state directory (``--local-state``, by default the usual state
directory), never in the shared store:

* it needs no host identity (cloned machines, renamed hosts, containers sharing a
  hostname would all be wrong keys in a shared store);
* a host re-imaged or replaced starts without the file and simply delivers again
  (the targets are idempotent), which is exactly what a new host needs;
* a store migrated, restored or flushed does not make hosts believe they are current.

The file maps a lineage name to ``{"version", "serial", "targets", "at"}``; ``targets``
is a digest of the deploy targets used, so changing them delivers again. A damaged file
is treated as empty (at worst everything is delivered once more) and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certsmith._atomic import replace_file
from certsmith.deploy.base import DeploySpec
from certsmith.errors import StorageError

__all__ = ["DELIVERED_FILE", "DeliveryLog", "targets_digest"]

log = logging.getLogger("certsmith")

DELIVERED_FILE = "delivered.json"


def targets_digest(specs: Sequence[DeploySpec]) -> str:
    """A short digest of the deploy targets (their specs as given), to notice a change of targets."""
    text = json.dumps([spec.to_json() for spec in specs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DeliveryLog:
    """``<directory>/delivered.json``: the version of each lineage this host delivered, and through what."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / DELIVERED_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the damaged delivery log %s (%s): everything is delivered again", self.path, exc)
            return {}
        if not isinstance(data, dict):
            log.warning("ignoring the damaged delivery log %s: everything is delivered again", self.path)
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}

    @staticmethod
    def entry(version: int, serial: str, specs: Sequence[DeploySpec]) -> dict[str, Any]:
        """What is compared to decide whether a lineage is delivered (the time is kept beside it)."""
        return {"version": version, "serial": serial, "targets": targets_digest(specs)}

    def delivered(self, entries: dict[str, dict[str, Any]], name: str, wanted: dict[str, Any]) -> bool:
        found = entries.get(name) or {}
        return all(found.get(key) == value for key, value in wanted.items())

    def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Write the whole log atomically (0600, in a 0700 directory created when missing)."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            replace_file(self.path, json.dumps(entries, indent=2, sort_keys=True).encode() + b"\n", 0o600)
        except OSError as exc:
            raise StorageError(f"cannot write the delivery log {self.path}: {exc.strerror or exc}; "
                               "choose a writable directory with --local-state") from None
