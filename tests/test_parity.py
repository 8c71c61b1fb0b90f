"""Parity bounds against the reference: the figures, the bounds per precision, and NaN/Inf.

A NaN compares false against every bound, so without its own rule an output full of NaN
would pass; these tests keep that from coming back.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mirror.validation.parity import compare, compare_output, psnr_db

RNG = np.random.default_rng(0)
WANT = {"image": RNG.uniform(-1, 1, (1, 3, 8, 6)).astype(np.float32), "mask": RNG.uniform(0, 1, (1, 1, 8, 6))}
RANGES = {"image": 2.0, "mask": 1.0}


def _got(**changes):
    got = {k: v.copy() for k, v in WANT.items()}
    for name, fn in changes.items():
        fn(got[name])
    return got


def test_exact_outputs_pass_every_precision():
    for precision in ("fp32", "fp16", "int8", "int8-full", "palettize6"):
        r = compare(_got(), WANT, precision, RANGES, psnr_output="image")
        assert r["passed"] and r["failures"] == [] and r["max_abs"] == 0.0 and r["psnr_db"] == math.inf


def test_fp32_bounds_are_max_and_mean_abs():
    def nudge(a):
        a[0, 0, 0, 0] += 5e-4  # within max abs 1e-3, mean over 144 values ~3.5e-6 < 1e-5

    assert compare(_got(image=nudge), WANT, "fp32", RANGES)["passed"]

    def push(a):
        a[0, 0, 0, 0] += 2e-3

    r = compare(_got(image=push), WANT, "fp32", RANGES)
    assert not r["passed"] and any(f.startswith("image: max abs") for f in r["failures"])


def test_reduced_precision_is_judged_by_psnr_on_the_headline_output():
    def noise(a):
        a += np.random.default_rng(1).normal(0, 0.05, a.shape).astype(a.dtype)

    r = compare(_got(image=noise), WANT, "fp16", RANGES, psnr_output="image")
    assert not r["passed"] and r["failures"][0].startswith("image: PSNR")
    # The same noise on a non-headline output does not decide reduced-precision parity.
    assert compare(_got(mask=noise), WANT, "fp16", RANGES, psnr_output="image")["passed"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_an_output_always_fails(bad):
    def poison(a):
        a[0, 0, 1, 1] = bad

    for precision in ("fp32", "fp16", "int8"):
        r = compare(_got(image=poison), WANT, precision, RANGES, psnr_output="image")
        assert not r["passed"], (precision, r)
        assert "image: 1 NaN/Inf values" in r["failures"]
        assert r["outputs"]["image"]["nonfinite"] == 1


def test_nan_in_the_reference_fails_and_says_whose():
    want = {k: v.copy() for k, v in WANT.items()}
    want["mask"][:] = np.nan
    r = compare(_got(), want, "fp32", RANGES)  # the runner's outputs are finite
    assert not r["passed"]
    assert r["failures"] == [f"mask: the PyTorch reference has {want['mask'].size} NaN/Inf values"]


def test_worst_figures_keep_a_nan_whatever_the_output_order():
    def poison(a):
        a[0, 0, 0, 0] = np.nan

    for order in (("image", "mask"), ("mask", "image")):
        want = {k: WANT[k] for k in order}
        r = compare(_got(image=poison), want, "fp32", RANGES)
        assert math.isnan(r["max_abs"]) and not r["passed"]


def test_psnr_and_figures_of_one_output():
    a = np.zeros((4, 4), np.float32)
    b = np.full((4, 4), 0.1, np.float32)
    assert psnr_db(a, b, 2.0) == pytest.approx(10 * math.log10(4 / 0.01))
    assert psnr_db(a, a, 2.0) == math.inf
    assert psnr_db(np.full((2,), np.inf), np.zeros(2), 2.0) == -math.inf
    assert math.isnan(psnr_db(np.full((2,), np.nan), np.zeros(2), 2.0))
    fig = compare_output(b, a, 2.0)
    assert fig["max_abs"] == pytest.approx(0.1) and fig["nonfinite"] == 0 and fig["reference_nonfinite"] == 0
    with pytest.raises(ValueError, match="shape"):
        compare_output(a, np.zeros((2, 2)), 2.0)


def test_gpu_parity_policy_names_gpu_runners_only():
    from types import SimpleNamespace

    from mirror.validation.parity import gpu_skips

    runners = [SimpleNamespace(name="litert-cpu", accelerator="cpu"),
               SimpleNamespace(name="litert-gpu", accelerator="gpu")]
    assert gpu_skips(runners, "fp32", "fp32") == {} and gpu_skips(runners, "fp32", "float32") == {}  # an alias too
    only_fp32 = "GPU inference runs for fp32 artifacts only (--gpu-parity all)"
    assert gpu_skips(runners, "fp32", "int8") == {"litert-gpu": only_fp32}
    assert gpu_skips(runners, "all", "int8") == {}
    assert gpu_skips(runners, "none", "fp32") == {"litert-gpu": "GPU inference is off (--gpu-parity none)"}
