"""Pyramidal Lucas-Kanade: accuracy on known motion and agreement with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

from mirror.runtime.imgproc import rgb_to_gray
from mirror.runtime.keypoints import detect_keypoints, roi_mask
from mirror.runtime.lk import LKParams, track
from mirror.runtime.synthetic import Motion, cached_clip

MODERATE = Motion()
_CRIT = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def test_tracking_error_against_ground_truth() -> None:
    clip, frames = cached_clip(MODERATE, 100)
    g0 = rgb_to_gray(frames[0])
    pts = detect_keypoints(g0, roi_mask(g0.shape, clip.roi(0)))
    assert len(pts) == 30
    errs, chained = [], pts.astype(np.float64)
    prev = g0
    alive = np.ones(len(pts), bool)
    for t in range(1, 31):  # a 1 s chain of frame-to-frame tracking, like Preview's
        g = rgb_to_gray(frames[t])
        new, ok = track(prev, g, chained)
        truth = clip.flow(t - 1, t, chained)
        errs.append(np.linalg.norm(new - truth, axis=1)[ok & alive])
        alive &= ok
        chained, prev = new.astype(np.float64), g
    step_err = np.concatenate(errs)
    assert alive.mean() >= 0.9
    # The brief's figure: median tracked-keypoint error <= 0.3 px.
    assert np.median(step_err) <= 0.3
    # Drift after 30 frames stays small too (errors do not compound badly).
    drift = np.linalg.norm(chained - clip.flow(0, 30, pts), axis=1)[alive]
    assert np.median(drift) <= 0.5


def test_agrees_with_calcOpticalFlowPyrLK() -> None:
    clip, frames = cached_clip(MODERATE, 100)
    a, b = _gray_u8(frames[10]), _gray_u8(frames[13])  # ~5 px of motion, some deformation
    mask = roi_mask(a.shape, clip.roi(10))
    pts = detect_keypoints(a.astype(np.float32), mask)
    ours, ok = track(a.astype(np.float32), b.astype(np.float32), pts)
    ref, st, _ = cv2.calcOpticalFlowPyrLK(a, b, pts.reshape(-1, 1, 2), None, winSize=(15, 15),
                                          maxLevel=2, criteria=_CRIT)
    ref, st = ref.reshape(-1, 2), st.ravel().astype(bool)
    assert np.array_equal(ok, st)
    diff = np.linalg.norm(ours - ref, axis=1)[ok]
    # Same algorithm and stopping rule. OpenCV interpolates with 14-bit fixed-point
    # weights, which moves a converged point by ~1e-3 px (median measured: 1e-4 px); a
    # point whose last update sits right at eps = 0.03 px can stop one iteration
    # earlier on one side, so single points may differ by up to ~eps.
    assert np.median(diff) <= 0.005
    assert diff.max() <= 0.05


def test_status_flags_flat_windows_and_points_leaving_the_frame() -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((120, 160)) * 255).astype(np.float32), (0, 0), 2)
    img[:, :60] = 100.0  # a flat band: no structure for LK
    shifted = np.roll(img, 3, axis=1)
    pts = np.array([[30.0, 60.0], [110.0, 60.0], [158.0, 60.0], [np.nan, 5.0]])
    new, ok = track(img, shifted, pts)
    assert not ok[0]  # flat window
    assert ok[1] and abs(new[1, 0] - 113.0) < 0.1 and abs(new[1, 1] - 60.0) < 0.1
    assert not ok[3]  # not a number
    # Content moving 20 px to the left carries a point at x = 70 to x = 50 (tracked) and
    # one at x = 12 out of the frame (x = -8): that one must be reported lost.
    left = np.roll(img, -20, axis=1)
    moved, ok2 = track(img, left, np.array([[70.0, 60.0], [12.0, 60.0]]))
    assert ok2[0] and abs(moved[0, 0] - 50.0) < 0.1
    assert not ok2[1]


def test_empty_input_and_parameters() -> None:
    img = np.zeros((50, 50), np.float32)
    new, ok = track(img, img, np.zeros((0, 2)))
    assert new.shape == (0, 2) and ok.shape == (0,)
    assert LKParams().window == 15 and LKParams().levels == 3
    assert LKParams().iterations == 10 and LKParams().eps == 0.03


def test_pyramid_cache_gives_identical_results() -> None:
    clip, frames = cached_clip(MODERATE, 100)
    grays = [rgb_to_gray(f) for f in frames[:6]]
    pts = detect_keypoints(grays[0], roi_mask(grays[0].shape, clip.roi(0))).astype(np.float64)
    cache: dict = {}
    a = b = pts
    hits = 0
    for t in range(1, 6):
        reused = cache.get("frame") is grays[t - 1]
        na, oka = track(grays[t - 1], grays[t], a, cache=cache)
        nb, okb = track(grays[t - 1], grays[t], b)
        hits += reused
        assert np.array_equal(na, nb) and np.array_equal(oka, okb)
        a = b = na.astype(np.float64)
    assert hits >= 1  # the cache was actually consulted


def test_pyramid_level_matches_pyrDown() -> None:
    from mirror.runtime.imgproc import pyr_down

    rng = np.random.default_rng(3)
    for shape in ((37, 51), (64, 48), (15, 16)):  # odd and even sizes
        img = (rng.random(shape) * 255).astype(np.float32)
        # Same 5-tap kernel and reflect-101 border in float32: rounding-level agreement.
        assert np.abs(pyr_down(img) - cv2.pyrDown(img)).max() < 1e-3


def test_build_pyramid_levels_match_pyrDown() -> None:
    from mirror.runtime.imgproc import pyr_down_t
    from mirror.runtime.lk import build_pyramid

    rng = np.random.default_rng(4)
    frame = (rng.random((300, 260)) * 255).astype(np.float32)
    for crop in (frame, frame[13:250, 7:229], frame[:9, :8]):  # in-place crop views too
        pyr = build_pyramid(crop, 4)
        ref = np.ascontiguousarray(crop)
        for k in range(1, 4):
            ref = cv2.pyrDown(ref)
            level = pyr[k].T if k % 2 else pyr[k]  # odd levels are stored transposed
            assert level.shape == ref.shape
            assert np.abs(level - ref).max() < 1e-3
    assert pyr_down_t(frame).flags.c_contiguous
