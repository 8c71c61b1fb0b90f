"""``litert::select_operands``: a ``where`` reads its constant branches at the output's shape.

``torch.where(cond, a, b)`` lowers to SELECT_V2. LiteRT's GPU delegate takes it only if
each branch has the output's shape or is a constant scalar ("if, else tensors must be
either be same the shape as output or constant, scalar"); a per-class constant such as the
``arange`` of a float argmax (``where(logits >= top, index[1, C, 1, 1], ...)``) broadcasts
and is refused. A constant branch that broadcasts is stored at the output's full shape
instead: the same values, so the rewrite is exact. Branches computed at run time are left
as they are (and listed in ``details["left"]``).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant, lifted_value
from mirror.passes.graph_utils import rewrite_each

_WHERE = torch.ops.aten.where.self


def _broadcast_constants(program: ExportedProgram, node: Node) -> list[int]:
    """Positions of ``node``'s branches that are multi-element constants of another shape."""
    if node.op != "call_function" or node.target is not _WHERE:
        return []
    out = list(node.meta["val"].shape)
    found = []
    for i in (1, 2):
        a = node.args[i]
        value = lifted_value(program, a) if isinstance(a, Node) else None
        if value is not None and value.numel() > 1 and list(value.shape) != out:
            found.append(i)
    return found


@register("litert::select_operands")
def select_operands(program: ExportedProgram, max_elements: int = 1 << 22) -> PassResult:
    def expand(program: ExportedProgram, node: Node) -> bool:
        out = list(node.meta["val"].shape)
        if torch.Size(out).numel() > max_elements:
            return False
        args = list(node.args)
        for i in _broadcast_constants(program, node):
            full = lifted_value(program, args[i]).expand(out)
            args[i] = add_constant(program, f"{args[i].name}_full", full)
        node.args = tuple(args)
        return True

    return rewrite_each(program, lambda n: _broadcast_constants(program, n), expand)
