"""Tiny test videos written with PyAV directly (not through the toolkit's own writer)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx",
          ".y4m": "rawvideo"}


def write_clip(path: Path, frames: np.ndarray, fps: int = 30, audio: bool = False, rotation: int = 0,
               pts: list[int] | None = None, time_base: int | None = None, audio_codec: str = "aac") -> Path:
    """Encode RGB uint8 [T,H,W,3] frames; optionally a 440 Hz tone and a display rotation.

    `pts` (in units of 1/time_base s) gives each frame's timestamp, for variable frame rates.
    """
    path = Path(path)
    fmt = "yuv4mpegpipe" if path.suffix == ".y4m" else None
    t, h, w, _ = frames.shape
    with av.open(str(path), "w", format=fmt) as box:
        vs = box.add_stream(CODECS[path.suffix], rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if path.suffix != ".y4m":
            vs.codec_context.options = {"crf": "4"} if vs.codec_context.name == "libx264" else {}
            vs.codec_context.bit_rate = 4_000_000
        if time_base:
            from fractions import Fraction

            vs.codec_context.time_base = Fraction(1, time_base)
        if rotation:
            vs.set_display_rotation(rotation)
        a = None
        if audio:
            a = box.add_stream(audio_codec, rate=16000)
            a.layout = "mono"
            a.format = "fltp" if audio_codec == "aac" else "s16"
        for k in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[k]), format="rgb24")
            if pts is not None:
                frame.pts = pts[k]
            box.mux(vs.encode(frame))
        box.mux(vs.encode(None))
        if a is not None:
            n = 16000 * t // fps
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
            for s in range(0, n, 1024):
                chunk = tone[None, s : s + 1024]
                if audio_codec != "aac":
                    chunk = (chunk * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp" if audio_codec == "aac" else "s16",
                                                layout="mono")
                af.sample_rate, af.pts = 16000, s
                box.mux(a.encode(af))
            box.mux(a.encode(None))
    return path


def smooth_rgb(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames of smooth colour gradients that survive lossy coding (moving a little per frame)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    base = rng.uniform(0.02, 0.08, (3, 2))
    for k in range(t):
        for c in range(3):
            out[k, ..., c] = np.clip(128 + 100 * np.sin(xs * base[c, 0] + ys * base[c, 1] + 0.3 * k + c), 0, 255)
    return out
