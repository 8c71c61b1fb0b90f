"""``litert::float_cast_first``: a float cast of an integer tensor moves in front of its layout ops.

``F.one_hot(labels, K).permute(0, 3, 1, 2).float()`` permutes an integer tensor and casts
it afterwards. LiteRT's GPU delegate takes a runtime int32 tensor only into CAST, GATHER
and ONE_HOT, so the TRANSPOSE (and any RESHAPE, SLICE on the way) falls back to the CPU,
splitting the graph around it. Data movement commutes with an elementwise cast, so

    cast_float(layout_n(... layout_1(x)))  ==  layout_n(... layout_1(cast_float(x)))

exactly, and the layout ops then move floats. A widening integer cast of a bool or
integer tensor right before (``one_hot``'s int64 result from a bool mask) is dropped too:
``float(int64(b)) == float(b)``. Only chains whose every op has the cast as its one
consumer are moved, so no integer copy is still needed elsewhere.

LiteRT's WebGPU accelerator did run an int32 TRANSPOSE (``tests/user_models.py:label_cond``:
13 of 13 ops on the real delegate without this pass, 12 of 12 with it), but the delegate's
documented rules refuse it and the static check counts it as a CPU op (7 of 13 in 2
partitions without the pass): with the cast first no int32 tensor is left to depend on.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder

aten = torch.ops.aten
_LAYOUT = frozenset({
    aten.permute.default, aten.reshape.default, aten.view.default, aten._unsafe_view.default,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
    aten.flatten.using_ints, aten.clone.default, aten.alias.default, aten.expand.default,
    aten.slice.Tensor, aten.select.int,
})  # fmt: skip
_ASSERT = aten._assert_tensor_metadata.default


def _dtype(node: object) -> torch.dtype | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


def _integral(node: object) -> bool:
    dtype = _dtype(node)
    return dtype is not None and not dtype.is_floating_point and not dtype.is_complex


def _cast(node: Node) -> bool:
    """A plain dtype cast: ``_to_copy(x, dtype=...)`` or ``x.to(dtype)`` (as exported)."""
    if node.op != "call_function":
        return False
    if node.target is aten._to_copy.default:
        return set(node.kwargs) <= {"dtype"}
    return node.target is aten.to.dtype and not any(node.args[2:]) and not node.kwargs.get("copy")


def _users(node: Node) -> list[Node]:
    """The node's users, less export's dtype assertions (``_assert_tensor_metadata``), which
    check the integer dtype the moved chain no longer has and go with it."""
    return [u for u in node.users if u.target is not _ASSERT]


def _widening(node: Node) -> bool:
    """An integer cast that keeps every value of its bool or integer input."""
    if not (_cast(node) and len(_users(node)) == 1 and _integral(node) and _integral(node.args[0])):
        return False
    src, dst = _dtype(node.args[0]), _dtype(node)
    return src == torch.bool or (src.is_signed == dst.is_signed and src.itemsize <= dst.itemsize)


def _movable(node: Node) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and len(_users(node)) == 1 and (
        node.target in _LAYOUT or _widening(node))


def _picked(node: Node) -> bool:
    dtype = _dtype(node)
    return (_cast(node) and dtype is not None and dtype.is_floating_point
            and _integral(node.args[0]) and _movable(node.args[0]))


def _cast_first(program: ExportedProgram, node: Node) -> None:
    chain, x = [], node.args[0]
    while _movable(x):
        for check in set(x.users) - set(_users(x)):
            program.graph.erase_node(check)
        if x.target in _LAYOUT:
            chain.append(x)
        x = x.args[0]
    b = Builder(program, node)
    y = b.call(aten._to_copy.default, x, dtype=_dtype(node))
    for op in reversed(chain):
        y = b.call(op.target, y, *op.args[1:], **op.kwargs)
    node.replace_all_uses_with(y)


@register("litert::float_cast_first")
def float_cast_first(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _picked, _cast_first)
