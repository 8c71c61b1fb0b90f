"""``mirror profile``: per-layer latency of a build's graphs, or of one artifact, keyed by module path.

For each graph: the exported program after its shared pipeline (the form every target
starts from; the warper in its DIVTON form) gives the layer table (FLOPs, bytes,
parameters, op kinds); then

- measured here: PyTorch (``torch.profiler``) on the eager reference and onnxruntime's
  per-node profiler on an unsimplified export of the same program (its node metadata
  names the module), both per layer; LiteRT CPU on the build's fp32 .tflite, whole model
  only (ai-edge-litert has no per-op profiler);
- measured on a phone: ``benchmark_model`` through ``adb`` (``--adb``) or its recorded output
  (``--phone-output cpu=FILE``), per op, mapped to module paths by tensor name;
- estimated: the roofline model for each device and precision (``profiling/roofline.py``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.compiler.config import GraphConfig
from mirror.compiler.progress import Progress
from mirror.compiler.units import CompileUnit, builtin_unit, export_program, user_unit
from mirror.passes.base import run_pipeline
from mirror.passes.registry import PIPELINES
from mirror.profiling import (
    benchmark_output,
    heatmap,
    layers,
    measure_litert,
    measure_ort,
    measure_torch,
    phone,
    roofline,
    table,
)


@dataclass
class Subject:
    """One graph to profile and the artifacts of it that can be timed."""

    unit: CompileUnit
    tflite: Path | None = None
    onnx: Path | None = None  # a given .onnx; None: export the program afresh
    phone_outputs: dict[str, Path] = field(default_factory=dict)  # accelerator -> recorded output
    by_precision: dict[str, Path] = field(default_factory=dict)  # one target's artifacts, for the error maps


@dataclass
class Options:
    devices: list[roofline.Device]
    precisions: list[str]
    depth: int | None = None
    torch: bool = True
    onnxruntime: bool = True
    litert: bool = True
    adb: phone.Adb | None = None
    benchmark_binary: Path | None = None
    runs: int = 3
    threads: int | None = None  # intra-op threads of every measurement here (each library's default if None)


def build_subjects(build: Path, graphs: list[str] | None = None) -> list[Subject]:
    """The graphs of a build with their fp32 .tflite (the .onnx is re-exported with its metadata)."""
    path = build / "report.json"
    if not path.is_file():
        raise MirrorError(f"{build} has no report.json; run `mirror compile --out {build}` first")
    report = json.loads(path.read_text())
    config = report.get("config") or {}
    names = [g["name"] for g in config.get("graph_configs") or []] or list(config.get("graphs") or [])
    if config.get("model"):
        names = sorted({a["graph"] for a in report.get("artifacts", [])})
    unknown = sorted(set(graphs or []) - set(names))
    if unknown:
        raise MirrorError(f"{build} holds no graph {', '.join(unknown)}; it has {', '.join(names)}")
    subjects = []
    for name in [n for n in names if not graphs or n in graphs]:
        unit = user_unit(config["model"]) if config.get("model") else _builtin(name, config)
        tfl = [a["path"] for a in report.get("artifacts", [])
               if a["graph"] == name and a["target"] == "tflite" and a["precision"] == "fp32"]  # fmt: skip
        subject = Subject(unit, build / tfl[0] if tfl and (build / tfl[0]).is_file() else None)
        subject.by_precision = _one_target(build, report, name)
        subjects.append(subject)
    return subjects


def _one_target(build: Path, report: dict[str, Any], graph: str) -> dict[str, Path]:
    """fp32 and the reduced precisions of one target (LiteRT first), for the error maps."""
    for target in ("tflite", "onnx"):
        found = {a["precision"]: build / a["path"] for a in report.get("artifacts", [])
                 if a["graph"] == graph and a["target"] == target and a.get("path")}  # fmt: skip
        found = {p: path for p, path in found.items() if path.is_file()}
        if "fp32" in found and len(found) > 1:
            return found
    return {}


def _builtin(name: str, config: dict[str, Any]) -> CompileUnit:
    settings = next((g for g in config.get("graph_configs") or [] if g.get("name") == name), {"name": name})
    checkpoint = settings.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        checkpoint = None  # FLOPs and timings do not depend on the weights' values
    cfg = GraphConfig(name, checkpoint=Path(checkpoint) if checkpoint else None,
                      size=tuple(settings["size"]) if settings.get("size") else None,
                      options=dict(settings.get("options") or {}))  # fmt: skip
    pipeline = settings.get("pipeline") or ("divton-warp" if name == "warp" else "default")
    return builtin_unit(dataclasses.replace(cfg, pipeline=pipeline), int(config.get("seed", 0)))


def file_subject(artifact: Path, graph: str | None, model: str | None) -> Subject:
    """One .tflite or .onnx file against a built-in graph or the user's model."""
    if not artifact.is_file():
        raise MirrorError(f"no such artifact: {artifact}")
    if (graph is None) == (model is None):
        raise MirrorError("--artifact needs exactly one of --graph NAME or --model package.module:factory")
    if artifact.suffix not in (".tflite", ".onnx"):
        raise MirrorError(f"{artifact.name}: profile takes a .tflite or .onnx file")
    pipeline = "divton-warp" if graph == "warp" else "default"
    unit = user_unit(model) if model else builtin_unit(GraphConfig(graph, pipeline=pipeline), 0)
    tflite = artifact if artifact.suffix == ".tflite" else None
    return Subject(unit, tflite, artifact if artifact.suffix == ".onnx" else None)


def profile(subject: Subject, opts: Options, progress: Progress) -> tuple[dict[str, Any], list[layers.Layer]]:
    """The profile of one graph (``table.build_profile``) and its layers."""
    unit = subject.unit
    with progress.step(f"{unit.name}: export and layer table") as note:
        program = export_program(unit)
        program, _ = run_pipeline(program, PIPELINES[unit.pipeline], unit.name)
        table_layers = layers.group(layers.layers_of(program), opts.depth)
        note["result"] = f"{len(table_layers)} layers, {sum(x.flops for x in table_layers) / 1e9:.1f} GFLOPs"
    measured = _measure_here(subject, program, opts, progress) + _measure_phone(subject, opts, progress)
    if opts.depth is not None:
        measured = [_regroup(m, opts.depth) for m in measured]
    profile = table.build_profile(unit.name, table_layers, measured, opts.devices, opts.precisions)
    if opts.torch and subject.by_precision and unit.psnr_output:
        reduced = ", ".join(sorted(set(subject.by_precision) - {"fp32"}))
        with progress.step(f"{unit.name}: error maps of {reduced} against fp32"):
            profile["error_maps"] = heatmap.precision_maps(subject.by_precision, _feeds(unit), unit.psnr_output)
    return profile, table_layers


def _feeds(unit: CompileUnit) -> dict[str, np.ndarray]:
    return {n: t.numpy() for n, t in zip(unit.input_names, unit.example_inputs, strict=True)}


def _measure_here(subject: Subject, program: Any, opts: Options, progress: Progress) -> list[table.Measured]:
    unit, out = subject.unit, []
    if opts.torch:
        with progress.step(f"{unit.name}: PyTorch profiler"):
            per, whole = measure_torch.torch_layer_ms(unit.reference, unit.example_inputs, opts.runs, opts.threads)
        note = "torch.profiler on the eager reference, CPU; whole model timed without the profiler"
        out.append(table.Measured("pytorch", whole, per, note))
    if opts.onnxruntime:
        with progress.step(f"{unit.name}: onnxruntime profiler"):
            model, note = _onnx_model(subject, program)
            fx = {n.name: layers.layer_of(n) for n in program.graph.nodes if n.op == "call_function"}
            per, whole = measure_ort.ort_layer_ms(model, _feeds(unit), fx, opts.runs, opts.threads)
        out.append(table.Measured("onnxruntime", whole, per, note))
    if opts.litert and subject.tflite is not None:
        with progress.step(f"{unit.name}: LiteRT CPU, whole model"):
            whole = measure_litert.litert_whole_ms(subject.tflite, _feeds(unit), opts.runs, opts.threads)
        out.append(table.Measured("litert-cpu", whole, None, measure_litert.WHY_WHOLE))
    return out


def _onnx_model(subject: Subject, program: Any) -> tuple[Any, str]:
    import onnx

    if subject.onnx is not None:
        return onnx.load(str(subject.onnx)), f"onnxruntime CPU, {subject.onnx.name}, optimizations off"
    from mirror.targets.onnx import export_onnx

    unit = subject.unit
    model = export_onnx(program, unit.example_inputs, unit.input_names, unit.output_names, graph=unit.name,
                        optimize=False)  # fmt: skip
    return model, "onnxruntime CPU, fresh unoptimized export (one node per aten op), graph optimizations off"


def _measure_phone(subject: Subject, opts: Options, progress: Progress) -> list[table.Measured]:
    out = []
    for accel, path in sorted(subject.phone_outputs.items()):
        text = path.read_bytes()
        rows = benchmark_output.read_rows(path)
        whole = benchmark_output.whole_ms(text.decode("utf-8", "replace")) or benchmark_output.total_ms(rows)
        out.append(table.Measured(f"phone-{accel}", whole, benchmark_output.layer_ms(rows), f"recorded: {path.name}"))
    if opts.adb is not None:
        if subject.tflite is None:
            raise MirrorError(f"{subject.unit.name}: profiling on a phone needs a .tflite artifact")
        with progress.step(f"{subject.unit.name}: benchmark_model on the phone (CPU and GPU)"):
            runs = phone.profile_on_phone(subject.tflite, adb=opts.adb, binary=opts.benchmark_binary)
        for r in runs:
            whole = r.whole_ms if r.whole_ms is not None else benchmark_output.total_ms(r.rows)
            out.append(table.Measured(f"phone-{r.accelerator}", whole, benchmark_output.layer_ms(r.rows),
                                      f"benchmark_model on {r.device}"))  # fmt: skip
    return out


def _regroup(m: table.Measured, depth: int) -> table.Measured:
    if m.per_layer is None:
        return m
    grouped: dict[str, float] = {}
    for path, ms in m.per_layer.items():
        key = path if path.startswith("(") else ".".join(path.split(".")[:depth])
        grouped[key] = grouped.get(key, 0.0) + ms
    return dataclasses.replace(m, per_layer=grouped)


def calibrate(
    device_file: Path, precision: str, profiles: list[dict[str, Any]], all_layers: list[list[layers.Layer]]
) -> dict[str, Any]:
    """Set ``device_file``'s calibration from the phone GPU's whole time over the profiled graphs."""
    measured = [p["measured"].get("phone-gpu", {}).get("whole_ms") for p in profiles]
    if not measured or any(m is None for m in measured):
        raise MirrorError("--calibrate needs a phone GPU time of every graph (--adb, or --phone-output gpu=FILE)")
    device = roofline.load_device(device_file)
    flat = [x for group in all_layers for x in group]
    source = ", ".join(p["graph"] for p in profiles) + " on the phone's GPU (benchmark_model)"
    spec = roofline.calibrate(device, precision, float(sum(measured)), flat, source)
    from mirror.files import atomic_path

    with atomic_path(device_file) as tmp:
        tmp.write_text(json.dumps(spec, indent=2) + "\n")
    return spec
