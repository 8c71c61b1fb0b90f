"""Read-only measurements of an exported program: op kinds, FLOPs, parameters, parity."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.export import ExportedProgram

# Pointwise ops count one FLOP per output element; reductions one per input element.
_POINTWISE = {
    "add", "sub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow",
    "tanh", "sigmoid", "relu", "leaky_relu", "hardtanh", "clamp", "clamp_min", "clamp_max",
    "minimum", "maximum", "floor", "ceil", "where", "eq", "ne", "lt", "le", "gt", "ge",
    "_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm",
    "upsample_bilinear2d", "upsample_nearest2d", "reciprocal", "square",
}
_REDUCTIONS = {"sum", "mean", "amax", "amin", "prod"}


def op_kind(node: torch.fx.Node) -> str:
    """A short, stable name for a call_function node's op, e.g. ``convolution``."""
    target = node.target
    name = getattr(target, "__name__", str(target))
    # aten ops print as "convolution.default"; keep the packet name only.
    return name.split(".")[0]


def is_pointwise(kind: str) -> bool:
    """Whether an op kind (``op_kind``) is elementwise: one FLOP per output element."""
    return kind in _POINTWISE


def op_counts(program: ExportedProgram) -> Counter:
    """How many call_function nodes of each op kind the program holds."""
    return Counter(op_kind(n) for n in program.graph.nodes if n.op == "call_function")


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return int(math.prod(value.shape))
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return int(math.prod(value[0].shape))
    return 0


def node_flops(node: torch.fx.Node) -> int:
    """FLOPs of one node from the shapes recorded at export (multiply-add = 2 FLOPs)."""
    if node.op != "call_function":
        return 0
    kind = op_kind(node)
    out = node.meta.get("val")
    if kind in {"conv2d", "convolution"}:
        weight = node.args[1].meta["val"]
        # aten.convolution carries `transposed` at index 6; conv2d is never transposed.
        transposed = kind == "convolution" and len(node.args) > 6 and bool(node.args[6])
        k = int(math.prod(weight.shape[2:]))
        if transposed:  # every input element meets every kernel tap of its group
            return 2 * _numel(node.args[0].meta["val"]) * int(weight.shape[1]) * k
        return 2 * _numel(out) * int(weight.shape[1]) * k
    if kind in {"mm", "addmm", "bmm", "matmul", "linear"}:
        a = node.args[1 if kind == "addmm" else 0].meta["val"]
        return 2 * _numel(out) * int(a.shape[-1])
    if kind in {"grid_sampler", "grid_sampler_2d"}:
        return 8 * _numel(out)  # 4 taps, a multiply-add each
    if kind in _POINTWISE:
        return _numel(out)
    if kind in _REDUCTIONS:
        return _numel(node.args[0].meta.get("val"))
    return 0


def count_flops(program: ExportedProgram) -> int:
    return sum(node_flops(n) for n in program.graph.nodes)


def count_params(program: ExportedProgram) -> int:
    """Parameter elements the graph actually reads (BatchNorm statistics excluded)."""
    sig = program.graph_signature
    used = {
        sig.inputs_to_parameters[n.name]
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name in sig.inputs_to_parameters and n.users
    }
    return sum(program.state_dict[name].numel() for name in used)


def _flatten(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    flat: list[torch.Tensor] = []
    for o in outputs:
        flat.extend(_flatten(o))
    return flat


@torch.no_grad()
def max_abs_difference(
    program: ExportedProgram,
    reference: Callable[..., Any],
    example_inputs: tuple[torch.Tensor, ...],
    want: Any = None,
) -> float:
    """Largest absolute difference between the program and ``reference`` over all outputs.

    ``want``: the reference's outputs on ``example_inputs`` when the caller already has them
    (``reference_outputs``); the reference is not run again then."""
    got = _flatten(program.module()(*example_inputs))
    want = _flatten(reference(*example_inputs) if want is None else want)
    if len(got) != len(want):
        raise ValueError(f"program has {len(got)} outputs, reference has {len(want)}")
    return max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True))


@torch.no_grad()
def reference_outputs(reference: Callable[..., Any], example_inputs: tuple[torch.Tensor, ...]) -> Any:
    """``reference(*example_inputs)``, for ``max_abs_difference(..., want=...)``."""
    return reference(*example_inputs)
