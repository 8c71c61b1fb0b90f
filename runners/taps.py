"""Intermediate tensors ("taps") of an artifact run on a backend, each with the torch module
path its name carries: what ``--localize`` compares with the PyTorch reference layer by layer.

- LiteRT CPU: the interpreter with ``experimental_preserve_all_tensors`` keeps every op's
  output (XNNPACK then runs about one partition per op; fused activations have no tensor of
  their own, so a conv+ReLU reads as the ReLU's output). Integer tensors are dequantized
  with their own scales. Names: ``runners.tflite_file.module_path``.
- onnxruntime: onnxruntime's own debugging helpers
  (``quantization.qdq_loss_debug``) add every float tensor as a graph output; the session
  runs with graph optimizations off so the tensors are the exported ones. Names:
  ``<module path>/<FX node name>`` (``targets/onnx_names.py`` writes them).
- coreml-mil: the numpy MIL executor keeps every op's output (``CoreMLMilRunner.run_all``);
  MIL names are the sanitized ``<module path>/<FX node>`` our Core ML target gave each FX
  node, and the exact pair is in the package's metadata (``COREML_PATHS_KEY``).
- The LiteRT GPU accelerator exposes no intermediates (``CompiledModel`` has neither a
  preserve-all-tensors mode nor a profiler): see ``GPU_TAPS_UNAVAILABLE``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError, one_line
from mirror.runners.onnxruntime import ORT_NP
from mirror.runners.tflite_file import fx_node, read_tflite
from mirror.runners.tflite_file import module_path as litert_module_path

GPU_TAPS_UNAVAILABLE = (
    "LiteRT's GPU accelerator exposes no intermediate tensors (no preserve-all-tensors mode, "
    "no per-op profiler); localize on litert-cpu, which runs the same flatbuffer"
)


COREML_PATHS_KEY = "mirror.module_paths"  # package metadata: {MIL name prefix: "<module path>/<FX node>"}


@dataclass
class Tap:
    """One intermediate tensor: its name in the artifact, module path, op and value."""

    name: str
    module: str
    op: str
    value: np.ndarray
    fx: str = ""  # the FX node it was exported from, where the name says so


def split_onnx_name(name: str) -> tuple[str, str]:
    """(module path, FX node name) of a name ``targets/onnx_names.py`` wrote."""
    path, _, fx = name.rpartition("/")
    return path, fx


def litert_cpu_taps(path: Path, feeds: dict[str, np.ndarray], signature: str | None = None) -> list[Tap]:
    """Every op output of a .tflite on the CPU interpreter, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    from mirror.runners.litert import decode, encode, quiet_native_info

    fb = read_tflite(path, signature)
    inputs = {n: fb.tensors[i] for n, i in fb.signature_inputs}
    try:
        with quiet_native_info():
            interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
            runner = interp.get_signature_runner(fb.signature_key)
            runner(**{n: encode(t, feeds[n]) for n, t in inputs.items()})
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise MirrorError(f"LiteRT cannot run {path.name} with all tensors kept: {one_line(exc)}") from exc
    taps = []
    for op in fb.ops:
        for index in op.outputs:
            t = fb.tensors[index]
            if index < 0 or t.dtype not in ("FLOAT32", "FLOAT16", "INT8", "UINT8", "INT16"):
                continue
            value = decode(t, np.array(interp.get_tensor(index)))
            taps.append(Tap(t.name, litert_module_path(t.name), op.name, value.astype(np.float32), fx_node(t.name)))
    return taps


def onnxruntime_taps(path: Path, feeds: dict[str, np.ndarray]) -> list[Tap]:
    """Every float tensor of an .onnx on onnxruntime (optimizations off), in graph order."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug

    if path.suffix.lower() != ".onnx":
        raise MirrorError(f"{path.name}: intermediate tensors need the .onnx model (an .ort is already optimized)")
    model = onnx.load(str(path), load_external_data=False)
    producers = {out: node.op_type for node in model.graph.node for out in node.output if out}
    with tempfile.TemporaryDirectory(prefix="mirror-taps-") as tmp:
        augmented = Path(tmp) / "taps.onnx"
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        session = ort.InferenceSession(str(augmented), sess_options=so, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        dtypes = {i.name: i.type for i in session.get_inputs()}
        arrays = {n: np.asarray(feeds[n], ORT_NP.get(dtypes[n], np.float32)) for n in dtypes}
        values = dict(zip(names, session.run(names, arrays), strict=True))
    # The helper saves each tensor flattened, as an output named after it plus this suffix.
    saved_suffix = getattr(qdq_loss_debug, "_TENSOR_SAVE_POSTFIX", "_ReshapedSavedOutput")
    taps = []
    for name, op in producers.items():
        saved = values.get(name + saved_suffix, values.get(name))
        if saved is None:
            continue
        module, fx = split_onnx_name(name)
        taps.append(Tap(name, module, op, np.asarray(saved, np.float32), fx))
    return taps


def coreml_mil_taps(path: Path, feeds: dict[str, np.ndarray]) -> list[Tap]:
    """Every op output of a saved .mlpackage on the coreml-mil executor, in program order."""
    from mirror.runners.base import RunnerError
    from mirror.runners.coreml_mil import CoreMLMilRunner, load_package_spec

    runner = CoreMLMilRunner(path)
    try:
        values = runner.run_all(feeds, keep=True)
        ops = runner.program().ops
        prefixes = coreml_node_names(load_package_spec(path))
    except RunnerError as exc:
        raise MirrorError(str(exc)) from None
    taps = []
    for op in ops:
        for name in op.outputs:
            value = values.get(name)
            if value is None or not np.issubdtype(value.dtype, np.floating):
                continue
            module, fx = split_onnx_name(coreml_node_of(name, prefixes))
            taps.append(Tap(name, module, op.type, value.astype(np.float32), fx))
    return taps


def coreml_node_names(spec: Any) -> dict[str, str]:
    """{MIL name prefix: "<module path>/<FX node>"} from a package spec ({} if none)."""
    raw = spec.description.metadata.userDefined.get(COREML_PATHS_KEY)
    return json.loads(raw) if raw else {}


def coreml_node_of(mil_name: str, prefixes: dict[str, str]) -> str:
    """``"<module path>/<FX node>"`` of a MIL op output: the longest prefix it starts with."""
    best = ""
    for prefix in prefixes:
        if len(prefix) > len(best) and (mil_name == prefix or mil_name.startswith(prefix + "_")):
            best = prefix
    return prefixes.get(best, "")
