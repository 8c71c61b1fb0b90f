"""The compile driver: export -> shared passes -> per backend: its passes, emit, validate -> report.

    report = compile_all(load_config())

For each graph: ``torch.export``, the graph's shared pipeline (``passes/registry.py``),
then for each target its own pipeline (``Emitter.pipeline``: grid_sample lowering and
legalizations), one artifact per precision, parity on every runner of the artifact
(``validation/parity.py``) and, for LiteRT, the GPU-delegate check. Every pass is recorded,
and each artifact lists the passes that made it.

Progress goes to stderr, one line per step with its time. Artifacts are built in a
staging folder inside ``config.out`` and moved into place only when the whole compile
finished; ``report.json`` and ``manifest.json`` are written last, atomically. A compile
that stops on an error therefore leaves the previous build as it was and no partial
artifact beside it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirror import MirrorError, __version__, precisions
from mirror.compiler.baseline import BaselineJob
from mirror.compiler.config import CompileConfig
from mirror.compiler.progress import Progress
from mirror.compiler.reuse import PreviousBuild, ReusePlan, stage_reused
from mirror.compiler.units import CompileUnit, export_program, feeds_of, units_for
from mirror.files import sha256_of, size_of
from mirror.passes.base import run_pipeline
from mirror.passes.registry import PIPELINES
from mirror.validation.parity import check_runners, gpu_skips
from mirror.validation.reference import TorchReferenceRunner
from mirror.validation.report import ArtifactEntry, CompileReport, GpuDelegateResult

EMITTERS = {
    "tflite": "mirror.targets.tflite:TFLiteEmitter",
    "onnx": "mirror.targets.onnx:ONNXEmitter",
    "coreml": "mirror.targets.coreml:CoreMLEmitter",
}
VALIDATION_SEED_OFFSET = 1000  # validation inputs never equal the export's example inputs
CALIBRATION_SEED_OFFSET = 2000  # nor the calibration set's
CALIBRATION_SAMPLES = 8


def emitter_for(target: str) -> Any:
    """A fresh emitter of ``target``."""
    module, _, cls = EMITTERS[target].partition(":")
    return getattr(importlib.import_module(module), cls)()


@dataclass
class GraphRun:
    """One graph on its way through the compile: its shared passes, inputs and reference outputs."""

    unit: CompileUnit
    shared_passes: list[str]
    feeds: dict[str, np.ndarray]  # validation inputs, numpy
    want: dict[str, np.ndarray]  # the eager reference's outputs on them
    calibration: list[tuple[torch.Tensor, ...]] | None = None


@dataclass
class CompileSession:
    """What every step of one compile shares."""

    config: CompileConfig
    staging: Path
    progress: Progress
    report: CompileReport
    emitters: dict[str, Any] = field(default_factory=dict)
    plan: ReusePlan | None = None


def compile_all(config: CompileConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the whole compile; returns the report (also written to ``config.out``)."""
    progress = progress or Progress()
    units = units_for(config)  # a model that does not load stops here, before any folder is made
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        report = _compile(config, units, staging, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out)
    return report.write(out)


def _compile(config: CompileConfig, units: list[CompileUnit], staging: Path, progress: Progress) -> CompileReport:
    t_start = time.perf_counter()
    report = CompileReport(
        config={"targets": config.targets, "precisions": config.precisions, "seed": config.seed,
                "gpu_check": config.gpu_check, "allow_cpu_fallback": config.allow_cpu_fallback, "model": config.model,
                "sampling": dict(config.sampling),
                "graph_configs": [_graph_config_json(g) for g in config.graphs]},  # fmt: skip
        mirror=__version__,
    )
    session = CompileSession(config, staging, progress, report, {t: emitter_for(t) for t in config.targets})
    session.plan = ReusePlan.make(config, units, PreviousBuild(config.out, ignore=config.rebuild))
    job = None
    if config.baseline and "tflite" in config.targets:
        if session.plan.reused_baseline is not None:
            progress.log("baseline: reused (every graph unchanged since the previous build)")
        else:
            progress.log("baseline (stock litert-torch, no passes) runs in the background")
            job = BaselineJob(config, staging)
    try:
        for unit in units:
            _compile_graph(session, unit)
    except BaseException:
        if job is not None:
            job.cancel()
        raise
    if job is not None:
        with progress.step("baseline: waiting for the stock conversions") as note:
            report.baseline = job.results()
            note["result"] = "; ".join(b.brief() for b in report.baseline)
    elif config.baseline and session.plan.reused_baseline is not None:
        report.baseline = session.plan.reused_baseline
    report.seconds = time.perf_counter() - t_start
    report.peak_rss_mb = peak_rss_mb()
    return report


def _compile_graph(session: CompileSession, unit: CompileUnit) -> None:
    """Export one graph, run its shared pipeline, then every target's pipeline and artifacts
    (an artifact unchanged since the previous build is reused; compiler/reuse.py)."""
    config, plan = session.config, session.plan
    session.report.not_built += [f"{unit.name}/{t}/{p}: {t} has no {p} recipe" for t in session.emitters
                                 for p in config.precisions if not precisions.supported(t, p)]  # fmt: skip
    if plan.all_reused(unit.name):
        _reuse_graph(session, unit)
        return
    with session.progress.step(f"{unit.name}: torch.export"):
        program = export_program(unit)
    val_inputs = unit.inputs(config.seed + VALIDATION_SEED_OFFSET)
    if unit.pipeline not in PIPELINES:
        raise MirrorError(f"unknown pipeline {unit.pipeline!r}; known: {', '.join(PIPELINES)}")
    shared = PIPELINES[unit.pipeline]
    # One cache for the shared pipeline and every backend's: backends that start alike run
    # that start once, and the reference's outputs and the shared result's parity are
    # computed once (passes/base.py run_pipeline).
    shared_prefixes: dict[Any, Any] = {}
    program = _run_passes(session, unit, program, shared, unit.pipeline, val_inputs, shared_prefixes)
    want = TorchReferenceRunner(unit.reference, unit.input_names, unit.output_names).run_tensors(val_inputs)
    session.report.tensors[unit.name] = {
        "inputs": {n: list(t.shape) for n, t in zip(unit.input_names, unit.example_inputs, strict=True)},
        "outputs": {n: list(v.shape) for n, v in want.items()},
    }
    run = GraphRun(unit, [name for name, _ in shared], feeds_of(unit, val_inputs), want)
    if any(precisions.get_recipe(p).needs_calibration for p in config.precisions):
        # Representative, image-like inputs of this graph.
        run.calibration = [unit.inputs(config.seed + CALIBRATION_SEED_OFFSET + k) for k in range(CALIBRATION_SAMPLES)]
    for target, emitter in session.emitters.items():
        wanted = [p for p in config.precisions if precisions.supported(target, p)]
        todo = [p for p in wanted if plan.reused(unit.name, target, p) is None]
        if not todo:  # nothing to emit: the backend's passes would be wasted
            session.report.artifacts += [_reuse(session, unit.name, target, p) for p in wanted]
            continue
        backend = emitter.pipeline(config.sampling[target])
        program_t = _run_passes(session, unit, program, backend, target, val_inputs, shared_prefixes)
        passes = [*run.shared_passes, *(name for name, _ in backend)]
        for precision in wanted:
            if precision not in todo:
                session.report.artifacts.append(_reuse(session, unit.name, target, precision))
                continue
            entry = _build_artifact(session, run, emitter, program_t, precision)
            entry.passes = passes
            if entry.error is None:
                entry.info["build_key"] = plan.key(unit.name, target, precision)
            session.report.artifacts.append(entry)


def _reuse_graph(session: CompileSession, unit: CompileUnit) -> None:
    """Every artifact of the graph is unchanged: take them, its tensors and pass records over."""
    plan = session.plan
    session.report.tensors[unit.name] = plan.previous.tensors.get(unit.name, {})
    session.report.passes.extend(plan.previous.graph_passes(unit.name))
    for target in session.emitters:
        for precision in session.config.precisions:
            if precisions.supported(target, precision):
                session.report.artifacts.append(_reuse(session, unit.name, target, precision))


def _reuse(session: CompileSession, graph: str, target: str, precision: str) -> ArtifactEntry:
    entry = stage_reused(session.plan.reused(graph, target, precision), session.plan.previous.out, session.staging)
    session.progress.log(f"{graph}: {target} {precision}: reused (unchanged; sha256 matches the manifest)")
    return entry


def _run_passes(
    session: CompileSession, unit: CompileUnit, program: Any, spec: Any, name: str, val_inputs: tuple[Any, ...],
    cache: dict[Any, Any],
) -> Any:  # fmt: skip
    """Run one pipeline on ``program``, record its passes, show their parity on the progress line."""
    if not spec:
        return program
    with session.progress.step(f"{unit.name}: passes ({name})") as note:
        program, records = run_pipeline(
            program, spec, unit.name, reference=unit.reference, example_inputs=val_inputs, pipeline_name=name,
            cache=cache,
        )  # fmt: skip
        note["result"] = ", ".join(f"{r.name}: max abs {r.max_abs_vs_reference:.2g}" for r in records)
    session.report.passes.extend(records)
    return program


def _build_artifact(
    session: CompileSession, run: GraphRun, emitter: Any, program: Any, precision: str
) -> ArtifactEntry:
    """Emit one artifact, check it on its runners and, for LiteRT, on the GPU delegate."""
    unit, target = run.unit, emitter.target
    label = f"{unit.name}: {target} {precision}"
    entry = ArtifactEntry(unit.name, target, precision)
    try:
        with session.progress.step(f"{label}: emit"):
            art = emitter.emit(
                program, unit.name, precision, session.staging,
                example_inputs=unit.example_inputs, input_names=unit.input_names, output_names=unit.output_names,
                calibration=run.calibration if precisions.get_recipe(precision).needs_calibration else None,
            )  # fmt: skip
    except MirrorError as exc:
        session.progress.log(f"{label}: FAILED: {exc}")
        entry.error = str(exc)
        return entry
    entry.path = str(art.path.relative_to(session.staging))
    entry.bytes, entry.sha256, entry.info = size_of(art.path), sha256_of(art.path), art.info
    runners = emitter.runners(art)
    try:
        with session.progress.step(f"{label}: validate") as note:
            entry.parity = check_runners(
                runners, run.feeds, run.want, precision, value_ranges=unit.value_ranges,
                psnr_output=unit.psnr_output, skip=gpu_skips(runners, session.config.gpu_parity, precision),
            )  # fmt: skip
            note["result"] = ", ".join(f"{r}: {p.brief()}" for r, p in entry.parity.items())
        if emitter.delegate:
            with session.progress.step(f"{label}: {emitter.delegate} check") as note:
                entry.gpu_delegate = GpuDelegateResult(emitter.delegate_check(art, runners, session.config.gpu_check))
                note["result"] = entry.gpu_delegate.brief()
            for line in entry.gpu_delegate.refusals():
                session.progress.log(f"{label}: on the CPU: {line}")
    finally:
        for runner in runners:
            runner.close()
    return entry


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (baseline, GPU checks)."""
    import resource

    kb = 1024.0  # Linux reports ru_maxrss in KiB
    return {"compile": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb, 1),
            "children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb, 1)}  # fmt: skip


def _graph_config_json(g: Any) -> dict[str, Any]:
    """A graph's settings as the report keeps them (``mirror validate`` rebuilds its reference from them)."""
    return {"name": g.name, "checkpoint": str(Path(g.checkpoint).resolve()) if g.checkpoint else None,
            "size": list(g.size) if g.size else None, "options": dict(g.options), "pipeline": g.pipeline}  # fmt: skip


def _publish(staging: Path, out: Path) -> None:
    """Move everything built in ``staging`` into ``out``, replacing older versions."""
    for item in sorted(staging.rglob("*"), key=lambda p: len(p.parts)):
        if not item.exists() or (item.is_dir() and not item.name.endswith(".mlpackage")):
            continue
        target = out / item.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(staging, ignore_errors=True)
