"""ONNX target: an ``.onnx`` model for onnxruntime plus its ``.ort`` twin for ORT Mobile.

Pipeline (``ONNXEmitter.emit``):

1. ``torch.onnx.export(program, dynamo=True)`` straight from the transformed
   ``ExportedProgram`` (opset 18 by default; GridSample needs >= 16), with the caller's
   input and output names.
2. ``onnxsim.simplify``. If onnxsim raises or fails its own check, the unsimplified model is
   kept and ``info["simplify_error"]`` says why.
3. Precision:
   - ``fp32``: as exported.
   - ``fp16``: onnxruntime's own converter (``onnxruntime.transformers.float16.
     convert_float_to_float16``, the maintained copy of onnxconverter-common's) with float32
     graph inputs/outputs kept. It appends its input casts at the end of the node list, so the
     graph is re-sorted topologically here. Index arithmetic that feeds a ``Gather`` (a
     decomposed ``grid_sample``) is kept in float32 (``fp16_index_ops="fp32"``): a linear
     index ``y * W + x`` above 2048 is not exact in fp16.
   - ``int8-weight`` (``int8``): ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
     activations quantized on the fly at run time; no calibration needed).
   - ``int8-full`` (onnxruntime calls it static): ``quantize_static`` in QDQ format (int8
     weights per channel, uint8 activations) calibrated on the given samples. Only the
     compute-heavy ops (Conv, ConvTranspose, MatMul, Gemm) are quantized; the sampler and its
     coordinates stay float.
4. ``onnx.checker.check_model(full_check=True)``, then an atomic write of
   ``<out_dir>/<graph>_<precision>.onnx``.
5. The ORT-format model ``<graph>_<precision>.ort`` for ORT Mobile, made the way
   ``onnxruntime.tools.convert_onnx_models_to_ort`` makes it (an InferenceSession saving
   ``session.save_model_format=ORT``, ``NchwcTransformer`` disabled because its blocked
   layout exists only on x86), written atomically next to the ``.onnx``. The optimization
   level baked in is "basic" by default (ORT's converter uses "all"): "basic" holds only
   platform-independent rewrites, while "all" and "extended" bake in the conversion host's
   kernel choices (fusions into com.microsoft ops of the x86 CPU provider, and for an fp16
   model the casts it inserts around ops it has no fp16 kernel for).

Byte determinism (measured, tests/test_onnx_target.py): the ``.onnx`` is byte-identical
across processes for every precision (exporter, onnxsim, fp16 converter and both quantizers
are deterministic; the free-text ``doc_string`` fields are cleared anyway). The ``.ort`` is
NOT: onnxruntime's ORT-format serializer writes tables in a different order from run to run
(even fp32 at level "basic"); the model it holds is the same, so compare ``.ort`` files by
their outputs, never by hash. ``info["deterministic"]`` is about the ``.onnx``;
``info["ort_deterministic"]`` is False. ``ONNXEmitter(check_determinism=True)`` builds the
``.onnx`` twice and records the measured answer instead of the known one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError, one_line
from mirror.files import atomic_path, failure_reason, sha256_of, size_of
from mirror.passes.base import PipelineSpec
from mirror.passes.registry import lowering_passes
from mirror.precisions import for_target
from mirror.runners.onnxruntime import ORT_LEVELS, ORT_NP, OnnxRuntimeRunner
from mirror.targets.base import Artifact, EmitterBase, describe_artifact
from mirror.targets.index_region import index_region
from mirror.targets.onnx_names import label_module_paths

MIN_OPSET = 16  # GridSample entered the default domain in opset 16.
DEFAULT_OPSET = 18


# Op types quantize_static may quantize. Everything else (GridSample, the arithmetic of a
# decomposed sampler, activations) stays float.
STATIC_QUANT_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]

# Elementwise and shape ops that may carry sampling coordinates and indices. The fp16
# converter keeps these in float32 when they feed (or only derive from) a Gather index.
_ONNX_INDEX_OPS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Floor",
        "Ceil",
        "Round",
        "Clip",
        "Max",
        "Min",
        "Cast",
        "Reshape",
        "Transpose",
        "Slice",
        "Split",
        "Concat",
        "Unsqueeze",
        "Squeeze",
        "Expand",
        "Tile",
        "Identity",
        "Greater",
        "Less",
        "Equal",
        "GreaterOrEqual",
        "LessOrEqual",
        "And",
        "Or",
        "Not",
        "Where",
        "Mod",
        "Neg",
        "Abs",
        "Sign",
        "Flatten",
    }
)
# op type -> input slots that are indices
_ONNX_INDEX_SINKS = {"Gather": (1,), "GatherElements": (1,), "GatherND": (1,)}


# --------------------------------------------------------------------------------------
# Emitter
# --------------------------------------------------------------------------------------


class ONNXEmitter(EmitterBase):
    """Emits ``<graph>_<precision>.onnx`` and ``<graph>_<precision>.ort``.

    Options:
      opset: ONNX opset (>= 16).
      simplify: run onnxsim (falls back to the unsimplified model with a recorded reason).
      ort_format: also write the ORT-format model for ORT Mobile.
      ort_optimization: graph optimization level baked into the .ort ("basic", "extended",
        "all"); "basic" keeps it platform-neutral.
      fp16_index_ops: "fp32" keeps Gather-index arithmetic in float32 in fp16 models,
        "fp16" converts everything.
      check_determinism: build the model twice and record whether the bytes matched.
    """

    target = "onnx"

    def __init__(
        self,
        *,
        opset: int = DEFAULT_OPSET,
        simplify: bool = True,
        ort_format: bool = True,
        ort_optimization: str = "basic",
        fp16_index_ops: str = "fp32",
        check_determinism: bool = False,
    ) -> None:
        if opset < MIN_OPSET:
            raise MirrorError(f"ONNX opset {opset} is too old: GridSample needs opset >= {MIN_OPSET}")
        if ort_optimization not in ORT_LEVELS:
            raise MirrorError(f"unknown ort_optimization {ort_optimization!r}; use one of {sorted(ORT_LEVELS)}")
        if fp16_index_ops not in ("fp32", "fp16"):
            raise MirrorError("fp16_index_ops must be 'fp32' or 'fp16'")
        self.opset = opset
        self.simplify = simplify
        self.ort_format = ort_format
        self.ort_optimization = ort_optimization
        self.fp16_index_ops = fp16_index_ops
        self.check_determinism = check_determinism
        # program -> {(names, opset, simplify): (fp32 model bytes, export info)}: emitting
        # fp32, fp16 and int8 of one program exports it once.
        self._exports: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # The Emitter protocol -------------------------------------------------------------

    def pipeline(self, lowering: str) -> PipelineSpec:
        """The passes an ONNX artifact goes through after the shared pipeline."""
        return lowering_passes(lowering)

    def emit(
        self,
        program: Any,
        graph: str,
        precision: str,
        out_dir: Path,
        *,
        example_inputs: tuple[Any, ...],
        input_names: list[str],
        output_names: list[str],
        calibration: list[tuple[Any, ...]] | None = None,
    ) -> Artifact:
        recipe = for_target(self.target, precision).name
        if recipe == "int8-full" and not calibration:
            raise MirrorError(f"ONNX {precision} needs calibration samples (pass calibration=[...] to emit)")
        final = Path(out_dir) / f"{graph}_{precision}.onnx"
        t0 = time.perf_counter()
        info: dict[str, Any] = {"opset": self.opset, "recipe": recipe}
        build = (program, graph, recipe, example_inputs, input_names, output_names, calibration)
        model_bytes = self._build(*build, info, use_cache=not self.check_determinism)
        if self.check_determinism:
            info["deterministic"] = self._build(*build, {}, use_cache=False) == model_bytes
            info["determinism_basis"] = "measured: built twice in this process"
        else:
            info["deterministic"] = True
            info["determinism_basis"] = (
                "known: byte-identical across processes for the tested graphs "
                "(tests/test_onnx_target.py); not re-measured for this emit"
            )
        self._write(final, model_bytes, graph, precision, info)
        info["emit_s"] = round(time.perf_counter() - t0, 3)
        return describe_artifact(self.target, graph, precision, final, input_names, output_names, info)

    def named_program(self, program: Any, *, example_inputs: tuple[Any, ...], input_names: list[str],
                      output_names: list[str]) -> Any:  # fmt: skip
        return exporter_program(program, example_inputs, input_names, output_names, opset=self.opset)

    def runners(self, artifact: Artifact) -> list[Any]:
        runners: list[Any] = [OnnxRuntimeRunner(artifact.path)]
        ort_path = artifact.info.get("ort_path")
        if ort_path and (artifact.path.parent / ort_path).exists():
            runners.append(OnnxRuntimeRunner(artifact.path.parent / ort_path, name="onnxruntime-ort"))
        return runners

    def _write(self, final: Path, model_bytes: bytes, graph: str, precision: str, info: dict[str, Any]) -> None:
        """The .onnx and its .ort twin, atomically: both are in place only if both succeeded."""
        ort_final = final.with_suffix(".ort")
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(final))
            tmp.write_bytes(model_bytes)
            if self.ort_format:
                tmp_ort = stack.enter_context(atomic_path(ort_final))
                t = time.perf_counter()
                try:
                    write_ort_format(tmp, tmp_ort, optimization=self.ort_optimization)
                except Exception as exc:  # noqa: BLE001 - reported as one line
                    why = failure_reason(exc)
                    raise MirrorError(
                        f"ONNX target: could not write the ORT-format model for {graph} ({precision}): {why}"
                    ) from exc
                info["ort_s"] = round(time.perf_counter() - t, 3)
        if self.ort_format:
            info["ort_path"] = ort_final.name  # beside the .onnx
            info["ort_optimization"] = self.ort_optimization
            # Measured: onnxruntime's ORT-format writer orders its tables differently per run.
            info["ort_deterministic"] = False
            info["ort_size_bytes"] = size_of(ort_final)
            info["ort_sha256"] = sha256_of(ort_final)

    # Building -------------------------------------------------------------------------

    def _build(
        self,
        program: Any,
        graph: str,
        recipe: str,
        example_inputs: tuple[Any, ...],
        input_names: list[str],
        output_names: list[str],
        calibration: list[tuple[Any, ...]] | None,
        info: dict[str, Any],
        *,
        use_cache: bool = True,
    ) -> bytes:
        """The final model's bytes for ``recipe`` (not yet written anywhere)."""
        import onnx

        model = self._fp32_model(program, graph, example_inputs, input_names, output_names, info, use_cache)
        t = time.perf_counter()
        model = self._apply_recipe(model, recipe, input_names, calibration, info)
        info["precision_s"] = round(time.perf_counter() - t, 3)
        _check_names(model, input_names, output_names, graph, stage=recipe)
        _strip_run_specific(model)
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:  # noqa: BLE001
            raise MirrorError(
                f"ONNX target: the {recipe} model for {graph} fails onnx.checker: {one_line(exc)}"
            ) from exc
        info["ops"] = dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
        return model.SerializeToString()

    def _fp32_model(
        self, program: Any, graph: str, example_inputs: tuple[Any, ...], input_names: list[str],
        output_names: list[str], info: dict[str, Any], use_cache: bool,
    ) -> Any:  # fmt: skip
        """The exported (and simplified) fp32 model; one export per program and names."""
        import onnx

        key = (tuple(input_names), tuple(output_names), self.opset, self.simplify)
        try:
            cached = self._exports.get(program, {}).get(key) if use_cache else None
        except TypeError:  # not weak-referenceable
            cached = None
        if cached is not None:
            info.update(cached[1], export_cached=True)
            return onnx.load_from_string(cached[0])
        model = self._export_fp32(program, graph, example_inputs, input_names, output_names, info)
        if use_cache:
            with contextlib.suppress(TypeError):
                stats = {k: info[k] for k in ("export_s", "simplified", "simplify_error", "simplify_s") if k in info}
                self._exports.setdefault(program, {})[key] = (model.SerializeToString(), stats)
        return model

    def _apply_recipe(
        self, model: Any, recipe: str, input_names: list[str], calibration: list[tuple[Any, ...]] | None,
        info: dict[str, Any],
    ) -> Any:  # fmt: skip
        """fp16 conversion or int8 quantization of the fp32 model (fp32: unchanged)."""
        if recipe == "fp16":
            model, kept = convert_fp16(model, keep_index_ops_fp32=self.fp16_index_ops == "fp32")
            info["fp16_method"] = (
                "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True) + topological re-sort"
            )
            info["fp32_nodes"] = kept
        elif recipe == "int8-full":
            feeds = _calibration_feeds(calibration or [], input_names)
            model = quantize_int8_static(model, feeds)
            info["quantization"] = {
                "method": "onnxruntime.quantization.quantize_static",
                "format": "QDQ",
                "weights": "int8 per-channel",
                "activations": "uint8, MinMax calibration",
                "op_types": STATIC_QUANT_OPS,
                "calibration_samples": len(feeds),
            }
        elif recipe == "int8-weight":
            model = quantize_int8_dynamic(model)
            info["quantization"] = {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "weights": "int8",
                "activations": "float, quantized on the fly at run time",
            }
        return model

    def _export_fp32(
        self,
        program: Any,
        graph: str,
        example_inputs: tuple[Any, ...],
        input_names: list[str],
        output_names: list[str],
        info: dict[str, Any],
    ) -> Any:
        t = time.perf_counter()
        model = export_onnx(program, example_inputs, input_names, output_names, opset=self.opset, graph=graph)
        info["export_s"] = round(time.perf_counter() - t, 3)
        if self.simplify:
            t = time.perf_counter()
            model, error = simplify_onnx(model)
            info["simplified"] = error is None
            if error is not None:
                info["simplify_error"] = error
            info["simplify_s"] = round(time.perf_counter() - t, 3)
        else:
            info["simplified"] = False
            info["simplify_error"] = "disabled"
        _check_names(model, input_names, output_names, graph, stage="export")
        return model


# --------------------------------------------------------------------------------------
# Steps (usable on their own)
# --------------------------------------------------------------------------------------


def export_onnx(
    program: Any,
    example_inputs: tuple[Any, ...],
    input_names: list[str],
    output_names: list[str],
    *,
    opset: int = DEFAULT_OPSET,
    graph: str = "model",
    optimize: bool = True,
) -> Any:
    """``torch.onnx.export(dynamo=True)`` of an ExportedProgram (or nn.Module) -> ModelProto.

    ``optimize=False`` keeps one ONNX node per aten op (no Conv+BatchNorm folding), so every
    node's metadata names the module it came from (the profiler maps times back by it).
    """
    model = _onnx_program(program, example_inputs, input_names, output_names, opset, graph, optimize).model_proto
    if model is None:
        raise MirrorError(f"ONNX export of {graph} produced no model")
    label_module_paths(model)
    return model


def exporter_program(
    program: Any, example_inputs: tuple[Any, ...], input_names: list[str], output_names: list[str],
    *, opset: int = DEFAULT_OPSET, graph: str = "model",
) -> Any:  # fmt: skip
    """The ExportedProgram the exporter lowered ``program`` to: it decomposes what ONNX has
    no function for (``rsub``, ...) and re-traces, which renames nodes, and the ONNX
    tensors are named after *its* nodes. Exporting again gives the same names."""
    return _onnx_program(program, example_inputs, input_names, output_names, opset, graph, True).exported_program


def _onnx_program(
    program: Any, example_inputs: tuple[Any, ...], input_names: list[str], output_names: list[str],
    opset: int, graph: str, optimize: bool,
) -> Any:  # fmt: skip
    import torch

    try:
        # The exporter prints progress lines and warns about torchvision; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logs("torch.onnx"):
            return torch.onnx.export(
                program,
                tuple(example_inputs),
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
                optimize=optimize,
            )
    except MirrorError:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        raise MirrorError(f"ONNX export of {graph} failed: {failure_reason(exc)}") from exc


def simplify_onnx(model: Any) -> tuple[Any, str | None]:
    """onnxsim on ``model``; returns (model, None) or (the input model, why it was kept)."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # noqa: BLE001 - onnxsim fails on some graphs; keep going
        return model, f"onnxsim raised: {one_line(exc)}"
    if not ok:
        return model, "onnxsim's own check failed; kept the unsimplified model"
    return simplified, None


def convert_fp16(model: Any, *, keep_index_ops_fp32: bool = True) -> tuple[Any, list[str]]:
    """fp16 weights and compute, float32 graph inputs/outputs.

    Returns the model and the names of the nodes that were kept in float32.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kept: list[str] = []
    if keep_index_ops_fp32:
        _name_unnamed_nodes(model.graph)
        kept = sorted(onnx_index_nodes(model.graph))
    with _quiet_logs("onnxruntime.transformers.float16"):
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=kept or None)
    if kept:
        _drop_fp16_round_trips(converted.graph, set(kept))
    topological_sort(converted.graph)
    return converted, kept


def _drop_fp16_round_trips(graph: Any, kept: set[str]) -> int:
    """Let kept-float32 nodes feed each other directly.

    The converter treats every blocked node on its own: between two of them it inserts
    ``Cast(to=fp16) -> Cast(to=fp32)``, which rounds the value to fp16 anyway and would
    defeat the point. Each such round trip that starts at a kept node (or a float32 graph
    input) is bypassed; casts left without consumers are removed.
    """
    from onnx import TensorProto

    f32_sources = {o for n in graph.node if n.name in kept for o in n.output}
    f32_sources |= {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    replace: dict[str, str] = {}
    for node in graph.node:
        if cast_to(node) != TensorProto.FLOAT:
            continue
        up = producer.get(node.input[0])
        if up is not None and cast_to(up) == TensorProto.FLOAT16 and up.input[0] in f32_sources:
            replace[node.output[0]] = up.input[0]
    if not replace:
        return 0
    graph_outputs = {o.name for o in graph.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    # Remove casts whose outputs nobody reads any more (never a graph output).
    while True:
        used = {i for n in graph.node for i in n.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    return len(replace)


def quantize_int8_dynamic(model: Any) -> Any:
    """int8 weights; activations quantized per call (``quantize_dynamic``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mirror-onnx-q-") as d:
        src, dst = Path(d) / "in.onnx", Path(d) / "out.onnx"
        onnx.save(model, src)
        with _quiet_logs("root"):
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return onnx.load(dst)


def quantize_int8_static(model: Any, feeds: list[dict[str, np.ndarray]]) -> Any:
    """QDQ int8 calibrated on ``feeds`` (``quantize_static``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="mirror-onnx-q-") as d:
        src, dst = Path(d) / "in.onnx", Path(d) / "out.onnx"
        onnx.save(model, src)
        with _quiet_logs("root"):
            quantize_static(
                src,
                dst,
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=STATIC_QUANT_OPS,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        return onnx.load(dst)




def write_ort_format(onnx_path: Path, ort_path: Path, *, optimization: str = "basic") -> None:
    """Save the ORT-format model of ``onnx_path`` to ``ort_path`` (as ORT's converter does)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[optimization])
    so.optimized_model_filepath = str(ort_path)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.log_severity_level = 3
    ort.InferenceSession(
        str(onnx_path),
        sess_options=so,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["NchwcTransformer"],
    )
    if not Path(ort_path).exists():
        raise RuntimeError("onnxruntime wrote no ORT-format file")


# --------------------------------------------------------------------------------------
# Runner and profiler
# --------------------------------------------------------------------------------------




def profile_onnx(
    path: str | Path,
    inputs: dict[str, np.ndarray],
    runs: int = 10,
    *,
    warmup: int = 1,
    optimization: str = "all",
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Per-node latency from onnxruntime's profiler (Chrome-trace JSON).

    Returns ``[{"node", "op_type", "mean_ms", "median_ms", "provider"}]`` in execution order.
    ``mean_ms`` averages the ``runs`` timed calls; ``warmup`` calls before them are discarded. Node
    names are those of the *optimized* graph at ``optimization`` (fused nodes keep the name
    of the node they were fused into; level "basic" keeps the exported names best).
    """
    import onnxruntime as ort

    if runs < 1:
        raise MirrorError("profile_onnx: runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="mirror-ort-prof-") as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[optimization])
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "profile")
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        dtypes = {i.name: ORT_NP.get(i.type, np.float32) for i in sess.get_inputs()}
        feeds = {n: np.ascontiguousarray(inputs[n], dtype=t) for n, t in dtypes.items()}
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        trace_path = sess.end_profiling()
        with open(trace_path) as fh:
            events = json.load(fh)
    return summarize_profile(events, skip_runs=warmup)


def summarize_profile(events: list[dict[str, Any]], *, skip_runs: int = 0) -> list[dict[str, Any]]:
    """Aggregate onnxruntime trace events into per-node latency over the kept runs.

    Each ``*_kernel_time`` event is assigned to the ``model_run`` span that contains it; a
    node's time per run is summed (a node runs once per call in the sequential executor).
    ``mean_ms`` averages over the kept runs, ``median_ms`` resists a noisy, shared CPU.
    """
    import bisect

    spans = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    spans = spans[skip_runs:]
    if not spans:
        return []
    starts = [s for s, _ in spans]
    per_run: dict[str, list[float]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if k < 0 or e["ts"] > spans[k][1]:
            continue  # a skipped (warm-up) run
        node = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        if node not in per_run:
            per_run[node] = [0.0] * len(spans)
            meta[node] = (args.get("op_name", "?"), args.get("provider", "?"))
        per_run[node][k] += e["dur"] / 1000.0
    return [
        {
            "node": node,
            "op_type": meta[node][0],
            "mean_ms": float(np.mean(times)),
            "median_ms": float(np.median(times)),
            "provider": meta[node][1],
        }
        for node, times in per_run.items()
    ]


# --------------------------------------------------------------------------------------
# Graph helpers
# --------------------------------------------------------------------------------------


def onnx_index_nodes(graph: Any) -> set[str]:
    """Names of the nodes of an ONNX graph that compute Gather indices (see index_region)."""
    producer = {out: node.name for node in graph.node for out in node.output if out}
    nodes = []
    seeds = []
    for node in graph.node:
        prods = [producer.get(i) if i else None for i in node.input]
        nodes.append((node.name, node.op_type, prods))
        for slot in _ONNX_INDEX_SINKS.get(node.op_type, ()):
            if slot < len(prods) and prods[slot] is not None:
                seeds.append(prods[slot])
    return index_region(nodes, seeds, _ONNX_INDEX_OPS)


def topological_sort(graph: Any) -> None:
    """Re-order ``graph.node`` so every node follows its producers (stable otherwise)."""
    import heapq

    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    indegree = [0] * len(nodes)
    for i, n in enumerate(nodes):
        deps = {producer[x] for x in n.input if x in producer and producer[x] != i}
        indegree[i] = len(deps)
        for d in deps:
            consumers[d].append(i)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for c in consumers[i]:
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != len(nodes):
        raise MirrorError("ONNX graph has a cycle; cannot sort it")
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def _name_unnamed_nodes(graph: Any) -> None:
    seen = {n.name for n in graph.node if n.name}
    for i, n in enumerate(graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in seen:
                name += "_"
            n.name = name
            seen.add(name)


def _strip_run_specific(model: Any) -> None:
    """Clear free-text fields so the bytes depend on the graph alone."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""


def _check_names(model: Any, input_names: list[str], output_names: list[str], graph: str, stage: str) -> None:
    inits = {i.name for i in model.graph.initializer}
    got_in = [i.name for i in model.graph.input if i.name not in inits]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(input_names) or got_out != list(output_names):
        raise MirrorError(
            f"ONNX target: {graph} after {stage} has inputs {got_in} / outputs {got_out}, "
            f"expected {list(input_names)} / {list(output_names)}"
        )


def _calibration_feeds(calibration: list[tuple[Any, ...]], input_names: list[str]) -> list[dict[str, np.ndarray]]:
    feeds = []
    for k, sample in enumerate(calibration):
        if len(sample) != len(input_names):
            raise MirrorError(f"calibration sample {k} has {len(sample)} tensors; the graph takes {len(input_names)}")
        feeds.append({n: _to_numpy(t) for n, t in zip(input_names, sample, strict=True)})
    return feeds


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(t, dtype=np.float32)


@contextlib.contextmanager
def _quiet_logs(*names: str):
    loggers = [logging.getLogger(None if n == "root" else n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
