"""The journal of challenge artefacts, and cleaning up what a killed run left behind.

Before a solver creates a TXT record or a web-root file it notes it in the store's
journal, and forgets it once the artefact is removed. SIGINT, SIGTERM and SIGHUP run the
cleanup at once; a run killed with SIGKILL (or a power cut) leaves notes, and the next run
of ``issue``, ``renew`` or ``cleanup`` removes those artefacts through the same DNS
provider, or deletes the file, and says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from certsmith._time import format_time, utc_now
from certsmith.errors import CertsmithError, StorageError
from certsmith.settings import ChallengeSettings
from certsmith.storage.base import Store

log = logging.getLogger("certsmith.leftovers")


def _key(artefact: Mapping[str, str]) -> str:
    identity = artefact.get("path") or f"{artefact.get('fqdn', '')}\0{artefact.get('value', '')}"
    return hashlib.sha256(f"{artefact.get('kind', '')}\0{identity}".encode()).hexdigest()[:32]


class StoreJournal:
    """An :class:`~certsmith.challenges.base.ArtefactJournal` kept in ``store`` for one solver's settings."""

    def __init__(self, store: Store, settings: ChallengeSettings) -> None:
        self.store = store
        self.settings = settings

    def created(self, artefact: dict[str, str]) -> None:
        record: dict[str, Any] = {
            **artefact,
            "settings": self.settings.to_json(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "created_at": format_time(utc_now()),
        }
        self.store.journal_add(_key(artefact), record)

    def removed(self, artefact: dict[str, str]) -> None:
        self.store.journal_remove(_key(artefact))


def _still_running(record: Mapping[str, Any]) -> bool:
    """Whether the run that wrote ``record`` may still be working (its artefacts are then its own)."""
    if record.get("host") != socket.gethostname():
        return True  # only that host can tell whether its run is alive
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, as another user
    return True


async def clean_leftovers(
    store: Store, env: Mapping[str, str], say: Callable[[str, str], None]
) -> list[str]:
    """Remove the artefacts of runs that ended without cleaning up; returns what was removed.

    An artefact that cannot be removed now (the provider's secrets are missing, the API
    fails) keeps its note, is reported, and is tried again by the next run.
    """
    removed: list[str] = []
    try:
        entries = store.journal_entries()
    except StorageError as exc:
        say("warning", f"cannot read the journal of challenge artefacts: {exc}")
        return removed
    for key, record in entries:
        if _still_running(record):
            continue
        what = _describe(record)
        try:
            if record.get("kind") == "http-01-shared":
                store.challenge_withdraw(str(record.get("token", "")))
            else:
                await _remove(record, env)
        except (CertsmithError, OSError, ValueError) as exc:  # ConfigError for a damaged token, too
            say("warning", f"could not remove {what}, left by an earlier run: {exc}")
            continue
        store.journal_remove(key)
        removed.append(what)
        say("cleanup", f"cleaned up {what}, left by an earlier run that was killed")
    return removed


def _describe(record: Mapping[str, Any]) -> str:
    if record.get("kind") == "dns-01":
        return f"the TXT record {record.get('fqdn')}"
    if record.get("kind") == "http-01-shared":
        return f"the shared http-01 answer {record.get('token')}"
    return f"the web-root file {record.get('path')}"


async def _remove(record: Mapping[str, Any], env: Mapping[str, str]) -> None:
    kind = record.get("kind")
    if kind == "http-01":
        path = Path(str(record.get("path", "")))
        # only a file in a challenge directory that still holds what we wrote: anything else is not ours
        if path.name and path.parent.name == "acme-challenge":
            try:
                if path.read_text() == record.get("content"):
                    path.unlink()
            except FileNotFoundError:
                pass
        return
    if kind != "dns-01":
        raise ValueError(f"unknown kind of artefact {kind!r}")
    settings = ChallengeSettings.from_json(record.get("settings") or {})
    if settings.dns_provider is None:
        raise ValueError("the note names no DNS provider")
    if settings.dns_provider == "manual":
        raise ValueError("it was made by hand: delete it the same way")
    from certsmith.dns.base import load_provider

    fqdn, value = str(record.get("fqdn")), str(record.get("value"))
    provider = load_provider(settings.dns_provider, {**dict(settings.dns_env), **env})
    try:
        # present first: providers delete only what they know, and adopt an identical record
        await provider.present(fqdn, value)
        await provider.cleanup(fqdn, value)
    finally:
        await provider.aclose()
