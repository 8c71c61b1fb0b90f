"""``coreml::float_clamp_bounds``: an integer clamp bound on a float tensor becomes a float.

``torch.clamp_max(x, 127)`` on a float ``x`` is valid torch (the result stays float), but
coremltools 9 translates ``clamp_min``/``clamp_max`` with ``assert x.dtype == y.dtype``
and fails with a bare AssertionError (its ``clamp``, ``minimum`` and ``maximum`` promote).
The bound becomes the equal Python float, which is what torch computes with anyway.
"""

from __future__ import annotations

import copy

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register

_CLAMPS = (torch.ops.aten.clamp_min.default, torch.ops.aten.clamp_max.default)


def _int_bound_on_float(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target not in _CLAMPS or len(node.args) < 2:
        return False
    x, bound = node.args[0], node.args[1]
    val = getattr(x, "meta", {}).get("val")
    return (
        isinstance(bound, int)
        and not isinstance(bound, bool)
        and isinstance(val, torch.Tensor)
        and val.dtype.is_floating_point
    )


@register("coreml::float_clamp_bounds")
def float_clamp_bounds(program: ExportedProgram) -> PassResult:
    program = copy.deepcopy(program)
    changed = [n for n in program.graph.nodes if _int_bound_on_float(n)]
    for node in changed:
        node.args = (node.args[0], float(node.args[1]), *node.args[2:])
    if changed:
        program.graph_module.recompile()
    return PassResult(program, changed=bool(changed), details={"bounds_made_float": len(changed)})
