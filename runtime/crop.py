"""The DNN's view of a frame: box crops letterboxed to 256x192 and pasted back.

DIVTON works on 256x192 (H x W) person crops. A body box (x, y, w, h) in frame pixels
is cut out (parts outside the frame read as the fill value), resized keeping its aspect
ratio and centred on a 256x192 canvas; `paddings` = (top, bottom, left, right) record
the canvas margins. The inverse takes the DNN's 256x192 output back to box pixels.
Colour uses the antialiased linear resize of imgproc, labels and masks nearest.
"""

from __future__ import annotations

import numpy as np

from .imgproc import resize

DNN_H, DNN_W = 256, 192


def box_pixels(box: np.ndarray) -> tuple[int, int, int, int]:
    """Integer pixel rectangle (x0, y0, w, h) of a float box (origin rounded, size rounded)."""
    return (int(round(box[0])), int(round(box[1])), max(1, int(round(box[2]))),
            max(1, int(round(box[3]))))


def letterbox_paddings(w: int, h: int, out_h: int = DNN_H, out_w: int = DNN_W) -> np.ndarray:
    """(top, bottom, left, right) margins when an h x w crop is fitted into out_h x out_w."""
    s = min(out_h / h, out_w / w)
    rh, rw = max(1, min(out_h, round(h * s))), max(1, min(out_w, round(w * s)))
    top, left = (out_h - rh) // 2, (out_w - rw) // 2
    return np.array([top, out_h - rh - top, left, out_w - rw - left], np.int32)


def cut_box(img: np.ndarray, box: np.ndarray, fill: float | int) -> np.ndarray:
    """The box's pixels from img ([H,W] or [H,W,C]); outside the frame reads `fill`."""
    x0, y0, w, h = box_pixels(box)
    fh, fw = img.shape[:2]
    out = np.full((h, w) + img.shape[2:], fill, dtype=img.dtype)
    ys, ye, xs, xe = max(0, y0), min(fh, y0 + h), max(0, x0), min(fw, x0 + w)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = img[ys:ye, xs:xe]
    return out


def nearest_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ri = np.minimum(((np.arange(h) + 0.5) * img.shape[0] / h).astype(np.intp), img.shape[0] - 1)
    ci = np.minimum(((np.arange(w) + 0.5) * img.shape[1] / w).astype(np.intp), img.shape[1] - 1)
    return img[ri[:, None], ci[None, :]]


def to_dnn(img: np.ndarray, box: np.ndarray, fill: float | int, nearest: bool = False) -> np.ndarray:
    """Crop `box` from img and letterbox it to 256x192 (same dtype as img)."""
    x0, y0, w, h = box_pixels(box)
    top, bottom, left, right = letterbox_paddings(w, h)
    rh, rw = DNN_H - top - bottom, DNN_W - left - right
    crop = cut_box(img, box, fill)
    if nearest:
        small = nearest_resize(crop, rh, rw)
    else:
        small = resize(crop, rh, rw)
        if img.dtype == np.uint8:
            small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    out = np.full((DNN_H, DNN_W) + img.shape[2:], fill, dtype=img.dtype)
    out[top : top + rh, left : left + rw] = small
    return out


def from_dnn(img: np.ndarray, paddings: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    """Undo to_dnn: cut the letterbox content and resize it to the box's h x w (float32 or bool)."""
    top, bottom, left, right = (int(v) for v in paddings)
    content = img[top : DNN_H - bottom, left : DNN_W - right]
    if nearest:
        return nearest_resize(content, h, w)
    return resize(content, h, w)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` (x0, y0, x1, y1) with each row of `b` (the same corners form)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda q: (q[..., 2] - q[..., 0]) * (q[..., 3] - q[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)
