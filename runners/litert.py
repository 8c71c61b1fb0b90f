"""LiteRT runners: a .tflite on the CPU interpreter (in-process) or on the GPU accelerator.

Both take float32 NCHW numpy inputs keyed by signature input names. Quantized (int8)
inputs and outputs are quantized/dequantized with the tensors' own scales, so callers
always see float32. Outputs come back in the signature's order.

``LiteRTCpuRunner`` runs XNNPACK in this process. ``LiteRTGpuRunner`` runs LiteRT's GPU
accelerator (WebGPU; SwiftShader's Vulkan driver where there is no GPU) in one child
process that it keeps across runs (``runners/litert_worker.py``): the delegate can crash,
and a crash then is a reported result, not the end of the caller. The child loads the
model once; its load log is where the delegate says which ops it refuses
(``diagnostics()``, read by ``targets/gpu_delegate.py``).

Environment override: ``MIRROR_LITERT_GPU_TIMEOUT`` (seconds a GPU request may take,
default 600).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.runners.base import RunnerBase, RunnerError, missing_inputs
from mirror.runners.child import Child, ChildOutcome, child_env
from mirror.runners.tflite_file import TensorInfo, read_tflite
from mirror.runners.vulkan import VulkanDriver, find_vulkan_driver, gpu_child_env

WORKER = "mirror.runners.litert_worker"
DEFAULT_TIMEOUT_S = 600.0
_NP_DTYPES = {
    "FLOAT32": np.float32, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
    "FLOAT16": np.float16, "INT16": np.int16, "INT64": np.int64, "BOOL": np.bool_,
}  # fmt: skip


_ADAPTER = re.compile(r"Selected adapter: ([^,]+)")


def delegate_adapter(log: str) -> str | None:
    """The GPU adapter LiteRT's WebGPU accelerator chose, from a child's log ("SwiftShader Device ...")."""
    m = _ADAPTER.search(log)
    return m.group(1).strip() if m else None


def gpu_timeout() -> float:
    return float(os.environ.get("MIRROR_LITERT_GPU_TIMEOUT", DEFAULT_TIMEOUT_S))


class _LiteRTModel(RunnerBase):
    """The signature and boundary quantization of one .tflite file."""

    def __init__(self, path: Path | str, signature: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MirrorError(f"no such LiteRT model: {self.path}")
        fb = read_tflite(self.path, signature)
        if fb.signature_key is None:
            raise MirrorError(f"{self.path} has no signature; convert it with a signature key")
        self.signature = fb.signature_key
        self.input_names = [n for n, _ in fb.signature_inputs]
        self.output_names = [n for n, _ in fb.signature_outputs]
        self._in = {n: fb.tensors[i] for n, i in fb.signature_inputs}
        self._out = {n: fb.tensors[i] for n, i in fb.signature_outputs}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing_inputs(f"{self.path.name} (signature {self.signature!r})", self.input_names, feeds)
        raw = self._run({n: encode(self._in[n], feeds[n]) for n in self.input_names})
        return {n: decode(self._out[n], raw[n]) for n in self.output_names}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def encode(t: TensorInfo, x: np.ndarray) -> np.ndarray:
    """A float32 input in tensor ``t``'s own dtype (quantized with its scale if integer)."""
    dt = _NP_DTYPES.get(t.dtype, np.float32)
    if t.dtype in ("INT8", "UINT8", "INT16") and t.scale:
        info = np.iinfo(dt)
        zp = t.zero_point[0] if t.zero_point else 0
        q = np.round(np.asarray(x, np.float32) / t.scale[0]) + zp
        return np.clip(q, info.min, info.max).astype(dt)
    return np.ascontiguousarray(x, dtype=dt)


def decode(t: TensorInfo, y: np.ndarray) -> np.ndarray:
    """An output of tensor ``t`` as float32 (dequantized if integer)."""
    if t.dtype in ("INT8", "UINT8", "INT16") and t.scale:
        zp = t.zero_point[0] if t.zero_point else 0
        return ((y.astype(np.float32) - zp) * t.scale[0]).astype(np.float32)
    return np.asarray(y, np.float32) if t.dtype in ("FLOAT32", "FLOAT16") else np.asarray(y)


_NATIVE_INFO = ("INFO: Created TensorFlow Lite XNNPACK delegate",)
# What importing litert_torch prints: absl's pre-init notice, TensorFlow's oneDNN INFO line
# and torchao's attempts at CUDA-only kernels ("Failed to load .../torchao/_C_....so").
_IMPORT_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} .*oneDNN custom operations are on"
    r"|Failed to load .*torchao"
)


@contextmanager
def native_stderr_filtered(drop: Callable[[str], bool]) -> Iterator[None]:
    """Run the block with fd 2 going to a temporary file, then pass on every line but those
    ``drop`` matches: native C++ logging obeys no Python setting or environment variable."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines(keepends=True):
                if not drop(line):
                    sys.stderr.write(line)


def quiet_native_info() -> AbstractContextManager[None]:
    """Drop LiteRT's native INFO line ("Created TensorFlow Lite XNNPACK delegate for CPU.")."""
    return native_stderr_filtered(lambda line: line.startswith(_NATIVE_INFO))


def quiet_converter_import() -> AbstractContextManager[None]:
    """Drop what importing litert_torch prints (``_IMPORT_CHATTER``); errors pass."""
    return native_stderr_filtered(lambda line: bool(_IMPORT_CHATTER.match(line)))


class LiteRTCpuRunner(_LiteRTModel):
    """The stock CPU interpreter (XNNPACK), in this process."""

    name = "litert-cpu"

    def __init__(self, path: Path | str, *, signature: str | None = None, num_threads: int = 2) -> None:
        super().__init__(path, signature)
        self.num_threads = num_threads
        self._runner: Any = None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runner is None:
            from ai_edge_litert.interpreter import Interpreter

            with quiet_native_info():  # the delegate is made by the first run
                interp = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
                self._runner = interp.get_signature_runner(self.signature)
                return {n: np.array(v) for n, v in self._runner(**feeds).items()}
        return {n: np.array(v) for n, v in self._runner(**feeds).items()}

    def close(self) -> None:
        self._runner = None


class LiteRTGpuRunner(_LiteRTModel):
    """LiteRT's GPU accelerator (with CPU fallback for refused ops), in a kept child process."""

    name = "litert-gpu"
    accelerator = "gpu"

    def __init__(
        self, path: Path | str, *, signature: str | None = None, enforce_f32: bool = False,
        timeout: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(path, signature)
        self.enforce_f32 = enforce_f32
        self.timeout = gpu_timeout() if timeout is None else timeout
        self.driver: VulkanDriver = find_vulkan_driver()
        self._child: Child | None = None
        self.loaded: ChildOutcome | None = None  # the load's outcome: the delegate's log

    def availability(self) -> tuple[bool, str]:
        return (True, "") if self.driver.found else (False, self.driver.reason)

    def load(self) -> ChildOutcome:
        """Load the model on the accelerator (once per child); never raises."""
        if self.loaded is not None and self.loaded.ok and self._child is not None and self._child.alive:
            return self.loaded
        if not self.driver.found:
            self.loaded = ChildOutcome(False, error=f"cannot run {self.name}: {self.driver.reason}")
            return self.loaded
        self._child = Child(WORKER, env=gpu_child_env(self.driver, child_env()), label=f"LiteRT gpu ({self.path.name})")
        payload = {"model": str(self.path.resolve()), "accelerator": "gpu", "signature": self.signature,
                   "enforce_f32": self.enforce_f32}  # fmt: skip
        self.loaded = self._child.request("load", payload, timeout=self.timeout)
        return self.loaded

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self.load()
        if not loaded.ok:
            raise RunnerError(f"{self.name} on {self.path.name}: {loaded.error}", self.diagnostics())
        assert self._child is not None
        outcome = self._child.request("run", arrays=feeds, timeout=self.timeout)
        if not outcome.ok:
            raise RunnerError(f"{self.name} on {self.path.name}: {outcome.error}", self.diagnostics())
        return outcome.outputs

    def diagnostics(self) -> dict[str, Any]:
        loaded = self.loaded
        if loaded is None:
            return {"driver": self.driver.describe()}
        return {
            "driver": self.driver.describe(),
            "ok": loaded.ok,
            "error": loaded.error,
            "fully_accelerated": loaded.result.get("fully_accelerated"),
            "crashed": loaded.crashed,
        }

    def close(self) -> None:
        if self._child is not None:
            self._child.close()
            self._child = None


def litert_runner(path: Path | str, accelerator: str = "cpu", **options: Any) -> LiteRTCpuRunner | LiteRTGpuRunner:
    """The LiteRT runner for ``accelerator`` ("cpu" or "gpu")."""
    if accelerator == "cpu":
        return LiteRTCpuRunner(path, **options)
    if accelerator == "gpu":
        return LiteRTGpuRunner(path, **options)
    raise MirrorError(f"accelerator must be 'cpu' or 'gpu', not {accelerator!r}")


def run_litert_once(
    model: Path | str, *, accelerator: str = "gpu", inputs: dict[str, np.ndarray] | None = None,
    signature: str | None = None, run: bool = True, enforce_f32: bool = False,
    driver: VulkanDriver | None = None, timeout: float | None = None,
) -> ChildOutcome:  # fmt: skip
    """Load ``model`` in a fresh child on ``accelerator`` ("gpu", "gpu-only" or "cpu") and
    optionally run it on ``inputs`` (the model's own dtypes; zeros for the rest).

    For any .tflite, with or without a signature in our naming; the outcome carries the
    load's result (``fully_accelerated``), the outputs and the whole log.
    """
    if driver is None and accelerator.startswith("gpu"):
        driver = find_vulkan_driver()
    env = gpu_child_env(driver, child_env()) if driver is not None and driver.found else child_env()
    timeout = gpu_timeout() if timeout is None else timeout
    payload = {"model": str(Path(model).resolve()), "accelerator": accelerator, "signature": signature,
               "enforce_f32": enforce_f32}  # fmt: skip
    with Child(WORKER, env=env, label=f"LiteRT {accelerator}") as child:
        loaded = child.request("load", payload, timeout=timeout)
        if not loaded.ok or not run:
            return loaded
        ran = child.request("run", arrays=inputs or {}, timeout=timeout)
        ran.result = {**loaded.result, **ran.result}
        ran.log = loaded.log + ran.log
        return ran
