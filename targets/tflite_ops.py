"""LiteRT-only graph legalizations, applied to the shared program just before conversion.

``legalize_for_litert`` rewrites every ``aten.index_select(x, dim, idx)`` whose index is
1-D into litert-torch's ``tfl.gather(x, int32 idx, dim)``. litert-torch lowers
``index_select`` (like ``x[idx]`` and ``torch.gather``) to GATHER_ND plus bounds-check
ops, which LiteRT's GPU delegate refuses; ``tfl.gather`` lowers straight to GATHER
version 1, which it accepts. ``passes/gpu_grid_sample.py`` emits ``index_select`` so the
shared program stays standard aten for ONNX and Core ML; only the LiteRT artifact gets
``tfl.gather``.

``tfl.gather`` is an experimental litert-torch op (registered by importing
``litert_torch.backend.experimental.torch_tfl._ops``); ``litert_gather_op`` is the one
place that touches it. Importing litert_torch takes seconds, so it happens only when a
legalization actually needs the op.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import torch

from mirror import MirrorError

_P = TypeVar("_P", torch.export.ExportedProgram, torch.fx.GraphModule)

_INDEX_SELECT = torch.ops.aten.index_select.default


def litert_gather_op() -> Any:
    """litert-torch's ``tfl.gather(input, indices_int32_1d, axis)`` op (lowers to GATHER v1).

    Raises ``MirrorError`` naming the litert-torch version we were built against if the
    experimental op is missing."""
    try:
        import litert_torch.backend.experimental.torch_tfl._ops  # noqa: F401

        return torch.ops.tfl.gather.default
    except (ImportError, AttributeError) as e:
        raise MirrorError(
            "litert-torch's experimental tfl.gather op is unavailable "
            f"({type(e).__name__}: {e}); install litert-torch==0.10.0, the version MIRROR's "
            "LiteRT emitter is tested with"
        ) from e


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _legalize_graph(gm: torch.fx.GraphModule) -> int:
    graph = gm.graph
    gather = None
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _INDEX_SELECT:
            continue
        x, dim, idx = node.args[:3]
        idx_val = _val(idx)
        x_val = _val(x)
        if idx_val is None or idx_val.dim() != 1:
            continue  # a 0-D index: leave it to the stock lowering
        if gather is None:
            gather = litert_gather_op()
        axis = int(dim) % x_val.dim() if x_val is not None else int(dim)
        with graph.inserting_before(node):
            if idx_val.dtype != torch.int32:
                cast = graph.call_function(
                    torch.ops.aten._to_copy.default, (idx,), {"dtype": torch.int32}
                )
                cast.meta = {**idx.meta, "val": idx_val.to(torch.int32)}
                idx = cast
            new = graph.call_function(gather, (x, idx, axis))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count


def legalize_for_litert(program: _P) -> _P:
    """A copy of ``program`` (an ExportedProgram or a GraphModule such as
    ``program.module()``) with each 1-D ``index_select`` replaced by ``tfl.gather``.

    Convert the result with ``litert_torch.convert(result.module(), args)`` (or the
    GraphModule directly). The input is not modified."""
    program = copy.deepcopy(program)
    if isinstance(program, torch.export.ExportedProgram):
        _legalize_graph(program.graph_module)
    elif isinstance(program, torch.fx.GraphModule):
        _legalize_graph(program)
    else:
        raise TypeError(
            f"legalize_for_litert takes an ExportedProgram or GraphModule, not "
            f"{type(program).__name__}"
        )
    return program


def count_litert_gathers(program: torch.export.ExportedProgram | torch.fx.GraphModule) -> int:
    """How many ``tfl.gather`` nodes a (legalized) program holds."""
    gm = program.graph_module if isinstance(program, torch.export.ExportedProgram) else program
    return sum(
        1
        for n in gm.graph.nodes
        if n.op == "call_function" and getattr(n.target, "namespace", None) == "tfl"
        and "gather" in str(n.target)
    )


# ----------------------------------------------------------------------------- inspection

# LiteRT GPU delegate: the builtin ops it accepts and the custom ops it implements.
GPU_BUILTIN_OPS = frozenset(
    """ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD
    FULLY_CONNECTED GATHER GELU GREATER GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL
    LOG LOGICAL_AND LOGISTIC MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL
    ONE_HOT PACK PAD PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6
    RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIGN SIN SLICE
    SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STRIDED_SLICE SUB SUM
    TANH TILE TRANSPOSE TRANSPOSE_CONV UNPACK""".split()
)
GPU_CUSTOM_OPS = frozenset(
    {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
)
_INT32_CONSUMERS = frozenset({"CAST", "GATHER", "ONE_HOT"})


def tflite_ops(path_or_bytes: Any) -> list[dict[str, Any]]:
    """The operators of a .tflite file's main subgraph, in execution order.

    Each entry: ``op`` (builtin name, or the custom code), ``version``, ``inputs`` and
    ``outputs`` as lists of ``{"index", "shape", "dtype", "const"}`` (``const``: the
    tensor holds data in the file), and for STRIDED_SLICE its ``shrink_axis_mask``.
    Uses the flatbuffer schema shipped with ai_edge_litert (no TensorFlow)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = path_or_bytes
    if not isinstance(buf, (bytes, bytearray)):
        with open(buf, "rb") as f:
            buf = f.read()
    model = schema.Model.GetRootAs(buf, 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = builtin_names.get(code, str(code))
        if name == "CUSTOM":
            name = oc.CustomCode().decode()
        codes.append((name, oc.Version()))
    sub = model.Subgraphs(0)

    def tensor(i: int) -> dict[str, Any]:
        if i < 0:
            return {"index": i, "shape": [], "dtype": "NONE", "const": True}
        t = sub.Tensors(i)
        b = t.Buffer()
        const = b > 0 and (
            model.Buffers(b).DataLength() > 0 or model.Buffers(b).Size() > 0
        )
        return {
            "index": i,
            "shape": [int(s) for s in t.ShapeAsNumpy()] if t.ShapeLength() else [],
            "dtype": type_names.get(t.Type(), str(t.Type())),
            "const": bool(const),
        }

    ops = []
    for j in range(sub.OperatorsLength()):
        op = sub.Operators(j)
        name, version = codes[op.OpcodeIndex()]
        entry: dict[str, Any] = {
            "op": name,
            "version": version,
            "inputs": [tensor(int(i)) for i in op.InputsAsNumpy()] if op.InputsLength() else [],
            "outputs": [tensor(int(i)) for i in op.OutputsAsNumpy()],
        }
        if name == "STRIDED_SLICE" and op.BuiltinOptions() is not None:
            opts = schema.StridedSliceOptions()
            opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            entry["shrink_axis_mask"] = opts.ShrinkAxisMask()
        ops.append(entry)
    return ops


def gpu_delegate_problems(path_or_bytes: Any) -> list[str]:
    """What in a .tflite file LiteRT's GPU delegate would refuse, one line per problem
    (empty when every op is acceptable). Checks the documented rules offline: accepted op
    kinds; no tensor of rank >= 5; non-constant INT32 only into CAST/GATHER/ONE_HOT; no
    GATHER_ND; GATHER version 1 with 1-D int32 indices; SLICE/STRIDED_SLICE on 3-D/4-D
    only and without shrink_axis_mask. The real delegate is the final word."""
    ops = tflite_ops(path_or_bytes)
    problems: list[str] = []
    for k, op in enumerate(ops):
        name = op["op"]
        where = f"#{k} {name}"
        if name not in GPU_BUILTIN_OPS and name not in GPU_CUSTOM_OPS:
            problems.append(f"{where}: op not accepted by the GPU delegate")
        for t in op["inputs"] + op["outputs"]:
            if len(t["shape"]) >= 5:
                problems.append(f"{where}: rank-{len(t['shape'])} tensor {t['shape']}")
        if name not in _INT32_CONSUMERS:
            for t in op["inputs"]:
                if t["dtype"] == "INT32" and not t["const"]:
                    problems.append(f"{where}: non-constant INT32 input {t['shape']}")
        if name == "GATHER":
            idx = op["inputs"][1]
            if op["version"] != 1:
                problems.append(f"{where}: version {op['version']} (GPU needs 1)")
            if idx["dtype"] != "INT32" or len(idx["shape"]) != 1:
                problems.append(f"{where}: indices {idx['dtype']} {idx['shape']} (needs 1-D INT32)")
        if name in ("SLICE", "STRIDED_SLICE"):
            rank = len(op["inputs"][0]["shape"])
            if rank not in (3, 4):
                problems.append(f"{where}: on a rank-{rank} tensor (GPU needs 3-D/4-D)")
            if op.get("shrink_axis_mask"):
                problems.append(f"{where}: shrink_axis_mask {op['shrink_axis_mask']}")
    return problems
