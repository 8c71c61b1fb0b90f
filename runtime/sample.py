"""The built-in sample: a synthetic 10 s portrait clip and a product photo, made on demand.

Nothing is downloaded or shipped: the clip is rendered by ``synthetic.SyntheticClip``
(a textured body swaying and deforming, with one scene cut halfway, 960x540 portrait
at 30 fps) and encoded to .mp4; the garment is a striped shirt drawn with
Pillow on a white background and saved as .png. The body's region of interest is known
exactly, so Preview needs no parser. Files are made once and reused.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from mirror.files import atomic_path

from .encode import open_mp4
from .synthetic import Motion, SyntheticClip
from .video import FRAME_H, FRAME_W, VideoInfo

FPS = 30
SECONDS = 10
# Moderate motion: the body sways +-40 px sideways and +-20 px up and down, its surface
# deforms in a wave whose amplitude grows from 4 to 16 px, and the scene cuts at 5 s.
MOTION = Motion(trans_amp=(40.0, 20.0), deform_amp=4.0, deform_ramp=0.04, deform_period=40.0, wavelength=300.0,
                cut_at=SECONDS * FPS // 2)
VIDEO, GARMENT = "sample.mp4", "garment.png"


def sample_roi() -> tuple[int, int, int, int]:
    """The body's box (x, y, w, h) in the sample's first frame."""
    return SyntheticClip(motion=MOTION).roi(0)


def _write_clip(path: Path, frames: int, progress=None) -> None:
    clip = SyntheticClip(motion=MOTION)
    info = VideoInfo(FRAME_W, FRAME_H, Fraction(FPS), Fraction(1, FPS), frames, 0, False)
    with open_mp4(path, info) as writer:
        for t in range(frames):
            writer.write(clip.frame(t), t)
            if progress is not None:
                progress("sample", t + 1, frames)


def _write_garment(path: Path) -> None:
    from PIL import Image, ImageDraw

    h, w = 400, 300
    img = Image.new("RGB", (w, h), "white")
    shirt = [(95, 40), (125, 30), (150, 50), (175, 30), (205, 40), (275, 95), (245, 140),
             (215, 115), (215, 370), (85, 370), (85, 115), (55, 140), (25, 95)]
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon(shirt, fill=255)
    stripes = np.zeros((h, w, 3), np.uint8)
    band = (np.arange(h) // 24) % 2 == 0
    stripes[band], stripes[~band] = (200, 40, 50), (40, 60, 160)
    img.paste(Image.fromarray(stripes), (0, 0), mask)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def ensure_sample(folder: str | Path, progress=None, frames: int = SECONDS * FPS) -> tuple[Path, Path]:
    """(video, garment) of the built-in sample in `folder`, made if missing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video, garment = folder / VIDEO, folder / GARMENT
    if not video.is_file():
        _write_clip(video, frames, progress)
    if not garment.is_file():
        _write_garment(garment)
    return video, garment
