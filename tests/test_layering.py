"""Data flows one way: graphs -> passes -> targets -> validation -> compiler.

No module imports a layer above its own, and only the compiler (the CLI) drives runtime/.
What runtime/ itself may import is checked in test_runtime_isolation.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["graphs", "passes", "targets", "validation", "compiler"]


def mirror_imports(path: Path) -> set[str]:
    """Every ``mirror.*`` module a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mirror")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mirror":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER + ["runtime"] else None


@pytest.mark.parametrize("layer", ORDER)
def test_no_upward_imports(layer):
    rank = ORDER.index(layer)
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for module in mirror_imports(path):
            other = layer_of(module)
            if other in ORDER and ORDER.index(other) > rank:
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
            if other == "runtime" and layer != "compiler":
                bad.append(f"{path.relative_to(ROOT)} imports {module} (runtime is the device side)")
    assert not bad, "\n".join(bad)
