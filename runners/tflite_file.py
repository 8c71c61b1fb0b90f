"""Reading a .tflite flatbuffer: its signature, tensors (with quantization) and ops.

Uses the schema module shipped in ai_edge_litert, so it needs neither TensorFlow nor a
converter. The LiteRT runners read signatures and boundary quantization from it; the GPU
delegate checker reads ops and tensors.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mirror import MirrorError


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str  # "FLOAT32", "INT32", ...
    shape: tuple[int, ...]
    constant: bool
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()


@dataclass
class OpInfo:
    index: int
    name: str  # builtin name ("CONV_2D") or the custom code
    version: int
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    custom: bool = False
    options: dict[str, int] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """One subgraph of a .tflite model, with its signature (names in definition order)."""

    tensors: list[TensorInfo]
    ops: list[OpInfo]
    signature_key: str | None
    signature_inputs: list[tuple[str, int]]  # (name, tensor index), in definition order
    signature_outputs: list[tuple[str, int]]
    subgraph_inputs: list[int]
    subgraph_outputs: list[int]

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = defaultdict(int)
        for op in self.ops:
            hist[op.name] += 1
        return dict(sorted(hist.items()))


def read_tflite(path: Path | str, signature: str | None = None) -> TFLiteGraph:
    """Read the ops and tensors of the subgraph behind ``signature`` (default: the first).

    A damaged or truncated file is a MirrorError: flatbuffers are read lazily, so offsets
    that point past the end or at garbage surface as struct/unicode errors anywhere below.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MirrorError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return _read(data, signature, path)
    except (struct.error, ValueError, TypeError, IndexError, UnicodeDecodeError, AttributeError) as exc:
        raise MirrorError(f"{Path(path).name} is not a readable .tflite flatbuffer (damaged or truncated: "
                          f"{type(exc).__name__}); rebuild or recopy it") from None  # fmt: skip


def _read(data: bytes, signature: str | None, path: Path | str) -> TFLiteGraph:
    from ai_edge_litert import schema_py_generated as fb

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise MirrorError(f"{Path(path).name} is not a .tflite flatbuffer (no TFL3 identifier)")
    model = fb.Model.GetRootAs(data, 0)
    sig_key, sub_index, sig_in, sig_out = _signature(model, signature, path)
    g = model.Subgraphs(sub_index)
    tensors = [_tensor(fb, model, g.Tensors(t), t) for t in range(g.TensorsLength())]
    ops = [_op(fb, model, g.Operators(i), i) for i in range(g.OperatorsLength())]
    sub_in = [int(x) for x in g.InputsAsNumpy()] if g.InputsLength() else []
    sub_out = [int(x) for x in g.OutputsAsNumpy()] if g.OutputsLength() else []
    # SignatureDefs list names alphabetically; the subgraph keeps the definition order.
    sig_in.sort(key=lambda e: sub_in.index(e[1]) if e[1] in sub_in else len(sub_in))
    sig_out.sort(key=lambda e: sub_out.index(e[1]) if e[1] in sub_out else len(sub_out))
    return TFLiteGraph(tensors, ops, sig_key, sig_in, sig_out, sub_in, sub_out)


@cache
def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _signature(model: Any, signature: str | None, path: Path | str) -> tuple[str | None, int, list, list]:
    """(key, subgraph index, inputs, outputs) of the wanted signature, or of the first one."""
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        key = sd.SignatureKey().decode()
        if signature is None or key == signature:
            ins = [(sd.Inputs(j).Name().decode(), sd.Inputs(j).TensorIndex()) for j in range(sd.InputsLength())]
            outs = [(sd.Outputs(j).Name().decode(), sd.Outputs(j).TensorIndex()) for j in range(sd.OutputsLength())]
            return key, sd.SubgraphIndex(), ins, outs
    if signature is not None:
        raise KeyError(f"no signature {signature!r} in {path}")
    return None, 0, [], []


def _tensor(fb: Any, model: Any, ten: Any, index: int) -> TensorInfo:
    b = model.Buffers(ten.Buffer()) if ten.Buffer() < model.BuffersLength() else None
    const = b is not None and (b.DataLength() > 0 or b.Offset() > 1)
    scale: tuple[float, ...] = ()
    zp: tuple[int, ...] = ()
    q = ten.Quantization()
    if q is not None and q.ScaleLength() > 0:
        scale = tuple(float(x) for x in q.ScaleAsNumpy())
        zp = tuple(int(x) for x in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else ()
    return TensorInfo(
        index=index,
        name=(ten.Name() or b"").decode("utf-8", "replace"),
        dtype=_enum_names(fb.TensorType).get(ten.Type(), str(ten.Type())),
        shape=tuple(int(x) for x in ten.ShapeAsNumpy()) if ten.ShapeLength() else (),
        constant=bool(const),
        scale=scale,
        zero_point=zp,
    )


def _op(fb: Any, model: Any, op: Any, index: int) -> OpInfo:
    oc = model.OperatorCodes(op.OpcodeIndex())
    code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
    name = _enum_names(fb.BuiltinOperator).get(code, f"BUILTIN_{code}")
    custom = name == "CUSTOM"
    if custom:
        name = (oc.CustomCode() or b"").decode("utf-8", "replace")
    return OpInfo(
        index=index,
        name=name,
        version=oc.Version(),
        inputs=[int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else [],
        outputs=[int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else [],
        custom=custom,
        options=_options(fb, op),
    )


def _options(fb: Any, op: Any) -> dict[str, int]:
    """The builtin options the GPU rules look at (GATHER's axis/batch_dims, STRIDED_SLICE masks)."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    kind = op.BuiltinOptionsType()
    if kind == fb.BuiltinOptions.GatherOptions:
        o = fb.GatherOptions()
        o.Init(table.Bytes, table.Pos)
        return {"axis": o.Axis(), "batch_dims": o.BatchDims()}
    if kind == fb.BuiltinOptions.StridedSliceOptions:
        o = fb.StridedSliceOptions()
        o.Init(table.Bytes, table.Pos)
        return {
            "shrink_axis_mask": o.ShrinkAxisMask(),
            "new_axis_mask": o.NewAxisMask(),
            "ellipsis_mask": o.EllipsisMask(),
        }
    return {}


def _our_levels(tensor_name: str) -> list[str] | None:
    """The levels of a name our LiteRT target wrote (root, modules..., FX node), else None."""
    parts = tensor_name.split(";;")[0].split(";")[0].split("/")
    return parts if len(parts) >= 2 and "." not in parts[0] else None


def fx_node(tensor_name: str) -> str:
    """The FX node a tensor of our artifacts comes from ('' for other names)."""
    levels = _our_levels(tensor_name)
    return levels[-1] if levels else ""


def module_path(tensor_name: str) -> str:
    """The torch module path a tensor name encodes ('' for the root module or none).

    Our artifacts name a tensor ``<graph>/<path relative to parent>/.../<FX node>;N``
    (``warp/aflow_net/netRefine.3/0/conv2d_12;4`` is node ``conv2d_12`` of
    ``aflow_net.netRefine.3.0``, see ``targets/tflite.py``). Stock litert-torch writes
    ``<root class>/<class>_<attribute>/...`` (``__main__.M/torch.nn.modules.conv.Conv2d_conv``),
    whose root is a dotted class name; there the attribute is what follows the first ``_``
    after a class's last dot (class names are CamelCase), and a ModuleList's own name is
    lost. A fused activation joins two names with ``;;``, the activation's (the tensor's
    final value) first. Constants (``arith.constant3``) and inputs give ''.
    """
    levels = _our_levels(tensor_name)
    if levels is not None:
        return ".".join(levels[1:-1])
    parts = tensor_name.split(";;")[0].split(";")[0].split("/")
    attrs = []
    for part in parts[1:]:
        attr = part[part.rfind(".") + 1 :].partition("_")[2]
        if not attr:
            break
        attrs.append(attr)
    return ".".join(attrs)
