"""``litert::gather_as_select``: ``torch.gather`` becomes a one-hot select over the gathered dimension.

``torch.gather(x, dim, idx)`` exports as ``aten.gather``, which litert-torch lowers to
GATHER_ND (plus bounds-check ops). LiteRT's GPU delegate refuses GATHER_ND, so the gather
runs on the CPU and splits the graph around it. GATHER v1 (``litert::gather_v1``) will not
do: it reads whole slices at one 1-D index, while ``gather`` picks a different element in
every row. With ``dim`` moved last and the other dimensions flattened (x [R, K], idx
[R, J]) a gather is a select against the positions 0..K-1:

    out[r, j] = sum_k (float(idx[r, j]) == k) * x[r, k]

The index is cast to x's float dtype first (CAST, which the delegate takes on an int32
input; any other op on a runtime int32 tensor it refuses), compared with a constant
``arange(K)`` (EQUAL), and the 0/1 mask multiplies x and is summed over K (CAST, MUL, SUM).
TRANSPOSE and RESHAPE move the data, and SLICE first cuts x down to idx's sizes in the other
dimensions, where ``gather`` allows idx to be smaller. Every tensor stays at rank <= 4 (the
[R, J, K] mask and product are 3-D).

Cost: K multiply-adds per output, and a mask and a product of R*J*K elements each. A sum of
exact zeros and one x is that x, so the rewrite is exact in float32, and in float16 while the
compare is, which holds for K <= 2048 (float16 holds integers exactly only up to 2048,
``FP16_EXACT_LIMIT``). A gather with a larger K, a product over ``MAX_ELEMENTS``, a non-float
x or a tensor of rank > 4 is left as it is and named in ``details["left"]``, so the CPU
fallback report still names its source line.

``gather`` raises on an index outside [0, K) (negative ones included: it does not count
from the end), so no wrap is needed; the select reads 0 there. A non-finite x poisons its
row: 0 * inf is NaN, where ``gather`` would copy the inf only to the outputs that pick it.
"""

from __future__ import annotations

import math

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import MAX_RANK, Builder, shape_of
from mirror.passes.sampling import FP16_EXACT_LIMIT

aten = torch.ops.aten
# R*J*K, the size of the one-hot mask and of its product with x: both are materialized, so
# 2**22 elements is 16 MiB each in float32 on the phone's GPU. A larger gather stays on the CPU.
MAX_ELEMENTS = 1 << 22


def _gather(node: Node) -> bool:
    return node.op == "call_function" and node.target is aten.gather.default


def _fits(node: Node) -> bool:
    """Whether the select form of a gather is exact in float16 and small enough."""
    x, dim, idx = node.args[:3]
    xv, iv = x.meta["val"], idx.meta["val"]
    if not xv.is_floating_point() or not 1 <= xv.dim() <= MAX_RANK:
        return False
    k = xv.shape[dim % xv.dim()]
    return k <= FP16_EXACT_LIMIT and iv.numel() * k <= MAX_ELEMENTS


def _cut(b: Builder, x: Node, sizes: list[int]) -> Node:
    """``x`` cut down to ``sizes``; SLICE runs on a view of rank >= 3 (the GPU delegate
    slices 3-D and 4-D tensors only)."""
    shape = shape_of(x)
    if shape == sizes:
        return x
    lead = max(0, 3 - len(shape))
    y = b.reshape(x, [1] * lead + shape)
    for d, (have, want) in enumerate(zip(shape, sizes, strict=True)):
        if want < have:
            y = b.call(aten.slice.Tensor, y, lead + d, 0, want, 1)
    return b.reshape(y, sizes)


def _move(b: Builder, x: Node, order: list[int]) -> Node:
    return x if order == sorted(order) else b.call(aten.permute.default, x, order)


def _select(program: ExportedProgram, node: Node) -> bool:
    if not _fits(node):
        return False
    b = Builder(program, node)
    x, dim, idx = node.args[:3]
    dtype = x.meta["val"].dtype
    sizes = shape_of(idx)
    dim %= len(sizes)
    k, j = shape_of(x)[dim], sizes[dim]
    x = _cut(b, x, [k if d == dim else s for d, s in enumerate(sizes)])
    order = [d for d in range(len(sizes)) if d != dim] + [dim]
    rows = math.prod(sizes[d] for d in order[:-1])
    table = b.reshape(_move(b, x, order), [rows, 1, k])
    # Cast before moving: any op but CAST on a runtime int32 tensor falls off the GPU.
    at = b.call(aten._to_copy.default, idx, dtype=dtype)
    at = b.reshape(_move(b, at, order), [rows, j, 1])
    positions = add_constant(program, f"{node.name}_positions", torch.arange(k, dtype=dtype))
    hit = b.call(aten._to_copy.default, b.call(aten.eq.Tensor, at, positions), dtype=dtype)
    picked = b.call(aten.sum.dim_IntList, b.call(aten.mul.Tensor, hit, table), [2])
    out = b.reshape(picked, [sizes[d] for d in order])
    node.replace_all_uses_with(_move(b, out, [order.index(d) for d in range(len(order))]))
    return True


@register("litert::gather_as_select")
def gather_as_select(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _gather, _select)
