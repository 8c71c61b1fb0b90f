"""Does LiteRT's GPU accelerator work on this machine? A two-op probe model answers in seconds.

``probe_gpu`` builds ``y = tanh(a + b)`` as a .tflite without a converter, runs it GPU-only
in a child process and compares the result with numpy. ``mirror doctor`` and the tests use it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.runners.litert import delegate_adapter, run_litert_once
from mirror.runners.vulkan import VulkanDriver, find_vulkan_driver


def tiny_probe_model() -> bytes:
    """A two-op .tflite (``y = tanh(a + b)`` on 1x8x8x4 float32), built without a converter.

    Used to check in a second or two that the GPU accelerator initializes and computes.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    def tensor(name: str) -> Any:
        t = fb.TensorT()
        t.name = name
        t.shape = [1, 8, 8, 4]
        t.type = fb.TensorType.FLOAT32
        t.buffer = 0
        return t

    def opcode(code: int) -> Any:
        oc = fb.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = code
        oc.version = 1
        return oc

    add = fb.OperatorT()
    add.opcodeIndex, add.inputs, add.outputs = 0, [0, 1], [2]
    add.builtinOptionsType = fb.BuiltinOptions.AddOptions
    add.builtinOptions = fb.AddOptionsT()
    tanh = fb.OperatorT()
    tanh.opcodeIndex, tanh.inputs, tanh.outputs = 1, [2], [3]
    sub = fb.SubGraphT()
    sub.tensors = [tensor("a"), tensor("b"), tensor("sum"), tensor("y")]
    sub.inputs, sub.outputs, sub.operators = [0, 1], [3], [add, tanh]
    sub.name = "main"

    def tmap(name: str, index: int) -> Any:
        m = fb.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    sig = fb.SignatureDefT()
    sig.signatureKey = "probe"
    sig.subgraphIndex = 0
    sig.inputs = [tmap("a", 0), tmap("b", 1)]
    sig.outputs = [tmap("y", 3)]
    model = fb.ModelT()
    model.version = 3
    model.description = "mirror GPU probe"
    model.operatorCodes = [opcode(fb.BuiltinOperator.ADD), opcode(fb.BuiltinOperator.TANH)]
    model.subgraphs = [sub]
    model.buffers = [fb.BufferT()]
    model.signatureDefs = [sig]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@dataclass
class GpuProbe:
    """Whether LiteRT's GPU accelerator works here, and the evidence."""

    ok: bool
    driver: VulkanDriver
    adapter: str | None = None
    fully_accelerated: bool | None = None
    max_abs_error: float | None = None
    error: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        if not self.driver.found:
            return f"unavailable: {self.driver.reason} (checked {', '.join(self.driver.checked)})"
        if not self.ok:
            return f"FAILED on {self.driver.describe()}: {self.error}"
        return (
            f"OK: WebGPU on {self.adapter or self.driver.name} via {self.driver.icd}; probe model "
            f"fully accelerated={self.fully_accelerated}, max |gpu - numpy| = "
            f"{self.max_abs_error:.1e} ({self.seconds:.1f} s)"
        )


def probe_gpu(timeout: float = 60.0) -> GpuProbe:
    """Run ``tiny_probe_model`` on LiteRT's GPU accelerator (GPU only, no CPU fallback)."""
    import time

    import numpy as np

    driver = find_vulkan_driver()
    if not driver.found:
        return GpuProbe(False, driver, error=driver.reason)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    b = rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="mirror-probe-") as tmp:
        path = Path(tmp) / "probe.tflite"
        path.write_bytes(tiny_probe_model())
        child = run_litert_once(
            path, accelerator="gpu-only", inputs={"a": a, "b": b}, driver=driver, timeout=timeout
        )
    adapter = delegate_adapter(child.log)
    probe = GpuProbe(
        child.ok, driver, adapter, child.result.get("fully_accelerated"), None, child.error
    )
    probe.seconds = time.perf_counter() - t0
    if child.ok:
        probe.max_abs_error = float(np.abs(child.outputs["y"] - np.tanh(a + b)).max())
        if probe.max_abs_error > 1e-3:
            probe.ok = False
            probe.error = f"wrong results (max error {probe.max_abs_error:.2e})"
    return probe
