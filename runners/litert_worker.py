"""The LiteRT child process: loads one model with ``CompiledModel`` and runs it on request.

Started by ``runners/litert.py`` through ``runners/child.py``; never imported by the
parent. Requests: ``load`` (model path, accelerator, signature, enforce_f32), then any
number of ``run`` (feeds in the model's own dtypes; zeros for those not given). Loading is
where the GPU delegate partitions the graph and prints which ops it refuses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from mirror.runners.child import Arrays, serve

_state: dict[str, Any] = {}


def load(payload: dict[str, Any], arrays: Arrays, stage: Callable[[str], None]) -> tuple[dict[str, Any], Arrays]:
    stage("import")
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import GpuOptions, Options

    accel = {
        "gpu": HardwareAccelerator.GPU | HardwareAccelerator.CPU,
        "gpu-only": HardwareAccelerator.GPU,
        "cpu": HardwareAccelerator.CPU,
    }[payload["accelerator"]]
    stage("load")
    options = Options(hardware_accelerators=accel)
    if payload.get("enforce_f32"):
        options = Options(hardware_accelerators=accel, gpu_options=GpuOptions(enforce_f32=True))
    model = CompiledModel.from_file(payload["model"], options=options)
    sigs = model.get_signature_list()
    key = payload.get("signature") or next(iter(sigs))
    index = model.get_signature_index(key)
    # Buffers made once per load: a kept child runs the same model many times (keyframes).
    _state.update(model=model, key=key, sigs=sigs, index=index, in_bufs=model.create_input_buffers(index),
                  out_bufs=model.create_output_buffers(index))  # fmt: skip
    _state["inputs"] = model.get_input_tensor_details(key)
    _state["outputs"] = model.get_output_tensor_details(key)
    result = {
        "fully_accelerated": bool(model.is_fully_accelerated()),
        "signature": key,
        "inputs": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in _state["inputs"].items()},
        "outputs": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in _state["outputs"].items()},
    }
    return result, {}


def run(payload: dict[str, Any], feeds: Arrays, stage: Callable[[str], None]) -> tuple[dict[str, Any], Arrays]:
    model, key, sigs = _state["model"], _state["key"], _state["sigs"]
    index, in_bufs, out_bufs = _state["index"], _state["in_bufs"], _state["out_bufs"]
    for name, buf in zip(sigs[key]["inputs"], in_bufs, strict=True):
        d = _state["inputs"][name]
        arr = feeds.get(name)
        if arr is None:
            arr = np.zeros(d["shape"], dtype=d["dtype"])
        buf.write(np.ascontiguousarray(arr, dtype=d["dtype"]))
    stage("run")
    model.run_by_index(index, in_bufs, out_bufs)
    outs = {}
    for name, buf in zip(sigs[key]["outputs"], out_bufs, strict=True):
        d = _state["outputs"][name]
        n = int(np.prod(d["shape"])) if len(d["shape"]) else 1
        outs[name] = buf.read(n, d["dtype"]).reshape(d["shape"])
    return {}, outs


if __name__ == "__main__":
    sys.exit(serve({"load": load, "run": run}))
