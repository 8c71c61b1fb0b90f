"""The on-device side as its own wheel: `mirror-runtime`, without torch or the compiler.

`mirror compile` writes it next to the artifacts, with RUNTIME.md on how to use it. It
holds the modules that `mirror preview` and `mirror tryon` import, found by following
their imports from the two commands (so it stays complete as the code changes), plus
the LiteRT GPU worker, which the LiteRT runner starts by module name; the compile side
(`COMPILE_SIDE`) is left out by rule. Its dependencies
are numpy, the model runtimes (ai-edge-litert, onnxruntime) and the media libraries
(av, Pillow). The other `mirror` commands are not in it and say so when called.

The wheel is a zip with the standard metadata (PEP 427), written with the standard
library; its RECORD lists every file's SHA-256, so pip verifies what it installs.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import zipfile
from pathlib import Path

from mirror import __version__
from mirror.files import atomic_path

NAME = "mirror_runtime"
# The compile side never ships, whatever a runtime module's function bodies may import for
# the full toolkit (compiler/parser_build.py compiles a parser there; in the wheel that
# import fails and the command says to reuse a parser build instead).
COMPILE_SIDE = ("mirror.graphs", "mirror.passes", "mirror.targets", "mirror.validation", "mirror.profiling",
                "mirror.compiler.driver", "mirror.compiler.config", "mirror.compiler.cmd_compile")
ROOT = Path(__file__).resolve().parent.parent  # the `mirror` package (the repository root)
ENTRIES = ("mirror.compiler.cli", "mirror.compiler.cmd_preview", "mirror.compiler.cmd_tryon",
           "mirror.runners.litert_worker")
REQUIRES = ("numpy==2.4.*", "ai-edge-litert==2.3.0", "onnxruntime==1.32.*", "av==18.1.0", "Pillow==13.0.0")
README = """# mirror-runtime {version}

The on-device half of MIRROR: VITOFF (Preview and Runtime), the try-on pipeline, media
I/O and the LiteRT / onnxruntime runners. No torch, no compiler.

    python3.11 -m venv rt && rt/bin/pip install {wheel}
    rt/bin/mirror tryon VIDEO.mp4 GARMENT.png --build BUILD --roi x,y,w,h --out out.mp4
    rt/bin/mirror preview VIDEO.mp4 --out CONTEXT --roi x,y,w,h

BUILD is the folder this file is in (it holds manifest.json and the artifacts);
`--target onnx` runs the .onnx artifacts, the default the .tflite ones. From Python:
`mirror.runtime.pipeline.run_preview_video`, `run_tryon_video` and
`mirror.runtime.divton.DivtonRunner`.
"""


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, module: str) -> set[str]:
    """The mirror.* modules a source file names (absolute or relative, at any depth)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m == "mirror" or m.startswith("mirror.")}


def runtime_modules() -> list[Path]:
    """Source files of every mirror module the entry points reach, with their packages."""
    todo, seen, files = list(ENTRIES), set(), set()
    while todo:
        name = todo.pop()
        if name in seen or _compile_side(name):
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files.add(path)
        parents = [".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)]
        todo += parents + sorted(_imports(path, name))
    return sorted(files)


def _compile_side(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in COMPILE_SIDE)


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _metadata() -> dict[str, str]:
    info = f"{NAME}-{__version__}.dist-info"
    requires = "".join(f"Requires-Dist: {r}\n" for r in REQUIRES)
    return {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: mirror-runtime\nVersion: {__version__}\n"
        "Summary: MIRROR's on-device side: VITOFF, video try-on, LiteRT and onnxruntime runners\n"
        f"Requires-Python: >=3.11\n{requires}",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: mirror\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nmirror = mirror.compiler.cli:main\n",
    }


def write_runtime_wheel(out: Path) -> Path:
    """Write the wheel and RUNTIME.md into `out`; returns the wheel's path."""
    out = Path(out)
    wheel = out / f"{NAME}-{__version__}-py3-none-any.whl"
    entries = {f"mirror/{p.relative_to(ROOT).as_posix()}": p.read_bytes() for p in runtime_modules()}
    entries |= {name: text.encode() for name, text in _metadata().items()}
    record = f"{NAME}-{__version__}.dist-info/RECORD"
    lines = [_record_line(name, data) for name, data in entries.items()] + [f"{record},,"]
    with atomic_path(wheel) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in [*entries.items(), (record, ("\n".join(lines) + "\n").encode())]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # the same sources give the same bytes
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, data)
    with atomic_path(out / "RUNTIME.md") as tmp:
        tmp.write_text(README.format(version=__version__, wheel=wheel.name))
    return wheel
