"""The compile driver: export -> passes -> emit every target/precision -> validate -> report.

    report = compile_all(load_config())

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
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirror import MirrorError, __version__
from mirror.compiler.baseline import BaselineJob, gpu_fields
from mirror.compiler.config import CompileConfig
from mirror.compiler.models import CompileUnit, run_reference, units_for
from mirror.passes.base import run_pipeline
from mirror.targets.base import Artifact, sha256_of, size_of
from mirror.validation import parity, report

EMITTERS = {
    "tflite": "mirror.targets.tflite:TFLiteEmitter",
    "onnx": "mirror.targets.onnx:ONNXEmitter",
    "coreml": "mirror.targets.coreml:CoreMLEmitter",
}
VALIDATION_SEED_OFFSET = 1000  # validation inputs never equal the export's example inputs
CALIBRATION_SEED_OFFSET = 2000  # nor the calibration set's
CALIBRATION_SAMPLES = 8


class Progress:
    """One line per step on stderr: ``[  12.3s] warp: export ... 7.7s``."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[dict[str, Any]]:
        t0 = time.perf_counter()
        note: dict[str, Any] = {}
        self.log(f"{message} ...")
        yield note
        extra = f" ({note['result']})" if note.get("result") else ""
        self.log(f"{message} done in {time.perf_counter() - t0:.1f}s{extra}")


def _emitter(target: str) -> Any:
    module, _, cls = EMITTERS[target].partition(":")
    return getattr(importlib.import_module(module), cls)()


def _numpy_inputs(unit: CompileUnit, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {n: t.detach().float().numpy() for n, t in zip(unit.input_names, inputs, strict=True)}


def _validate(
    art: Artifact, runners: list[Any], feeds: dict[str, np.ndarray], want: dict[str, np.ndarray], unit: CompileUnit
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for runner in runners:
        if isinstance(runner, _Skipped):
            results[runner.name] = {"skipped": runner.reason}
            continue
        available = getattr(runner, "available", None)
        if callable(available):
            ok, why = _availability(runner)
            if not ok:
                results[runner.name] = {"skipped": why}
                continue
        try:
            got = runner.run(feeds)
            results[runner.name] = parity.compare(
                got, want, art.precision, value_ranges=unit.value_ranges, psnr_output=unit.psnr_output
            )
        except MirrorError as exc:
            results[runner.name] = {"passed": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a runtime's failure on an artifact is a finding
            results[runner.name] = {"passed": False, "error": format_exception(exc)}
    return results


class _Skipped:
    """A runner the driver chose not to run, and why (shown in the report)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason


def _select_runners(runners: list[Any], precision: str, config: CompileConfig) -> list[Any]:
    """LiteRT GPU inference on SwiftShader is slow (a CPU emulates the GPU), so by default
    only fp32 artifacts run on it; the others are still loaded by the delegate check."""
    chosen = []
    for r in runners:
        if (
            r.name == "litert-gpu"
            and config.gpu_parity != "all"
            and (config.gpu_parity == "none" or precision != "fp32")
        ):
            chosen.append(
                _Skipped(r.name, f"GPU inference runs for {config.gpu_parity} artifacts only (--gpu-parity all)")
            )
        else:
            chosen.append(r)
    return chosen


def _availability(runner: Any) -> tuple[bool, str]:
    answer = runner.available()
    if isinstance(answer, tuple):
        return bool(answer[0]), str(answer[1])
    reason = getattr(runner, "reason", None)
    return bool(answer), (reason() if callable(reason) else "runner unavailable on this platform")


def _relativize(value: Any, staging: Path) -> Any:
    """Paths under the staging folder, as the report shows them: relative to the build."""
    if isinstance(value, dict):
        return {k: _relativize(v, staging) for k, v in value.items()}
    if isinstance(value, list):
        return [_relativize(v, staging) for v in value]
    if isinstance(value, (str, Path)) and str(value).startswith(f"{staging}{os.sep}"):
        return str(Path(value).relative_to(staging))
    return value


def _artifact_entry(art: Artifact, staging: Path) -> dict[str, Any]:
    return {
        "graph": art.graph,
        "target": art.target,
        "precision": art.precision,
        "path": str(art.path.relative_to(staging)),
        "bytes": size_of(art.path),
        "sha256": sha256_of(art.path),
        "info": _relativize(art.info, staging),
    }


def _transform(
    unit: CompileUnit,
    program: Any,
    config: CompileConfig,
    val_inputs: tuple[torch.Tensor, ...],
    progress: Progress,
) -> tuple[dict[str, Any], list[Any]]:
    """Run the unit's pipeline; returns one program per grid_sample lowering the targets use.

    Every pass but ``gpu_grid_sample`` runs once. ``gpu_grid_sample`` runs last, once per
    lowering the chosen targets need (``config.sampling``); "native" is the program
    without it (e.g. Core ML's own ``resample``).
    """
    from mirror.passes.registry import PIPELINES

    if unit.pipeline not in PIPELINES:
        raise MirrorError(f"unknown pipeline {unit.pipeline!r}; known: {', '.join(PIPELINES)}")
    pipeline = PIPELINES[unit.pipeline]
    shared = [(n, o) for n, o in pipeline if n != "gpu_grid_sample"]
    sampler_options = next((dict(o) for n, o in pipeline if n == "gpu_grid_sample"), None)

    def run(program_in: Any, spec: Any, label: str) -> tuple[Any, list[Any]]:
        with progress.step(f"{unit.name}: {label}") as note:
            out, recs = run_pipeline(program_in, spec, unit.name, reference=unit.reference, example_inputs=val_inputs)
            note["result"] = ", ".join(f"{r.name}: max abs {r.max_abs_vs_reference:.2g}" for r in recs)
        return out, recs

    base, records = run(program, shared, f"passes ({unit.pipeline})")
    programs: dict[str, Any] = {"native": base}
    lowerings = sorted({config.sampling[t] for t in config.targets} - {"native"})
    for lowering in lowerings:
        if sampler_options is None:
            programs[lowering] = base  # this pipeline keeps grid_sample as it is
            continue
        programs[lowering], recs = run(
            base, [("gpu_grid_sample", {**sampler_options, "lowering": lowering})], f"gpu_grid_sample ({lowering})"
        )
        for r in recs:
            r.details["lowering"] = lowering
        records.extend(recs)
    return programs, records


def _determinism(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
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


def compile_all(config: CompileConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the whole compile; returns the report (also written to ``config.out``)."""
    progress = progress or Progress()
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        data = _compile(config, staging, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out)
    report.write_json(
        out / "manifest.json", report.manifest([a for a in data["artifacts"] if "error" not in a], data.pop("_tensors"))
    )
    report.write_json(out / "report.json", data)
    return data


def _compile_unit(
    unit: CompileUnit,
    config: CompileConfig,
    emitters: dict[str, Any],
    out: Path,
    progress: Progress,
    artifacts: list[dict[str, Any]],
    pass_records: list[dict[str, Any]],
    tensors: dict[str, dict[str, Any]],
    not_built: list[str],
) -> None:
    """Export, transform, emit, validate and verify one graph; results go into the lists."""
    with progress.step(f"{unit.name}: torch.export"):
        program = torch.export.export(unit.export_module, unit.example_inputs)
    val_inputs = unit.inputs(config.seed + VALIDATION_SEED_OFFSET)
    programs, records = _transform(unit, program, config, val_inputs, progress)
    pass_records.extend(r.to_json() for r in records)
    want = run_reference(unit, val_inputs)
    feeds = _numpy_inputs(unit, val_inputs)
    tensors[unit.name] = {
        "inputs": {n: list(t.shape) for n, t in zip(unit.input_names, unit.example_inputs, strict=True)},
        "outputs": {n: list(v.shape) for n, v in want.items()},
    }
    calibration = None
    if "int8-full" in config.precisions:  # representative, image-like inputs of this graph
        calibration = [unit.inputs(config.seed + CALIBRATION_SEED_OFFSET + k) for k in range(CALIBRATION_SAMPLES)]
    for target, emitter in emitters.items():
        for precision in config.precisions:
            label = f"{unit.name}: {target} {precision}"
            supported = getattr(emitter, "precisions", None)
            if supported is not None and precision not in supported:
                not_built.append(f"{unit.name}/{target}/{precision}: {target} has no {precision} recipe")
                continue
            try:
                with progress.step(f"{label}: emit"):
                    art = emitter.emit(
                        programs[config.sampling[target]],
                        unit.name,
                        precision,
                        out,
                        example_inputs=unit.example_inputs,
                        input_names=unit.input_names,
                        output_names=unit.output_names,
                        calibration=calibration if precision == "int8-full" else None,
                    )
            except MirrorError as exc:
                progress.log(f"{label}: FAILED: {exc}")
                artifacts.append(
                    {"graph": unit.name, "target": target, "precision": precision, "error": str(exc), "parity": {}}
                )
                continue
            entry = _artifact_entry(art, out)
            with progress.step(f"{label}: validate") as note:
                runners = _select_runners(emitter.runners(art), precision, config)
                entry["parity"] = _validate(art, runners, feeds, want, unit)
                note["result"] = ", ".join(
                    f"{r}: "
                    + (
                        "skipped"
                        if p.get("skipped")
                        else f"max {p['max_abs']:.2g} psnr {p['psnr_db']:.1f}dB {'ok' if p['passed'] else 'FAIL'}"
                        if "max_abs" in p
                        else "error"
                    )
                    for r, p in entry["parity"].items()
                )
            if target == "tflite":
                from mirror.targets.gpu_delegate import verify_gpu_delegate

                with progress.step(f"{label}: GPU delegate check") as note:
                    ran = next((r for r in runners if r.name == "litert-gpu" and getattr(r, "last_child", None)), None)
                    gpu = verify_gpu_delegate(art.path, mode=config.gpu_check, child=ran and ran.last_child)
                    note["result"] = (
                        f"{gpu['ops_on_gpu']}/{gpu['ops_total']} ops on GPU, "
                        f"{gpu['partitions']} partition(s), {gpu['verified_on']}"
                    )
                entry["gpu_delegate"] = gpu_fields(gpu)
            artifacts.append(entry)


def _compile(config: CompileConfig, out: Path, progress: Progress) -> dict[str, Any]:
    t_start = time.perf_counter()
    artifacts: list[dict[str, Any]] = []
    pass_records: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    tensors: dict[str, dict[str, Any]] = {}
    not_built: list[str] = []
    emitters = {t: _emitter(t) for t in config.targets}
    units = units_for(config)
    job = None
    if config.baseline and "tflite" in config.targets:
        progress.log("baseline (stock litert-torch, no passes) runs in the background")
        job = BaselineJob(config, out)
    try:
        for unit in units:
            _compile_unit(unit, config, emitters, out, progress, artifacts, pass_records, tensors, not_built)
    except BaseException:
        if job is not None:
            job.cancel()
        raise
    if job is not None:
        with progress.step("baseline: waiting for the stock conversions") as note:
            baselines = job.results()
            note["result"] = "; ".join(
                f"{b['graph']}: {b['gpu_delegate']['ops_on_gpu']}/{b['gpu_delegate']['ops_total']} ops on GPU, "
                f"{b['gpu_delegate']['partitions']} partitions"
                if "gpu_delegate" in b
                else b.get("error", "?")
                for b in baselines
            )

    summary = report.summarize([a for a in artifacts if "error" not in a])
    summary["emit_failed"] = [
        f"{a['graph']}/{a['target']}/{a['precision']}: {a['error']}" for a in artifacts if "error" in a
    ]
    summary["passed"] = summary["passed"] and not summary["emit_failed"]
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    summary["not_built"] = not_built
    data = {
        "version": report.REPORT_VERSION,
        "mirror": __version__,
        "config": {
            "graphs": [u for u in tensors],
            "targets": config.targets,
            "precisions": config.precisions,
            "seed": config.seed,
            "gpu_check": config.gpu_check,
        },
        "artifacts": artifacts,
        "passes": pass_records,
        "baseline": baselines,
        "determinism": _determinism(artifacts),
        "summary": summary,
    }
    data["_tensors"] = tensors
    return data


def format_exception(exc: BaseException) -> str:
    """One line for an unexpected failure, with where it happened."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"
