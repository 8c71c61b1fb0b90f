"""``litert::gather_v1``: 1-D ``index_select`` becomes litert-torch's ``tfl.gather`` (GATHER v1).

The pass (``legalize_for_litert`` underneath) rewrites every ``aten.index_select(x, dim, idx)`` whose index is
1-D into litert-torch's ``tfl.gather(x, int32 idx, dim)``. litert-torch lowers
``index_select`` (like ``x[idx]`` and ``torch.gather``) to GATHER_ND plus bounds-check
ops, which LiteRT's GPU delegate refuses; ``tfl.gather`` lowers straight to GATHER
version 1, which it accepts. ``passes/gpu_grid_sample.py`` emits ``index_select`` so the
shared program stays standard aten for ONNX and Core ML; only the LiteRT backend pipeline
runs this pass, last, so its program holds ``tfl.gather``.

``tfl.gather`` is an experimental litert-torch op (registered by importing
``litert_torch.backend.experimental.torch_tfl._ops``); ``litert_gather_op`` is the one
place that touches it. Importing litert_torch takes seconds, so it happens only when a
legalization actually needs the op.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import torch

from mirror import MirrorError
from mirror.passes.base import PassResult, register

_P = TypeVar("_P", torch.export.ExportedProgram, torch.fx.GraphModule)

_INDEX_SELECT = torch.ops.aten.index_select.default


def litert_gather_op() -> Any:
    """litert-torch's ``tfl.gather(input, indices_int32_1d, axis)`` op (lowers to GATHER v1).

    Raises ``MirrorError`` naming the litert-torch version we were built against if the
    experimental op is missing."""
    from mirror.runners.litert import quiet_converter_import

    try:
        with quiet_converter_import():
            import litert_torch.backend.experimental.torch_tfl._ops  # noqa: F401

        return torch.ops.tfl.gather.default
    except (ImportError, AttributeError) as e:
        raise MirrorError(
            "litert-torch's experimental tfl.gather op is unavailable "
            f"({type(e).__name__}: {e}); install litert-torch==0.10.0, the version MIRROR's "
            "LiteRT emitter is tested with"
        ) from e


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _legalize_graph(gm: torch.fx.GraphModule) -> int:
    graph = gm.graph
    gather = None
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _INDEX_SELECT:
            continue
        x, dim, idx = node.args[:3]
        idx_val = _val(idx)
        x_val = _val(x)
        if idx_val is None or idx_val.dim() != 1:
            continue  # a 0-D index: leave it to the stock lowering
        if gather is None:
            gather = litert_gather_op()
        axis = int(dim) % x_val.dim() if x_val is not None else int(dim)
        with graph.inserting_before(node):
            if idx_val.dtype != torch.int32:
                cast = graph.call_function(
                    torch.ops.aten._to_copy.default, (idx,), {"dtype": torch.int32}
                )
                cast.meta = {**idx.meta, "val": idx_val.to(torch.int32)}
                idx = cast
            new = graph.call_function(gather, (x, idx, axis))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count


def legalize_for_litert(program: _P) -> _P:
    """A copy of ``program`` (an ExportedProgram or a GraphModule such as
    ``program.module()``) with each 1-D ``index_select`` replaced by ``tfl.gather``.

    Convert the result with ``litert_torch.convert(result.module(), args)`` (or the
    GraphModule directly). The input is not modified."""
    program = copy.deepcopy(program)
    if isinstance(program, torch.export.ExportedProgram):
        _legalize_graph(program.graph_module)
    elif isinstance(program, torch.fx.GraphModule):
        _legalize_graph(program)
    else:
        raise TypeError(
            f"legalize_for_litert takes an ExportedProgram or GraphModule, not "
            f"{type(program).__name__}"
        )
    return program


def count_litert_gathers(program: torch.export.ExportedProgram | torch.fx.GraphModule) -> int:
    """How many ``tfl.gather`` nodes a (legalized) program holds."""
    gm = program.graph_module if isinstance(program, torch.export.ExportedProgram) else program
    return sum(
        1
        for n in gm.graph.nodes
        if n.op == "call_function" and getattr(n.target, "namespace", None) == "tfl"
        and "gather" in str(n.target)
    )


@register("litert::gather_v1")
def gather_v1(program: torch.export.ExportedProgram) -> PassResult:
    new = legalize_for_litert(program)
    gathers = count_litert_gathers(new)
    return PassResult(new, changed=gathers > count_litert_gathers(program), details={"litert_gathers": gathers})


def count_index_selects(program: torch.export.ExportedProgram | torch.fx.GraphModule) -> int:
    """How many 1-D ``index_select`` nodes (the ones ``gather_v1`` rewrites) a program holds."""
    gm = program.graph_module if isinstance(program, torch.export.ExportedProgram) else program
    return sum(
        1
        for n in gm.graph.nodes
        if n.op == "call_function" and n.target is _INDEX_SELECT and getattr(_val(n.args[2]), "ndim", 0) == 1
    )
