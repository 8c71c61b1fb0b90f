"""Pyramidal Lucas-Kanade optical flow, vectorized over all keypoints at once.

VITOFF follows its keypoints from frame to frame with the classic Bouguet pyramidal LK
(the algorithm behind cv2.calcOpticalFlowPyrLK): window 15x15, 3 pyramid levels, at
most 10 Gauss-Newton iterations per level, stopping when the update is below 0.03 px.

Every step is an array operation over [N, window, window] patches: each point's
template and its Scharr gradients are cut out of the previous frame by one gather
(bilinear, at the point's sub-pixel position), and each iteration gathers the moved
window of the next frame for all points together. Converged points are frozen with a
mask instead of leaving a loop. The pyramids are built only over the points' bounding
box plus a margin (snapped to a 32-pixel grid), since LK never reads outside it; that
keeps the per-frame cost proportional to the tracked region, not the frame, and a
caller-held cache reuses each frame's pyramid as the next call's previous pyramid.
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
    i.e. replicated borders, only when a window crosses the border), then the four
    bilinear taps as shifted slices.
    """
    h, w = img.shape
    itl = np.floor(tl)
    a = (tl - itl).astype(np.float32)
    ix = itl[:, 0].astype(np.intp)
    iy = itl[:, 1].astype(np.intp)
    off = np.arange(size + 1)
    if ix.min() >= 0 and iy.min() >= 0 and ix.max() < w - size and iy.max() < h - size:
        idx = (iy * w + ix)[:, None, None] + (off[:, None] * w + off[None, :])
    else:
        rows = np.clip(iy[:, None] + off, 0, h - 1) * w
        cols = np.clip(ix[:, None] + off, 0, w - 1)
        idx = rows[:, :, None] + cols[:, None, :]
    p = np.take(img.reshape(-1), idx)
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
    n = len(pts)
    # Template with a one-pixel border for the Scharr derivatives.
    patch = _gather_bilinear(prev, pts - half - 1.0, win + 2)
    gx, gy = scharr_valid(patch)
    tmpl = patch[:, 1:-1, 1:-1].reshape(n, -1)
    grads = np.stack([gx.reshape(n, -1), gy.reshape(n, -1)], axis=1)  # [N,2,P]
    gram = (grads @ grads.transpose(0, 2, 1)).astype(np.float64)  # [N,2,2] structure tensor
    a11, a12, a22 = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
    det = a11 * a22 - a12 * a12
    # Smallest eigenvalue per pixel, in cv2's units: its intensities are scaled by 32 and
    # its products by 2^-20, i.e. our squared gradients divided by 1024.
    min_eig = (a11 + a22 - np.sqrt((a11 - a22) ** 2 + 4.0 * a12 * a12)) / (2.0 * area * 1024.0)
    ok = active & (min_eig >= prm.min_eig) & (det > np.finfo(np.float32).eps)
    safe = np.where(ok, det, 1.0)
    # -G^-1, so that delta = neg_inv @ b with b = sum(grad * (J - I)).
    neg_inv = np.stack([np.stack([-a22, a12], 1), np.stack([a12, -a11], 1)], 1) / safe[:, None, None]
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
        diff = _gather_bilinear(nxt, tl, win).reshape(n, -1, 1) - tmpl[:, :, None]
        b = (grads @ diff).astype(np.float64)  # [N,2,1]
        delta = (neg_inv @ b)[:, :, 0]
        delta[~moving] = 0.0
        nxt_pts += delta
        small = (delta * delta).sum(axis=1) <= eps2
        # Oscillating between two positions: settle halfway (as OpenCV does).
        if it > 0:
            osc = moving & ~small & (np.abs(delta + prev_delta).max(axis=1) < 0.01)
            nxt_pts[osc] -= delta[osc] * 0.5
            moving &= ~osc
        moving &= ~small
        prev_delta = delta
    return nxt_pts, ok


def crop_rect(pts: np.ndarray, shape: tuple[int, int], prm: LKParams) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the region LK reads for these points.

    The points' box plus `margin`, snapped outwards to a 32-pixel grid: aligned with the
    coarsest pyramid level (so the crop's pyramid equals the full frame's there) and
    stable from one frame to the next (so a cached pyramid can be reused).
    """
    h, w = shape
    q = max(32, 1 << (prm.levels - 1))
    finite = np.isfinite(pts).all(axis=1)
    if not finite.any():
        return 0, 0, w, h
    lo = np.floor(pts[finite].min(axis=0) - prm.margin)
    hi = np.ceil(pts[finite].max(axis=0) + prm.margin)
    x0, y0 = max(0, int(lo[0]) // q * q), max(0, int(lo[1]) // q * q)
    x1, y1 = min(w, -(-(int(hi[0]) + 1) // q) * q), min(h, -(-(int(hi[1]) + 1) // q) * q)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def track(prev_gray: np.ndarray, next_gray: np.ndarray, pts: np.ndarray,
          params: LKParams | None = None, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Track [N,2] (x, y) points from prev_gray to next_gray ([H,W], intensities 0-255).

    Returns (new points [N,2] float32, status [N] bool). A point fails when its window
    is flat (smallest structure-tensor eigenvalue under the threshold) or it leaves the
    image. Failed points keep their last estimate; callers drop them by status.

    `cache`, a dict kept by the caller between consecutive calls, lets the pyramid of
    `next_gray` serve as the pyramid of `prev_gray` in the following call when the
    crop is unchanged (the frames must not be modified in between).
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
    x0, y0, x1, y1 = crop_rect(pts, (h, w), prm)
    rect = (x0, y0, x1, y1, prm.levels)
    off = np.array([x0, y0], dtype=np.float64)
    if cache is not None and cache.get("rect") == rect and cache.get("frame") is prev_gray:
        pyr_p = cache["pyramid"]
    else:
        pyr_p = build_pyramid(prev_gray[y0:y1, x0:x1], prm.levels)
    pyr_n = build_pyramid(next_gray[y0:y1, x0:x1], prm.levels)
    if cache is not None:
        cache.update(rect=rect, frame=next_gray, pyramid=pyr_n)
    align = 1 << (prm.levels - 1)
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
