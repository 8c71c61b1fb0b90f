"""Per-layer cost of an exported program: FLOPs, bytes moved and parameters per torch module path.

A layer is the deepest module in a node's ``nn_module_stack`` (``aflow_net.netRefine.3.0``);
ops written in a module's own ``forward`` belong to that module, and ops of the top-level
forward to ``(root)``. Every call_function node belongs to exactly one layer, so the
layers' FLOPs add up to ``analysis.count_flops`` of the same program.

Bytes are counted as a mobile GPU delegate moves them: a conv reads its input and
weights and writes its output; a pointwise op that consumes a single-use result is fused
into the op that made it (GPU delegates run activations and BatchNorm in the conv's
epilogue), so that read costs nothing; views cost nothing; ``grid_sampler`` reads four
taps per output element and channel, scattered (priced separately as gather traffic).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram

from mirror.passes import analysis

ROOT = "(root)"
# Metadata-only ops: no kernel, no traffic.
_VIEWS = {
    "view", "_unsafe_view", "reshape", "expand", "slice", "select", "getitem", "squeeze", "unsqueeze",
    "alias", "detach", "t", "flatten", "unflatten", "split", "split_with_sizes", "chunk", "unbind",
    "lift_fresh_copy", "_assert_tensor_metadata", "sym_size",
}  # fmt: skip
_GATHERS = {"grid_sampler", "grid_sampler_2d", "index_select", "gather", "index"}


@dataclass
class NodeCost:
    """One op's work, in elements so that any precision's byte width applies."""

    flops: int
    elements: int  # activation elements read and written (streamed)
    params: int  # weight elements read
    gathered: int = 0  # elements read scattered (grid_sample taps, gathers)
    kernel: bool = True  # launches a GPU kernel (views and fused pointwise ops do not)


@dataclass
class Layer:
    path: str
    nodes: list[NodeCost] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    parameters: int = 0

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    def bytes_moved(self, dtype_bytes: int) -> int:
        return dtype_bytes * sum(n.elements + n.params + n.gathered for n in self.nodes)

    @property
    def kernels(self) -> int:
        return sum(n.kernel for n in self.nodes)


def layer_of(node: torch.fx.Node) -> str:
    """The deepest module path in a node's ``nn_module_stack`` (``(root)`` when it has none)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _cls in stack.values() if path]
    return paths[-1] if paths else ROOT


def _elements(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return int(math.prod(value.shape))
    if isinstance(value, (tuple, list)):
        return sum(_elements(v) for v in value)
    return 0


def _tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    return [a for a in node.all_input_nodes if isinstance(a.meta.get("val"), (torch.Tensor, tuple, list))]


def node_cost(node: torch.fx.Node, weights: set[str]) -> NodeCost:
    """The cost of one call_function node; ``weights`` names the parameter placeholders."""
    kind = analysis.op_kind(node)
    flops = analysis.node_flops(node)
    if kind in _VIEWS:
        return NodeCost(flops, 0, 0, kernel=False)
    out = _elements(node.meta.get("val"))
    args = _tensor_args(node)
    params = sum(_elements(a.meta["val"]) for a in args if a.name in weights)
    acts = [a for a in args if a.name not in weights and a.op != "get_attr"]
    if kind in {"grid_sampler", "grid_sampler_2d"}:
        # Four taps per output element and channel; the grid is read once, the output written once.
        grid = _elements(node.args[1].meta["val"])
        return NodeCost(flops, grid + out, params, gathered=4 * out)
    if kind in _GATHERS:
        return NodeCost(flops, out + sum(_elements(a.meta["val"]) for a in acts[1:]), params, gathered=out)
    pointwise = analysis.is_pointwise(kind)
    fused = [a for a in acts if pointwise and a.op == "call_function" and len(a.users) == 1]
    reads = sum(_elements(a.meta["val"]) for a in acts if a not in fused)
    return NodeCost(flops, reads + out, params, kernel=not (pointwise and fused))


def layers_of(program: ExportedProgram) -> list[Layer]:
    """One ``Layer`` per module path, in the order the graph first reaches it."""
    sig = program.graph_signature
    weights = set(sig.inputs_to_parameters)
    table: dict[str, Layer] = {}
    seen_params: dict[str, set[str]] = defaultdict(set)
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        path = layer_of(node)
        layer = table.setdefault(path, Layer(path))
        layer.nodes.append(node_cost(node, weights))
        kind = analysis.op_kind(node)
        layer.ops[kind] = layer.ops.get(kind, 0) + 1
        for a in node.all_input_nodes:
            if a.name in weights and a.users and a.name not in seen_params[path]:
                seen_params[path].add(a.name)
                layer.parameters += _elements(a.meta["val"])
    return list(table.values())


def group(layers: list[Layer], depth: int | None) -> list[Layer]:
    """Merge layers into their ancestors ``depth`` components deep (``None`` keeps them)."""
    if depth is None:
        return layers
    merged: dict[str, Layer] = {}
    for layer in layers:
        key = layer.path if layer.path == ROOT else ".".join(layer.path.split(".")[:depth])
        into = merged.setdefault(key, Layer(key))
        into.nodes += layer.nodes
        into.parameters += layer.parameters
        for kind, n in layer.ops.items():
            into.ops[kind] = into.ops.get(kind, 0) + n
    return list(merged.values())
