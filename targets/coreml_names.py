"""Torch module paths in a Core ML package's MIL op names.

coremltools names each MIL op after the FX node it converts, sanitized to an identifier
(``conv2d_3`` -> ``conv2d_3_cast_fp16``, ``features.0/conv2d`` -> ``features_0_conv2d``).
During conversion each FX node is renamed ``<module path>/<name>`` (so the MIL names read
``aflow_net_netRefine_3_0_conv2d_cast_fp16`` in Netron or Xcode), and since the sanitized
form loses which ``_`` was a ``.``, the exact paths go into the package's user-defined
metadata under ``mirror.module_paths`` ({sanitized node name: "<module path>/<FX node>"};
``runners.taps`` reads it back).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mirror.runners.taps import COREML_PATHS_KEY

METADATA_KEY = COREML_PATHS_KEY


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


@contextmanager
def module_path_names(program: Any) -> Iterator[dict[str, str]]:
    """Rename the program's nodes after their module paths for the ``with`` block (names are
    restored after it); yields {node name during conversion: "<module path>/<FX node>"}."""
    from mirror.passes.graph_utils import module_path

    outputs = {spec.arg.name for spec in program.graph_signature.output_specs if hasattr(spec.arg, "name")}
    taken = {n.name for n in program.graph.nodes}
    renamed: list[tuple[Any, str]] = []
    paths: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.name in outputs:
            continue
        path = module_path(node)
        new = _identifier(f"{path}/{node.name}") if path else node.name  # root nodes keep their names
        if new != node.name and new in taken:
            continue
        taken.add(new)
        paths[new] = f"{path}/{node.name}"
        if new != node.name:
            renamed.append((node, node.name))
            node.name = new
    try:
        yield paths
    finally:
        for node, old in renamed:
            node.name = old


def record_module_paths(mlmodel: Any, paths: dict[str, str]) -> None:
    mlmodel.user_defined_metadata[METADATA_KEY] = json.dumps(paths, sort_keys=True, separators=(",", ":"))
