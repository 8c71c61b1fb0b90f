"""Adaptive pools for LiteRT: ``litert::adaptive_pool_as_matmul`` (average) and ``litert::adaptive_max_as_pool`` (max).

``litert::adaptive_pool_as_matmul``: an adaptive average pool becomes two constant
averaging matmuls.

``F.adaptive_avg_pool2d(x, (oh, ow))`` whose output size does not divide the input's
(PSPNet's pyramid bins 1, 2, 3, 6 over a 32x32 map; any head pooled to a fixed grid)
lowers through litert-torch to index arithmetic: a GATHER_ND and rank-6 tensors, refused
by LiteRT's GPU delegate (3 of 6 ops of a conv + pool(3, 5) on 16x12 ran on the GPU).
Each output cell is the mean of a rectangle of inputs, so the pool is

    y = P_h @ x @ P_w^T

with P_h [oh, H] and P_w [ow, W] holding 1/(bin size) over each bin
(``graphs.parser.adaptive_pool_matrix``, the parser's own "matmul" pooling). The left
product is a constant-left matmul, which ``litert::matmul_constant_lhs`` (after this pass)
turns into FULLY_CONNECTED; the right one has a constant right operand. The same numbers
up to float rounding of the sums (an exact average of the bin, summed in another order).
A pool whose sizes divide (an ordinary average pool) is left to litert-torch, which
lowers it to AVERAGE_POOL_2D or MEAN, and so is a pool of a tensor that is not 3-D or 4-D.

``litert::adaptive_max_as_pool``: ``F.adaptive_max_pool2d`` (spatial pyramid pooling, RoI
heads) does not convert at all ("Lowering not found: aten.adaptive_max_pool2d"). When only
its values are used it becomes a MAX_POOL_2D with kernel = stride = input / output where
the sizes divide, and otherwise the maximum of each bin (the same bins as the average
pool: SLICE, REDUCE_MAX, CONCATENATION), at most ``MAX_BINS`` of them. Maxima are copied,
so both are exact. A pool whose indices are used is left and named in ``details["left"]``.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.graphs.parser import adaptive_bins, adaptive_pool_matrix
from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder, shape_of
from mirror.passes.resize_as_matmul import apply_separable

aten = torch.ops.aten
_POOLS = (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
MAX_BINS = 64  # per channel: a SLICE pair, a REDUCE_MAX each


def _uneven_pool(node: Node) -> bool:
    if node.op != "call_function" or node.target not in _POOLS:
        return False
    (h, w), (oh, ow) = shape_of(node.args[0])[-2:], node.args[1]
    return bool(h % oh or w % ow)


def _as_matmul(program: ExportedProgram, node: Node) -> bool:
    x, (oh, ow) = node.args[0], node.args[1]
    shape = shape_of(x)
    if len(shape) not in (3, 4):
        return False
    like = torch.zeros((), dtype=x.meta["val"].dtype)
    rows, cols = adaptive_pool_matrix(shape[-2], oh, like), adaptive_pool_matrix(shape[-1], ow, like)
    apply_separable(program, node, x, rows, cols)
    return True


@register("litert::adaptive_pool_as_matmul")
def adaptive_pool_as_matmul(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _uneven_pool, _as_matmul)


def _adaptive_max(node: Node) -> bool:
    return node.op == "call_function" and node.target is aten.adaptive_max_pool2d.default


def _max_as_pool(program: ExportedProgram, node: Node) -> bool:
    x, (oh, ow) = node.args[0], node.args[1]
    shape = shape_of(x)
    values = [u for u in node.users if u.args[1] == 0]
    if any(u.args[1] != 0 and u.users for u in node.users) or len(shape) != 4 or oh * ow > MAX_BINS:
        return False
    (h, w), b = shape[-2:], Builder(program, node)
    if h % oh == 0 and w % ow == 0:
        kernel = [h // oh, w // ow]
        pooled = b.call(aten.max_pool2d.default, x, kernel, kernel)
    else:
        rows = []
        for r0, r1 in adaptive_bins(h, oh):
            band = b.call(aten.slice.Tensor, x, 2, r0, r1, 1)
            cells = [b.call(aten.amax.default, b.call(aten.slice.Tensor, band, 3, c0, c1, 1), [2, 3], True)
                     for c0, c1 in adaptive_bins(w, ow)]  # fmt: skip
            rows.append(b.call(aten.cat.default, cells, 3))
        pooled = b.call(aten.cat.default, rows, 2)
    for user in values:
        user.replace_all_uses_with(pooled)
    return True


@register("litert::adaptive_max_as_pool")
def adaptive_max_as_pool(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _adaptive_max, _max_as_pool)
