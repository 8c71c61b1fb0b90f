"""The garment side of a try-on: the product image and its edge mask, as DIVTON wants them.

The product photo is letterboxed onto a white 256x192 canvas (``crop.to_dnn``). Its edge
mask comes from the picture itself: Otsu's threshold on the grey levels splits garment
from background (the class that holds most of the border is the background), holes
inside the garment are filled (background not connected to the border becomes garment,
by geodesic reconstruction from the border), and a 3x3 opening removes specks. This is
the threshold-plus-clean-up recipe of the paper's app, in numpy.

Images load from ``.npy`` (uint8 [H,W,3] or [H,W,4]) or binary ``.ppm`` (P6); convert other
formats first, e.g. ``ffmpeg -i cloth.jpg cloth.ppm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .crop import to_dnn
from .imgproc import dilate3x3, rgb_to_gray


def load_image(path: str | Path) -> np.ndarray:
    """uint8 RGB [H,W,3] from a .npy or binary .ppm file."""
    path = Path(path)
    if not path.is_file():
        raise MirrorError(f"garment image {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            img = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise MirrorError(f"{path} is not a numpy array file ({exc})") from None
    elif suffix in (".ppm", ".pnm"):
        img = _read_ppm(path)
    else:
        raise MirrorError(
            f"{path}: garment images are read from .npy or .ppm; convert it first, "
            f"e.g. `ffmpeg -i {path.name} {path.stem}.ppm`"
        )
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < 8:
        raise MirrorError(f"{path}: expected a uint8 RGB image [H,W,3], got {img.dtype} {list(img.shape)}")
    return np.ascontiguousarray(img[..., :3])


def _load_mask_array(path: str | Path) -> np.ndarray:
    """A garment mask from .npy: [H,W] or [H,W,C] numbers, never pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise MirrorError(f"edge mask {path} does not exist")
    try:
        m = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise MirrorError(f"{path} is not a numpy array file ({exc})") from None
    if m.ndim not in (2, 3) or not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
        raise MirrorError(f"{path}: expected a mask [H,W] of numbers, got {m.dtype} {list(m.shape)}")
    return m


def _read_ppm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' starts a comment line
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise MirrorError(f"{path}: truncated PPM header")
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or not all(f.isdigit() for f in fields[1:]) or int(fields[3]) != 255:
        raise MirrorError(f"{path}: only 8-bit binary PPM (P6, maxval 255) is read")
    w, h = int(fields[1]), int(fields[2])
    pixels = (
        np.frombuffer(data, np.uint8, count=w * h * 3, offset=pos + 1) if len(data) >= pos + 1 + w * h * 3 else None
    )
    if pixels is None:
        raise MirrorError(f"{path}: PPM data is shorter than {w}x{h} pixels")
    return pixels.reshape(h, w, 3).copy()


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
    def from_image(cls, rgb: np.ndarray, mask: np.ndarray | None = None) -> Garment:
        h, w = rgb.shape[:2]
        box = np.array([0.0, 0.0, w, h])
        canvas = to_dnn(rgb, box, 255)
        if mask is None:  # found at DNN size: cheaper, and the white letterbox is background
            edge = edge_mask(canvas).astype(np.float32)
        else:
            edge = to_dnn(np.asarray(mask, np.uint8), box, 0, nearest=True).astype(np.float32)
        cloth = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
        return cls(cloth=np.ascontiguousarray(cloth), edge=edge[None, None])

    @classmethod
    def load(cls, path: str | Path, mask_path: str | Path | None = None) -> Garment:
        rgb = load_image(path)
        mask = None
        if mask_path is not None:
            m = load_image(mask_path) if Path(mask_path).suffix.lower() != ".npy" else _load_mask_array(mask_path)
            mask = (m[..., 0] if m.ndim == 3 else m) > 0
            if mask.shape != rgb.shape[:2]:
                raise MirrorError(f"edge mask {mask_path} is {list(mask.shape)}, the garment {list(rgb.shape[:2])}")
        return cls.from_image(rgb, mask)
