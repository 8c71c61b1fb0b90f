"""Whole-model time of a .tflite on this machine (LiteRT CPU, or the GPU accelerator).

Only the whole model can be timed here: ai-edge-litert's Python API (Interpreter and
CompiledModel) has no per-op profiler, and the GPU path exposes no per-op timing at all.
Per-op LiteRT timing comes from ``benchmark_model`` on a phone (``phone``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mirror.runners.litert import litert_runner

WHY_WHOLE = "ai-edge-litert's Python API has no per-op profiler"


def litert_whole_ms(path: Path, feeds: dict[str, np.ndarray], accelerator: str = "cpu", runs: int = 3) -> float:
    """Average milliseconds of one run after a warm-up run."""
    runner = litert_runner(path, accelerator)
    try:
        runner.run(feeds)  # warm-up: delegate compilation and buffer allocation
        t0 = time.perf_counter()
        for _ in range(runs):
            runner.run(feeds)
        return (time.perf_counter() - t0) * 1e3 / runs
    finally:
        runner.close()
