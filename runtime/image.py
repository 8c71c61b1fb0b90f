"""Still images (garment photos, masks) through Pillow: .jpg .png .webp .bmp and more.

Pillow decodes the file; EXIF orientation is applied (phones store photos sideways
with a tag instead of turning the pixels); grayscale, palette, CMYK and 16-bit images
become 8-bit RGB; an alpha channel (or a palette's transparent colour) is returned
separately, since a cut-out product photo's alpha is its garment mask. `.npy` arrays
(uint8 [H,W,3] or [H,W,4]) are read too, with allow_pickle=False.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirror import MirrorError

from .npy import load_npy

MIN_SIDE = 8


def _from_npy(path: Path) -> np.ndarray:
    img = load_npy(path)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise MirrorError(f"{path}: expected a uint8 RGB image [H,W,3], got {img.dtype} {list(img.shape)}")
    return img


def _from_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            alpha = "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
            return np.asarray(im.convert("RGBA" if alpha else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MirrorError(f"cannot read image {path} ({exc}); give a .jpg, .png, .webp or .bmp file") from None


def load_image(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB uint8 [H,W,3], alpha uint8 [H,W] or None when the image has no transparency)."""
    path = Path(path)
    if not path.is_file():
        raise MirrorError(f"image {path} does not exist")
    img = _from_npy(path) if path.suffix.lower() == ".npy" else _from_pillow(path)
    if min(img.shape[:2]) < MIN_SIDE:
        raise MirrorError(f"{path} is {img.shape[1]}x{img.shape[0]} pixels; a garment photo needs at least "
                          f"{MIN_SIDE}x{MIN_SIDE}")
    alpha = img[..., 3] if img.shape[2] == 4 else None
    if alpha is not None and alpha.min() == 255:
        alpha = None  # an opaque alpha channel says nothing about the garment
    return np.ascontiguousarray(img[..., :3]), alpha
