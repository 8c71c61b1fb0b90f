"""Video input and output through PyAV: containers, rotation, timing, audio, the canvas, errors."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_clips import smooth_rgb, write_clip

from mirror import MirrorError
from mirror.runtime.encode import open_mp4
from mirror.runtime.video import canvas_frames, canvas_size, fit_to_canvas, fit_to_portrait, open_video, placement


def _frames(path: Path) -> np.ndarray:
    return np.stack([f.rgb() for f in open_video(path)])


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".avi", ".mkv", ".webm", ".y4m"])
def test_containers_decode_to_the_frames_written(tmp_path: Path, ext: str) -> None:
    frames = smooth_rgb(4, 48, 64)
    clip = open_video(write_clip(tmp_path / f"c{ext}", frames, fps=10))
    assert (clip.info.width, clip.info.height, clip.info.fps) == (64, 48, Fraction(10))
    back = _frames(clip.path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    # Lossy codecs and 4:2:0 chroma: close, not equal.
    assert np.abs(back.astype(int) - frames).mean() < 6


def test_rotation_metadata_gives_upright_frames(tmp_path: Path) -> None:
    frames = smooth_rgb(2, 48, 64)
    frames[:, :12, :16] = 255  # a white corner, top left as coded
    clip = open_video(write_clip(tmp_path / "r.mp4", frames, rotation=90))
    assert (clip.info.width, clip.info.height, clip.info.rotation) == (48, 64, 1)
    up = _frames(clip.path)[0]
    # The display matrix turns the picture a quarter counter-clockwise: top left goes bottom left.
    assert up.shape == (64, 48, 3) and up[-6:, :6].min() > 230 and up[:6, :6].max() < 250
    assert np.abs(up.astype(int) - np.rot90(frames[0])).mean() < 6


def test_npy_and_bad_files(tmp_path: Path) -> None:
    frames = smooth_rgb(2, 8, 6)
    np.save(tmp_path / "c.npy", frames)
    assert np.array_equal(_frames(tmp_path / "c.npy"), frames)
    np.save(tmp_path / "f.npy", frames.astype(np.float32))
    with pytest.raises(MirrorError, match=r"uint8 RGB frames \[T,H,W,3\]"):
        open_video(tmp_path / "f.npy")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(MirrorError, match="cannot read video .* give an .mp4") as exc:
        open_video(tmp_path / "clip.mp4")
    assert "\n" not in str(exc.value)
    with pytest.raises(MirrorError, match="does not exist"):
        open_video(tmp_path / "missing.mov")


def test_writer_keeps_size_timing_and_audio(tmp_path: Path) -> None:
    """A landscape 10 fps clip with sound and uneven frame times comes back as it went in."""
    frames = smooth_rgb(8, 54, 96)
    pts = [0, 1, 2, 4, 5, 7, 8, 9]  # variable frame rate: gaps of 0.1 and 0.2 s
    src = write_clip(tmp_path / "in.mkv", frames, fps=10, audio=True, pts=pts)
    clip = open_video(src)
    assert clip.info.has_audio
    with open_mp4(tmp_path / "out.mp4", clip.info, src) as writer:
        for f in clip:
            writer.write(f.rgb(), f.pts)
    with av.open(str(tmp_path / "out.mp4")) as box:
        vs = box.streams.video[0]
        assert (vs.codec_context.name, vs.width, vs.height) == ("h264", 96, 54)
        times = [round(float(f.time), 3) for f in box.decode(vs)]
        assert box.streams.audio and box.streams.audio[0].codec_context.name == "aac"
    assert times == [p / 10 for p in pts]
    with av.open(str(tmp_path / "out.mp4")) as box:
        audio = np.concatenate([f.to_ndarray().ravel() for f in box.decode(audio=0)])
    assert len(audio) > 0.5 * 16000 and np.abs(audio).max() > 0.1  # the tone is there


def test_audio_mp4_cannot_hold_is_reencoded_to_aac(tmp_path: Path) -> None:
    src = write_clip(tmp_path / "pcm.avi", smooth_rgb(10, 32, 32), fps=10, audio=True, audio_codec="pcm_s16le")
    clip = open_video(src)
    with open_mp4(tmp_path / "out.mp4", clip.info, src) as writer:
        for f in clip:
            writer.write(f.rgb(), f.pts)
    with av.open(str(tmp_path / "out.mp4")) as box:
        assert box.streams.audio[0].codec_context.name == "aac"
        audio = np.concatenate([f.to_ndarray().ravel() for f in box.decode(audio=0)])
    assert len(audio) > 0.8 * 16000 and np.abs(audio).max() > 0.1


def test_bt709_source_keeps_its_colours_and_tag(tmp_path: Path) -> None:
    """Phone video is BT.709: decoded and re-encoded with that matrix, and tagged so players use it."""
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:] = (200, 60, 30)
    with av.open(str(tmp_path / "in.mp4"), "w") as box:
        vs = box.add_stream("libx264", rate=10)
        vs.width = vs.height = 32
        vs.pix_fmt, vs.codec_context.colorspace = "yuv420p", 1
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace=1)
        frame.colorspace, frame.pts = 1, 0
        box.mux(vs.encode(frame))
        box.mux(vs.encode(None))
    clip = open_video(tmp_path / "in.mp4")
    assert clip.info.colorspace == 1
    with open_mp4(tmp_path / "out.mp4", clip.info) as writer:
        for f in clip:
            assert np.abs(f.rgb()[16, 16].astype(int) - rgb[16, 16]).max() <= 4
            writer.write(f.rgb(), f.pts)
    with av.open(str(tmp_path / "out.mp4")) as box:
        out = next(box.decode(video=0))
        assert (out.colorspace, out.color_range) == (1, 1)
        assert np.abs(out.to_ndarray(format="rgb24")[16, 16].astype(int) - rgb[16, 16]).max() <= 5


def test_odd_sizes_gain_one_repeated_edge_pixel(tmp_path: Path) -> None:
    frames = smooth_rgb(2, 35, 21)
    info = open_video(write_clip(tmp_path / "e.mp4", smooth_rgb(2, 36, 22))).info
    info = dataclasses.replace(info, width=21, height=35)
    with open_mp4(tmp_path / "o.mp4", info) as writer:
        for k, f in enumerate(frames):
            writer.write(f, k)
    back = _frames(tmp_path / "o.mp4")
    assert back.shape == (2, 36, 22, 3)  # H.264 4:2:0 needs even sizes
    assert np.abs(back[:, :35, :21].astype(int) - frames).mean() < 6


def test_writer_refuses_other_suffixes_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    info = open_video(write_clip(tmp_path / "a.mp4", smooth_rgb(2, 16, 16))).info
    with pytest.raises(MirrorError, match="must be an .mp4"):
        with open_mp4(tmp_path / "o.avi", info):
            pass
    with pytest.raises(RuntimeError):
        with open_mp4(tmp_path / "o.mp4", info) as w:
            w.write(np.zeros((16, 16, 3), np.uint8), 0)
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


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


def test_the_canvas_follows_the_video_orientation() -> None:
    """Portrait and square videos go on the paper's 960x540 portrait canvas, landscape ones on
    540x960: the long side is 960 and the video keeps as much of its size as fits."""
    assert canvas_size(1920, 1080) == canvas_size(500, 500) == (960, 540)
    assert canvas_size(576, 768) == (540, 960)
    place = placement(576, 768)  # OpenCV's vtest.avi: 0.94 of its size, not 0.70 on the portrait canvas
    assert place.canvas == (540, 960) and place.scale == pytest.approx(540 / 576)
    assert (place.width, place.height, place.offset_x, place.offset_y) == (720, 540, 120, 0)
    assert place.as_dict()["canvas_width"] == 960
    land = np.full((1, 90, 160, 3), 50, np.uint8)  # 16:9 fills the landscape canvas exactly
    out, place = fit_to_canvas(land)
    assert out.shape == (1, 540, 960, 3) and place.scale == 6.0 and (out == 50).all()
    assert placement(576, 768, 960, 540).canvas == (960, 540)  # an explicit canvas is kept
    # A source that fits its canvas at scale 1 without filling it is still centred on black.
    out, place = fit_to_canvas(np.full((1, 960, 300, 3), 9, np.uint8))
    assert out.shape == (1, 960, 540, 3) and place.offset_x == 120 and (out[0, :, :120] == 0).all()


def test_canvas_frames_stream_the_clip(tmp_path: Path) -> None:
    frames = smooth_rgb(3, 96, 54, seed=4)  # 9:16, scaled up 10x onto the canvas
    clip = open_video(write_clip(tmp_path / "s.mp4", frames))
    place = placement(clip.info.height, clip.info.width)
    canvases = list(canvas_frames(clip, place))
    assert len(canvases) == 3 and canvases[0].shape == (960, 540, 3)
    expect, _ = fit_to_portrait(_frames(clip.path))
    # FFmpeg's area scaler and numpy's antialiased linear filter agree closely on smooth frames.
    assert np.abs(np.stack(canvases).astype(int) - expect).mean() < 3
    land = open_video(write_clip(tmp_path / "l.mp4", smooth_rgb(2, 54, 96, seed=5)))
    place = placement(land.info.height, land.info.width)
    canvases = np.stack(list(canvas_frames(land, place)))
    assert canvases.shape == (2, 540, 960, 3)
    expect, _ = fit_to_canvas(_frames(land.path))
    assert np.abs(canvases.astype(int) - expect).mean() < 3
