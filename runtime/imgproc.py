"""Small numpy image primitives shared by the VITOFF stages.

Grayscale conversion, separable resampling (frame resizing), Gaussian pyramid
reduction, Sobel/Scharr derivatives, box sums and 3x3 dilation. Everything is
whole-array numpy (slices of padded arrays, gathers along one axis), so it runs on a
phone's Python runtime without OpenCV or scipy. Border handling follows OpenCV's
default (BORDER_REFLECT_101) wherever the result is compared with OpenCV.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights, the ones OpenCV's RGB2GRAY uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# Pixels per block when converting 8-bit frames: the float32 copy of a block (192 KiB)
# stays in cache between the cast and the product, and the product stays under
# OpenBLAS's threading threshold (handing it to a busy second core costs more than it
# saves).
_GRAY_BLOCK = 16384


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """[H,W,3] RGB (uint8 or float) -> [H,W] float32 luma in the input's value range.

    A uint8 frame is cast and reduced block by block, not cast whole first: at 960x540
    that is ~0.42 instead of ~0.6 ms, the 6 MB float32 copy never leaving the cache.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an [H,W,3] RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8 or not rgb.flags.c_contiguous:
        return rgb.astype(np.float32, copy=False) @ _LUMA
    pix = rgb.reshape(-1, 3)
    out = np.empty(rgb.shape[:2], np.float32)
    flat = out.reshape(-1)
    buf = np.empty((min(_GRAY_BLOCK, len(pix)), 3), np.float32)
    for a in range(0, len(pix), _GRAY_BLOCK):
        b = min(len(pix), a + _GRAY_BLOCK)
        np.copyto(buf[: b - a], pix[a:b], casting="unsafe")
        np.matmul(buf[: b - a], _LUMA, out=flat[a:b])
    return out


def pad_reflect101(img: np.ndarray, pad: int, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Pad the given axes by `pad` pixels mirroring without repeating the edge (OpenCV's default)."""
    widths = [(pad, pad) if ax in axes else (0, 0) for ax in range(img.ndim)]
    return np.pad(img, widths, mode="reflect")


def sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives (d/dx, d/dy), unnormalized like cv2.Sobel(ksize=3), reflect-101 border."""
    p = pad_reflect101(gray.astype(np.float32, copy=False), 1)
    # Smooth across, differentiate along.
    sx = p[:-2] + 2.0 * p[1:-1] + p[2:]  # vertical [1,2,1] -> shape (H, W+2)
    dx = sx[:, 2:] - sx[:, :-2]
    sy = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]  # horizontal [1,2,1] -> (H+2, W)
    dy = sy[2:] - sy[:-2]
    return dx, dy


def scharr_valid(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scharr derivatives (3,10,3)/32 over the last two axes, 'valid' region only.

    Divided by 32 so the result is in intensity units per pixel. Used by Lucas-Kanade
    on patches that already carry a one-pixel border.
    """
    sx = 3.0 * patch[..., :-2, :] + 10.0 * patch[..., 1:-1, :] + 3.0 * patch[..., 2:, :]
    dx = (sx[..., 2:] - sx[..., :-2]) * (1.0 / 32.0)
    sy = 3.0 * patch[..., :, :-2] + 10.0 * patch[..., :, 1:-1] + 3.0 * patch[..., :, 2:]
    dy = (sy[..., 2:, :] - sy[..., :-2, :]) * (1.0 / 32.0)
    return dx, dy


def box_sum(img: np.ndarray, size: int) -> np.ndarray:
    """Unnormalized size x size box sum with reflect-101 border (cv2.boxFilter(normalize=False))."""
    r = size // 2
    p = pad_reflect101(img, r)
    h, w = img.shape[:2]
    rows = p[0:h]
    for k in range(1, size):
        rows = rows + p[k : k + h]
    out = rows[:, 0:w]
    for k in range(1, size):
        out = out + rows[:, k : k + w]
    return out


def dilate3x3(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary dilation with a 3x3 square, repeated `iterations` times (outside counts as unset)."""
    m = mask.astype(bool)
    for _ in range(iterations):
        p = np.pad(m, 1, mode="constant", constant_values=False)
        rows = p[:-2] | p[1:-1] | p[2:]
        m = rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]
    return m


def max3x3(img: np.ndarray) -> np.ndarray:
    """Grey 3x3 dilation (local maximum), edge pixels replicated."""
    p = np.pad(img, 1, mode="edge")
    rows = np.maximum(np.maximum(p[:-2], p[1:-1]), p[2:])
    return np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def pyr_down_t(img: np.ndarray) -> np.ndarray:
    """cv2.pyrDown of a 2-D float32 image, returned transposed ([W', H'], C-contiguous).

    Each pass is one batched matrix product of the 5 taps [1,4,6,4,1]/16 with a strided
    view that holds, for every kept row, the five rows it blends (rows 0 and last, whose
    taps cross the border, are done separately with reflect-101 row indices). The
    vertical pass runs on the image as given; its half-height result is transposed once
    (a contiguous copy) so the horizontal pass is again a pass over rows. Returning the
    result transposed saves transposing it back: applied twice, the orientation is
    restored (a pyramid stores its odd levels transposed).
    """
    img = img.astype(np.float32, copy=False)
    if img.ndim != 2 or min(img.shape) < 8 or img.strides[1] != img.itemsize:
        return np.ascontiguousarray(pyr_down(img).T)
    return _pyr_rows(np.ascontiguousarray(_pyr_rows(img).T))


_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0


def _reflect101(i: int, n: int) -> int:
    i = abs(i)
    return 2 * (n - 1) - i if i > n - 1 else i


def _pyr_rows(img: np.ndarray) -> np.ndarray:
    """Blur with [1,4,6,4,1]/16 along axis 0 and keep the even rows (reflect-101 border)."""
    h, w = img.shape
    oh = (h + 1) // 2
    out = np.empty((oh, w), np.float32)
    s0, s1 = img.strides
    # Output row i (1 <= i <= oh-2) blends rows 2i-2 .. 2i+2, all inside the image.
    win = np.lib.stride_tricks.as_strided(img, (oh - 2, 5, w), (2 * s0, s0, s1), writeable=False)
    np.matmul(_TAPS, win, out=out[1 : oh - 1])
    rows = [[_reflect101(c + k, h) for k in range(-2, 3)] for c in (0, 2 * (oh - 1))]
    out[0 :: oh - 1] = np.matmul(_TAPS, img[np.array(rows)])
    return out


def pyr_down(img: np.ndarray) -> np.ndarray:
    """Gaussian [1,4,6,4,1]/16 blur and 2x decimation, like cv2.pyrDown (reflect-101 border).

    Only the kept rows and columns are computed (strided slices of the padded array),
    so the cost is about a quarter of a full-resolution 5x5 filter.
    """
    h, w = img.shape[:2]
    oh, ow = (h + 1) // 2, (w + 1) // 2
    p = pad_reflect101(img.astype(np.float32, copy=False), 2, axes=(0,))
    # p[j] = img[j-2]; output row i is centred on img[2i] = p[2i+2].
    n = 2 * oh
    r = p[0:n:2] + p[4 : n + 4 : 2] + 4.0 * (p[1 : n + 1 : 2] + p[3 : n + 3 : 2]) + 6.0 * p[2 : n + 2 : 2]
    p = pad_reflect101(r, 2, axes=(1,))
    n = 2 * ow
    c = (
        p[:, 0:n:2]
        + p[:, 4 : n + 4 : 2]
        + 4.0 * (p[:, 1 : n + 1 : 2] + p[:, 3 : n + 3 : 2])
        + 6.0 * p[:, 2 : n + 2 : 2]
    )
    return c * (1.0 / 256.0)


def _resample_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices and weights of a triangle (linear) filter mapping n_in samples to n_out.

    Pixel centres are aligned (half-pixel convention). When shrinking, the triangle is
    widened by the scale factor so every input pixel contributes (antialiasing), as in
    PIL's bilinear resize. Returns ([n_out, taps] int indices, [n_out, taps] float32 weights).
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    taps = int(np.ceil(support)) * 2 + 1
    first = np.floor(centres - support).astype(np.int64) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs(idx - centres[:, None]) / support)
    idx = np.clip(idx, 0, n_in - 1)
    w /= w.sum(axis=1, keepdims=True)
    return idx, w.astype(np.float32)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [H,W] or [H,W,C] to (height, width) with a separable, antialiased linear filter.

    Returns float32. One gather per filter tap per axis; no loop over pixels.
    """
    out = img.astype(np.float32, copy=False)
    for axis, n_out in ((0, height), (1, width)):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        idx, w = _resample_weights(n_in, n_out)
        shape = [1] * out.ndim
        shape[axis] = n_out
        acc = None
        for k in range(idx.shape[1]):
            term = np.take(out, idx[:, k], axis=axis) * w[:, k].reshape(shape)
            acc = term if acc is None else acc + term
        out = acc
    return out


def resize_align_corners(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes of ``a`` with ``align_corners=True`` semantics.

    Output pixel i samples input position ``i * (n_in - 1) / (n_out - 1)`` (PyTorch's
    ``F.interpolate(..., mode="bilinear", align_corners=True)``); no antialiasing, which is
    what SCHP and the reference graph do when they shrink. Positions are computed in
    float32 as PyTorch's CPU kernel computes them, so the two agree to float rounding of
    the values (exact positions would differ from it by up to ~1e-4 px at 960 px).
    Returns float32.
    """
    out = np.asarray(a, dtype=np.float32)
    for axis, n_out in ((-2, height), (-1, width)):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0.0)
        src = np.arange(n_out, dtype=np.float32) * scale
        i0 = np.minimum(src.astype(np.int64), n_in - 1)  # src >= 0: truncation is floor
        i1 = np.minimum(i0 + 1, n_in - 1)
        shape = [1] * out.ndim
        shape[axis] = n_out
        frac = (src - i0.astype(np.float32)).reshape(shape)
        lo, hi = np.take(out, i0, axis=axis), np.take(out, i1, axis=axis)
        out = lo + (hi - lo) * frac
    return out
