"""Video input for VITOFF without OpenCV or ffmpeg: YUV4MPEG2 (.y4m) and .npy clips.

A phone app hands decoded frames to the runtime; on a workstation the `mirror preview`
command reads either
- `.y4m` (YUV4MPEG2, 8-bit C420jpeg / C420paldv / C420mpeg2 / C420 / C422 / C444 / Cmono),
  converted to RGB with the BT.601 matrix (limited range unless the header says
  XCOLORRANGE=FULL); 4:2:0 and 4:2:2 chroma is upsampled by pixel replication, or
- `.npy`: a uint8 array [T,H,W,3] of RGB frames (loaded with allow_pickle=False).

VITOFF processes frames at 960x540 portrait (540 wide, 960 high). `fit_to_portrait`
scales a clip uniformly so it fits inside 540x960 (antialiased linear resampling) and
centres it on a black canvas; the scale and offset are returned so coordinates given
on the original video (e.g. a region of interest) can be mapped onto the processed
frames. Frames that are already 540x960 pass through untouched.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .imgproc import resize

FRAME_H, FRAME_W = 960, 540
_FFMPEG_HINT = "convert it first, e.g. `ffmpeg -i in.mp4 -pix_fmt yuv420p out.y4m`"


@dataclass(frozen=True)
class Placement:
    """How the source video sits on the 540x960 processing canvas: canvas = src * scale + offset."""

    src_width: int
    src_height: int
    scale: float
    offset_x: int
    offset_y: int

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale + self.offset_x, y * self.scale + self.offset_y

    def as_dict(self) -> dict:
        return {"src_width": self.src_width, "src_height": self.src_height, "scale": self.scale,
                "offset_x": self.offset_x, "offset_y": self.offset_y}


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool) -> np.ndarray:
    """BT.601 YCbCr -> RGB uint8 (arrays [T,H,W], chroma already at luma resolution)."""
    yf = y.astype(np.float32)
    cb = u.astype(np.float32) - 128.0
    cr = v.astype(np.float32) - 128.0
    if full_range:
        r = yf + 1.402 * cr
        g = yf - 0.344136 * cb - 0.714136 * cr
        b = yf + 1.772 * cb
    else:
        yf = (yf - 16.0) * (255.0 / 219.0)
        k = 255.0 / 224.0
        r = yf + 1.402 * k * cr
        g = yf - (0.344136 * cb + 0.714136 * cr) * k
        b = yf + 1.772 * k * cb
    rgb = np.stack([r, g, b], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_yuv(rgb: np.ndarray, full_range: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 [...,3] -> BT.601 (Y, Cb, Cr) float32 planes, limited range by default."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) / 1.772
    cr = (r - y) / 1.402
    if full_range:
        return y, cb + 128.0, cr + 128.0
    return y * (219.0 / 255.0) + 16.0, cb * (224.0 / 255.0) + 128.0, cr * (224.0 / 255.0) + 128.0


_SUBSAMPLING = {  # colourspace tag -> (chroma x divisor, chroma y divisor), None = no chroma
    "420jpeg": (2, 2), "420paldv": (2, 2), "420mpeg2": (2, 2), "420": (2, 2),
    "422": (2, 1), "444": (1, 1), "mono": None,
}


class Y4MReader:
    """An 8-bit YUV4MPEG2 file, memory-mapped: frames decode one at a time.

    Opening parses the stream header and locates every FRAME (one step per frame, never
    per pixel), so a truncated or corrupt file is refused before any work is done.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        try:
            self._fh = open(path, "rb")
            size = os.fstat(self._fh.fileno()).st_size
            data = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as exc:
            raise MirrorError(f"cannot read video '{path}': {getattr(exc, 'strerror', None) or exc}") from None
        self._data = data
        nl = data.find(b"\n", 0, 4096)
        if data[:9] != b"YUV4MPEG2" or nl < 0:
            raise MirrorError(f"'{path}' is not a YUV4MPEG2 file (no 'YUV4MPEG2' header)")
        fields = bytes(data[:nl]).decode("ascii", "replace").split()[1:]
        params = {f[0]: f[1:] for f in fields if f}
        try:
            width, height = int(params["W"]), int(params["H"])
        except (KeyError, ValueError):
            raise MirrorError(f"'{path}': YUV4MPEG2 header lacks a valid W/H size") from None
        if width <= 0 or height <= 0:
            raise MirrorError(f"'{path}': YUV4MPEG2 frame size {width}x{height} is invalid")
        cs = params.get("C", "420jpeg")
        if cs not in _SUBSAMPLING:
            raise MirrorError(f"'{path}': YUV4MPEG2 colourspace C{cs} is not supported "
                              f"(8-bit 420jpeg/420paldv/420mpeg2/420/422/444/mono are); "
                              "re-encode with `ffmpeg -i in.y4m -pix_fmt yuv420p out.y4m`")
        interlace = params.get("I", "p")
        if interlace not in ("p", "?"):
            raise MirrorError(f"'{path}': interlaced YUV4MPEG2 (I{interlace}) is not supported")
        self.width, self.height = width, height
        self.full_range = any(f.upper() == "XCOLORRANGE=FULL" for f in fields)
        self.sub = _SUBSAMPLING[cs]
        self.ysize = width * height
        cw, ch = (0, 0) if self.sub is None else (-(-width // self.sub[0]), -(-height // self.sub[1]))
        self.cw, self.ch = cw, ch
        frame_bytes = self.ysize + 2 * cw * ch
        self.frame_bytes = frame_bytes
        offsets = []
        pos = nl + 1
        n = len(data)
        while pos < n:  # one iteration per frame header, never per pixel
            fnl = data.find(b"\n", pos, pos + 1024)
            if data[pos : pos + 5] != b"FRAME" or fnl < 0:
                raise MirrorError(f"'{path}': corrupt YUV4MPEG2 stream (no FRAME header at byte {pos})")
            start = fnl + 1
            if start + frame_bytes > n:
                raise MirrorError(f"'{path}' is truncated: frame {len(offsets) + 1} has "
                                  f"{n - start} of {frame_bytes} bytes")
            offsets.append(start)
            pos = start + frame_bytes
        if not offsets:
            raise MirrorError(f"'{path}' holds no frames")
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, k: int) -> np.ndarray:
        """Frame k as RGB uint8 [H,W,3]."""
        raw = np.frombuffer(self._data, np.uint8, self.frame_bytes, self.offsets[k])
        h, w, ys = self.height, self.width, self.ysize
        y = raw[:ys].reshape(h, w)
        if self.sub is None:
            u = v = np.full_like(y, 128)
        else:
            sx, sy = self.sub
            cs = self.cw * self.ch
            u = raw[ys : ys + cs].reshape(self.ch, self.cw)
            v = raw[ys + cs :].reshape(self.ch, self.cw)
            u = np.repeat(np.repeat(u, sy, axis=0), sx, axis=1)[:h, :w]
            v = np.repeat(np.repeat(v, sy, axis=0), sx, axis=1)[:h, :w]
        return _yuv_to_rgb(y, u, v, self.full_range)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self)):
            yield self.frame(k)


def read_y4m(path: str | Path) -> np.ndarray:
    """Decode a whole 8-bit YUV4MPEG2 file to RGB uint8 [T,H,W,3]."""
    return np.stack(list(Y4MReader(path)))


def write_y4m(path: str | Path, frames: np.ndarray, colorspace: str = "420jpeg", fps: int = 30) -> None:
    """Write RGB uint8 [T,H,W,3] as 8-bit YUV4MPEG2 (limited-range BT.601).

    Chroma is subsampled by averaging 2x2 (or 2x1) blocks; H and W must be even for 4:2:0.
    """
    frames = np.asarray(frames)
    t, h, w, _ = frames.shape
    sub = _SUBSAMPLING[colorspace]
    y, u, v = rgb_to_yuv(frames)
    planes = [y.reshape(t, -1)]
    if sub is not None:
        sx, sy = sub
        if h % sy or w % sx:
            raise ValueError(f"C{colorspace} needs a frame size divisible by ({sx}, {sy})")
        for c in (u, v):
            c = c.reshape(t, h // sy, sy, w // sx, sx).mean(axis=(2, 4))
            planes.append(c.reshape(t, -1))
    payload = np.clip(np.rint(np.concatenate(planes, axis=1)), 0, 255).astype(np.uint8)
    header = f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C{colorspace}\n".encode()
    with open(path, "wb") as fh:
        fh.write(header)
        for k in range(t):
            fh.write(b"FRAME\n")
            fh.write(payload[k].tobytes())


def open_video(path: str | Path) -> Y4MReader | np.ndarray:
    """A .y4m (decoded lazily, frame by frame) or .npy clip; anything else is a MirrorError.

    The result supports len() and iteration over RGB uint8 [H,W,3] frames.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if not path.exists():
        raise MirrorError(f"video '{path}' does not exist")
    if ext == ".y4m":
        return Y4MReader(path)
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise MirrorError(f"cannot read '{path}' as a numpy array: {exc}") from None
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] == 0:
            raise MirrorError(f"'{path}' must hold uint8 RGB frames [T,H,W,3], "
                              f"got {arr.dtype} {list(arr.shape)}")
        return arr
    raise MirrorError(f"unsupported video format '{ext or path.name}': only .y4m and .npy are read; "
                      + _FFMPEG_HINT)


def read_video(path: str | Path) -> np.ndarray:
    """Read a whole .y4m or .npy clip as RGB uint8 [T,H,W,3]."""
    clip = open_video(path)
    return np.asarray(clip) if isinstance(clip, np.ndarray) else np.stack(list(clip))


def load_frames(path: str | Path, height: int = FRAME_H,
                width: int = FRAME_W) -> tuple[np.ndarray, Placement]:
    """Read a clip straight onto the processing canvas, one frame in memory at a time.

    Returns uint8 [T, height, width, 3] and the Placement of the source on the canvas.
    """
    clip = open_video(path)
    first = np.asarray(clip[0] if isinstance(clip, np.ndarray) else clip.frame(0))
    _, place = fit_to_portrait(first[None], height, width)
    out = np.empty((len(clip), height, width, 3), np.uint8)
    for k, frame in enumerate(clip):  # one frame at a time bounds memory for long videos
        out[k] = fit_to_portrait(np.asarray(frame)[None], height, width)[0][0]
    return out, place


def fit_to_portrait(frames: np.ndarray, height: int = FRAME_H,
                    width: int = FRAME_W) -> tuple[np.ndarray, Placement]:
    """Scale [T,H,W,3] uint8 frames to fit inside height x width, centred on black.

    Returns the processed frames and the Placement that maps source to canvas pixels.
    """
    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames, Placement(w, h, 1.0, 0, 0)
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    oy, ox = (height - nh) // 2, (width - nw) // 2
    out = np.zeros((t, height, width, 3), np.uint8)
    for k in range(t):  # one resize per frame (vectorized inside)
        out[k, oy : oy + nh, ox : ox + nw] = np.clip(np.rint(resize(frames[k], nh, nw)), 0, 255)
    return out, Placement(w, h, scale, ox, oy)
