"""Video input: YUV4MPEG2 decoding, .npy clips, the 960x540 canvas, and clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mirror import MirrorError
from mirror.runtime.video import Y4MReader, fit_to_portrait, load_frames, read_video, read_y4m, write_y4m


def _smooth_rgb(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.random((t, h, w, 3)).astype(np.float32) * 255
    f = np.stack([cv2.GaussianBlur(x, (0, 0), 2.0) for x in f])
    return np.clip(f, 0, 255).astype(np.uint8)


def test_y4m_444_round_trip_is_near_lossless(tmp_path: Path) -> None:
    frames = _smooth_rgb(3, 24, 32)
    write_y4m(tmp_path / "a.y4m", frames, colorspace="444")
    back = read_y4m(tmp_path / "a.y4m")
    assert back.shape == frames.shape and back.dtype == np.uint8
    # 8-bit limited-range YCbCr quantizes each channel: a few levels at most.
    assert np.abs(back.astype(int) - frames).max() <= 3


@pytest.mark.parametrize("cs", ["420jpeg", "420", "420mpeg2"])
def test_y4m_420_matches_opencv_conversion(tmp_path: Path, cs: str) -> None:
    frames = _smooth_rgb(2, 32, 48, seed=1)
    write_y4m(tmp_path / "b.y4m", frames, colorspace=cs)
    raw = (tmp_path / "b.y4m").read_bytes()
    # The reference: OpenCV's I420 -> RGB on the same planes (BT.601 limited range).
    body = raw[raw.index(b"\n") + 1 :]
    size = 32 * 48 * 3 // 2
    first = np.frombuffer(body[6 : 6 + size], np.uint8).reshape(48, 48)
    ref = cv2.cvtColor(first, cv2.COLOR_YUV2RGB_I420)
    ours = read_y4m(tmp_path / "b.y4m")[0]
    # OpenCV interpolates chroma differently at the 2x2 block level; smooth content
    # keeps that difference to a few levels on average.
    assert np.abs(ours.astype(int) - ref).mean() < 3.0
    assert np.abs(ours.astype(int) - frames[0]).mean() < 3.0


def test_y4m_header_variants_and_errors(tmp_path: Path) -> None:
    y = np.full((4, 6), 235, np.uint8)
    p = tmp_path / "mono.y4m"
    p.write_bytes(b"YUV4MPEG2 W6 H4 F25:1 Cmono\nFRAME\n" + y.tobytes())
    assert (read_y4m(p) >= 254).all()  # white
    full = tmp_path / "full.y4m"
    full.write_bytes(b"YUV4MPEG2 W6 H4 C444 XCOLORRANGE=FULL\nFRAME\n"
                     + bytes([255] * 24 + [128] * 48))
    assert (read_y4m(full) == 255).all()
    trunc = tmp_path / "t.y4m"
    trunc.write_bytes(b"YUV4MPEG2 W6 H4 C420jpeg\nFRAME\n" + bytes(20))
    with pytest.raises(MirrorError, match="truncated"):
        read_y4m(trunc)
    bad = tmp_path / "bad.y4m"
    bad.write_bytes(b"RIFF....")
    with pytest.raises(MirrorError, match="not a YUV4MPEG2"):
        read_y4m(bad)
    hi = tmp_path / "hi.y4m"
    hi.write_bytes(b"YUV4MPEG2 W6 H4 C420p10\nFRAME\n" + bytes(72))
    with pytest.raises(MirrorError, match="not supported"):
        read_y4m(hi)


def test_npy_and_other_extensions(tmp_path: Path) -> None:
    frames = _smooth_rgb(2, 8, 6)
    np.save(tmp_path / "c.npy", frames)
    assert np.array_equal(read_video(tmp_path / "c.npy"), frames)
    np.save(tmp_path / "f.npy", frames.astype(np.float32))
    with pytest.raises(MirrorError, match=r"uint8 RGB frames \[T,H,W,3\]"):
        read_video(tmp_path / "f.npy")
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    with pytest.raises(MirrorError, match="ffmpeg -i in.mp4 -pix_fmt yuv420p out.y4m") as exc:
        read_video(tmp_path / "clip.mp4")
    assert "\n" not in str(exc.value)
    with pytest.raises(MirrorError, match="does not exist"):
        read_video(tmp_path / "missing.y4m")


def test_fit_to_portrait_keeps_aspect_and_maps_coordinates() -> None:
    frames = np.zeros((1, 1920, 1080, 3), np.uint8)
    frames[0, 960:, :540] = 200  # bottom-left quadrant
    out, place = fit_to_portrait(frames)
    assert out.shape == (1, 960, 540, 3) and place.scale == 0.5
    assert (out[0, 485:, :265] == 200).all() and (out[0, :475] == 0).all()
    land = np.full((1, 90, 160, 3), 50, np.uint8)  # landscape: letterboxed, not stretched
    out, place = fit_to_portrait(land)
    assert place.scale == pytest.approx(540 / 160)
    top = place.offset_y
    assert top > 0 and (out[0, : top - 1] == 0).all() and (out[0, top + 5 : top + 290] == 50).all()
    assert place.to_canvas(0, 0) == (0.0, top)
    same, place = fit_to_portrait(np.zeros((2, 960, 540, 3), np.uint8))
    assert place.scale == 1.0 and same.shape == (2, 960, 540, 3)


def test_streaming_load_equals_whole_clip_fit(tmp_path: Path) -> None:
    frames = _smooth_rgb(3, 48, 27, seed=4)  # 9:16, scaled up 20x onto the canvas
    write_y4m(tmp_path / "s.y4m", np.ascontiguousarray(frames[:, :, :26]), colorspace="444")
    whole = read_video(tmp_path / "s.y4m")
    streamed, place = load_frames(tmp_path / "s.y4m")
    fitted, place2 = fit_to_portrait(whole)
    assert np.array_equal(streamed, fitted) and place == place2
    reader = Y4MReader(tmp_path / "s.y4m")
    assert len(reader) == 3 and np.array_equal(reader.frame(2), whole[2])
