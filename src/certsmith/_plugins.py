"""Registries of pluggable classes: DNS providers and deploy targets.

A registry maps a name to ``module:attribute``: the built-ins given by the caller, and
the entry points of a group (a built-in of the same name wins). Modules are imported
only when a class is asked for, so listing names stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Registry:
    """The built-ins (name to ``module:attribute``) and the entry-point group of one kind of plug-in."""

    builtins: Mapping[str, str]
    group: str

    def builtin_names(self) -> list[str]:
        """The built-in names, sorted."""
        return sorted(self.builtins)

    def available(self) -> list[str]:
        """Every name, built-in or installed, whose module can be found, sorted."""
        return importable(registered(self.builtins, self.group))

    def ref(self, name: str) -> str | None:
        """The ``module:attribute`` registered as ``name``, or ``None``."""
        return registered(self.builtins, self.group).get(name)


def registered(builtins: Mapping[str, str], group: str) -> dict[str, str]:
    """Every name with its ``module:attribute``: the entry points of ``group``, then the built-ins over them."""
    from importlib.metadata import entry_points

    refs = {ep.name: ep.value for ep in entry_points(group=group)}
    refs.update(builtins)  # a built-in of the same name wins
    return refs


def importable(refs: Mapping[str, str]) -> list[str]:
    """The names in ``refs`` whose module can be found (without importing it), sorted."""
    return sorted(name for name, ref in refs.items() if _findable(ref.partition(":")[0]))


def load(ref: str) -> Any:
    """The attribute ``ref`` (``module:attribute``) names, importing its module."""
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
