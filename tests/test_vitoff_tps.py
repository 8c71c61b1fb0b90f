"""Thin-plate splines: exactness, degeneracy detection, dense grids, and warp accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.runtime.preview import run_preview
from mirror.runtime.replay import replay_grid_step
from mirror.runtime.synthetic import Motion, cached_clip
from mirror.runtime.tps import TPS, TPSDegenerate, fit_tps, tps_kernel

MODERATE = Motion()


def test_kernel_definition() -> None:
    r = np.array([0.0, 0.5, 1.0, 3.0])
    assert np.allclose(tps_kernel(r**2), [0.0, 0.5 * 0.25 * np.log(0.25), 0.0, 0.5 * 9 * np.log(9)])


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 40), st.integers(0, 10_000))
def test_interpolates_control_points(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 500, (n, 2))
    dst = src + rng.normal(0, 8, (n, 2))
    try:
        spline = fit_tps(src, dst)
    except TPSDegenerate:  # random points can be nearly collinear for small n
        return
    assert np.allclose(spline(src), dst, atol=1e-6)


def test_reproduces_affine_maps_everywhere() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 400, (25, 2))
    a = np.array([[1.05, 0.1], [-0.08, 0.95]])
    dst = src @ a.T + [12.0, -7.0]
    spline = fit_tps(src, dst)
    q = rng.uniform(-100, 500, (200, 2))  # far outside the points too
    assert np.allclose(spline(q), q @ a.T + [12.0, -7.0], atol=1e-6)
    assert np.abs(spline.coef[:25]).max() < 1e-8  # no bending for an affine map


@pytest.mark.parametrize("src", [
    np.zeros((0, 2)),
    np.array([[0.0, 0.0], [10.0, 5.0]]),  # fewer than 3
    np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [35.0, 35.0]]),  # collinear
    np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 7.0]]),  # coincident
    np.array([[0.0, 0.0], [100.0, 0.05], [200.0, -0.05], [300.0, 0.02]]),  # nearly collinear
    np.array([[0.0, 0.0], [np.nan, 1.0], [5.0, 9.0]]),
])
def test_degenerate_configurations_are_reported(src: np.ndarray) -> None:
    with pytest.raises(TPSDegenerate):
        fit_tps(src, src + 1.0)


def test_dense_grid_equals_pointwise_evaluation_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(100, 400, (30, 2))
    spline = fit_tps(src, src + rng.normal(0, 3, (30, 2)))
    mx, my = spline.grid(90, 120, 57, 81, chunk_elems=5000)  # several row chunks
    ys, xs = np.mgrid[120:201, 90:147]
    ref = spline(np.stack([xs, ys], -1).reshape(-1, 2)).reshape(81, 57, 2)
    # float32 dense evaluation vs float64: well under a hundredth of a pixel.
    assert np.abs(mx - ref[..., 0]).max() < 0.01 and np.abs(my - ref[..., 1]).max() < 0.01
    back = TPS.from_arrays(*spline.to_arrays(30), n=30)
    assert np.allclose(back(src), spline(src))
    # A coarse lattice filled in by cubic convolution stays close for this smooth warp
    # (measured 0.0018 px), and around each control point it is the exact grid again.
    cx, cy = spline.grid(90, 120, 57, 81, step=4)
    assert np.abs(cx - mx).max() < 0.005 and np.abs(cy - my).max() < 0.005
    rows, cols = spline._near_control_points(90, 120, 57, 81, 6.0)
    assert len(rows) > 0
    assert np.array_equal(cx[rows, cols], spline.points_at(90 + cols, 120 + rows)[0])
    assert np.abs(cx[rows, cols] - mx[rows, cols]).max() < 1e-3  # float32 rounding only


def _hull_mask(pts: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixels inside the convex hull of pts (monotone chain; loops over <= 30 hull points)."""
    p = sorted(map(tuple, pts))

    def half(seq):
        out = []
        for q in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(q)
        return out

    hull = np.array(half(p)[:-1] + half(reversed(p))[:-1])
    inside = np.ones(xs.shape, bool)
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        inside &= (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]) >= 0
    return inside


def test_dense_warp_error_against_ground_truth() -> None:
    """The TPS grid of tracked points, over the moved box, against the true keyframe position.

    Inside the region the keypoints span (their convex hull, where a TPS interpolates)
    the 95th percentile error must be <= 1 px; over the whole body (including the rim,
    where it extrapolates) the mean must be <= 1 px.
    """
    clip, frames = cached_clip(MODERATE, 100)
    res = run_preview(frames[:61], roi=clip.roi(0))
    for t in (15, 30, 45, 60):
        assert not res.dnn[t]
        k, n = res.keyframe[t], res.n_points[t]
        spline = TPS.from_arrays(res.tps_ctrl[t], res.tps_coef[t], res.tps_norm[t], n)
        x0, y0, w, h = (int(round(v)) for v in res.boxes[t])
        mx, my = spline.grid(x0, y0, w, h)
        ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w]
        truth = clip.flow(t, k, np.stack([xs, ys], -1).astype(np.float64))
        err = np.hypot(mx - truth[..., 0], my - truth[..., 1])
        body = clip.body_mask(t)[y0 : y0 + h, x0 : x0 + w]
        hull = _hull_mask(res.points[t, :n], xs, ys) & body
        assert hull.mean() > 0.3
        assert np.percentile(err[hull], 95) <= 1.0, t
        assert err[body].mean() <= 1.0, t
        # The cheaper lattice evaluation Runtime uses on large boxes (every 4th pixel,
        # cubic filling, exact around the control points) stays within a thousandth of a
        # pixel of the exact grid for such tracked warps (measured 0.0003 px; filling in
        # linearly was ~0.01 px off).
        assert replay_grid_step(w * h) == 4
        cx, cy = spline.grid(x0, y0, w, h, step=4)
        assert max(np.abs(cx - mx).max(), np.abs(cy - my).max()) < 0.002


def test_smoothing_spline_averages_noise_instead_of_bending_through_it() -> None:
    """Points of a translation with LK-like noise, two of them 3 px apart with opposite 1 px
    errors: the exact spline squeezes the body between them to a third (a shear the body
    never made), the smoothing spline stays near the translation; it still fits the points
    to well under a pixel, and reproduces an affine map exactly."""
    rng = np.random.default_rng(5)
    src = np.concatenate([rng.uniform(0, 30, (12, 2)) * [1, 1.5], [[15.0, 20.0], [18.0, 20.0]]])
    dst = src + [4.0, -2.0] + rng.normal(0, 0.2, src.shape)
    dst[-2:, 0] += [1.0, -1.0]
    exact, smooth = fit_tps(src, dst), fit_tps(src, dst, smoothing=0.05)
    assert np.allclose(exact(src), dst, atol=1e-6)
    mid = np.array([[16.5, 20.0]])
    sv_exact = np.linalg.svd(exact.jacobian(mid)[0], compute_uv=False)
    sv_smooth = np.linalg.svd(smooth.jacobian(mid)[0], compute_uv=False)
    assert sv_exact[0] / sv_exact[1] > 2.5 and sv_smooth[0] / sv_smooth[1] < 1.8
    assert np.abs(smooth(src) - dst).max() < 0.6
    a = np.array([[1.1, 0.2], [-0.1, 0.9]])
    affine = src @ a.T + [3.0, 1.0]
    assert np.allclose(fit_tps(src, affine, smoothing=0.05)(src), affine, atol=1e-6)
