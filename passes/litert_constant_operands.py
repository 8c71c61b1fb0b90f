"""``litert::constant_operands_4d``: elementwise ops with a constant operand run on rows.

LiteRT's GPU delegate accepts an elementwise op (ADD, MUL, SUB, ...) whose second operand
is a constant, but reads a constant of rank < 4 as one vector along the last axis: on the
real delegate ``x[4, 6, 5] + c[4, 6, 5]``, ``x[8, 9] + c[8, 9]``, ``x[72] + c[72]`` and
``x[4, 6, 5] + c[4, 1, 1]`` all came out wrong (by up to the constant's own magnitude)
while the CPU was exact; the same ops on 4-D operands, and a ``[1, C]`` constant, were
right. Reshaping to 4-D with leading 1s does not help: the converter folds such a reshape
into the op's broadcasting and the 3-D operand is back. Folded base grids, batch offsets
and materialized broadcasts are exactly such constants. So each elementwise op whose
output has rank < 4 and that reads a multi-element constant other than a ``[1, ..., 1, C]``
row runs on ``[1, numel]`` views of its operands, with the constant stored at full size
in that shape (the form the delegate reads right). Only views and copies are added, so
the rewrite is exact.
"""

from __future__ import annotations

import math

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant, lifted_value
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder


def _needs_4d(program: ExportedProgram, node: Node) -> bool:
    if node.op != "call_function" or torch.Tag.pointwise not in getattr(node.target, "tags", ()):
        return False
    out = node.meta.get("val")
    if not isinstance(out, torch.Tensor) or out.dim() >= 4 or out.dim() == 0:
        return False
    for a in node.args:
        value = lifted_value(program, a) if isinstance(a, Node) else None
        if value is None or value.numel() <= 1:
            continue
        shape = [1] * (out.dim() - value.dim()) + list(value.shape)
        if out.dim() == 1 or any(s != 1 for s in shape[:-1]):
            return True
    return False


def _rewrite(program: ExportedProgram, node: Node) -> bool:
    """The op on [1, numel] rows, its constants stored at full size, in place of ``node``;
    False (``node`` left as it is) if a runtime operand broadcasts."""
    out = list(node.meta["val"].shape)
    row = [1, math.prod(out)]
    b = Builder(program, node)
    args = list(node.args)
    for i, a in enumerate(args):
        if not isinstance(a, Node):
            continue
        value = lifted_value(program, a)
        if value is not None and value.numel() > 1:
            full = value.reshape([1] * (len(out) - value.dim()) + list(value.shape)).expand(out)
            args[i] = add_constant(program, f"{a.name}_row", full.reshape(row).contiguous())
        elif list(a.meta["val"].shape) == out:
            args[i] = b.reshape(a, row)
        elif a.meta["val"].numel() != 1:
            return False
    node.replace_all_uses_with(b.reshape(b.call(node.target, *args, **node.kwargs), out))
    return True


@register("litert::constant_operands_4d")
def constant_operands_4d(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, lambda n: _needs_4d(program, n), _rewrite)
