"""Does a .tflite model run fully on the LiteRT GPU delegate? Ask the real one, else the rules.

``verify_gpu_delegate(path)`` loads the model with LiteRT's GPU accelerator (WebGPU, on the
SwiftShader Vulkan driver where there is no GPU) through ``runners/litert.py``'s GPU
runner, reads the delegate's own messages ("Following operations are not supported by GPU
delegate: ..." and "N operations will run on the GPU, and the remaining M operations will
run on the CPU") and ``is_fully_accelerated()``. Where no Vulkan driver is found it falls
back to a static rule checker over the flatbuffer. The result always says which of the two answered.

The TF/LiteRT GPU-compatibility Analyzer is deliberately not used: it calls rank-5 tensors,
GATHER_ND and TOPK_V2 "compatible".

Two static rule profiles:

- ``classic``: the OpenCL/OpenGL GPU delegate that phones run. Refuses ops outside its list,
  any tensor of rank >= 5, non-constant INT32 tensors except as inputs of CAST, GATHER and
  ONE_HOT, GATHER_ND, GATHER above version 1 (or with non-1-D indices or batch_dims), SLICE /
  STRIDED_SLICE on anything but 3-D/4-D inputs, STRIDED_SLICE with shrink_axis_mask, and
  custom ops other than the four it implements. This is the default fallback.
- ``webgpu``: what LiteRT 2.3's WebGPU accelerator does, as measured on SwiftShader. It runs
  INT32 arithmetic (ADD/MUL/SELECT/LESS on int32) and 2-D SLICE, which the classic delegate
  refuses; otherwise the same. Used to locate the real delegate's refusals inside the graph.

Partitions are derived from the op graph: ops are grouped into maximal dependency-respecting
runs of GPU-able and CPU-only ops (the way TFLite partitions a graph for a delegate), and the
delegate takes the largest GPU partition.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from mirror.runners.litert import LiteRTGpuRunner, delegate_adapter
from mirror.runners.tflite_file import OpInfo, TFLiteGraph, fx_node, read_tflite
from mirror.runners.vulkan import find_vulkan_driver

GPU_OPS = frozenset(
    """ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD
    FULLY_CONNECTED GATHER GELU GREATER GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG
    LOGICAL_AND LOGISTIC MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT
    PACK PAD PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RESHAPE
    RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIGN SIN SLICE SOFTMAX
    SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STRIDED_SLICE SUB SUM TANH TILE
    TRANSPOSE TRANSPOSE_CONV UNPACK""".split()
)
GPU_CUSTOM_OPS = frozenset({"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"})
INT32_OK_CONSUMERS = frozenset({"CAST", "GATHER", "ONE_HOT"})
PROFILES = ("classic", "webgpu")


# ---------------------------------------------------------------------------------------
# Static rules.


def op_refusal(graph: TFLiteGraph, op: OpInfo, profile: str = "classic") -> str | None:
    """Why the GPU delegate refuses ``op`` under ``profile``, or None if it accepts it."""
    r = _refusal(graph, op, profile)
    return None if r is None else r[0]


def _refusal(graph: TFLiteGraph, op: OpInfo, profile: str) -> tuple[str, str | None] | None:
    """(reason, offending tensor name or None); reasons carry no tensor names so they group."""
    if profile not in PROFILES:
        raise ValueError(f"unknown rule profile {profile!r}; known: {', '.join(PROFILES)}")
    tens = graph.tensors
    if op.custom:
        if op.name not in GPU_CUSTOM_OPS:
            return "Custom op is not one of the GPU delegate's custom ops.", None
    elif op.name not in GPU_OPS:
        return "Operation is not supported.", None
    ins = [tens[i] for i in op.inputs if i >= 0]
    outs = [tens[i] for i in op.outputs if i >= 0]
    for t in ins + outs:
        if len(t.shape) >= 5:
            return "Tensor dimensions must be less than 5.", t.name
    if op.name == "GATHER":
        if op.version > 1:
            return "GATHER above version 1 is not supported.", None
        if len(ins) > 1:
            idx = ins[1]
            if len(idx.shape) != 1:
                return "GATHER indices must be 1-D.", idx.name
            if idx.dtype != "INT32":
                return "GATHER indices must be INT32.", idx.name
        if op.options.get("batch_dims", 0) != 0:
            return "GATHER with batch_dims is not supported.", None
    if op.name in ("SLICE", "STRIDED_SLICE") and ins:
        rank = len(ins[0].shape)
        if profile == "classic" and rank not in (3, 4):
            return f"{op.name} is supported on 3-D/4-D inputs only.", ins[0].name
        if op.name == "STRIDED_SLICE" and op.options.get("shrink_axis_mask", 0):
            return "STRIDED_SLICE with shrink_axis_mask is not supported.", None
    if profile == "classic" and op.name not in INT32_OK_CONSUMERS:
        for t in ins:
            if t.dtype == "INT32" and not t.constant:
                return (
                    "Non-constant INT32 input: INT32 tensors are accepted only as inputs of CAST, GATHER and ONE_HOT.",
                    t.name,
                )
    return None


def partition(graph: TFLiteGraph, on_gpu: list[bool]) -> list[tuple[bool, list[int]]]:
    """Split the ops into maximal dependency-respecting runs of GPU-able / CPU-only ops.

    Returns ``(gpu, op indices)`` per partition, in execution order.
    """
    producer: dict[int, int] = {}
    for op in graph.ops:
        for t in op.outputs:
            producer[t] = op.index
    consumers: dict[int, list[int]] = defaultdict(list)
    pending = [0] * len(graph.ops)
    for op in graph.ops:
        deps = {producer[t] for t in op.inputs if t >= 0 and t in producer}
        pending[op.index] = len(deps)
        for d in deps:
            consumers[d].append(op.index)
    ready: dict[bool, list[int]] = {True: [], False: []}
    for op in graph.ops:
        if pending[op.index] == 0:
            ready[on_gpu[op.index]].append(op.index)
    parts: list[tuple[bool, list[int]]] = []
    if not graph.ops:
        return parts
    current = on_gpu[min(ready[True] + ready[False])]
    done = 0
    while done < len(graph.ops):
        part: list[int] = []
        queue = ready[current]
        while queue:
            queue.sort()
            n = queue.pop(0)
            part.append(n)
            for c in consumers[n]:
                pending[c] -= 1
                if pending[c] == 0:
                    ready[on_gpu[c]].append(c)
        if part:
            parts.append((current, part))
            done += len(part)
        current = not current
    return parts


def _group(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for e in entries:
        key = (e["op"], e["reason"])
        g = grouped.setdefault(key, {"op": e["op"], "reason": e["reason"], "count": 0, "indices": [], "tensors": []})
        g["count"] += 1
        if e.get("index") is not None:
            g["indices"].append(e["index"])
        if e.get("tensor") and e["tensor"] not in g["tensors"]:
            g["tensors"].append(e["tensor"])
    return list(grouped.values())


def _summary(graph: TFLiteGraph, on_gpu: list[bool], unsupported: list[dict[str, Any]]) -> dict[str, Any]:
    parts = partition(graph, on_gpu)
    gpu_parts = [p for gpu, p in parts if gpu]
    largest = max((len(p) for p in gpu_parts), default=0)
    return {
        "ops_total": len(graph.ops),
        "ops_on_gpu": largest,
        "ops_on_cpu": len(graph.ops) - largest,
        "partitions": len(gpu_parts),
        "partition_sizes": [len(p) for p in gpu_parts],
        "cpu_partitions": len(parts) - len(gpu_parts),
        "unsupported": unsupported,
        "fully_accelerated": bool(graph.ops) and all(on_gpu) and len(gpu_parts) == 1,
    }


def check_static(path: Path | str, profile: str = "classic") -> dict[str, Any]:
    """Static GPU-delegate check of a .tflite file; same keys as ``verify_gpu_delegate``."""
    return _check_graph(read_tflite(path), profile)


def _check_graph(graph: TFLiteGraph, profile: str) -> dict[str, Any]:
    refusals = [_refusal(graph, op, profile) for op in graph.ops]
    unsupported = _group(
        [
            {"op": op.name, "reason": r[0], "tensor": r[1], "index": op.index}
            for op, r in zip(graph.ops, refusals, strict=True)
            if r is not None
        ]
    )
    out = _summary(graph, [r is None for r in refusals], unsupported)
    out["verified_on"] = f"static-rules ({profile} GPU delegate rules)"
    out["rules"] = profile
    return out


# ---------------------------------------------------------------------------------------
# The real delegate.

_HEADER = "Following operations are not supported by GPU delegate:"
_COUNTS = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU")
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*|[A-Za-z][A-Za-z0-9_]*): (.*)$")


def parse_delegate_log(log: str) -> dict[str, Any]:
    """Pull the delegate's refusals, op counts and adapter out of its log."""
    lines = log.splitlines()
    refusals: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if _HEADER in lines[i]:
            i += 1
            while i < len(lines):
                m = _LINE.match(lines[i].strip())
                if not m or _COUNTS.search(lines[i]) or lines[i].startswith(("I0000", "INFO", "W0000")):
                    break
                refusals.append((m.group(1), m.group(2).strip()))
                i += 1
            continue
        i += 1
    counts = _COUNTS.search(log)
    return {
        "refusals": refusals,
        "gpu_ops": int(counts.group(1)) if counts else None,
        "cpu_ops": int(counts.group(2)) if counts else None,
        "adapter": delegate_adapter(log),
    }


def _locate_refusals(graph: TFLiteGraph, refusals: list[tuple[str, str]]) -> tuple[list[bool], list[dict[str, Any]]]:
    """Map the delegate's refusal lines onto op indices.

    The delegate prints each distinct line once. A line ending with a tensor name covers
    the ops of that type that read or write that tensor. A line without one covers the ops
    of that type that the ``webgpu`` rules refuse, or all of them if none is.
    """
    on_gpu = [True] * len(graph.ops)
    by_type: dict[str, list[OpInfo]] = defaultdict(list)
    for op in graph.ops:
        by_type[op.name].append(op)
    entries: list[dict[str, Any]] = []

    def mark(op: OpInfo, name: str, reason: str, tensor: str | None) -> None:
        if on_gpu[op.index]:
            on_gpu[op.index] = False
            entries.append({"op": name, "reason": reason, "tensor": tensor, "index": op.index})

    for name, text in refusals:
        ops = by_type.get(name, [])
        named: list[tuple[OpInfo, str]] = []
        for op in ops:
            for t in op.inputs + op.outputs:
                tname = graph.tensors[t].name if t >= 0 else ""
                if tname and text.endswith(" " + tname):
                    named.append((op, tname))
                    break
        if named:
            for op, tname in named:
                mark(op, name, text[: -len(tname) - 1].strip(), tname)
            continue
        flagged = [op for op in ops if op_refusal(graph, op, "webgpu") is not None] or ops
        for op in flagged:
            mark(op, name, text, None)
        if not ops:
            entries.append({"op": name, "reason": text, "tensor": None, "index": None})
    return on_gpu, entries


def verify_gpu_delegate(
    path: Path | str,
    *,
    mode: str = "auto",
    profile: str = "classic",
    timeout: float | None = None,
    runner: Any = None,
) -> dict[str, Any]:
    """Check whether ``path`` runs fully on the LiteRT GPU delegate.

    Loading the model is what makes the delegate partition it and say which ops it
    refuses, so a ``LiteRTGpuRunner`` that already ran the model (a parity run) is asked
    for its load log; without one, a runner is made, loaded and closed here.

    ``mode``: "auto" (the real delegate where a Vulkan driver is found, else static rules),
    "delegate" (the real one; a missing driver is an error), or "static".
    ``profile`` picks the static rules when they answer ("classic" or "webgpu").

    Returns ``ops_total, ops_on_gpu, ops_on_cpu, partitions, partition_sizes, unsupported
    (list of {op, reason, count, indices}), fully_accelerated, verified_on``, plus
    ``static`` (the classic-rule verdict, always computed: phones run the classic delegate)
    and, from the real delegate, ``adapter`` and ``delegate_log``.
    """
    from mirror import MirrorError

    path = Path(path)
    if not path.is_file():
        raise MirrorError(f"no such model: {path}")
    if mode not in ("auto", "delegate", "static"):
        raise ValueError(f"mode must be auto, delegate or static, not {mode!r}")
    graph = read_tflite(path)  # read once: the rules and the delegate's verdict both use it
    static = _check_graph(graph, profile)
    if mode == "static":
        return static
    driver = find_vulkan_driver()
    if not driver.found:
        if mode == "delegate":
            raise MirrorError(f"cannot run the LiteRT GPU delegate: {driver.reason}")
        static["verified_on"] += f"; real delegate unavailable: {driver.reason}"
        return static
    if runner is not None:
        return _from_delegate(graph, runner.load(), static, profile, driver)
    with LiteRTGpuRunner(path, timeout=timeout) as own:
        return _from_delegate(graph, own.load(), static, profile, driver)


def _from_delegate(
    graph: TFLiteGraph, loaded: Any, static: dict[str, Any], profile: str, driver: Any
) -> dict[str, Any]:
    """The verdict from the delegate's load: its log, its op counts, its refusals located."""
    parsed = parse_delegate_log(loaded.log)
    where = f"litert-gpu/webgpu on {driver.name}"
    if parsed["adapter"]:
        where += f" ({parsed['adapter']})"
    relevant = [
        ln
        for ln in loaded.log.splitlines()
        if _HEADER in ln or _COUNTS.search(ln) or any(ln.startswith(n + ":") for n, _ in parsed["refusals"])
    ]
    static_verdict = {k: static[k] for k in ("fully_accelerated", "ops_on_gpu", "partitions")}
    if not loaded.ok:
        # The delegate failed (or crashed) while loading: report that, with the rules' op list.
        return {
            **static,
            "fully_accelerated": False,
            "verified_on": f"{where}: FAILED ({loaded.error}); op list from static rules ({profile})",
            "error": loaded.error,
            "crashed": loaded.crashed,
            "delegate_log": relevant,
            "static": static_verdict,
        }
    on_gpu, entries = _locate_refusals(graph, parsed["refusals"])
    out = _summary(graph, on_gpu, _group(entries))
    out["ops_on_gpu_derived"] = out["ops_on_gpu"]
    if parsed["gpu_ops"] is not None:
        out["ops_on_gpu"], out["ops_on_cpu"] = parsed["gpu_ops"], parsed["cpu_ops"]
    elif loaded.result.get("fully_accelerated"):
        out["ops_on_gpu"], out["ops_on_cpu"] = len(graph.ops), 0
    out["fully_accelerated"] = bool(loaded.result.get("fully_accelerated"))
    out["verified_on"] = where
    out["adapter"] = parsed["adapter"]
    out["delegate_log"] = relevant
    out["static"] = {**static_verdict, "rules": profile}
    return out


def locate_sources(result: dict[str, Any], path: Path | str, program: Any,
                   output_names: list[str] | None = None) -> dict[str, Any]:
    """Give each refused-op group of ``result`` its ``source``: the lines of the user's model
    its ops come from (through the FX node each tensor name carries, and that node's stack
    trace in ``program``, the exported program the artifact was converted from).

    A model output's tensor carries the output's name instead of its node's; with the
    artifact's ``output_names`` (in the program's output order) those are found too."""
    from mirror.passes.graph_utils import source_line  # imports torch: only when there is a program

    graph = read_tflite(path)
    nodes = {n.name: n for n in program.graph.nodes}
    by_tensor = _output_nodes(graph, program, nodes, output_names or [])
    for group in result.get("unsupported", []):
        lines: list[str] = []
        for i in group.get("indices", []):
            for t in graph.ops[i].outputs:
                node = by_tensor.get(t) or (nodes.get(fx_node(graph.tensors[t].name)) if t >= 0 else None)
                line = source_line(node) if node is not None else ""
                if line and line not in lines:
                    lines.append(line)
        if lines:
            group["source"] = lines
    return result


def _output_nodes(graph: Any, program: Any, nodes: dict[str, Any], output_names: list[str]) -> dict[int, Any]:
    """Tensor index -> the FX node that makes it, for the artifact's signature outputs."""
    from torch.export.graph_signature import OutputKind

    made = [spec.arg.name for spec in program.graph_signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]
    by_name = dict(zip(output_names, made, strict=False))
    return {t: nodes[by_name[name]] for name, t in graph.signature_outputs if by_name.get(name) in nodes}


def format_report(result: dict[str, Any]) -> str:
    """A few human-readable lines for a verification result."""
    lines = [
        f"GPU delegate ({result['verified_on']}): "
        + ("fully accelerated" if result["fully_accelerated"] else "NOT fully accelerated"),
        f"  ops: {result['ops_on_gpu']} of {result['ops_total']} on the GPU, {result['partitions']} GPU partition(s)",
    ]
    for u in result["unsupported"]:
        lines.append(f"  {u['op']} x{u.get('count', 1)}: {u['reason']}")
    if result.get("static") and result["static"]["fully_accelerated"] != result["fully_accelerated"]:
        st = result["static"]
        lines.append(
            f"  note: the {st.get('rules', 'classic')} rules say "
            + ("fully accelerated" if st["fully_accelerated"] else "NOT fully accelerated")
            + f" ({st['ops_on_gpu']} of {result['ops_total']} ops on the GPU)"
        )
    if result.get("error"):
        lines.append(f"  error: {result['error']}")
    return "\n".join(lines)
