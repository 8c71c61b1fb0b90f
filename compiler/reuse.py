"""A rerun of ``mirror compile`` rebuilds only what changed.

Each artifact gets a *build key* (``info["build_key"]`` in ``report.json``): the SHA-256 of
everything that decides its bytes and its report entry, namely

- mirror's own code (every module and data file of the package) and the versions of the
  converters, quantizers and runtimes it drives;
- the graph: its name, settings (size, options, pipeline) and weights (the checkpoint's
  digest, or the seed of the seeded ones); for ``--model``, the factory and the digest of
  the file that defines it;
- the target, its grid_sample lowering, the precision, the seed of the validation and
  calibration inputs, and the GPU checks asked for.

An artifact of the previous build in the same folder is reused when its key is the same
and its file still has the SHA-256 the manifest gives (a file changed since is rebuilt).
A graph whose artifacts are all reusable is not even exported. ``--rebuild`` ignores the
previous build.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mirror
from mirror import precisions
from mirror.compiler.config import CompileConfig
from mirror.files import sha256_of
from mirror.validation.report import ArtifactEntry, BaselineEntry

_STACK = ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "coremltools", "onnx", "onnxruntime",
          "onnxscript", "onnxsim", "numpy")  # fmt: skip
_CODE_SUFFIXES = {".py", ".json", ".toml"}


@cache
def code_fingerprint() -> str:
    """Digest of mirror's package files and the versions of the stack it drives."""
    root = Path(mirror.__file__).resolve().parent
    h = hashlib.sha256()
    packages = [p.parent for p in root.glob("*/__init__.py") if p.parent.name not in ("tests", "benchmarks")]
    files = [*root.glob("*.py"), *(f for pkg in packages for f in pkg.rglob("*") if f.suffix in _CODE_SUFFIXES)]
    for f in sorted(set(files)):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    for dist in _STACK:
        try:
            h.update(f"{dist}=={version(dist)}\n".encode())
        except PackageNotFoundError:
            h.update(f"{dist} missing\n".encode())
    return h.hexdigest()


def graph_fingerprint(config: CompileConfig, name: str) -> dict[str, Any]:
    """What decides a graph's reference, export and inputs (JSON-able)."""
    if config.model:
        return {"model": config.model, "source": _model_source_digest(config.model), "seed": config.seed}
    g = next((g for g in config.graphs if g.name == name), None)
    checkpoint = sha256_of(Path(g.checkpoint)) if g is not None and g.checkpoint else None
    return {"graph": name, "checkpoint": checkpoint, "seed": config.seed,
            "size": list(g.size) if g and g.size else None, "options": dict(g.options) if g else {},
            "pipeline": g.pipeline if g else None}  # fmt: skip


def build_key(config: CompileConfig, graph: dict[str, Any], target: str, precision: str) -> str:
    data = {"code": code_fingerprint(), "graph": graph, "target": target, "precision": precision,
            "lowering": config.sampling.get(target), "gpu_check": config.gpu_check, "gpu_parity": config.gpu_parity}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()  # fmt: skip


def _model_source_digest(ref: str) -> str | None:
    """Digest of the file that defines ``package.module:factory`` (already importable here)."""
    import importlib

    module = importlib.import_module(ref.partition(":")[0])
    try:
        source = inspect.getsourcefile(module)
    except TypeError:
        return None
    return sha256_of(Path(source)) if source else None


class PreviousBuild:
    """The artifacts of the build already in the output folder, by build key."""

    def __init__(self, out: Path, *, ignore: bool = False) -> None:
        self.out = out
        self.entries: dict[str, dict[str, Any]] = {}
        self.digests: dict[str, str] = {}
        self.tensors: dict[str, Any] = {}
        self.passes: list[dict[str, Any]] = []
        self.baseline: list[dict[str, Any]] = []
        if ignore:
            return
        try:
            report = json.loads((out / "report.json").read_text())
            manifest = json.loads((out / "manifest.json").read_text())
            self.digests = {e["path"]: e["sha256"] for e in manifest["artifacts"]}
            self.tensors = {e["graph"]: e.get("tensors", {}) for e in manifest["artifacts"]}
            self.passes = list(report.get("passes") or [])
            self.baseline = list(report.get("baseline") or [])
            for a in report["artifacts"]:
                key = (a.get("info") or {}).get("build_key")
                if key and "error" not in a:
                    self.entries[key] = a
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}  # no previous build, or one we cannot trust: rebuild everything

    def find(self, key: str) -> dict[str, Any] | None:
        """The previous report entry with this key, if its file is there and unchanged."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        want = self.digests.get(entry["path"])
        path = self.out / entry["path"]
        if not want or want != entry.get("sha256") or not path.exists():
            return None
        return entry if sha256_of(path) == want else None

    def graph_passes(self, graph: str) -> list[dict[str, Any]]:
        return [p for p in self.passes if p.get("graph") == graph]


def stage_reused(entry: dict[str, Any], previous: Path, staging: Path) -> ArtifactEntry:
    """Copy a reused artifact (and its side files, e.g. the ``.ort``) into the staging folder."""
    names = [entry["path"], *(v for k, v in (entry.get("info") or {}).items() if k == "ort_path" and v)]
    for name in names:
        src, dst = previous / name, staging / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        elif src.exists():
            shutil.copy2(src, dst)
    return ArtifactEntry.from_json(entry)


@dataclass
class ReusePlan:
    """Which artifacts of this compile the previous build already holds."""

    previous: PreviousBuild
    keys: dict[tuple[str, str, str], str]  # (graph, target, precision) -> build key
    found: dict[tuple[str, str, str], dict[str, Any]]
    reused_baseline: list[BaselineEntry] | None = None

    @classmethod
    def make(cls, config: CompileConfig, units: list[Any], previous: PreviousBuild) -> ReusePlan:
        keys = {}
        for unit in units:
            graph = graph_fingerprint(config, unit.name)
            for target in config.targets:
                for precision in config.precisions:
                    if precisions.supported(target, precision):
                        keys[(unit.name, target, precision)] = build_key(config, graph, target, precision)
        found = {k: e for k, key in keys.items() if (e := previous.find(key)) is not None}
        plan = cls(previous, keys, found)
        names = {u.name for u in units}
        stock = [b for b in previous.baseline if b.get("graph") in names]
        if keys and len(found) == len(keys) and {b.get("graph") for b in stock} == names:
            plan.reused_baseline = [BaselineEntry.from_json(b) for b in stock]  # the same graphs and code
        return plan

    def key(self, graph: str, target: str, precision: str) -> str:
        return self.keys[(graph, target, precision)]

    def reused(self, graph: str, target: str, precision: str) -> dict[str, Any] | None:
        return self.found.get((graph, target, precision))

    def all_reused(self, graph: str) -> bool:
        mine = [k for k in self.keys if k[0] == graph]
        return bool(mine) and all(k in self.found for k in mine)
