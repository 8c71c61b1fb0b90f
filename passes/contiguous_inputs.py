"""``coreml::contiguous_inputs``: give every user input a contiguous (row-major) layout.

``torch.export`` records the strides of the example inputs it was traced with, so a
channels-last or permuted example (``one_hot(...).permute(0, 3, 1, 2)``,
``x.to(memory_format=torch.channels_last)``) makes the placeholder's ``dim_order()``
something other than ``(0, 1, ..., n-1)``. coremltools 9 refuses such an input outright
("Core ML does not have general support for non-contiguous dim order"), although the
strides are irrelevant to it: a Core ML input is a dense MLMultiArray in logical (row-major)
order and every aten op of the program is defined on logical values. Only the recorded
layout changes here; the graph and its results do not. Interior values (permute outputs,
strided views) are not checked by coremltools and are left alone.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from mirror.passes.base import PassResult, register


@register("coreml::contiguous_inputs")
def contiguous_inputs(program: ExportedProgram) -> PassResult:
    program = copy.deepcopy(program)
    relaid = contiguous_user_inputs(program)
    return PassResult(program, changed=bool(relaid), details={"inputs_made_contiguous": relaid})


def contiguous_user_inputs(program: ExportedProgram) -> list[str]:
    """Re-lay out ``program``'s non-contiguous user inputs in place; returns their names."""
    from torch._guards import detect_fake_mode

    user = {s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    changed: list[str] = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim_order() == tuple(range(val.dim())):
            continue
        fake_mode = detect_fake_mode([val])
        with fake_mode if fake_mode is not None else contextlib.nullcontext():
            dense = torch.empty(val.shape, dtype=val.dtype, device=val.device)
        node.meta["val"] = dense
        if "tensor_meta" in node.meta:
            from torch.fx.passes.shape_prop import _extract_tensor_metadata

            node.meta["tensor_meta"] = _extract_tensor_metadata(dense)
        changed.append(node.name)
    return changed
