"""``litert::topk_as_max``: ``torch.topk`` with a small k becomes k rounds of max-and-take.

litert-torch lowers ``aten.topk`` whose values alone are used to STABLEHLO_SORT and a
SLICE, which LiteRT's CPU interpreter cannot run at all ("Didn't find op for builtin
opcode 'STABLEHLO_SORT'") and its GPU delegate refuses, and any other to TOPK_V2, which is
not a GPU delegate op: a model with a topk (keypoint heads, top-k attention, score
filtering) converted to a file that ran nowhere, or left the topk on the CPU.

For k <= ``MAX_K`` the k largest values along the dimension are taken one round at a time:
the maximum of what is left (REDUCE_MAX), its first position (EQUAL, then CUMSUM of the
hits equal to 1: the first of equal values), its index (MUL by a constant ``arange`` and
SUM), and that position is marked taken (a 0/1 float mask; SELECT to -inf). Values and
indices come out in descending order, as ``topk(..., sorted=True)``; ``largest=False``
takes the maxima of ``-x``. Values are copied, so exact; indices are exact while the dimension has at most 2048
entries in float16 (``FP16_EXACT_LIMIT``: longer ones are left). Among equal values the
lowest index comes first. k > ``MAX_K`` (k rounds of work over the whole dimension), an
integer input, or a rank above 4 is left and named in ``details["left"]``.
"""

from __future__ import annotations

import operator

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import MAX_RANK, Builder, shape_of
from mirror.passes.sampling import FP16_EXACT_LIMIT

aten = torch.ops.aten
MAX_K = 32


def _topk(node: Node) -> bool:
    return node.op == "call_function" and node.target is aten.topk.default


def _args(node: Node) -> tuple[Node, int, int, bool]:
    names = ("self", "k", "dim", "largest", "sorted")
    given = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
    x = given["self"]
    return x, given["k"], given.get("dim", -1) % len(shape_of(x)), given.get("largest", True)


def _round(b: Builder, y: Node, taken: Node | None, positions: Node) -> tuple[Node, Node, Node]:
    """One round: (the max of what is left, its first index as a float, the taken mask
    updated). The mask is a float 0/1 tensor: the delegate has LOGICAL_AND but neither
    LOGICAL_OR nor LOGICAL_NOT."""
    dtype = y.meta["val"].dtype
    left, hit_free = y, None
    if taken is not None:
        is_taken = b.call(aten.gt.Scalar, taken, 0.5)
        left = b.call(aten.where.self, is_taken, b.call(aten.full_like.default, y, float("-inf")), y)
        hit_free = b.call(aten.le.Scalar, taken, 0.5)
    top = b.call(aten.amax.default, left, [-1], True)
    hit = b.call(aten.eq.Tensor, left, top)
    hit = hit if hit_free is None else b.call(aten.logical_and.default, hit, hit_free)
    count = b.call(aten.cumsum.default, b.call(aten._to_copy.default, hit, dtype=dtype), -1)
    first = b.call(aten._to_copy.default, b.call(aten.logical_and.default, hit, b.call(aten.eq.Scalar, count, 1.0)),
                   dtype=dtype)  # fmt: skip
    index = b.call(aten.sum.dim_IntList, b.call(aten.mul.Tensor, first, positions), [-1], True)
    return top, index, first if taken is None else b.call(aten.add.Tensor, taken, first)


def _as_max(program: ExportedProgram, node: Node) -> bool:
    x, k, dim, largest = _args(node)
    val, shape = x.meta["val"], shape_of(x)
    if not val.is_floating_point() or len(shape) > MAX_RANK or k > MAX_K or shape[dim] > FP16_EXACT_LIMIT:
        return False
    b = Builder(program, node)
    order = [d for d in range(len(shape)) if d != dim] + [dim]
    y = x if order == sorted(order) else b.call(aten.permute.default, x, order)
    y = y if largest else b.call(aten.neg.default, y)
    positions = add_constant(program, f"{node.name}_positions", torch.arange(shape[dim], dtype=val.dtype))
    taken, values, indices = None, [], []
    for _ in range(k):
        top, index, taken = _round(b, y, taken, positions)
        values.append(top if largest else b.call(aten.neg.default, top))
        indices.append(index)
    back = [order.index(d) for d in range(len(order))]
    outs = [b.call(aten.cat.default, values, -1), b.call(aten.cat.default, indices, -1)]
    outs = [o if order == sorted(order) else b.call(aten.permute.default, o, back) for o in outs]
    outs[1] = b.call(aten._to_copy.default, outs[1], dtype=torch.int64)
    for user in list(node.users):
        if user.target is operator.getitem:
            user.replace_all_uses_with(outs[user.args[1]])
    return True


@register("litert::topk_as_max")
def topk_as_max(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _topk, _as_max)
