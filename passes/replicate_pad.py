"""``litert::replicate_pad_as_cat``: replicate padding becomes copies of the edge slices, concatenated.

``F.pad(x, pads, mode="replicate")``, and every ``nn.Conv2d(..., padding_mode="replicate")``
(common in GAN generators: it keeps image borders free of the dark frame zero padding
leaves), exports as ``aten.pad(..., "replicate")``. litert-torch lowers it to a MIRROR_PAD
in a mode LiteRT's GPU delegate refuses ("Only Reflective padding is supported for
Mirror Pad operation"), so each such pad drops the graph to the CPU and back.

Replicating the border is copying it: along each padded dimension the first (last) slice
of width 1 is concatenated ``before`` (``after``) times around the tensor (SLICE and
CONCATENATION, both delegate ops). Values are copied, never computed, so the
rewrite is exact. A pad of a tensor below rank 3 or above rank 4 (the delegate slices 3-D
and 4-D tensors only) is left and named in ``details["left"]``.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder, shape_of

aten = torch.ops.aten


def _replicate_pad(node: Node) -> bool:
    if node.op != "call_function" or node.target is not aten.pad.default:
        return False
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    return mode == "replicate"


def copy_edges(b: Builder, x: Node, dim: int, before: int, after: int) -> list[Node]:
    """``x`` along ``dim`` between ``before`` copies of its first width-1 slice and ``after``
    copies of its last, as the list to concatenate (copies, not ``repeat``: litert-torch's
    TILE lowering of a repeat along W came out with the wrong shape after its NHWC layout
    change)."""
    n = shape_of(x)[dim]
    first = [b.call(aten.slice.Tensor, x, dim, 0, 1, 1)] * before if before else []
    last = [b.call(aten.slice.Tensor, x, dim, n - 1, n, 1)] * after if after else []
    return [*first, x, *last]


def _as_cat(program: ExportedProgram, node: Node) -> bool:
    x, pads = node.args[0], list(node.args[1])
    rank = len(shape_of(x))
    if not 3 <= rank <= 4 or any(p < 0 for p in pads):
        return False
    b = Builder(program, node)
    for k in range(len(pads) // 2):  # (before, after) of the last dimension first
        dim, before, after = rank - 1 - k, pads[2 * k], pads[2 * k + 1]
        if before or after:
            x = b.call(aten.cat.default, copy_edges(b, x, dim, before, after), dim)
    node.replace_all_uses_with(x)
    return True


@register("litert::replicate_pad_as_cat")
def replicate_pad_as_cat(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _replicate_pad, _as_cat)
