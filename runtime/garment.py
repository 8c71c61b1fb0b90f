"""The garment side of a try-on: the product image and its edge mask, as DIVTON wants them.

The product photo is letterboxed onto a white 256x192 canvas (``crop.to_dnn``). Its edge
mask comes from the picture itself: Otsu's threshold on the grey levels splits garment
from background (the class that holds most of the border is the background), holes
inside the garment are filled (background not connected to the border becomes garment,
by geodesic reconstruction from the border), and a 3x3 opening removes specks. This is
the threshold-plus-clean-up recipe of the paper's app, in numpy.

Images load through Pillow (see image.py). A photo with an alpha channel (a cut-out
PNG or WebP) gives its mask directly: alpha > 127 is garment. A mask that comes out
empty or covering the whole picture (all-white, all-black or textured backgrounds
defeat the threshold) is refused with a hint to pass one with ``--edge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .crop import letterbox_paddings, to_dnn
from .image import load_image
from .imgproc import dilate3x3, rgb_to_gray
from .npy import load_npy

# A garment fills part of its photo: below 2% the mask found nothing, above 97% it is
# the whole rectangle (a uniform or textured background that no threshold separates).
MIN_COVER, MAX_COVER = 0.02, 0.97
# Share of mask pixels whose 3x3 neighbourhood is all mask: about 0.96 for a garment on a
# plain background at 256x192, about 0.6 when a busy background breaks the mask into specks.
MIN_SOLIDITY = 0.8


def _load_mask_array(path: str | Path) -> np.ndarray:
    """A garment mask from .npy: [H,W] or [H,W,C] numbers, never pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise MirrorError(f"edge mask {path} does not exist")
    m = load_npy(path)
    if m.ndim not in (2, 3) or not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
        raise MirrorError(f"{path}: expected a mask [H,W] of numbers, got {m.dtype} {list(m.shape)}")
    return m


def otsu_threshold(gray: np.ndarray) -> int:
    """The grey level that maximizes the between-class variance of a uint8 image."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = np.divide(m0, w0, out=np.zeros(256), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros(256), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return int(np.argmax(between))


def _erode3x3(mask: np.ndarray) -> np.ndarray:
    return ~dilate3x3(~mask)


def edge_mask(rgb: np.ndarray) -> np.ndarray:
    """Garment mask (bool [H,W]) of a product photo on a plain background."""
    gray = np.clip(np.rint(rgb_to_gray(rgb)), 0, 255).astype(np.uint8)
    dark = gray <= otsu_threshold(gray)
    border = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
    background = ~dark if border.mean() < 0.5 else dark
    # Background reachable from the border, grown one pixel at a time inside `background`.
    seed = np.zeros_like(background)
    seed[0], seed[-1], seed[:, 0], seed[:, -1] = background[0], background[-1], background[:, 0], background[:, -1]
    while True:
        grown = dilate3x3(seed) & background
        if np.array_equal(grown, seed):
            break
        seed = grown
    garment = ~seed  # holes (background not reached from the border) count as garment
    return dilate3x3(_erode3x3(garment))  # opening: drop specks thinner than 3 px


@dataclass
class Garment:
    """DIVTON's garment inputs: ``cloth`` [1,3,256,192] in [-1, 1], ``edge`` [1,1,256,192] in {0, 1}."""

    cloth: np.ndarray
    edge: np.ndarray

    @classmethod
    def from_image(cls, rgb: np.ndarray, mask: np.ndarray | None = None, name: str = "the garment") -> Garment:
        h, w = rgb.shape[:2]
        box = np.array([0.0, 0.0, w, h])
        canvas = to_dnn(rgb, box, 255)
        if mask is None:  # found at DNN size: cheaper, and the white letterbox is background
            edge = edge_mask(canvas).astype(np.float32)
        else:
            edge = to_dnn(np.asarray(mask, np.uint8), box, 0, nearest=True).astype(np.float32)
        check_mask(edge, letterbox_paddings(w, h), name, found=mask is None)
        cloth = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
        return cls(cloth=np.ascontiguousarray(cloth), edge=edge[None, None])

    @classmethod
    def load(cls, path: str | Path, mask_path: str | Path | None = None) -> Garment:
        rgb, alpha = load_image(path)
        mask = None if alpha is None else alpha > 127
        if mask_path is not None:
            if Path(mask_path).suffix.lower() == ".npy":
                m = _load_mask_array(mask_path)
                mask = (m[..., 0] if m.ndim == 3 else m) > 0
            else:
                m, m_alpha = load_image(mask_path)
                mask = (m_alpha if m_alpha is not None else m[..., 0]) > 127
            if mask.shape != rgb.shape[:2]:
                raise MirrorError(f"edge mask {mask_path} is {list(mask.shape)}, the garment {list(rgb.shape[:2])}")
        return cls.from_image(rgb, mask, str(path))


def check_mask(edge: np.ndarray, paddings: np.ndarray, name: str, found: bool) -> None:
    """Refuse a garment mask that is empty or covers the whole photo: the try-on would be wrong."""
    top, bottom, left, right = (int(v) for v in paddings)
    inside = edge[top : edge.shape[0] - bottom, left : edge.shape[1] - right]
    cover = float(inside.mean()) if inside.size else 0.0
    how = "found from the photo" if found else "given"
    hint = ("pass a mask with --edge (white garment on black), or use a photo of the garment on a plain "
            "background or a cut-out PNG with transparency")
    if cover < MIN_COVER:
        raise MirrorError(f"the garment mask {how} for {name} is empty ({cover:.1%} of the picture); {hint}")
    if cover > MAX_COVER:
        raise MirrorError(f"the garment mask {how} for {name} covers the whole picture ({cover:.1%}), "
                          f"so no garment was told apart from the background; {hint}")
    solid = inside > 0.5
    solidity = float(_erode3x3(solid).sum()) / max(1, int(solid.sum()))
    if found and solidity < MIN_SOLIDITY:
        raise MirrorError(f"the garment mask {how} for {name} is fragmented (only {solidity:.0%} of it lies "
                          f"inside the mask's own outline: a textured or busy background?); {hint}")
