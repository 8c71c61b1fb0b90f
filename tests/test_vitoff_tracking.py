"""VITOFF's book-keeping: absent frames, re-anchoring, keyframes that can track, warps the
points cannot support, decisions that survive a colour conversion, honest counting."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from mirror.runtime.keypoints import detect_keypoints, fit_box_motion
from mirror.runtime.preview import Preview, VitoffConfig, run_preview
from mirror.runtime.replay import replay
from mirror.runtime.store import open_store, write_store
from mirror.runtime.synthetic import Motion, cached_clip
from mirror.runtime.tps import fit_tps
from mirror.runtime.triggers import warp_support

SMALL = Motion(trans_amp=(4.0, 2.0), deform_amp=1.0)
MODERATE = Motion()


def _parser(clip, gone: set[int] = frozenset()):
    """A body model stand-in: head and torso labels over the clip's body box, none on `gone` frames."""
    calls = [0]

    def parse(frame: np.ndarray) -> np.ndarray:
        t = calls[0]
        calls[0] += 1
        labels = np.zeros(frame.shape[:2], np.uint8)
        if t not in gone:
            x, y, w, h = clip.roi(t)
            labels[y : y + h // 5, x : x + w] = 1
            labels[y + h // 5 : y + h, x : x + w] = 2
        return labels

    return parse


def _invert(calls: list):
    def dnn(req):
        calls.append(req.frame_index)
        return 255 - req.person, req.parsing > 0
    return dnn


def test_absent_before_the_first_body_and_while_the_person_is_away(tmp_path: Path) -> None:
    clip, frames = cached_clip(SMALL, 30)
    gone = {0, 1, 2, 10, 11, 12}
    res = run_preview(frames[:20], parser=_parser(clip, gone))
    assert res.absent.tolist() == [t in gone for t in range(20)]
    assert res.reasons[0].startswith("absent") and res.keyframe[0] == -1
    # The first keyframe is the first frame with a body; tracking resumes with a keyframe.
    assert res.dnn[3] and res.reasons[3] == "first body"
    assert res.dnn[13] and res.reasons[13] == "subject back in view"
    assert not (res.dnn & res.absent).any()
    assert res.absent_fraction == pytest.approx(6 / 20)
    calls: list[int] = []
    out = replay(write_store(tmp_path / "ctx", res), _invert(calls), frames[:20])
    assert calls == np.nonzero(res.dnn)[0].tolist()
    for t in gone:  # no DNN, no paste: the frame passes through
        assert np.array_equal(out[t], frames[t])
    doc = json.loads((tmp_path / "ctx" / "preview.json").read_text())
    assert doc["absent_frames"] == 6 and doc["absent_fraction"] == pytest.approx(0.3)
    assert doc["decision_counts"]["absent"] == 6
    assert doc["box_on_body_fraction"] == pytest.approx(1.0)
    # tryon's stats.json and summary line count the absent frames apart.
    from mirror.runtime.stats import summary_line, tryon_stats

    stats = tryon_stats(20, int(res.dnn.sum()), {"dnn": 5.0, "vitoff": 5.0}, [1.0], [0.5], int(res.absent.sum()))
    assert stats["absent_frames"] == 6 and stats["absent_fraction"] == pytest.approx(0.3)
    assert "no subject on 6 (30.0%" in summary_line(stats, "o.mp4")


def test_a_region_that_leaves_the_frame_is_absent(tmp_path: Path) -> None:
    motion = Motion(drift=(14.0, 0.0), trans_amp=(0.0, 0.0), deform_amp=1.0)
    clip, frames = cached_clip(motion, 30)
    res = run_preview(frames, roi=clip.roi(0))
    gone = np.nonzero(res.absent)[0]
    assert len(gone) and gone[0] > 5 and res.absent[gone[0]:].all()
    assert res.reasons[gone[0]].startswith("absent")
    inside = np.clip(540 - res.boxes[gone[0] - 1, 0], 0, None) / res.boxes[gone[0] - 1, 2]
    assert inside >= 0.5  # the last tracked frame still had half its box in view
    assert not res.dnn[gone[0]:].any()
    st = open_store(write_store(tmp_path / "ctx", res))
    assert st["absent"].sum() == len(gone)
    assert "box_on_body_fraction" not in st.preview  # no body model ran


def test_roi_box_follows_scale_and_shift() -> None:
    rng = np.random.default_rng(1)
    box = np.array([100.0, 100.0, 80.0, 120.0])
    subject = rng.uniform([120, 130], [160, 190], (20, 2))
    background = np.concatenate([rng.uniform([100, 100], [104, 220], (4, 2)),
                                 rng.uniform([176, 100], [180, 220], (4, 2))])
    key = np.concatenate([subject, background])
    c = box[:2] + box[2:] / 2
    cur = np.concatenate([(subject - c) * 1.1 + c + [6.0, -3.0], background])
    cur += rng.normal(0, 0.2, cur.shape)
    s, d, res = fit_box_motion(key, cur, box)
    assert s == pytest.approx(1.1, abs=0.02) and np.allclose(d, [6.0, -3.0], atol=0.5)
    assert res[20:].min() > 3 * res[:20].max()  # the background points stand out


def test_keyframe_short_of_points_detects_again_with_a_smaller_spacing() -> None:
    frame = np.full((960, 540, 3), 128, np.uint8)
    checker = (np.indices((24, 24)) // 8).sum(0) % 2 * 200 + 20  # 3x3 squares of 8 px
    frame[400:424, 200:224] = checker[..., None].astype(np.uint8)
    roi = (70, 212, 400, 400)  # a 400 px subject: 20 px spacing
    gray = frame[..., 0].astype(np.float32)
    mask = np.zeros((960, 540), bool)
    mask[roi[1] : roi[1] + 400, 70:470] = True
    assert len(detect_keypoints(gray, mask, 30, 20.0)) < 5  # the paper's spacing leaves too few
    pv = Preview(roi=roi)
    rec = pv.step(frame)
    assert rec["dnn"] and rec["n_points"] >= VitoffConfig().min_points


def test_warps_the_points_cannot_support_are_refused() -> None:
    g = np.stack(np.meshgrid(np.linspace(0, 100, 4), np.linspace(0, 150, 4)), -1).reshape(-1, 2)
    box = np.array([0.0, 0.0, 100.0, 150.0])
    assert warp_support(fit_tps(g, g + [5.0, 3.0]), box) == ""
    folded = g.copy()
    folded[[5, 6]] = folded[[6, 5]]  # two neighbours swap places: the spline folds between them
    assert warp_support(fit_tps(g, folded), box).startswith("fold")
    sheared = g @ np.array([[1.0, 0.0], [2.5, 1.0]])  # x += 2.5 y
    assert "shears" in warp_support(fit_tps(g, sheared), box)


@functools.lru_cache(maxsize=1)
def _yuv_round_trip(motion: Motion, n: int) -> np.ndarray:
    """The clip through BT.601 limited-range RGB -> 8-bit YUV -> RGB: a second colour path,
    1-3 LSB away from the first (what reading a .y4m instead of an .npy does)."""
    return _yuv(cached_clip(motion, n)[1])


def _yuv(frames: np.ndarray) -> np.ndarray:
    """[T,H,W,3] RGB frames through BT.601 8-bit YUV and back."""
    m = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]], np.float32)
    off = np.array([16, 128, 128], np.float32)
    inv = np.linalg.inv(m).astype(np.float32)
    out = np.empty_like(frames)
    for t, f in enumerate(frames):  # frame by frame keeps the float temporaries small
        yuv = np.clip(np.rint(f.astype(np.float32) @ m.T + off), 0, 255)
        out[t] = np.clip(np.rint((yuv - off) @ inv.T), 0, 255)
    return out


@pytest.mark.parametrize("mode", ["roi", "parser"])
def test_decisions_survive_a_colour_conversion(mode: str) -> None:
    clip, frames = cached_clip(MODERATE, 100)
    other = _yuv_round_trip(MODERATE, 100)
    assert 0 < np.abs(other.astype(int) - frames).max() <= 3
    kw = {"roi": clip.roi(0)} if mode == "roi" else {}
    a = run_preview(frames, parser=_parser(clip) if mode == "parser" else None, **kw)
    b = run_preview(other, parser=_parser(clip) if mode == "parser" else None, **kw)
    assert (a.dnn != b.dnn).mean() <= 0.01, (np.nonzero(a.dnn)[0], np.nonzero(b.dnn)[0])
    assert 1.0 - a.dnn_fraction >= 0.936


@pytest.mark.parametrize("name,count", [("vtest.avi", 45), ("carphone.mp4", 120)])
def test_real_clip_decisions_survive_a_colour_conversion(name: str, count: int) -> None:
    """The body model and tracker on real frames (a walker on vtest.avi's landscape canvas, with
    two re-anchoring keyframes; carphone's turning head and shoulders, the whole clip) give the same keyframes
    and absent frames from the decoded clip and from its BT.601 8-bit YUV round trip."""
    import itertools

    from mirror.runtime.assets import asset_path, missing
    from mirror.runtime.body import BodyModel
    from mirror.runtime.video import canvas_frames, open_video, placement

    if name in missing():
        pytest.skip(f"{name} is not cached: run `mirror fetch`")
    clip = open_video(asset_path(name))
    frames = np.stack(list(itertools.islice(canvas_frames(clip, placement(clip.info.height, clip.info.width)),
                                            count)))
    other = _yuv(frames)
    assert 0 < np.abs(other.astype(int) - frames).max() <= 3
    a, b = run_preview(frames, parser=BodyModel()), run_preview(other, parser=BodyModel())
    assert (a.dnn != b.dnn).mean() <= 0.01, (np.nonzero(a.dnn)[0], np.nonzero(b.dnn)[0])
    assert np.array_equal(a.absent, b.absent) and a.dnn.sum() >= 2


def test_roi_mode_follows_a_walker_on_a_real_street_clip() -> None:
    """OpenCV's vtest.avi (768x576, 10 fps; on its landscape canvas walkers are ~35x95 px): a
    region on the red-jacketed walker at source frame 25 stays on the walker and the companion
    beside them as they cross the square and turn away, 10 s later (their positions read off
    the clip, in source pixels)."""
    import itertools

    from mirror.runtime.assets import asset_path, missing
    from mirror.runtime.video import canvas_frames, open_video, placement

    if "vtest.avi" in missing():
        pytest.skip("vtest.avi is not cached: run `mirror fetch`")
    clip = open_video(asset_path("vtest.avi"))
    place = placement(clip.info.height, clip.info.width)
    assert place.canvas == (540, 960)  # a landscape video is tracked on a landscape canvas
    frames = itertools.islice(canvas_frames(clip, place), 25, 126)
    x, y = place.to_canvas(658, 260)
    res = run_preview(frames, roi=(x, y, 37 * place.scale, 100 * place.scale))
    # The pair's box in source pixels (x0, y0, x1, y1) at source frames 55, 85, 105 and 125.
    walkers = {30: (479, 207, 561, 306), 60: (449, 165, 512, 245), 80: (507, 142, 564, 217),
               100: (556, 125, 621, 194)}
    for t, (x0, y0, x1, y1) in walkers.items():
        (cx0, cy0), (cx1, cy1) = place.to_canvas(x0, y0), place.to_canvas(x1, y1)
        cx, cy = res.boxes[t, :2] + res.boxes[t, 2:] / 2
        assert cx0 <= cx <= cx1 and cy0 <= cy <= cy1, (t, res.boxes[t])
    assert not res.absent.any()
    assert res.boxes[100, 3] < res.boxes[0, 3]  # walking away, the walker gets smaller: so does the box
