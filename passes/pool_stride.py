"""``explicit_pool_stride``: a pooling call without a stride gets its default written out.

``F.max_pool2d(x, 2)`` exports as ``aten.max_pool2d(x, [2, 2])``: the stride is left out
and means "the kernel size". coremltools 9 requires the argument and stops ("node
max_pool2d got 2 input(s), expected minimum 3 inputs"), which a VoxelMorph U-Net or any
``F.max_pool2d(x, k)`` hits. The pass writes ``stride = kernel_size`` (and the other
defaults, which come before it, as PyTorch's), the same call for every backend.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register

_POOLS = (torch.ops.aten.max_pool2d.default, torch.ops.aten.avg_pool2d.default)


def _missing_stride(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target not in _POOLS:
        return False
    stride = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
    return not stride


@register("explicit_pool_stride")
def explicit_pool_stride(program: ExportedProgram) -> PassResult:
    found = [n.name for n in program.graph.nodes if _missing_stride(n)]
    details: dict[str, Any] = {"rewritten": found}
    if not found:
        return PassResult(program, changed=False, details=details)
    program = copy.deepcopy(program)
    for node in program.graph.nodes:
        if node.name in found:
            kwargs = dict(node.kwargs)
            kwargs.pop("stride", None)
            node.args = (node.args[0], node.args[1], list(node.args[1]), *node.args[3:])
            node.kwargs = kwargs
    program.graph_module.recompile()
    return PassResult(program, changed=True, details=details)
