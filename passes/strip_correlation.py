"""``strip_correlation``: remove the correlation + netMain branch at chosen pyramid levels.

DIVTON runs correlation + netMain only at the three coarsest levels of PF-AFN's flow net;
at the two finest (64x48, 128x96) netRefine alone refines the flow. The trained checkpoint
still carries netMain weights for levels 3 and 4. Exporting the full PF-AFN warper and
running this pass yields the DIVTON graph: about a third of the warper's FLOPs at those
levels go, and the dead weights leave the program.

How: at a stripped level the branch ends in a ``grid_sample`` that composes the previous
flow with netMain's offsets. Every use of that composed flow is rewired to the previous
flow (the branch becomes the identity), and dead-code elimination removes the
correlation, netMain and the feature warp that fed it. Levels are found by the module path
of netMain's layers (``branch`` with ``{level}``), so the pass serves any model that keeps
a per-level branch under a module list.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch.export import ExportedProgram

from mirror import MirrorError
from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import ancestors, module_path, prune_unused_state

_GRID_SAMPLE = {"grid_sampler", "grid_sampler_2d"}


def _is_grid_sample(node: torch.fx.Node) -> bool:
    name = getattr(node.target, "__name__", "").split(".")[0]
    return node.op == "call_function" and name in _GRID_SAMPLE


def _branch_nodes(graph: torch.fx.Graph, path: str) -> set[torch.fx.Node]:
    prefix = path + "."
    return {
        n
        for n in graph.nodes
        if n.op == "call_function" and (module_path(n) == path or module_path(n).startswith(prefix))
    }


def _composition(graph: torch.fx.Graph, branch: set[torch.fx.Node], path: str) -> torch.fx.Node:
    """The first grid_sample downstream of ``branch`` that resamples a flow (a 2-channel
    field) which does not itself depend on the branch: the previous level's flow."""
    for node in graph.nodes:  # topological order
        if not _is_grid_sample(node):
            continue
        flow_in, grid = node.args[0], node.args[1]
        if flow_in.meta["val"].shape[1] != 2:
            continue  # a feature or image warp, not a flow composition
        grid_deps = ancestors(grid) | {grid}
        if grid_deps & branch and not ((ancestors(flow_in) | {flow_in}) & branch):
            return node
    raise MirrorError(
        f"strip_correlation: no flow composition (grid_sample of the previous flow) follows {path}; "
        "the coarsest level has no previous flow and cannot be stripped"
    )


@register("strip_correlation")
def strip_correlation(
    program: ExportedProgram,
    levels: Sequence[int] = (3, 4),
    branch: str = "aflow_net.netMain.{level}",
) -> PassResult:
    program = copy.deepcopy(program)
    graph = program.graph_module.graph
    stripped = []
    for level in levels:
        path = branch.format(level=level)
        nodes = _branch_nodes(graph, path)
        if not nodes:
            continue  # already stripped, or the model has no such level
        composed = _composition(graph, nodes, path)
        composed.replace_all_uses_with(composed.args[0])
        graph.erase_node(composed)
        graph.eliminate_dead_code()
        stripped.append(level)
    removed_state = prune_unused_state(program) if stripped else []
    return PassResult(
        program,
        changed=bool(stripped),
        details={"levels_stripped": stripped, "state_removed": len(removed_state)},
    )
