"""Pyramidal Lucas-Kanade optical flow, vectorized over all keypoints at once.

VITOFF follows its keypoints from frame to frame with the classic Bouguet pyramidal LK
(the algorithm behind cv2.calcOpticalFlowPyrLK): window 15x15, 3 pyramid levels, at
most 10 Gauss-Newton iterations per level, stopping when the update is below 0.03 px.

Every step is an array operation over [N, window, window] patches: each point's
template and its Scharr gradients are cut out of the previous frame by one gather
(bilinear, at the point's sub-pixel position), and each iteration gathers the moved
window of the next frame for all points together. Converged points are frozen with a
mask instead of leaving a loop. The pyramids are built only over the points' bounding
box plus a margin (aligned to the coarsest level's grid), since LK never reads outside
it; that keeps the per-frame cost proportional to the tracked region, not the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imgproc import pyr_down, scharr_valid


@dataclass(frozen=True)
class LKParams:
    """Lucas-Kanade settings; the defaults are VITOFF's."""

    window: int = 15
    levels: int = 3  # pyramid levels including full resolution (cv2 maxLevel = levels - 1)
    iterations: int = 10
    eps: float = 0.03
    min_eig: float = 1e-4  # cv2's minEigThreshold, in cv2's units (see _min_eig_units)
    margin: int = 64  # crop margin around the points, in full-resolution pixels


def build_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Gaussian pyramid [full, 1/2, 1/4, ...] with `levels` entries, float32."""
    pyr = [img.astype(np.float32, copy=False)]
    for _ in range(levels - 1):
        pyr.append(pyr_down(pyr[-1]))
    return pyr


def _gather_bilinear(img: np.ndarray, tl: np.ndarray, size: int) -> np.ndarray:
    """Sample [N, size, size] patches whose top-left corners are at sub-pixel `tl` [N,2] (x, y).

    One integer gather of (size+1)^2 pixels per point (indices clamped to the image,
    i.e. replicated borders), then the four bilinear taps as shifted slices.
    """
    h, w = img.shape
    itl = np.floor(tl)
    a = (tl - itl).astype(np.float32)
    itl = itl.astype(np.intp)
    off = np.arange(size + 1)
    rows = np.clip(itl[:, 1, None] + off, 0, h - 1)
    cols = np.clip(itl[:, 0, None] + off, 0, w - 1)
    p = img[rows[:, :, None], cols[:, None, :]]
    ax = a[:, 0, None, None]
    ay = a[:, 1, None, None]
    top = p[:, :-1, :-1] + ax * (p[:, :-1, 1:] - p[:, :-1, :-1])
    bot = p[:, 1:, :-1] + ax * (p[:, 1:, 1:] - p[:, 1:, :-1])
    return top + ay * (bot - top)


def _lk_level(prev: np.ndarray, nxt: np.ndarray, pts: np.ndarray, guess: np.ndarray,
              active: np.ndarray, prm: LKParams, last: bool) -> tuple[np.ndarray, np.ndarray]:
    """One pyramid level for all points. pts/guess are window centres in level coordinates."""
    win = prm.window
    half = (win - 1) * 0.5
    area = float(win * win)
    # Template with a one-pixel border for the Scharr derivatives.
    patch = _gather_bilinear(prev, pts - half - 1.0, win + 2)
    gx, gy = scharr_valid(patch)
    tmpl = patch[:, 1:-1, 1:-1]
    a11 = (gx * gx).sum(axis=(1, 2))
    a12 = (gx * gy).sum(axis=(1, 2))
    a22 = (gy * gy).sum(axis=(1, 2))
    det = a11 * a22 - a12 * a12
    # Smallest eigenvalue per pixel, in cv2's units: its intensities are scaled by 32 and
    # its products by 2^-20, i.e. our squared gradients divided by 1024.
    min_eig = (a11 + a22 - np.sqrt((a11 - a22) ** 2 + 4.0 * a12 * a12)) / (2.0 * area * 1024.0)
    ok = active & (min_eig >= prm.min_eig) & (det > np.finfo(np.float32).eps)
    safe = np.where(ok, det, 1.0)
    i11, i12, i22 = a22 / safe, -a12 / safe, a11 / safe
    nxt_pts = guess.astype(np.float64).copy()
    moving = ok.copy()
    prev_delta = np.zeros_like(nxt_pts)
    eps2 = prm.eps * prm.eps
    h, w = nxt.shape
    for it in range(prm.iterations):
        if not moving.any():
            break
        tl = nxt_pts - half
        inside = (tl[:, 0] > -win) & (tl[:, 1] > -win) & (tl[:, 0] < w) & (tl[:, 1] < h)
        if last:
            ok &= inside | ~moving
        moving &= inside
        diff = _gather_bilinear(nxt, tl, win) - tmpl
        b1 = (gx * diff).sum(axis=(1, 2))
        b2 = (gy * diff).sum(axis=(1, 2))
        delta = -np.stack([i11 * b1 + i12 * b2, i12 * b1 + i22 * b2], axis=1)
        delta[~moving] = 0.0
        nxt_pts += delta
        small = (delta * delta).sum(axis=1) <= eps2
        # Oscillating between two positions: settle halfway (as OpenCV does).
        osc = moving & ~small & (it > 0) & (np.abs(delta + prev_delta).max(axis=1) < 0.01)
        nxt_pts[osc] -= delta[osc] * 0.5
        moving &= ~small & ~osc
        prev_delta = delta
    return nxt_pts, ok


def track(prev_gray: np.ndarray, next_gray: np.ndarray, pts: np.ndarray,
          params: LKParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Track [N,2] (x, y) points from prev_gray to next_gray ([H,W], intensities 0-255).

    Returns (new points [N,2] float32, status [N] bool). A point fails when its window
    is flat (smallest structure-tensor eigenvalue under the threshold) or it leaves the
    image. Failed points keep their last estimate; callers drop them by status.
    """
    prm = params or LKParams()
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    if prev_gray.shape != next_gray.shape:
        raise ValueError(f"frames differ in shape: {prev_gray.shape} vs {next_gray.shape}")
    h, w = prev_gray.shape
    finite = np.isfinite(pts).all(axis=1)
    safe_pts = np.where(finite[:, None], pts, 0.0)
    # Crop both frames to the points' box plus margin, aligned so the crop's pyramid
    # samples coincide with the full frame's.
    align = 1 << (prm.levels - 1)
    lo = np.floor(safe_pts[finite].min(axis=0) - prm.margin) if finite.any() else np.zeros(2)
    hi = np.ceil(safe_pts[finite].max(axis=0) + prm.margin) if finite.any() else np.zeros(2)
    x0 = max(0, int(lo[0]) // align * align)
    y0 = max(0, int(lo[1]) // align * align)
    x1, y1 = min(w, int(hi[0]) + 1), min(h, int(hi[1]) + 1)
    off = np.array([x0, y0], dtype=np.float64)
    pyr_p = build_pyramid(prev_gray[y0:y1, x0:x1], prm.levels)
    pyr_n = build_pyramid(next_gray[y0:y1, x0:x1], prm.levels)
    local = safe_pts - off
    guess = local / align
    status = finite.copy()
    for lvl in range(prm.levels - 1, -1, -1):
        s = float(1 << lvl)
        guess, ok = _lk_level(pyr_p[lvl], pyr_n[lvl], local / s, guess, status, prm, lvl == 0)
        if lvl == 0:
            status &= ok  # a coarse level that cannot refine just hands its guess down
        else:
            guess = guess * 2.0
    out = guess + off
    status &= (out[:, 0] >= 0) & (out[:, 1] >= 0) & (out[:, 0] <= w - 1) & (out[:, 1] <= h - 1)
    return out.astype(np.float32), status
