"""Image remapping (nearest, bilinear, bicubic) and compositing, in numpy.

VITOFF carries the last DNN try-on output to the current frame by sampling it through
the TPS grid: bicubic for colour, nearest for the paste mask. The semantics are
cv2.remap's: map_x/map_y give, for every output pixel, the source position with pixel
centres at integer coordinates; taps outside the source read `border_value`
(BORDER_CONSTANT); bicubic uses OpenCV's kernel (a = -0.75); nearest rounds half to
even. Coordinates are used at full float precision (cv2 quantizes them to 1/32 px).

Each filter tap is one flat gather for all output pixels (and all channels) at once;
the separable weights carry each tap's inside/outside validity, so border pixels need
no padded copy of the source.
"""

from __future__ import annotations

import numpy as np

_A = -0.75  # OpenCV's bicubic coefficient


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Weights of taps -1, 0, 1, 2 for fractional offset t (Keys kernel, a = -0.75)."""
    a = _A
    t1 = t + 1.0
    w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    u = 1.0 - t
    w2 = ((a + 2.0) * u - (a + 3.0)) * u * u + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return [w0, w1, w2, w3]


def _planar(src: np.ndarray) -> tuple[np.ndarray, int | None]:
    """[H,W] or [H,W,C] -> ([C, H*W] float32, C or None)."""
    if src.ndim == 2:
        return src.reshape(1, -1).astype(np.float32, copy=False), None
    if src.ndim == 3:
        c = src.shape[2]
        return np.ascontiguousarray(np.moveaxis(src, 2, 0)).reshape(c, -1).astype(
            np.float32, copy=False), c
    raise ValueError(f"expected an [H,W] or [H,W,C] image, got shape {src.shape}")


def remap(src: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: str = "bilinear",
          border_value: float = 0.0) -> np.ndarray:
    """Sample `src` at (map_x, map_y). Returns float32 of shape map.shape (+ (C,) for colour).

    interpolation: "nearest", "bilinear" or "bicubic".
    """
    if map_x.shape != map_y.shape:
        raise ValueError(f"map_x {map_x.shape} and map_y {map_y.shape} differ in shape")
    h, w = src.shape[:2]
    planes, channels = _planar(src)
    mx = np.asarray(map_x, np.float32).reshape(-1)
    my = np.asarray(map_y, np.float32).reshape(-1)
    finite = np.isfinite(mx) & np.isfinite(my)
    mx = np.where(finite, mx, -1e6)
    my = np.where(finite, my, -1e6)
    if interpolation == "nearest":
        ix = np.rint(mx)
        iy = np.rint(my)
        inside = (ix >= 0) & (ix <= w - 1) & (iy >= 0) & (iy <= h - 1)
        idx = np.clip(iy, 0, h - 1).astype(np.intp) * w + np.clip(ix, 0, w - 1).astype(np.intp)
        out = np.take(planes, idx, axis=1)
        out = np.where(inside[None, :], out, np.float32(border_value))
    else:
        if interpolation == "bilinear":
            offsets = (0, 1)
        elif interpolation == "bicubic":
            offsets = (-1, 0, 1, 2)
        else:
            raise ValueError(f"unknown interpolation {interpolation!r}")
        fx = np.floor(mx)
        fy = np.floor(my)
        tx = mx - fx
        ty = my - fy
        x0 = fx.astype(np.int64)
        y0 = fy.astype(np.int64)
        if interpolation == "bilinear":
            wxs, wys = [1.0 - tx, tx], [1.0 - ty, ty]
        else:
            wxs, wys = _cubic_weights(tx), _cubic_weights(ty)
        cols, rows = [], []
        for k, o in enumerate(offsets):  # 2 or 4 taps per axis
            xk = x0 + o
            valid = (xk >= 0) & (xk < w)
            wxs[k] = np.where(valid, wxs[k], 0.0).astype(np.float32)
            cols.append(np.clip(xk, 0, w - 1))
            yk = y0 + o
            valid = (yk >= 0) & (yk < h)
            wys[k] = np.where(valid, wys[k], 0.0).astype(np.float32)
            rows.append(np.clip(yk, 0, h - 1) * w)
        out = None
        wsum = None
        for j in range(len(offsets)):
            acc = None
            for k in range(len(offsets)):
                term = np.take(planes, rows[j] + cols[k], axis=1) * wxs[k]
                acc = term if acc is None else acc + term
            acc *= wys[j]
            out = acc if out is None else out + acc
        if border_value != 0.0:
            wsum = sum(wxs) * sum(wys)
            out = out + np.float32(border_value) * (1.0 - wsum)
    out = out.astype(np.float32, copy=False)
    shape = map_x.shape
    if channels is None:
        return out.reshape(shape)
    return np.moveaxis(out, 0, -1).reshape(*shape, channels)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and saturate to uint8, as OpenCV does when writing 8-bit output."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def composite(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Paste `patch` [h,w,3] into a copy of `frame` at (x0, y0) wherever `mask` [h,w] is set.

    The patch may hang over the frame's edges; those parts are dropped.
    """
    out = frame.copy()
    fh, fw = frame.shape[:2]
    ph, pw = mask.shape
    ys, ye = max(0, y0), min(fh, y0 + ph)
    xs, xe = max(0, x0), min(fw, x0 + pw)
    if ys >= ye or xs >= xe:
        return out
    m = mask[ys - y0 : ye - y0, xs - x0 : xe - x0].astype(bool)
    region = out[ys:ye, xs:xe]
    src = patch[ys - y0 : ye - y0, xs - x0 : xe - x0]
    if src.dtype != out.dtype:
        src = to_uint8(src) if out.dtype == np.uint8 else src.astype(out.dtype)
    region[m] = src[m]
    return out
