"""Per-node time of an ONNX model on this machine, from onnxruntime's own profiler.

``SessionOptions.enable_profiling`` writes a Chrome-trace JSON whose ``Node`` events carry
each node's kernel time. Graph optimizations are disabled so that the profiled nodes are
the model's own, and each node is mapped back to its torch module path by the exporter's
metadata (``pkg.torch.onnx.name_scopes``: the module paths, then the FX node name) or, in a
model that lost it (onnxsim), by its name: ours are ``<module path>/<op>``, the exporter's
``node_<fx name>`` is looked up in ``fx_layers``.
"""

from __future__ import annotations

import ast
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mirror.profiling.layers import ROOT

UNMAPPED = "(unmapped)"


def node_layers(model: Any, fx_layers: dict[str, str] | None = None) -> dict[str, str]:
    """ONNX node name -> torch module path, for every node of ``model`` (a ModelProto)."""
    out = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if scopes:
            names = ast.literal_eval(scopes)
            out[node.name] = names[-2] if len(names) >= 2 and names[-2] else ROOT
        elif "/" in node.name:  # our artifacts name nodes "<module path>/<op>"
            out[node.name] = node.name.rpartition("/")[0] or ROOT
        elif fx_layers and node.name.startswith("node_") and node.name[5:] in fx_layers:
            out[node.name] = fx_layers[node.name[5:]]
        else:
            out[node.name] = UNMAPPED
    return out


def ort_layer_ms(
    model: Any,
    feeds: dict[str, np.ndarray],
    fx_layers: dict[str, str] | None = None,
    runs: int = 3,
    threads: int | None = None,
) -> tuple[dict[str, float], float]:
    """(milliseconds per module path, whole-run milliseconds), averaged over ``runs``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up, dropped below
        t0 = time.perf_counter()
        for _ in range(runs):
            session.run(None, feeds)
        whole = (time.perf_counter() - t0) * 1e3 / runs
        events = json.loads(Path(session.end_profiling()).read_text())
    where = node_layers(model, fx_layers)
    per_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1e3)
    layers: dict[str, float] = defaultdict(float)
    for node, times in per_node.items():
        kept = times[-runs:]  # the warm-up run's events come first
        layers[where.get(node, UNMAPPED)] += sum(kept) / len(kept)
    return dict(layers), whole
