"""The compile report, typed: what was compiled, how, and the proof it is right.

``build/report.json`` holds ``artifacts`` (graph, target, precision, path, bytes, sha256,
the passes that made it, parity per runner, and for LiteRT the GPU-delegate figures),
``passes`` (one record per pass, graph and pipeline), ``baseline`` (stock litert-torch
conversions, for comparison), ``determinism`` and ``summary``. ``build/manifest.json`` is
the app developer's view: each artifact's file, digest and tensors. Both are serialized
here and only here (``CompileReport.write``), atomically. Fields are only ever added:
other tools read these files.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_VERSION = 1
GPU_FIELDS = (
    "ops_total", "ops_on_gpu", "ops_on_cpu", "partitions", "unsupported", "fully_accelerated", "verified_on", "static",
)  # fmt: skip


@dataclass
class ParityResult:
    """One runner on one artifact: figures, an error, or why it was skipped."""

    passed: bool | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    psnr_db: float | None = None
    failures: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        if self.error is not None:
            return {"passed": False, "error": self.error}
        return {"max_abs": self.max_abs, "mean_abs": self.mean_abs, "psnr_db": self.psnr_db,
                "passed": self.passed, "failures": self.failures, "outputs": self.outputs}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParityResult:
        """Read back what ``to_json`` wrote (a reused artifact keeps its figures)."""
        if "skipped" in data:
            return cls(skipped=data["skipped"])
        if "error" in data:
            return cls(passed=False, error=data["error"])
        return cls(data.get("passed"), _float(data.get("max_abs")), _float(data.get("mean_abs")),
                   _float(data.get("psnr_db")), list(data.get("failures") or []),
                   dict(data.get("outputs") or {}))  # fmt: skip

    def brief(self) -> str:
        """A few words for the progress line."""
        if self.skipped is not None:
            return "skipped"
        if self.error is not None:
            return "error"
        return f"max {self.max_abs:.2g} psnr {self.psnr_db:.1f}dB {'ok' if self.passed else 'FAIL'}"


def _at(source: list[str] | None) -> str:
    """" (at model.py:42, model.py:57 and 3 more)" for a refusal's source lines."""
    if not source:
        return ""
    more = f" and {len(source) - 2} more" if len(source) > 2 else ""
    return f" (at {', '.join(source[:2])}{more})"


@dataclass
class GpuDelegateResult:
    """What the LiteRT GPU delegate (or, without one, the static rules) said of an artifact."""

    figures: dict[str, Any]  # verify_gpu_delegate's answer

    def to_json(self) -> dict[str, Any]:
        return {k: self.figures[k] for k in GPU_FIELDS if k in self.figures}

    def brief(self) -> str:
        f = self.figures
        return f"{f['ops_on_gpu']}/{f['ops_total']} ops on GPU, {f['partitions']} partition(s), {f['verified_on']}"

    @property
    def fully_on_gpu(self) -> bool:
        return bool(self.figures.get("fully_accelerated"))

    def refusals(self) -> list[str]:
        """One line per refused op kind: count, op, the delegate's reason and where in the model."""
        return [f"{u.get('count', 1)} x {u['op']}: {u['reason']}{_at(u.get('source'))}"
                for u in self.figures.get("unsupported", [])]  # fmt: skip

    def fallback(self) -> str:
        """Where the model leaves the GPU, in one line."""
        f = self.figures
        why = "; ".join(self.refusals()) or f.get("error") or "the delegate did not take the whole graph"
        off = f["ops_total"] - f["ops_on_gpu"]
        return f"{off} of {f['ops_total']} ops off the GPU, {f['partitions']} GPU partition(s): {why}"


@dataclass
class ArtifactEntry:
    """One artifact of the build, or the error that stopped it being written."""

    graph: str
    target: str
    precision: str
    passes: list[str] = field(default_factory=list)  # every pass that made it, in order
    path: str | None = None  # relative to the build folder
    bytes: int | None = None
    sha256: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, ParityResult] = field(default_factory=dict)
    gpu_delegate: GpuDelegateResult | None = None
    error: str | None = None
    localize: dict[str, Any] | None = None  # per runner, validation/localize.py's findings

    def to_json(self) -> dict[str, Any]:
        head = {"graph": self.graph, "target": self.target, "precision": self.precision}
        if self.error is not None:
            return {**head, "error": self.error, "parity": {}, "passes": self.passes}
        out = {**head, "path": self.path, "bytes": self.bytes, "sha256": self.sha256, "info": self.info,
               "passes": self.passes, "parity": {k: v.to_json() for k, v in self.parity.items()}}  # fmt: skip
        if self.gpu_delegate is not None:
            out["gpu_delegate"] = self.gpu_delegate.to_json()
        if self.localize is not None:
            out["localize"] = self.localize
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArtifactEntry:
        """Read back an entry of report.json (a reused artifact)."""
        entry = cls(data["graph"], data["target"], data["precision"], list(data.get("passes") or []),
                    data.get("path"), data.get("bytes"), data.get("sha256"), dict(data.get("info") or {}))  # fmt: skip
        entry.parity = {r: ParityResult.from_json(p) for r, p in (data.get("parity") or {}).items()}
        if data.get("gpu_delegate") is not None:
            entry.gpu_delegate = GpuDelegateResult(dict(data["gpu_delegate"]))
        entry.error = data.get("error")
        return entry

    def failed_checks(self) -> list[str]:
        where = f"{self.graph}/{self.target}/{self.precision}"
        return [
            f"{where} on {runner}: " + "; ".join(p.failures or [p.error or "failed"])
            for runner, p in self.parity.items()
            if p.skipped is None and not p.passed
        ]


@dataclass
class BaselineEntry:
    """One graph converted by stock litert-torch, without the toolkit's passes."""

    graph: str | None
    path: str | None = None
    bytes: int | None = None
    gpu_delegate: GpuDelegateResult | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"graph": self.graph, "error": self.error} if self.graph else {"error": self.error}
        return {"graph": self.graph, "path": self.path, "bytes": self.bytes,
                "gpu_delegate": self.gpu_delegate.to_json() if self.gpu_delegate else {}}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BaselineEntry:
        gpu = data.get("gpu_delegate")
        return cls(data.get("graph"), data.get("path"), data.get("bytes"),
                   GpuDelegateResult(gpu) if gpu else None, data.get("error"))  # fmt: skip

    def brief(self) -> str:
        return f"{self.graph}: {self.gpu_delegate.brief()}" if self.gpu_delegate else f"{self.error}"


@dataclass
class CompileReport:
    """Everything one compile produced; ``write`` serializes report.json and manifest.json."""

    config: dict[str, Any]
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    passes: list[Any] = field(default_factory=list)  # passes.base.PassRecord
    baseline: list[BaselineEntry] = field(default_factory=list)
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)  # graph -> input/output shapes
    not_built: list[str] = field(default_factory=list)
    seconds: float = 0.0
    mirror: str = ""
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # "compile" (this process), "children"

    def summary(self) -> dict[str, Any]:
        counts = parity_summary(self.artifacts)
        emit_failed = counts.pop("errors")  # the compile's older name for artifacts in error
        off_gpu = [f"{a.graph}/{a.target}/{a.precision}: {a.gpu_delegate.fallback()}" for a in self.artifacts
                   if a.gpu_delegate is not None and not a.gpu_delegate.fully_on_gpu]  # fmt: skip
        # Unless the compile allows it, an artifact not fully on its GPU delegate fails it.
        passed = counts["passed"] and (self.config.get("allow_cpu_fallback") or not off_gpu)
        return {**counts, "passed": passed, "emit_failed": emit_failed, "seconds": round(self.seconds, 1),
                "peak_rss_mb": self.peak_rss_mb, "not_built": self.not_built, "not_fully_on_gpu": off_gpu}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        artifacts = [a.to_json() for a in self.artifacts]
        return {
            "version": REPORT_VERSION,
            "mirror": self.mirror,
            "config": {"graphs": list(self.tensors), **self.config},
            "artifacts": artifacts,
            "passes": [r if isinstance(r, dict) else r.to_json() for r in self.passes],  # dicts: reused records
            "baseline": [b.to_json() for b in self.baseline],
            "determinism": determinism(artifacts),
            "summary": self.summary(),
        }

    def manifest(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "artifacts": [
                {"graph": a.graph, "target": a.target, "precision": a.precision, "path": a.path,
                 "bytes": a.bytes, "sha256": a.sha256, "tensors": self.tensors.get(a.graph, {})}  # fmt: skip
                for a in self.artifacts
                if a.error is None
            ],
        }

    def write(self, out: Path) -> dict[str, Any]:
        """Write manifest.json, then report.json; returns the report's JSON."""
        write_json(out / "manifest.json", self.manifest())
        data = self.to_json()
        write_json(out / "report.json", data)
        return data


@dataclass
class ValidateReport:
    """``mirror validate``: parity of existing artifacts on fresh or given inputs."""

    inputs: str  # where the inputs came from ("random, seed 3000" or the .npz path)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    seconds: float = 0.0
    mirror: str = ""

    def summary(self) -> dict[str, Any]:
        return {**parity_summary(self.artifacts), "seconds": round(self.seconds, 1)}

    def to_json(self) -> dict[str, Any]:
        return {"version": REPORT_VERSION, "mirror": self.mirror, "inputs": self.inputs,
                "artifacts": [a.to_json() for a in self.artifacts], "summary": self.summary()}  # fmt: skip


def parity_summary(artifacts: list[ArtifactEntry]) -> dict[str, Any]:
    """Counts of artifacts and parity checks, the failed checks, the artifacts in error, and
    whether everything passed (no failed check, no artifact in error)."""
    ok = [a for a in artifacts if a.error is None]
    failed = [f for a in ok for f in a.failed_checks()]
    checks = sum(1 for a in ok for p in a.parity.values() if p.skipped is None)
    errors = [f"{a.graph}/{a.target}/{a.precision}: {a.error}" for a in artifacts if a.error is not None]
    return {"artifacts": len(ok), "parity_checks": checks, "parity_failed": failed,
            "passed": not failed and not errors, "errors": errors}  # fmt: skip


def determinism(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: do two runs of the same compile give byte-identical files, and on what basis.

    ``byte_identical`` is True or False where an emitter measured or knows it, None where it
    was not measured in this run.
    """
    by_target: dict[str, Any] = {}
    for a in artifacts:
        if "error" in a:
            continue
        info = a.get("info") or {}
        entry = by_target.setdefault(a["target"], {"answers": set(), "notes": set()})
        entry["answers"].add(info.get("deterministic"))
        if info.get("determinism_basis"):
            entry["notes"].add(info["determinism_basis"])
        if info.get("ort_deterministic") is False:
            entry["notes"].add(
                "the .ort files are not byte-identical (onnxruntime's ORT writer orders its tables differently "
                "on each run); their outputs are identical, so compare them by running them"
            )
    out = {}
    for target, entry in by_target.items():
        answers = entry["answers"]
        verdict = False if False in answers else (True if answers == {True} else None)
        notes = sorted(entry["notes"])
        if verdict is None:
            notes.append("not measured in this compile; tests/test_compile_e2e.py compiles twice and compares digests")
        out[target] = {"byte_identical": verdict, "notes": notes}
    return out


def _float(value: Any) -> float | None:
    """A figure of report.json: non-finite ones are written as strings ("inf", "nan")."""
    return None if value is None else float(value)


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become strings ("inf"), paths strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(data), fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def format_exception(exc: BaseException) -> str:
    """One line for an unexpected failure, with where it happened."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"
