"""Numerical parity of an artifact's runner against the PyTorch reference.

Tolerances are stated per precision (see ``TOLERANCES``) and apply to every output:

* fp32: max abs <= 1e-3 and mean abs <= 1e-5. Sampling through a computed flow
  magnifies float reordering (torch vs onnxruntime differ by ~2e-4 on a random flow), so
  a max-abs bound tighter than 1e-3 would fail on correct artifacts; the mean stays tiny.
* fp16: PSNR >= 40 dB on the try-on image (``psnr_output``), against the fp32 reference.
* int8: PSNR >= 30 dB (Qualcomm AI Hub's "good" bar for compressed models).

PSNR is computed over each output's value range (2 for [-1, 1] images, 1 for masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None = None
    mean_abs: float | None = None
    min_psnr_db: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-3, mean_abs=1e-5),
    "fp16": Tolerance(min_psnr_db=40.0),
    "int8": Tolerance(min_psnr_db=30.0),
    "palettize6": Tolerance(min_psnr_db=30.0),
}


def tolerance_for(precision: str) -> Tolerance:
    """fp32/fp16 take their own bound; every int8 recipe (int8, int8-full ...) int8's."""
    if precision in TOLERANCES:
        return TOLERANCES[precision]
    return TOLERANCES["int8"]


def psnr_db(got: np.ndarray, want: np.ndarray, value_range: float) -> float:
    mse = float(np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(value_range**2 / mse)


def compare_output(got: np.ndarray, want: np.ndarray, value_range: float) -> dict[str, float]:
    """max_abs, mean_abs and psnr_db of one output against the reference."""
    if got.shape != want.shape:
        raise ValueError(f"output shape {got.shape} differs from the reference's {want.shape}")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "psnr_db": psnr_db(got, want, value_range),
    }


def compare(
    got: dict[str, np.ndarray],
    want: dict[str, np.ndarray],
    precision: str,
    value_ranges: dict[str, float] | None = None,
    psnr_output: str | None = None,
) -> dict[str, object]:
    """Parity of one runner: worst figures over all outputs, per-output detail, pass/fail.

    For fp32 every output must meet the max/mean bounds. For reduced precisions the PSNR
    bound applies to ``psnr_output`` (the try-on image, where the graph has one) or else
    to every output.
    """
    value_ranges = value_ranges or {}
    per_output = {
        name: compare_output(np.asarray(got[name]), np.asarray(want[name]), value_ranges.get(name, 2.0))
        for name in want
    }
    tol = tolerance_for(precision)
    failures = []
    for name, figures in per_output.items():
        if tol.max_abs is not None and figures["max_abs"] > tol.max_abs:
            failures.append(f"{name}: max abs {figures['max_abs']:.3g} > {tol.max_abs:g}")
        if tol.mean_abs is not None and figures["mean_abs"] > tol.mean_abs:
            failures.append(f"{name}: mean abs {figures['mean_abs']:.3g} > {tol.mean_abs:g}")
        if tol.min_psnr_db is not None and (psnr_output in (None, name)) and figures["psnr_db"] < tol.min_psnr_db:
            failures.append(f"{name}: PSNR {figures['psnr_db']:.1f} dB < {tol.min_psnr_db:g} dB")
    headline = per_output[psnr_output] if psnr_output in per_output else None
    return {
        "max_abs": max(f["max_abs"] for f in per_output.values()),
        "mean_abs": max(f["mean_abs"] for f in per_output.values()),
        "psnr_db": headline["psnr_db"] if headline else min(f["psnr_db"] for f in per_output.values()),
        "passed": not failures,
        "failures": failures,
        "outputs": per_output,
    }
