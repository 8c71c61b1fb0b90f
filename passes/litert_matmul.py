"""``litert::matmul_constant_lhs``: ``A @ X`` with a constant ``A`` becomes ``(X^T @ A^T)^T``.

A matmul whose left operand is a constant and whose right one is computed (a pooling
matrix applied to a feature map, ``P_h @ x``, as the coarse parser's delegate-friendly
pyramid pooling writes it) lowers to BATCH_MATMUL, which LiteRT's GPU delegate refuses
("Not supported batched mat mul case: non-constant tensor"). With the constant on the right
the converter emits FULLY_CONNECTED, which the delegate runs; two TRANSPOSEs of the last
two dimensions move the operands there. The products are the same; only the order of the
float32 sums may differ.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant, lifted_value
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder

aten = torch.ops.aten


def _constant_lhs(program: ExportedProgram, node: Node) -> bool:
    if node.op != "call_function" or node.target is not aten.matmul.default:
        return False
    lhs, rhs = node.args[:2]
    value = lifted_value(program, lhs) if isinstance(lhs, Node) else None
    return (value is not None and value.dim() == 2 and isinstance(rhs, Node) and lifted_value(program, rhs) is None
            and rhs.meta["val"].dim() >= 2)  # fmt: skip


def _swap_last(b: Builder, x: Node) -> Node:
    perm = list(range(x.meta["val"].dim()))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return b.call(aten.permute.default, x, perm)


def _constant_right(program: ExportedProgram, node: Node) -> None:
    b = Builder(program, node)
    lhs, rhs = node.args[:2]
    lhs_t = add_constant(program, f"{lhs.name}_t", lifted_value(program, lhs).t().contiguous())
    product = b.call(aten.matmul.default, _swap_last(b, rhs), lhs_t)
    node.replace_all_uses_with(_swap_last(b, product))


@register("litert::matmul_constant_lhs")
def matmul_constant_lhs(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, lambda n: _constant_lhs(program, n), _constant_right)
