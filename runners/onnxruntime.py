"""The onnxruntime runner: an ``.onnx`` or ``.ort`` model on the CPU execution provider."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mirror import MirrorError, one_line
from mirror.runners.base import RunnerBase, missing_inputs

# onnxruntime (1.32 on Linux) otherwise writes a device id and a telemetry event store
# under ~/.cache/Microsoft/DeveloperTools when it loads; models run locally, with nothing
# recorded about the user. Read when onnxruntime is imported, so it is set before that.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
ORT_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
          "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OnnxRuntimeRunner(RunnerBase):
    """Runs an ``.onnx`` or ``.ort`` model with onnxruntime's CPU execution provider."""

    def __init__(
        self, path: str | Path, *, name: str = "onnxruntime", threads: int | None = None, optimization: str = "all"
    ) -> None:
        import onnxruntime as ort

        self.name = name
        self.path = Path(path)
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[optimization])
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise MirrorError(f"onnxruntime cannot load {self.path}: {one_line(exc)}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = {i.name: ORT_NP.get(i.type, np.float32) for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing_inputs(self.path.name, self.input_names, feeds)
        arrays = {n: np.ascontiguousarray(feeds[n], dtype=self._dtypes[n]) for n in self.input_names}
        outs = self.session.run(self.output_names, arrays)
        return {n: np.asarray(o) for n, o in zip(self.output_names, outs, strict=True)}
