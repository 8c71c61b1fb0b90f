"""Re-run triggers (WE, KE) and Preview's per-frame DNN decisions on clips with known motion."""

from __future__ import annotations

import numpy as np
import pytest

from mirror import MirrorError
from mirror.runtime.preview import Preview, run_preview
from mirror.runtime.synthetic import Motion, cached_clip
from mirror.runtime.triggers import KE_THRESHOLD, keypoint_error, ncc

MODERATE = Motion()
SMALL = Motion(trans_amp=(4.0, 2.0), deform_amp=1.0)
CUT = Motion(cut_at=12)
DEFORM = Motion(deform_amp=2.0, deform_ramp=1.0)  # the deformation grows 1 px per frame


def _grid_points(n: int = 5) -> np.ndarray:
    g = np.linspace(20, 180, n)
    return np.stack(np.meshgrid(g, g * 1.5), -1).reshape(-1, 2)


def test_ke_is_zero_for_translation_and_grows_with_deformation() -> None:
    key = _grid_points()
    box = np.array([0.0, 0.0, 200.0, 300.0])
    shift = np.array([13.0, -7.0])
    assert keypoint_error(key + shift, box + [*shift, 0, 0], key, box) < 1e-9
    errs = []
    for amp in (2.0, 6.0, 12.0, 24.0):
        cur = key + amp * np.stack([np.sin(key[:, 1] / 40.0), np.cos(key[:, 0] / 50.0)], 1)
        errs.append(keypoint_error(cur, box, key, box))
    assert all(a < b for a, b in zip(errs, errs[1:], strict=False))
    assert errs[0] < KE_THRESHOLD < errs[-1]


def test_ke_is_infinite_without_points_or_spline() -> None:
    box = np.array([0.0, 0.0, 100.0, 100.0])
    assert keypoint_error(np.zeros((0, 2)), box, np.zeros((0, 2)), box) == float("inf")
    line = np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]])
    assert keypoint_error(line, box, line, box) == float("inf")


def test_ncc_basics() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((30, 40))
    assert ncc(a, 3 * a + 1) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert abs(ncc(a, rng.random((30, 40)))) < 0.1
    assert ncc(a, np.ones_like(a)) == 0.0


def test_quiet_on_small_motion() -> None:
    clip, frames = cached_clip(SMALL, 30)
    res = run_preview(frames, roi=clip.roi(0))
    assert np.nonzero(res.dnn)[0].tolist() == [0]  # frame 1 always, nothing else
    assert res.reasons[0] == "first frame"
    assert np.nanmin(res.ncc[1:]) > res.ncc_threshold[1:].max()
    assert res.tps_error[1:].max() < KE_THRESHOLD


def test_we_fires_on_a_scene_cut() -> None:
    clip, frames = cached_clip(CUT, 16)
    res = run_preview(frames, roi=clip.roi(0))
    assert res.dnn[0] and not res.dnn[1:12].any()
    assert res.dnn[12], res.reasons[12]
    assert res.reasons[12].startswith(("WE", "fold", "few-points")), res.reasons[12]
    assert not res.dnn[13:].any()  # the new keyframe tracks the new scene
    assert res.keyframe[15] == 12


def test_ke_fires_on_a_large_deformation() -> None:
    clip, frames = cached_clip(DEFORM, 30)
    res = run_preview(frames, roi=clip.roi(0))
    fired = np.nonzero(res.dnn[1:])[0] + 1
    assert len(fired) >= 1
    first = fired[0]
    # Quiet while the deformation is small, firing (through KE) once it is large.
    assert first >= 8
    assert res.reasons[first].startswith("KE"), res.reasons[first]
    assert res.tps_error[first] > KE_THRESHOLD
    assert res.tps_error[1:4].max() < KE_THRESHOLD


def test_dnn_free_fraction_on_moderate_motion() -> None:
    """The paper's headline: at least 93.6% of frames without the DNN."""
    clip, frames = cached_clip(MODERATE, 100)
    res = run_preview(frames, roi=clip.roi(0))
    assert res.dnn[0]
    assert 1.0 - res.dnn_fraction >= 0.936
    # Every tracked frame kept enough points and had a valid spline.
    assert (res.tps_ok | res.dnn).all()
    assert res.n_points[~res.dnn].min() >= 20


def test_preview_rejects_bad_setup() -> None:
    with pytest.raises(MirrorError, match="--roi"):
        Preview()
    with pytest.raises(MirrorError, match="does not overlap"):
        Preview(roi=(600, 10, 50, 50))
    pv = Preview(roi=(10, 10, 50, 50))
    with pytest.raises(MirrorError, match="540x960"):
        pv.step(np.zeros((100, 100, 3), np.uint8))


def test_parser_mode_uses_labels_for_box_and_mask() -> None:
    clip, frames = cached_clip(SMALL, 30)
    calls = []

    def parser(frame: np.ndarray) -> np.ndarray:
        calls.append(1)
        labels = np.zeros(frame.shape[:2], np.uint8)
        x, y, w, h = clip.roi(len(calls) - 1)
        labels[y : y + h // 5, x : x + w] = 1  # head
        labels[y + h // 5 : y + h, x : x + w] = 2  # torso
        return labels

    res = run_preview(frames[:5], parser=parser)
    assert len(calls) == 5  # parsed on every frame
    x, y, w, h = clip.roi(0)
    # Person box: labels 1-4 padded by 20 px in x, 20 above and 30 below.
    assert np.allclose(res.boxes[0], [x - 20, y - 20, w + 40, h + 50])
    assert res.mask_source == "parser"
    assert set(np.unique(res.parsing[0])) <= {0, 1, 2}
    assert (res.parsing[0] == 2).sum() > (res.parsing[0] == 1).sum() > 0


def test_we_over_the_body_ignores_the_background_the_body_moves_over() -> None:
    """A textured body moving 4 px right over a textured, still background: the right warp
    (the body's motion) matches the body, not the road around it; WE over the keyframe's
    body mask sees a good warp where WE over the whole box sees a bad one."""
    from mirror.runtime.triggers import box_lattice, warp_ncc

    rng = np.random.default_rng(3)
    key = rng.uniform(0, 255, (120, 100)).astype(np.float32)
    cur = key.copy()
    body = np.zeros_like(key, bool)
    body[30:90, 30:60] = True
    cur[30:90, 34:64] = key[30:90, 30:60]  # the body, 4 px to the right; the background stays
    xs, ys = box_lattice(np.array([25.0, 25.0, 45.0, 70.0]), key.shape, 1)
    gx, gy = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    whole = warp_ncc(cur, key, xs, ys, gx - 4, gy)
    on_body = warp_ncc(cur, key, xs, ys, gx - 4, gy, body)
    assert on_body > 0.99 and whole < 0.8
