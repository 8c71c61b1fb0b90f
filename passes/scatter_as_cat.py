"""``scatter_as_cat``: ``select_scatter`` / ``slice_scatter`` become slices and a concat.

An in-place assignment into a slice (``new_locs[:, i] = ...``, as VoxelMorph's spatial
transformer normalizes its grid) exports as ``select_scatter`` or ``slice_scatter``.
litert-torch lowers those to SELECT_V2 with a broadcast boolean mask, which LiteRT's GPU
delegate refuses ("if, else tensors must be either be same the shape as output or
constant"), splitting the graph around every assignment. Writing part ``[start, end)``
of ``base`` along a dimension is the same as concatenating ``base`` before ``start``,
the new values and ``base`` after ``end``: SLICE and CONCATENATION, which the delegate
runs. Values are copied, so the rewrite is exact. Strided slices are left as they are.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder

aten = torch.ops.aten
_SCATTERS = (aten.select_scatter.default, aten.slice_scatter.default)


def _bounds(node: Node) -> tuple[int, int, int] | None:
    """(dim, start, end) written by a scatter with static shapes, or None."""
    base = node.args[0].meta["val"]
    dim = node.args[2] % base.dim() if len(node.args) > 2 else 0
    size = base.shape[dim]
    if node.target is aten.select_scatter.default:
        index = node.args[3] % size
        return dim, index, index + 1
    args = list(node.args[3:]) + [None] * (3 - len(node.args[3:]))
    start, end, step = args[0] or 0, size if args[1] is None else args[1], args[2] or 1
    if step != 1 or not all(isinstance(v, int) for v in (start, end, size)):
        return None
    start, end = (max(0, min(size, v + size if v < 0 else v)) for v in (start, end))
    return dim, start, max(start, end)  # an end before the start writes nothing


def _as_cat(program: ExportedProgram, node: Node, dim: int, start: int, end: int) -> Node:
    b = Builder(program, node)
    base, src = node.args[0], node.args[1]
    size = base.meta["val"].shape[dim]
    if start == end:  # an empty slice: nothing is written
        return base
    if node.target is aten.select_scatter.default:
        shape = list(src.meta["val"].shape)
        src = b.reshape(src, shape[:dim] + [1] + shape[dim:])
    parts = [b.call(aten.slice.Tensor, base, dim, 0, start, 1)] if start > 0 else []
    parts.append(src)
    if end < size:
        parts.append(b.call(aten.slice.Tensor, base, dim, end, size, 1))
    return parts[0] if len(parts) == 1 else b.call(aten.cat.default, parts, dim)


def _replace(program: ExportedProgram, node: Node) -> None:
    node.replace_all_uses_with(_as_cat(program, node, *_bounds(node)))


@register("scatter_as_cat")
def scatter_as_cat(program: ExportedProgram) -> PassResult:
    return rewrite_each(
        program, lambda n: n.op == "call_function" and n.target in _SCATTERS and _bounds(n) is not None, _replace
    )
