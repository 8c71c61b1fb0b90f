"""``litert::broadcast_as_gather``: an ``expand`` becomes index_selects of a size-1 axis.

``x.expand(...)`` (also ``expand_as`` and ``broadcast_to``) exports as ``aten.expand``,
which litert-torch lowers to BROADCAST_TO: LiteRT's GPU delegate refuses it, and the graph
splits into CPU and GPU partitions around it (a base grid built with ``linspace`` +
``expand`` in ``forward``, a pooled feature expanded back over the map). Writing the
broadcast as a multiplication by ones does not help: the converter folds that back into
BROADCAST_TO. Repeating a size-1 axis ``n`` times is the same as gathering index 0 ``n``
times, so each broadcast axis becomes ``index_select(x, axis, zeros(n))``, which
``litert::gather_v1`` then lowers to GATHER v1, an op the delegate takes. The values are
copied, not computed, so the rewrite is exact at any precision.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register

_EXPAND = torch.ops.aten.expand.default


def _broadcast_axes(node: torch.fx.Node) -> list[int] | None:
    """The axes an ``expand`` node repeats (after its new leading axes), or None if it only views."""
    src = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    sizes = node.args[1]
    if src is None or not all(isinstance(s, int) for s in sizes):
        return None  # symbolic shapes: leave it
    lead = len(sizes) - src.dim()
    shape = [1] * lead + list(src.shape)
    axes = [d for d, n in enumerate(sizes) if n != -1 and shape[d] == 1 and n != 1]
    return axes or None


@register("litert::broadcast_as_gather")
def broadcast_as_gather(program: ExportedProgram) -> PassResult:
    found = [
        {"node": n.name, "axes": axes}
        for n in program.graph.nodes
        if n.op == "call_function" and n.target == _EXPAND and (axes := _broadcast_axes(n))
    ]
    details: dict[str, Any] = {"rewritten": found}
    if not found:
        return PassResult(program, changed=False, details=details)

    def decompose(x: torch.Tensor, size: list[int], implicit: bool = False) -> torch.Tensor:
        size = list(size)
        while x.dim() < len(size):
            x = x.unsqueeze(0)
        for d, n in enumerate(size):
            if n != -1 and x.shape[d] == 1 and n != 1:
                x = torch.index_select(x, d, torch.zeros(n, dtype=torch.int64))
        return x

    # run_decompositions retraces into a new program; the input stays untouched.
    new = copy.deepcopy(program).run_decompositions({_EXPAND: decompose})
    return PassResult(new, changed=True, details=details)
