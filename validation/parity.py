"""Numerical parity of an artifact's runners against the PyTorch reference.

The bound per precision is stated once, in ``mirror/precisions.py`` (fp32: max abs <= 1e-3
and mean abs <= 1e-5 on every output; fp16: PSNR >= 40 dB; int8 and palettized recipes:
PSNR >= 30 dB, on the try-on image, ``psnr_output``). PSNR is computed over each output's
value range (2 for [-1, 1] images, 1 for masks).

``check_runners`` runs every runner of an artifact and returns one ``ParityResult`` each:
figures, a failure (the backend's one-line error) or why it was skipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.precisions import get_recipe, tolerance_for
from mirror.validation.report import ParityResult, format_exception


def psnr_db(got: np.ndarray, want: np.ndarray, value_range: float) -> float:
    mse = float(np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    if not math.isfinite(mse):  # NaN or Inf in an output: no signal left
        return math.nan if math.isnan(mse) else -math.inf
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
        "nonfinite": int(np.size(got) - np.count_nonzero(np.isfinite(got))),
        "reference_nonfinite": int(np.size(want) - np.count_nonzero(np.isfinite(want))),
    }


def _failures(name: str, figures: dict[str, float], tol: Any, psnr_checked: bool) -> list[str]:
    """Why one output fails its bound; NaN or Inf anywhere is a failure of its own (a NaN
    compares false against every bound, so it would otherwise pass)."""
    out = []
    if figures["reference_nonfinite"]:
        out.append(f"{name}: the PyTorch reference has {figures['reference_nonfinite']} NaN/Inf values")
    if figures["nonfinite"]:
        out.append(f"{name}: {figures['nonfinite']} NaN/Inf values")
    if out:
        return out
    if tol.max_abs is not None and figures["max_abs"] > tol.max_abs:
        out.append(f"{name}: max abs {figures['max_abs']:.3g} > {tol.max_abs:g}")
    if tol.mean_abs is not None and figures["mean_abs"] > tol.mean_abs:
        out.append(f"{name}: mean abs {figures['mean_abs']:.3g} > {tol.mean_abs:g}")
    if tol.min_psnr_db is not None and psnr_checked and figures["psnr_db"] < tol.min_psnr_db:
        out.append(f"{name}: PSNR {figures['psnr_db']:.1f} dB < {tol.min_psnr_db:g} dB")
    return out


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
    failures = [f for name, fig in per_output.items() for f in _failures(name, fig, tol, psnr_output in (None, name))]
    headline = per_output[psnr_output] if psnr_output in per_output else None
    # np.max/np.min keep a NaN (Python's max/min would depend on the order).
    return {
        "max_abs": float(np.max([f["max_abs"] for f in per_output.values()])),
        "mean_abs": float(np.max([f["mean_abs"] for f in per_output.values()])),
        "psnr_db": headline["psnr_db"] if headline else float(np.min([f["psnr_db"] for f in per_output.values()])),
        "passed": not failures,
        "failures": failures,
        "outputs": per_output,
    }


def gpu_skips(runners: list[Any], gpu_parity: str, precision: str) -> dict[str, str]:
    """The GPU runners ``--gpu-parity`` leaves out, with why. GPU inference here runs on
    SwiftShader (a CPU emulates the GPU) and is slow, so by default only fp32 artifacts run
    on GPU runners ("fp32"); "all" runs every artifact, "none" none."""
    if gpu_parity == "all" or (gpu_parity == "fp32" and get_recipe(precision).name == "fp32"):
        return {}
    why = (
        "GPU inference is off (--gpu-parity none)"
        if gpu_parity == "none"
        else f"GPU inference runs for {gpu_parity} artifacts only (--gpu-parity all)"
    )
    return {r.name: why for r in runners if r.accelerator == "gpu"}


def check_runners(
    runners: list[Any],
    feeds: dict[str, np.ndarray],
    want: dict[str, np.ndarray],
    precision: str,
    *,
    value_ranges: dict[str, float] | None = None,
    psnr_output: str | None = None,
    skip: dict[str, str] | None = None,
) -> dict[str, ParityResult]:
    """Run each runner on ``feeds`` and compare with ``want``; ``skip`` maps runner names
    the caller chose not to run to the reason shown in the report."""
    results: dict[str, ParityResult] = {}
    for runner in runners:
        ok, why = runner.availability()
        if runner.name in (skip or {}):
            results[runner.name] = ParityResult(skipped=(skip or {})[runner.name])
        elif not ok:
            results[runner.name] = ParityResult(skipped=why)
        else:
            results[runner.name] = _check_one(runner, feeds, want, precision, value_ranges, psnr_output)
    return results


def _check_one(
    runner: Any, feeds: dict[str, np.ndarray], want: dict[str, np.ndarray], precision: str,
    value_ranges: dict[str, float] | None, psnr_output: str | None,
) -> ParityResult:  # fmt: skip
    try:
        got = runner.run(feeds)
        figures = compare(got, want, precision, value_ranges=value_ranges, psnr_output=psnr_output)
    except MirrorError as exc:
        return ParityResult(passed=False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a runtime's failure on an artifact is a finding
        return ParityResult(passed=False, error=format_exception(exc))
    return ParityResult(**figures)
