"""Remap (nearest / bilinear / bicubic) against cv2.remap, and compositing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mirror.runtime.remap import Source, composite, remap, to_uint8

_CV = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def _maps(rng, shape, lo_x, hi_x, lo_y, hi_y):
    mx = rng.uniform(lo_x, hi_x, shape).astype(np.float32)
    my = rng.uniform(lo_y, hi_y, shape).astype(np.float32)
    return mx, my


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_cv2_on_quantized_maps(interp: str, channels: int) -> None:
    rng = np.random.default_rng(7)
    shape = (70, 90) if channels == 1 else (70, 90, 3)
    img = (rng.random(shape) * 255).astype(np.float32)
    # Coordinates reaching 6 px outside the image exercise BORDER_CONSTANT.
    mx, my = _maps(rng, (60, 80), -6, 96, -6, 76)
    # cv2 snaps coordinates to 1/32 px; on coordinates already on that lattice the two
    # implementations compute the same weighted sums in float32, so they agree to
    # float32 rounding of values up to 255 (1e-3 leaves ~30x headroom).
    mx, my = np.round(mx * 32) / 32, np.round(my * 32) / 32
    ref = cv2.remap(img, mx, my, _CV[interp], borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ours = remap(img, mx, my, interp)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_matches_cv2_on_arbitrary_maps_within_quantization(interp: str) -> None:
    rng = np.random.default_rng(8)
    img = cv2.GaussianBlur((rng.random((80, 80, 3)) * 255).astype(np.float32), (0, 0), 1.5)
    mx, my = _maps(rng, (50, 50), 2, 77, 2, 77)
    ref = cv2.remap(img, mx, my, _CV[interp])
    ours = remap(img, mx, my, interp)
    # cv2 moves each coordinate by up to 1/64 px per axis; the value can change by at
    # most that times the largest local gradient (x2 for bicubic overshoot).
    gy, gx = np.gradient(img, axis=(0, 1))
    bound = 2.0 * (np.abs(gx).max() + np.abs(gy).max()) / 64.0
    assert np.abs(ours - ref).max() <= bound
    assert np.abs(ours - ref).mean() <= bound / 4


def test_uint8_output_and_border_value() -> None:
    rng = np.random.default_rng(9)
    img = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    mx, my = _maps(rng, (30, 30), -10, 60, -10, 50)
    mx, my = np.round(mx * 32) / 32, np.round(my * 32) / 32
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=(9, 9, 9))
    ours = to_uint8(remap(img, mx, my, "bicubic", border_value=9.0))
    # cv2 uses 15-bit fixed-point weights for 8-bit images: off by at most one level.
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_identity_and_non_finite_coordinates() -> None:
    rng = np.random.default_rng(10)
    img = rng.random((20, 30)).astype(np.float32)
    gy, gx = np.mgrid[0:20, 0:30].astype(np.float32)
    for interp in ("nearest", "bilinear", "bicubic"):
        assert np.allclose(remap(Source(img), gx, gy, interp), img, atol=1e-6)
    gx[0, 0] = np.nan
    out = remap(img, gx, gy, "bilinear", border_value=0.0)
    assert out[0, 0] == 0.0 and np.allclose(out[1:], img[1:], atol=1e-6)


def test_composite_pastes_only_under_the_mask_and_clips() -> None:
    frame = np.zeros((10, 12, 3), np.uint8)
    patch = np.full((4, 5, 3), 200.4, np.float32)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    out = composite(frame, patch, mask, x0=-1, y0=8)  # hangs over the left and bottom edges
    assert out.dtype == np.uint8 and frame.max() == 0
    expect = np.zeros((10, 12), bool)
    expect[9, 0:3] = True
    assert np.array_equal(out[..., 0] > 0, expect)
    assert (out[expect] == 200).all()


def test_allocator_tuning_is_harmless() -> None:
    import platform

    from mirror.runtime.perf import tune_allocator

    took = tune_allocator()
    assert took == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert remap(img, np.array([1.5], np.float32), np.array([1.0], np.float32))[0] == 5.5


def test_worker_threads_give_identical_results() -> None:
    from mirror.runtime.perf import set_workers, workers
    from mirror.runtime.tps import fit_tps

    rng = np.random.default_rng(11)
    img = (rng.random((120, 90, 3)) * 255).astype(np.float32)
    mx, my = _maps(rng, (200, 300), -5, 95, -5, 125)
    src = rng.uniform(0, 300, (30, 2))
    spline = fit_tps(src, src + rng.normal(0, 3, (30, 2)))
    before = workers()
    try:
        set_workers(1)
        ref = remap(Source(img), mx, my, "bicubic"), spline.grid(0, 0, 300, 200)
        set_workers(3)
        got = remap(Source(img), mx, my, "bicubic"), spline.grid(0, 0, 300, 200)
    finally:
        set_workers(before)
    assert np.array_equal(ref[0], got[0])
    assert np.array_equal(ref[1][0], got[1][0]) and np.array_equal(ref[1][1], got[1][1])
