"""``index_as_select``: indexing one dimension with a 1-D index becomes slices or a gather.

``x[..., [1, 0]]`` (VoxelMorph swapping the grid's (y, x) to (x, y)) and ``x[:, idx]``
export as ``aten.index.Tensor``, which litert-torch lowers to GATHER_ND, an op LiteRT's
GPU delegate refuses. Indexing a single dimension with a 1-D index is ``index_select``
along it. A constant index of a few entries is written as slices of its consecutive runs
and a concat (SLICE, CONCATENATION); any other 1-D index becomes ``index_select``, which
the LiteRT pipeline's ``litert::gather_v1`` turns into GATHER v1. ``index`` counts
negative entries from the end and ``index_select`` refuses them, so a constant index is
stored wrapped into range and a runtime one is wrapped by a ``remainder``. Values are
copied, so the rewrite is exact.

A select by a runtime scalar (``x.select(2, j)`` or ``x[:, :, j]`` with a 0-d tensor
``j``) exports as ``select.int`` at ``item(j)``, which litert-torch cannot convert at all
(its lowering needs a concrete index), or as ``index`` with a 0-d index. Both become
``index_select`` at ``j`` viewed as one entry (wrapped by a ``remainder``, as ``select``
also counts from the end) and a ``squeeze`` of the selected dimension.
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
MAX_SLICES = 16  # a longer constant index is gathered instead


def _int_index(node: Node, rank: int) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dim() == rank and val.dtype in (torch.int64, torch.int32)


def _index_along(node: Node, rank: int) -> tuple[int, Node] | None:
    """(dim, index) of an ``index`` along one dimension with an integer index of ``rank``."""
    if node.op != "call_function" or node.target is not aten.index.Tensor:
        return None
    used = [(d, i) for d, i in enumerate(node.args[1]) if i is not None]
    if len(used) != 1 or not isinstance(used[0][1], Node) or not _int_index(used[0][1], rank):
        return None
    return used[0]


def _single_index(node: Node) -> tuple[int, Node] | None:
    """(dim, 1-D index) of an ``index`` along one dimension."""
    return _index_along(node, 1)


def _scalar_select(node: Node) -> tuple[int, Node] | None:
    """(dim, 0-d index tensor) of a select by a runtime scalar: ``select.int`` at
    ``item(t)``, or an ``index`` along one dimension with a 0-d index."""
    if node.op == "call_function" and node.target is aten.select.int:
        at = node.args[2]
        if isinstance(at, Node) and at.target is aten.item.default and _int_index(at.args[0], 0):
            return node.args[1], at.args[0]
        return None
    return _index_along(node, 0)


def _runs(index: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of an index as [start, end) pairs."""
    runs: list[tuple[int, int]] = []
    for i in index:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _rewrite(program: ExportedProgram, node: Node, dim: int, idx: Node) -> Node:
    b = Builder(program, node)
    x = node.args[0]
    value = lifted_value(program, idx)
    size = x.meta["val"].shape[dim]
    if value is not None and value.numel() <= MAX_SLICES:
        runs = _runs([int(i) % size for i in value.tolist()])
        parts = [b.call(aten.slice.Tensor, x, dim, s, e, 1) for s, e in runs]
        return parts[0] if len(parts) == 1 else b.call(aten.cat.default, parts, dim)
    # index counts negative entries from the end; index_select refuses them.
    if value is not None:
        if bool((value < 0).any()):
            idx = add_constant(program, f"{idx.name}_wrapped", torch.remainder(value, size))
    else:
        idx = b.call(aten.remainder.Scalar, idx, size)
    return b.call(aten.index_select.default, x, dim, idx)


def _rewrite_scalar(program: ExportedProgram, node: Node, dim: int, idx: Node) -> Node:
    b = Builder(program, node)
    x = node.args[0]
    dim = dim % x.meta["val"].dim()
    one = b.call(aten.remainder.Scalar, b.call(aten.reshape.default, idx, [1]), x.meta["val"].shape[dim])
    return b.call(aten.squeeze.dims, b.call(aten.index_select.default, x, dim, one), [dim])


def _replace(program: ExportedProgram, node: Node) -> None:
    # The replaced node, and an item() nothing reads now, go with the dead code rewrite_each prunes.
    if (single := _single_index(node)) is not None:
        node.replace_all_uses_with(_rewrite(program, node, *single))
    else:
        node.replace_all_uses_with(_rewrite_scalar(program, node, *_scalar_select(node)))


@register("index_as_select")
def index_as_select(program: ExportedProgram) -> PassResult:
    def picked(n: Node) -> bool:
        return _single_index(n) is not None or _scalar_select(n) is not None

    return rewrite_each(program, picked, _replace)
