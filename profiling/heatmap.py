"""Where in the picture a reduced precision errs: |fp16 or int8 artifact - fp32 artifact| of one
image output (the try-on for gen), averaged over channels and pooled to a coarse grid.

The artifacts of one target run on the same inputs on this machine's CPU (LiteRT for
.tflite, onnxruntime for .onnx); the grid keeps the report small and is drawn as SVG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mirror.runners.litert import litert_runner
from mirror.runners.onnxruntime import OnnxRuntimeRunner

CELLS = (32, 24)  # rows, columns of the pooled grid (a 256x192 image: 8x8 pixels a cell)


def error_grid(reference: np.ndarray, other: np.ndarray, cells: tuple[int, int] = CELLS) -> dict[str, Any]:
    """Mean absolute error per cell of an NCHW image output, with its max and mean over pixels."""
    diff = np.abs(other.astype(np.float64) - reference.astype(np.float64))[0].mean(axis=0)  # [H, W]
    rows, cols = min(cells[0], diff.shape[0]), min(cells[1], diff.shape[1])
    h, w = diff.shape[0] // rows * rows, diff.shape[1] // cols * cols
    pooled = diff[:h, :w].reshape(rows, h // rows, cols, w // cols).mean(axis=(1, 3))
    return {"grid": np.round(pooled, 6).tolist(), "max_abs": float(diff.max()), "mean_abs": float(diff.mean())}


def _run(path: Path, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    runner = litert_runner(path, "cpu") if path.suffix == ".tflite" else OnnxRuntimeRunner(path)
    try:
        return runner.run(feeds)[output]
    finally:
        runner.close()


def precision_maps(artifacts: dict[str, Path], feeds: dict[str, np.ndarray], output: str) -> dict[str, Any]:
    """``{"output", "reference", precision: error_grid}`` for every non-fp32 artifact; ``{}`` when
    the output is not an NCHW image."""
    reference = _run(artifacts["fp32"], feeds, output)
    if reference.ndim != 4:
        return {}
    maps: dict[str, Any] = {"output": output, "reference": artifacts["fp32"].name}
    for precision, path in sorted(artifacts.items()):
        if precision != "fp32":
            maps[precision] = {"artifact": path.name, **error_grid(reference, _run(path, feeds, output))}
    return maps
