"""The package's layering (DESIGN.md): every module imports only its own part and the layers below.

Read from the source with ``ast``, so imports inside functions (the lazy ones) count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import certsmith

PACKAGE = Path(certsmith.__file__).parent

# Lower number, lower layer. A part may import its own modules and any part of a lower layer;
# parts on the same layer are independent of each other (acme knows nothing of dns or storage).
LAYERS: dict[str, int] = {
    "_version": 0,
    "_constants": 0,
    "_time": 0,
    "_redact": 1,
    "_env": 2,
    "_atomic": 0,
    "_http": 0,
    "_http11": 0,
    "_httpx_bridge": 1,
    "_plugins": 0,
    "_text": 0,
    "errors": 0,
    "jose": 1,
    "crypto": 2,
    "acme": 3,
    "dns": 3,
    "storage": 3,
    "envfile": 3,
    "schedule": 3,
    "ratelimit": 4,
    "challenges": 4,
    "deploy": 4,
    "policy": 5,
    "settings": 5,
    "outcomes": 5,
    "accounts": 5,
    "storetools": 4,
    "solvers": 6,
    "leftovers": 6,
    "ordering": 7,
    "delivery": 7,
    "persist": 7,
    "renewal": 8,
    "manager": 9,
    "api": 10,
    "testing": 10,
    "__init__": 11,
    "cli": 12,
    "__main__": 13,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """The certsmith parts ``path`` imports (``from certsmith import x`` counts as part ``x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "certsmith":
                found.update(alias.name for alias in node.names if alias.name in LAYERS)
                if any(alias.name not in LAYERS for alias in node.names):
                    found.add("__init__")
            elif node.module.startswith("certsmith."):
                found.add(_part(node.module))
        elif isinstance(node, ast.Import):
            found.update(_part(alias.name) for alias in node.names if alias.name.startswith("certsmith."))
    return found


def _part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def test_every_part_has_a_layer() -> None:
    parts = {_part_of(path) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


def test_no_module_imports_upwards_or_sideways() -> None:
    wrong: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part_of(path)
        for target in _imports(path):
            if target != part and LAYERS[target] >= LAYERS[part]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target} (layer {LAYERS[target]} >= {LAYERS[part]})")
    assert wrong == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from certsmith.manager import Manager\n    from certsmith import cli\n")
    assert _imports(sample) == {"manager", "cli"}
