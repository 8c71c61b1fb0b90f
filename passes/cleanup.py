"""``drop_aliases``: remove no-op ``aten.alias`` / ``detach`` nodes.

``.detach()`` in a model exports as ``aten.alias``; coremltools 9 stops on it
("Unsupported fx node alias") and it means nothing at inference, so every use of an
alias is rewired to its input.
"""

from __future__ import annotations

import copy

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register

_NOOPS = {
    torch.ops.aten.alias.default,
    torch.ops.aten.detach.default,
    torch.ops.aten.detach_.default,
    torch.ops.aten.lift_fresh_copy.default,
}


@register("drop_aliases")
def drop_aliases(program: ExportedProgram) -> PassResult:
    program = copy.deepcopy(program)
    graph = program.graph_module.graph
    removed = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _NOOPS:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            removed += 1
    if removed:
        graph.lint()
        program.graph_module.recompile()
    return PassResult(program, changed=bool(removed), details={"removed": removed})
