"""The on-device runtime imports numpy, PyAV, Pillow, the standard library and the model runners only.

Every module under runtime/ is imported in a fresh interpreter; afterwards none of the
heavy or host-only packages may be loaded (torch, OpenCV, scipy, the compiler side, and
not even the runners, which load only when a DNN runs). A static pass over the sources
backs this up for imports hidden in functions: besides numpy, the media libraries (av
for video, PIL for images), the LiteRT interpreter (the body
model's) and the standard library, only the runners layer and the
shared file helpers may be named.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import mirror.runtime

FORBIDDEN = ["torch", "cv2", "scipy", "mirror.compiler", "mirror.graphs", "mirror.passes",
             "mirror.targets", "mirror.validation", "mirror.runners", "litert_torch", "coremltools",
             "onnxruntime", "ai_edge_litert"]
RUNTIME_DIR = Path(mirror.runtime.__file__).resolve().parent
RUNNERS = {"mirror.runners.litert", "mirror.runners.onnxruntime", "mirror.files"}
MEDIA = {"av", "PIL"}
# The body model (body.py, pose.py) runs MediaPipe's signature-less .tflite files on the
# LiteRT interpreter itself; imported inside functions only (FORBIDDEN checks that).
INTERPRETER = "ai_edge_litert"


def _modules() -> list[str]:
    return sorted(f"mirror.runtime.{m.name}" for m in pkgutil.iter_modules([str(RUNTIME_DIR)]))


def test_runtime_imports_only_numpy_and_stdlib() -> None:
    modules = _modules()
    assert {"mirror.runtime.lk", "mirror.runtime.tps", "mirror.runtime.replay",
            "mirror.runtime.store", "mirror.runtime.preview"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(k for k in sys.modules if any(k == f or k.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(json.dumps({'forbidden': bad, 'numpy': 'numpy' in sys.modules,"
        f" 'loaded': [m for m in {modules!r} if m in sys.modules]}}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["loaded"] == modules  # the imports really happened
    assert report["numpy"]
    assert report["forbidden"] == []


def test_runtime_sources_name_no_forbidden_import() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(RUNTIME_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside runtime/
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (top in stdlib or top in MEDIA or top in ("numpy", INTERPRETER) or name == "mirror"
                      or name in RUNNERS)
                assert ok, f"{path.name} imports {name}"
