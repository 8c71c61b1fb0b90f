"""Torch module paths in an exported ONNX graph's node and tensor names.

``torch.onnx.export(dynamo=True)`` names a node ``node_<fx name>`` and its output after the
FX node (``conv2d_3``), and keeps the module path only in metadata
(``pkg.torch.onnx.name_scopes``: ``['', 'features', 'features.0', 'conv2d']``), which onnxsim
and the quantizers drop. ``label_module_paths`` writes the path into the names themselves,
before any of those steps: node ``features.0/conv2d``, tensor ``features.0/conv2d`` (the FX
node's name stays the last ``/`` part, so validation matches tensors to the PyTorch
reference by it; ``runners.taps.split_onnx_name`` reads both parts). Graph inputs, outputs
and initializers keep their names.
"""

from __future__ import annotations

import ast
from typing import Any

_SCOPES = "pkg.torch.onnx.name_scopes"


def _scopes(node: Any) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == _SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(s) for s in scopes] if isinstance(scopes, list) else []
    return []


def label_module_paths(model: Any) -> int:
    """Prefix node and intermediate tensor names with their module path; returns how many
    nodes were labelled."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    renamed: dict[str, str] = {}
    labelled = 0
    for node in graph.node:
        scopes = _scopes(node)
        path = scopes[-2] if len(scopes) >= 2 else ""
        if not path:
            continue
        labelled += 1
        node.name = f"{path}/{node.name.removeprefix('node_')}"
        for out in node.output:
            if out and out not in keep and "/" not in out:
                renamed[out] = f"{path}/{out}"
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)
    return labelled
