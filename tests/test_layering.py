"""Data flows one way: runners -> graphs -> passes -> targets -> validation -> profiling -> compiler.

No module imports a layer above its own, and only the compiler (the CLI) drives runtime/.
Runners stand under everything: they import no torch and nothing of the compile side, so
validation/ and the on-device runtime/ both use them. The root modules (``files``,
``precisions``) are shared by every layer and import none. What runtime/ itself may
import is checked in test_runtime_isolation.py.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["runners", "graphs", "passes", "targets", "validation", "profiling", "compiler"]
ROOT_MODULES = ["__init__.py", "files.py", "precisions.py"]


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def mirror_imports(path: Path) -> set[str]:
    return {m for m in imports_of(path) if m.split(".")[0] == "mirror"}


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


@pytest.mark.parametrize("folder", ["runners", "runtime"])
def test_device_side_imports_no_torch(folder):
    heavy = {"torch", "litert_torch", "cv2", "scipy"}
    bad = [
        f"{path.relative_to(ROOT)} imports {m}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for m in imports_of(path)
        if m.split(".")[0] in heavy
    ]
    assert not bad, "\n".join(bad)


def test_root_modules_import_no_layer():
    bad = [f"{name} imports {m}" for name in ROOT_MODULES for m in mirror_imports(ROOT / name) if layer_of(m)]
    assert not bad, "\n".join(bad)


def test_every_subpackage_ships_in_the_wheel():
    """A new folder with Python modules must be listed in pyproject.toml, or the wheel drops it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        "mirror." + p.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for p in ROOT.rglob("__init__.py")
        if p.parent != ROOT and not any(part.startswith(".") or part in ("build", "tests") for part in p.parts)
    }
    assert folders == listed - {"mirror"}, f"pyproject lists {sorted(listed)}, the tree has {sorted(folders)}"
