"""``explicit_pool_stride``: a pooling call without a stride gets its default written out.

``F.max_pool2d(x, 2)`` exports as ``aten.max_pool2d(x, [2, 2])``: the stride is left out
and means "the kernel size". coremltools 9 requires the argument and stops ("node
max_pool2d got 2 input(s), expected minimum 3 inputs"), which a VoxelMorph U-Net or any
``F.max_pool2d(x, k)`` hits. The pass writes ``stride = kernel_size`` (and the other
defaults, which come before it, as PyTorch's), the same call for every backend.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import rewrite_each

_POOLS = (torch.ops.aten.max_pool2d.default, torch.ops.aten.avg_pool2d.default)


def _missing_stride(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target not in _POOLS:
        return False
    stride = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
    return not stride


def _write_stride(_: ExportedProgram, node: torch.fx.Node) -> None:
    kwargs = dict(node.kwargs)
    kwargs.pop("stride", None)
    node.args = (node.args[0], node.args[1], list(node.args[1]), *node.args[3:])
    node.kwargs = kwargs


@register("explicit_pool_stride")
def explicit_pool_stride(program: ExportedProgram) -> PassResult:
    # Only arguments change: the graph is recompiled, its state kept as it is.
    return rewrite_each(program, _missing_stride, _write_stride, prune=False)
