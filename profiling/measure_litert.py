"""Whole-model time of a .tflite on this machine (LiteRT's CPU interpreter, XNNPACK).

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


def litert_whole_ms(path: Path, feeds: dict[str, np.ndarray], runs: int = 3, threads: int | None = None) -> float:
    """Average milliseconds of one run on LiteRT's CPU interpreter after a warm-up run."""
    runner = litert_runner(path, "cpu", num_threads=threads or 2)
    try:
        runner.run(feeds)  # warm-up: XNNPACK packs the weights on the first run
        t0 = time.perf_counter()
        for _ in range(runs):
            runner.run(feeds)
        return (time.perf_counter() - t0) * 1e3 / runs
    finally:
        runner.close()
