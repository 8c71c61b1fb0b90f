"""Context store (round trip, integrity checks, atomic writes) and Runtime replay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mirror import MirrorError
from mirror.runtime.preview import run_preview
from mirror.runtime.remap import remap
from mirror.runtime.replay import KeyframeRequest, replay, replay_grid_step
from mirror.runtime.store import FORMAT, VERSION, open_store, write_store
from mirror.runtime.synthetic import Motion, cached_clip

MODERATE = Motion()
N = 24


@pytest.fixture(scope="module")
def preview():
    clip, frames = cached_clip(MODERATE, 100)
    return clip, frames[:N], run_preview(frames[:N], roi=clip.roi(0))


@pytest.fixture()
def store(tmp_path: Path, preview) -> Path:
    return write_store(tmp_path / "ctx", preview[2], {"note": "test"})


def test_round_trip(store: Path, preview) -> None:
    res = preview[2]
    st = open_store(store)
    assert st.frames == N and st.frame_size == (960, 540)
    for name in ("boxes", "dnn", "keyframe", "n_points", "paddings", "tps_coef", "tps_norm", "tps_ok"):
        assert np.array_equal(st[name], getattr(res, name)), name
    for name in ("points", "key_points", "tps_ctrl", "ncc", "ncc_threshold", "tps_error"):
        assert np.array_equal(st[name], getattr(res, name), equal_nan=True), name
    assert np.array_equal(st.parsing, res.parsing)
    doc = json.loads((store / "preview.json").read_text())
    assert doc["frames"] == N and doc["note"] == "test"
    assert doc["dnn_fraction"] == pytest.approx(res.dnn_fraction, abs=1e-6)
    assert [d["dnn"] for d in doc["decisions"]] == res.dnn.tolist()
    assert set(doc["stage_ms"]["mean_per_frame"]) >= {"lk", "tps", "ncc", "detect", "total"}
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION
    for name, meta in manifest["files"].items():
        assert (store / name).stat().st_size == meta["bytes"]
        assert len(meta["sha256"]) == 64
    assert not [p for p in store.parent.iterdir() if p.name.startswith(".ctx")]  # no temp left


@pytest.mark.parametrize("name", ["context.npz", "parsing.npz", "preview.json"])
def test_tampered_byte_is_refused(store: Path, name: str) -> None:
    p = store / name
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(MirrorError, match="SHA-256") as exc:
        open_store(store)
    assert "\n" not in str(exc.value)


def test_truncated_file_is_refused(store: Path) -> None:
    p = store / "context.npz"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(MirrorError, match="truncated"):
        open_store(store)


def test_wrong_version_and_foreign_folders_are_refused(store: Path, tmp_path: Path) -> None:
    mpath = store / "manifest.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps(manifest | {"version": VERSION + 1}))
    with pytest.raises(MirrorError, match="version"):
        open_store(store)
    # A version 3 store tracked a landscape video on the portrait canvas: its boxes do not fit the
    # canvas Runtime now replays onto, so it is refused, saying why.
    mpath.write_text(json.dumps(manifest | {"version": 3}))
    with pytest.raises(MirrorError, match="version 3.*orientation.*rerun `mirror preview`"):
        open_store(store)
    mpath.write_text(json.dumps(manifest | {"format": "something-else"}))
    with pytest.raises(MirrorError, match="not a VITOFF context store"):
        open_store(store)
    mpath.write_text("{not json")
    with pytest.raises(MirrorError, match="unreadable"):
        open_store(store)
    with pytest.raises(MirrorError, match="no manifest.json"):
        open_store(tmp_path)


def test_consistent_but_wrong_arrays_are_refused(store: Path, preview, tmp_path: Path) -> None:
    res = preview[2]
    bad = write_store(tmp_path / "bad", res)
    # A store whose manifest was regenerated around a payload of the wrong shape.
    broken = dataclasses.replace(res, boxes=res.boxes[:, :3].copy())
    write_store(bad, broken)
    with pytest.raises(MirrorError, match="'boxes' should be float64"):
        open_store(bad)


def test_overwrite_rules(store: Path, preview, tmp_path: Path) -> None:
    res = preview[2]
    write_store(store, res)  # replacing a store is fine
    assert open_store(store).frames == N
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(MirrorError, match="not a VITOFF context store"):
        write_store(other, res)
    assert (other / "keep.jpg").read_bytes() == b"x"
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(MirrorError, match="not a folder"):
        write_store(afile, res)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert open_store(write_store(empty, res)).frames == N


def _invert_tryon(calls: list):
    def dnn(req: KeyframeRequest):
        calls.append(req.frame_index)
        assert req.person.shape == (256, 192, 3) and req.person.dtype == np.uint8
        return 255 - req.person, req.parsing > 0
    return dnn


def test_replay_calls_the_dnn_only_on_keyframes_and_tracks_the_garment(store: Path, preview) -> None:
    clip, frames, res = preview
    calls: list[int] = []
    out = replay(store, _invert_tryon(calls), frames)
    assert calls == np.nonzero(res.dnn)[0].tolist()
    assert out.shape == frames.shape and out.dtype == np.uint8
    ys, xs = np.mgrid[0:960, 0:540].astype(np.float64)
    for t in (8, N - 1):
        # Ground truth: the keyframe's composited output carried by the true motion.
        truth = clip.flow(t, 0, np.stack([xs, ys], -1))
        expect = remap(out[0].astype(np.float32), truth[..., 0], truth[..., 1], "bicubic")
        body = clip.body_mask(t, erode=8)
        mse = ((out[t].astype(np.float64) - expect)[body] ** 2).mean()
        still = ((out[0].astype(np.float64) - expect)[body] ** 2).mean()
        psnr = 10 * np.log10(255.0**2 / mse)
        # The warp is accurate to ~1 px: > 30 dB, and far better than not warping at all.
        assert psnr > 30.0, (t, psnr)
        assert mse < still / 10
        # Outside the box nothing changes.
        x0, y0, w, h = (int(round(v)) for v in res.boxes[t])
        outside = np.ones((960, 540), bool)
        outside[max(0, y0) : y0 + h, max(0, x0) : x0 + w] = False
        assert np.array_equal(out[t][outside], frames[t][outside])


def test_the_default_lattice_grid_replays_what_the_exact_grid_does(store: Path, preview) -> None:
    """The synthetic body box (310x488) takes Runtime's step-4 lattice grid by default; the
    frames it composites differ from the exact grid's by rounding only: the grids are within
    a thousandth of a pixel, so a bicubic sample moves by a fraction of a level."""
    _, frames, res = preview
    x0, y0, w, h = (int(round(v)) for v in res.boxes[1])
    assert replay_grid_step(w * h) == 4
    fast = replay(store, _invert_tryon([]), frames).astype(int)
    exact = replay(store, _invert_tryon([]), frames, grid_step=1).astype(int)
    diff = np.abs(fast - exact)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_replay_rejects_mismatched_inputs(store: Path, preview) -> None:
    _, frames, _ = preview
    with pytest.raises(MirrorError, match=f"made from {N} frames"):
        replay(store, _invert_tryon([]), frames[:5])
    with pytest.raises(MirrorError, match=r"\[256,192,3\]"):
        replay(store, lambda req: (np.zeros((10, 10, 3)), np.zeros((10, 10))), frames)


def test_body_leaving_the_frame(tmp_path: Path) -> None:
    """Points that leave the frame are dropped, the box keeps following, replay still works."""
    motion = Motion(drift=(9.0, 4.0), trans_amp=(0.0, 0.0), deform_amp=1.0)
    clip, frames = cached_clip(motion, 24)
    res = run_preview(frames, roi=clip.roi(0))
    # The box follows the drift: the mean displacement of the tracked points also carries
    # their share of the +-1 px deformation at both ends (and which points survive), so
    # it may differ from the pure drift by a few pixels, not more.
    assert np.allclose(res.boxes[23, :2] - res.boxes[0, :2], [9.0 * 23, 4.0 * 23], atol=3.0)
    assert res.boxes[23, 0] + res.boxes[23, 2] > 540  # the box now hangs over the edge
    assert res.n_points[23] < res.n_points[0]  # points that left were dropped
    calls: list[int] = []
    out = replay(write_store(tmp_path / "ctx", res), _invert_tryon(calls), frames)
    assert calls == np.nonzero(res.dnn)[0].tolist() and out.shape == frames.shape
    # Inside the visible part of the body, the inverted garment follows the body.
    body = clip.body_mask(23, erode=10)
    assert np.abs(out[23].astype(int) + frames[23].astype(int) - 255)[body].mean() < 25


def test_non_finite_boxes_or_warps_are_refused(preview, tmp_path: Path) -> None:
    res = preview[2]
    for name in ("boxes", "tps_coef"):
        bad = np.array(getattr(res, name), copy=True)
        bad[-1] = np.nan
        broken = dataclasses.replace(res, **{name: bad})
        if name == "tps_coef":
            broken = dataclasses.replace(broken, tps_ok=np.ones_like(res.tps_ok))
        path = write_store(tmp_path / name, broken)
        with pytest.raises(MirrorError, match="NaN or Inf"):
            open_store(path)
