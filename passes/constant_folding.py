"""``fold_constants``: every input-independent subgraph becomes one lifted constant.

Models build their sampling grids in ``forward`` (``arange``, ``linspace``, ``meshgrid``,
``expand``, ``affine_grid`` of a fixed matrix) or keep them in registered buffers, then
reshape, stack and normalize them. None of that depends on the inputs, yet exported as is
it becomes runtime ops: BROADCAST_TO and int32 arithmetic the LiteRT GPU delegate refuses,
PADs of constants it cannot run, extra ops on every target. This pass evaluates each such
subgraph once, in float32 on the CPU exactly as eager PyTorch would, and replaces it with
a constant tensor lifted into the program's signature; the ops that fed it, and the
buffers only they read, are dropped. The values are those eager PyTorch computes, so the
rewrite is exact.

A subgraph is folded only if it reads something other than parameters (a buffer, a
constant, or an op with no tensor inputs such as ``arange``): weights stay parameters, so
weight quantization and the parameter counts see them as before. Random ops are never
folded, and neither is a result larger than ``max_elements``.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import prune_unused_state

_SOURCES = (InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
# Ops whose value depends only on the shape and dtype of their tensor input.
_ATEN = torch.ops.aten
_SHAPE_ONLY = {_ATEN.zeros_like.default, _ATEN.ones_like.default, _ATEN.full_like.default,
               _ATEN.new_zeros.default, _ATEN.new_ones.default, _ATEN.new_full.default}  # fmt: skip


def _state_values(program: ExportedProgram) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Values of the lifted placeholders, and the names of those that are parameters."""
    values, params = {}, set()
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.PARAMETER:
            values[spec.arg.name] = program.state_dict[spec.target]
            params.add(spec.arg.name)
        elif spec.kind in _SOURCES:
            store = program.constants if spec.target in program.constants else program.state_dict
            values[spec.arg.name] = store[spec.target]
    return values, params


def _foldable(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target is operator.getitem:
        return node.op == "call_function"
    if torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ()):
        return False
    schema = getattr(node.target, "_schema", None)
    if schema is not None and schema.is_mutable and node.target is not _ATEN.detach_.default:  # autograd only
        return False
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else [val]
    return bool(vals) and all(isinstance(v, torch.Tensor) and not _symbolic(v) for v in vals)


def _symbolic(t: torch.Tensor) -> bool:
    return any(not isinstance(s, int) for s in t.shape)


def _evaluate(program: ExportedProgram, max_elements: int) -> dict[torch.fx.Node, Any]:
    """Every node computable without the inputs, with its value (params-only ones excluded later)."""
    values, params = _state_values(program)
    known: dict[torch.fx.Node, Any] = {}
    pure_param: set[torch.fx.Node] = set()
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in values:
            known[node] = values[node.name]
            if node.name in params:
                pure_param.add(node)
        elif _foldable(node) and (node.target in _SHAPE_ONLY or all(a in known for a in node.all_input_nodes)):
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda a: _value(a, known))
            with torch.no_grad():
                out = node.target(*args, **kwargs)
            if isinstance(out, torch.Tensor) and out.numel() > max_elements:
                continue
            known[node] = out
            inputs = node.all_input_nodes
            if node.target not in _SHAPE_ONLY and inputs and all(a in pure_param for a in inputs):
                pure_param.add(node)
    return {n: v for n, v in known.items() if n not in pure_param}


def _value(node: torch.fx.Node, known: dict[torch.fx.Node, Any]) -> Any:
    if node in known:
        return known[node]
    val = node.meta["val"]  # a shape-only op's input: any tensor of its shape and dtype
    return torch.empty(val.shape, dtype=val.dtype)


def _frontier(known: dict[torch.fx.Node, Any]) -> list[torch.fx.Node]:
    """Computed tensor nodes that a runtime node (or the output) reads."""
    return [
        n
        for n, v in known.items()
        if n.op == "call_function" and isinstance(v, torch.Tensor) and any(u not in known for u in n.users)
    ]


def fake_mode(program: ExportedProgram) -> Any:
    for node in program.graph.nodes:
        mode = getattr(node.meta.get("val"), "fake_mode", None)
        if mode is not None:
            return mode
    raise RuntimeError("the exported program carries no fake tensors")


def add_constant(program: ExportedProgram, name: str, value: torch.Tensor) -> torch.fx.Node:
    """Lift ``value`` into ``program`` as a constant; returns its placeholder (mutates ``program``)."""
    graph = program.graph
    specs = list(program.graph_signature.input_specs)
    first_user = next(i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT) if any(
        s.kind == InputKind.USER_INPUT for s in specs) else len(specs)  # fmt: skip
    anchor = next(n for n in graph.nodes if n.op == "placeholder" and n.name == specs[first_user].arg.name) \
        if first_user < len(specs) else next(n for n in graph.nodes if n.op != "placeholder")  # fmt: skip
    with graph.inserting_before(anchor):
        node = graph.placeholder(name)
    node.meta["val"] = fake_mode(program).from_tensor(value, static_shapes=True)
    specs.insert(first_user, InputSpec(InputKind.CONSTANT_TENSOR, TensorArgument(node.name), node.name, None))
    program.graph_signature.input_specs[:] = specs
    program.constants[node.name] = value.detach().contiguous()  # no autograd history from a parameter
    return node


def lifted_value(program: ExportedProgram, node: torch.fx.Node) -> torch.Tensor | None:
    """The value of a lifted parameter, buffer or constant placeholder; None for anything else."""
    if node.op != "placeholder":
        return None
    spec = next((s for s in program.graph_signature.input_specs if s.arg.name == node.name), None)
    if spec is None or spec.kind not in (InputKind.PARAMETER, *_SOURCES):
        return None
    return program.constants[spec.target] if spec.target in program.constants else program.state_dict[spec.target]


@register("fold_constants")
def fold_constants(program: ExportedProgram, max_elements: int = 1 << 22) -> PassResult:
    """Fold every input-independent subgraph (see the module docstring)."""
    known = _evaluate(program, max_elements)
    frontier = _frontier(known)
    details: dict[str, Any] = {"folded": [n.name for n in frontier]}
    if not frontier:
        return PassResult(program, changed=False, details=details)
    program = copy.deepcopy(program)
    nodes = {n.name: n for n in program.graph.nodes}
    for old in frontier:
        node = nodes[old.name]
        const = add_constant(program, f"_folded_{old.name}", known[old])
        const.meta.update({k: v for k, v in node.meta.items() if k in ("stack_trace", "nn_module_stack")})
        node.replace_all_uses_with(const)
    for node in reversed([nodes[n.name] for n in known if n.op == "call_function"]):
        if not node.users:  # dead code elimination keeps in-place ops such as detach_
            program.graph.erase_node(node)
    details["removed_state"] = prune_unused_state(program)
    details["ops_removed"] = sum(1 for n in known if n.op == "call_function")
    return PassResult(program, changed=True, details=details)
