"""VITOFF's re-run triggers: when is the carried try-on no longer good enough?

DIVTON runs on the first frame and whenever one of these fires:

- WE (warping error): the normalized cross-correlation (NCC) between the current
  frame's box crop and the keyframe crop remapped through the TPS grid (optionally only
  where the keyframe position is on the body: `key_mask`). It fires when
  the NCC drops below the NCC the keyframe crop has with itself shifted by 10 px (the
  mean over a horizontal and a vertical shift), calibrated at every keyframe.
- KE (keypoint error): current points are normalized to [-1, 1] inside the moved box
  (removing the mean translation), keyframe points inside the keyframe box; a TPS
  mapping current to keyframe coordinates is fitted and KE is the mean L2 distance
  between TPS(keyframe points) and the keyframe points. It is 0 for a pure translation
  and grows with deformation; it fires above 0.1. With no (or too few, or degenerate)
  points KE is infinite.
- fold (warp support): the TPS must be a warp the points can support. Its Jacobian on
  a 5x5 lattice over the moved box (corners included, where the spline extrapolates)
  must keep a positive determinant (no fold) and singular values within a factor
  `max_anisotropy` (4) of each other (no shear). A spline fitted to a few clustered or
  noisy points passes through them exactly and still smears the box around them; NCC
  and KE, measured near the points, do not see it. 4, not less: a limb swinging
  against the torso legitimately stretches its part of a small box 2-3 times.

The NCC is computed on a regular sub-lattice of the box (every `stride` pixels in both
directions, 4 by default): it is a global statistic over ~10^4 samples for a body-sized
box, whose sampling error (~0.01) is far below the margin between a good warp and a
10 px misregistration, at a sixteenth of the dense TPS evaluation and sampling cost.
Calibration uses the same lattice, so both sides of the comparison see the same samples.
"""

from __future__ import annotations

import numpy as np

from .remap import Source, remap
from .tps import TPS, TPSDegenerate, fit_tps

KE_THRESHOLD = 0.1
CALIBRATION_SHIFT_PX = 10.0
MAX_ANISOTROPY = 4.0


def ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Zero-mean normalized cross-correlation of two equally shaped arrays (over `valid`).

    Returns a value in [-1, 1]; 0 when either side is constant or nothing is valid.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if valid is not None:
        a, b = a[valid], b[valid]
    if a.size == 0:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def box_lattice(box: np.ndarray, frame_shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (xs, ys) of the box's sub-lattice, clipped to the frame."""
    h, w = frame_shape
    x0, y0 = int(round(box[0])), int(round(box[1]))
    bw, bh = int(round(box[2])), int(round(box[3]))
    xs = np.arange(max(0, x0), min(w, x0 + bw), stride)
    ys = np.arange(max(0, y0), min(h, y0 + bh), stride)
    return xs, ys


def warp_ncc(cur_gray: np.ndarray, key: np.ndarray | Source, xs: np.ndarray, ys: np.ndarray,
             map_x: np.ndarray, map_y: np.ndarray, key_mask: np.ndarray | None = None) -> float:
    """NCC between the current crop at (xs, ys) and the keyframe sampled at (map_x, map_y).

    `key` is the keyframe's gray image or a Source prepared from it (reused per keyframe).
    Lattice points whose keyframe position falls outside the keyframe are left out, and,
    with `key_mask` (bool, the keyframe's size), those whose keyframe position is not in it.
    """
    if xs.size == 0 or ys.size == 0:
        return 0.0
    cur = cur_gray[ys[:, None], xs[None, :]]
    src = key if isinstance(key, Source) else Source(key)
    valid = (map_x >= 0) & (map_x <= src.w - 1) & (map_y >= 0) & (map_y <= src.h - 1)
    if key_mask is not None:
        iy = np.clip(np.rint(map_y), 0, src.h - 1).astype(np.intp)
        ix = np.clip(np.rint(map_x), 0, src.w - 1).astype(np.intp)
        valid &= key_mask[iy, ix]
    warped = remap(src, map_x, map_y, "bilinear")
    return ncc(cur, warped, valid)


def calibrate_ncc_threshold(key_gray: np.ndarray, box: np.ndarray, stride: int = 4,
                            shift: float = CALIBRATION_SHIFT_PX,
                            key: Source | None = None, key_mask: np.ndarray | None = None) -> float:
    """The NCC the keyframe crop has with itself when every keypoint moves by `shift` px.

    A uniform shift of all keypoints makes the TPS a pure translation, so this is the NCC
    between the crop and the keyframe sampled `shift` px away (mean of x and y shifts),
    over the same samples WE will use (`key_mask`: see warp_ncc).
    """
    xs, ys = box_lattice(box, key_gray.shape, stride)
    if xs.size == 0 or ys.size == 0:
        return 1.0
    src = key if key is not None else Source(key_gray)
    gx, gy = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    vals = [warp_ncc(key_gray, src, xs, ys, gx + dx, gy + dy, key_mask)
            for dx, dy in ((shift, 0.0), (0.0, shift))]
    return float(np.mean(vals))


def normalize_in_box(pts: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Map (x, y) points to [-1, 1] inside box = (x, y, w, h)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return np.stack([2.0 * (pts[:, 0] - box[0]) / box[2] - 1.0,
                     2.0 * (pts[:, 1] - box[1]) / box[3] - 1.0], axis=1)


def keypoint_error(cur_pts: np.ndarray, cur_box: np.ndarray, key_pts: np.ndarray,
                   key_box: np.ndarray) -> float:
    """KE as defined above; infinite when no spline can be fitted."""
    cur_pts = np.asarray(cur_pts, np.float64).reshape(-1, 2)
    if len(cur_pts) == 0:
        return float("inf")
    cn = normalize_in_box(cur_pts, cur_box)
    kn = normalize_in_box(key_pts, key_box)
    try:
        spline: TPS = fit_tps(cn, kn)
    except TPSDegenerate:
        return float("inf")
    return float(np.linalg.norm(spline(kn) - kn, axis=1).mean())


def warp_support(spline: TPS, box: np.ndarray, max_anisotropy: float = MAX_ANISOTROPY,
                 n: int = 5) -> str:
    """Why the spline (current -> keyframe) cannot be replayed over `box`, or "" when it can.

    The Jacobian is taken on an n x n lattice spanning the box, corners included.
    """
    x0, y0, w, h = (float(v) for v in box[:4])
    gx, gy = np.meshgrid(np.linspace(x0, x0 + w, n), np.linspace(y0, y0 + h, n))
    jac = spline.jacobian(np.stack([gx.ravel(), gy.ravel()], axis=1))
    det = np.linalg.det(jac)
    if not np.isfinite(det).all() or det.min() <= 0.0:
        return f"fold: the warp folds the box (Jacobian determinant {det.min():.2f})"
    sv = np.linalg.svd(jac, compute_uv=False)  # [M,2], descending
    aniso = float((sv[:, 0] / sv[:, 1]).max())
    if not aniso <= max_anisotropy:
        return f"fold: the warp shears the box (anisotropy {aniso:.2f} > {max_anisotropy:g})"
    return ""
