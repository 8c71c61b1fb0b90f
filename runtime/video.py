"""Video input for VITOFF: any common container through PyAV, plus .npy clips.

PyAV wraps FFmpeg's demuxers and decoders (its wheels bundle FFmpeg, so no system
ffmpeg is needed): .mp4 .mov .avi .mkv .webm .y4m and whatever else FFmpeg reads.
Frames are decoded one at a time, on demand, so memory does not grow with the clip.
Each frame comes out upright: the stream's display matrix (the rotation phones record
instead of turning the pixels) is applied. Timestamps are kept as the file has them,
so a variable-frame-rate clip can be written back with its own timing.

`.npy` (a uint8 array [T,H,W,3] of RGB frames, memory-mapped, allow_pickle=False) is
read too, at 30 fps, for tests and for apps that hand over decoded frames.

VITOFF processes frames on a canvas whose long side is 960 px, in the video's own
orientation: 960 high by 540 wide (the paper's portrait frame) for a portrait or square
source, 540 high by 960 wide for a landscape one. Fitting a landscape video onto the
portrait canvas would shrink it to 540 px wide (a 768x576 street clip by 0.70, its
walkers to ~28x42 px) and spend 60% of the canvas on black bars; on its own
orientation it keeps 0.94 of its size and fills the canvas's height. `Placement` says
how a source frame is scaled and centred on its black canvas, so coordinates given on
the original video (e.g. a region of interest) map onto the processed frames and the
try-on maps back onto the source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .imgproc import resize
from .npy import load_npy

FRAME_H, FRAME_W = 960, 540  # the paper's portrait canvas (height, width)
NPY_FPS = Fraction(30)
BT601 = 6  # AVCOL_SPC_SMPTE170M: FFmpeg's matrix for untagged video


def canvas_size(src_h: int, src_w: int) -> tuple[int, int]:
    """(height, width) of the processing canvas for a src_h x src_w video: 960x540 portrait,
    or 540x960 when the video is wider than high."""
    return (FRAME_W, FRAME_H) if src_w > src_h else (FRAME_H, FRAME_W)


@dataclass(frozen=True)
class Placement:
    """How the source video sits on its processing canvas: canvas = src * scale + offset."""

    src_width: int
    src_height: int
    scale: float
    offset_x: int
    offset_y: int
    width: int = 0  # the scaled source's size on the canvas
    height: int = 0
    canvas_height: int = FRAME_H
    canvas_width: int = FRAME_W

    @property
    def canvas(self) -> tuple[int, int]:
        """(height, width) of the canvas."""
        return self.canvas_height, self.canvas_width

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale + self.offset_x, y * self.scale + self.offset_y

    def as_dict(self) -> dict:
        return {"src_width": self.src_width, "src_height": self.src_height, "scale": self.scale,
                "offset_x": self.offset_x, "offset_y": self.offset_y,
                "canvas_width": self.canvas_width, "canvas_height": self.canvas_height}


def placement(src_h: int, src_w: int, height: int | None = None, width: int | None = None) -> Placement:
    """Scale a src_h x src_w frame uniformly to fit inside height x width, centred.

    The canvas defaults to ``canvas_size``: the source's own orientation, long side 960."""
    if height is None or width is None:
        height, width = canvas_size(src_h, src_w)
    if (src_h, src_w) == (height, width):
        return Placement(src_w, src_h, 1.0, 0, 0, width, height, height, width)
    scale = min(height / src_h, width / src_w)
    nh, nw = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    return Placement(src_w, src_h, scale, (width - nw) // 2, (height - nh) // 2, nw, nh, height, width)


def on_canvas(scaled: np.ndarray, place: Placement) -> np.ndarray:
    """A frame already scaled to the placement's size, centred on its black canvas."""
    height, width = place.canvas
    if scaled.shape[:2] == (height, width):
        return scaled
    out = np.zeros((height, width, 3), np.uint8)
    out[place.offset_y : place.offset_y + place.height, place.offset_x : place.offset_x + place.width] = scaled
    return out


def fit_to_canvas(frames: np.ndarray, height: int | None = None,
                  width: int | None = None) -> tuple[np.ndarray, Placement]:
    """Scale [T,H,W,3] uint8 frames to fit inside height x width (default: the canvas of
    their orientation, ``canvas_size``), centred on black.

    Returns the processed frames and the Placement that maps source to canvas pixels.
    """
    t, h, w, _ = frames.shape
    place = placement(h, w, height, width)
    if (h, w) == place.canvas:
        return frames, place
    out = np.stack([on_canvas(_resize_uint8(f, place.height, place.width), place) for f in frames])
    return out, place


def fit_to_portrait(frames: np.ndarray, height: int = FRAME_H,
                    width: int = FRAME_W) -> tuple[np.ndarray, Placement]:
    """``fit_to_canvas`` on the paper's portrait canvas whatever the frames' orientation."""
    return fit_to_canvas(frames, height, width)


def _resize_uint8(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.clip(np.rint(resize(img, h, w)), 0, 255).astype(np.uint8)


@dataclass
class Frame:
    """One decoded frame: its timestamp (in the clip's time base) and its pixels, upright."""

    pts: int
    _av: object | None = None  # av.VideoFrame, decoded but not yet converted
    _rgb: np.ndarray | None = None
    rotation: int = 0  # counter-clockwise quarter turns that make the frame upright

    def rgb(self) -> np.ndarray:
        """RGB uint8 [H,W,3] at the source's display size."""
        if self._rgb is None:
            self._rgb = _upright(self._av.to_ndarray(format="rgb24"), self.rotation)
        return self._rgb

    def scaled(self, height: int, width: int) -> np.ndarray:
        """RGB uint8 [height,width,3] (display orientation), scaled by FFmpeg when possible."""
        if self._av is None or self._rgb is not None:
            rgb = self.rgb()
            return rgb if rgb.shape[:2] == (height, width) else _resize_uint8(rgb, height, width)
        h, w = (width, height) if self.rotation % 2 else (height, width)
        small = self._av.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
        return _upright(small.to_ndarray(), self.rotation)


def _upright(rgb: np.ndarray, quarter_turns: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns % 4 else rgb


@dataclass(frozen=True)
class VideoInfo:
    """What the writer needs to reproduce the source: display size, rate, timing, audio."""

    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int  # exact for .npy and most .mp4; an estimate from the duration otherwise
    rotation: int  # quarter turns applied to make frames upright
    has_audio: bool
    colorspace: int = BT601  # the YUV matrix (FFmpeg's AVColorSpace number) the source was coded with


class VideoClip:
    """A video file opened for reading; iterate it for Frames (decoded one at a time)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MirrorError(f"video '{self.path}' does not exist")
        if self.path.suffix.lower() == ".npy":
            self._array = _open_npy(self.path)
            t, h, w, _ = self._array.shape
            self.info = VideoInfo(w, h, NPY_FPS, 1 / NPY_FPS, t, 0, False)
        else:
            self._array = None
            self.info = _probe(self.path)

    def __iter__(self) -> Iterator[Frame]:
        if self._array is not None:
            for k in range(len(self._array)):
                yield Frame(k, _rgb=np.asarray(self._array[k]))
            return
        yield from _decode(self.path, self.info.rotation)


def open_video(path: str | Path) -> VideoClip:
    """Open a clip (checked before any decoding); a file FFmpeg cannot read is a MirrorError."""
    return VideoClip(path)


def _open_npy(path: Path) -> np.ndarray:
    arr = load_npy(path, mmap=True)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] == 0:
        raise MirrorError(f"'{path}' must hold uint8 RGB frames [T,H,W,3], got {arr.dtype} {list(arr.shape)}")
    return arr


def _not_a_video(path: Path, why: object) -> MirrorError:
    return MirrorError(f"cannot read video '{path}' ({why}); give an .mp4, .mov, .avi, .mkv, .webm or .y4m file")


def _probe(path: Path) -> VideoInfo:
    """Open the file, decode its first frame (size, rotation) and read the stream's timing."""
    import av

    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise _not_a_video(path, "it has no video stream")
            vs = box.streams.video[0]
            first = next(box.decode(vs), None)
            if first is None:
                raise MirrorError(f"video '{path}' holds no frames")
            turns = round((first.rotation or 0) / 90) % 4
            fps = Fraction(vs.average_rate or vs.guessed_rate or NPY_FPS)
            duration = float(vs.duration * vs.time_base) if vs.duration else (box.duration or 0) / 1e6
            frames = int(vs.frames) or max(1, round(duration * fps))
            w, h = (first.height, first.width) if turns % 2 else (first.width, first.height)
            # PyAV converts each frame with the matrix it is tagged with; untagged means BT.601.
            space = int(first.colorspace) if int(first.colorspace) not in (0, 2) else BT601
            return VideoInfo(w, h, fps, Fraction(vs.time_base), frames, turns, bool(box.streams.audio), space)
    except av.FFmpegError as exc:
        raise _not_a_video(path, getattr(exc, "strerror", None) or exc) from None


def _decode(path: Path, turns: int) -> Iterator[Frame]:
    import av

    k = 0
    try:
        with av.open(str(path)) as box:
            vs = box.streams.video[0]
            vs.thread_type = "AUTO"
            for f in box.decode(vs):
                # A frame without a timestamp (rare, raw streams) takes its index.
                yield Frame(f.pts if f.pts is not None else k, _av=f, rotation=turns)
                k += 1
    except av.FFmpegError as exc:
        raise MirrorError(f"video '{path}' is damaged after frame {k} ({exc}); re-export it") from None


def canvas_frames(clip: VideoClip, place: Placement) -> Iterator[np.ndarray]:
    """The clip's frames on the placement's processing canvas, one at a time."""
    for frame in clip:
        yield on_canvas(frame.scaled(place.height, place.width), place)
