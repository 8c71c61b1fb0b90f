"""Pyramidal Lucas-Kanade optical flow, vectorized over all keypoints at once.

VITOFF follows its keypoints from frame to frame with the classic Bouguet pyramidal LK
(the algorithm behind cv2.calcOpticalFlowPyrLK): window 15x15, 3 pyramid levels, at
most 10 Gauss-Newton iterations per level, stopping when the update is below 0.03 px.

Every step is an array operation over all points. The templates of all levels (bilinear
at each point's sub-pixel position in the previous frame) and their Scharr gradients
are cut out first and reduced, in one batch, to per-point constants (see _prepare), so
an LK iteration is one gather of each point's integer neighbourhood in the next frame
and one small matrix-vector product. Converged points are frozen with a mask instead
of leaving a loop. The pyramids are built only over the points' bounding box plus a
margin (snapped to a 32-pixel grid), since LK never reads outside it; that keeps the
per-frame cost proportional to the tracked region, not the frame, and a caller-held
cache reuses each frame's pyramid as the next call's previous pyramid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imgproc import pyr_down_t, scharr_valid


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
    """Gaussian pyramid [full, 1/2, 1/4, ...] with `levels` entries, float32.

    Odd levels are stored transposed ([W, H]): each reduction returns its result
    transposed (see pyr_down_t), so no level needs transposing back; LK tracks
    in swapped (y, x) coordinates there, which is the same computation.
    """
    pyr = [img.astype(np.float32, copy=False)]
    for _ in range(levels - 1):
        pyr.append(pyr_down_t(pyr[-1]))
    return pyr


class _Windows:
    """Integer s x s neighbourhoods of one image, cut out for many points at once.

    Where every window lies inside the image (the usual case) they are read as one fancy
    index into a sliding-window view (no index arrays); otherwise through a flat gather
    with each row and column index clamped to the image, i.e. replicated borders.
    """

    def __init__(self, img: np.ndarray, s: int) -> None:
        self.img, self.s = img, s
        h, w = img.shape
        self.hi = np.array([w - s, h - s])  # the largest top-left corner fully inside
        self.view = None
        if h >= s and w >= s:
            s0, s1 = img.strides
            self.view = np.lib.stride_tricks.as_strided(
                img, (h - s + 1, w - s + 1, s, s), (s0, s1, s0, s1), writeable=False)

    def inside(self, itl: np.ndarray) -> bool:
        """Whether all windows with top-left corners itl [N,2] (x, y) lie in the image."""
        return self.view is not None and bool((itl.view(np.uintp) <= self.hi).all())

    def get(self, itl: np.ndarray, inside: bool) -> np.ndarray:
        """[N, s, s] float32 windows with integer top-left corners itl [N,2] (x, y)."""
        if inside:
            return self.view[itl[:, 1], itl[:, 0]]
        img = self.img
        h, w = img.shape
        if img.strides[1] == img.itemsize and img.strides[0] > 0 and img.strides[0] % img.itemsize == 0:
            pitch = img.strides[0] // img.itemsize  # read a crop in place through its row stride
            flat = np.lib.stride_tricks.as_strided(img, ((h - 1) * pitch + w,), (img.itemsize,),
                                                   writeable=False)
        else:
            flat, pitch = np.ascontiguousarray(img).reshape(-1), w
        rc = itl[:, :, None] + np.arange(self.s)
        np.clip(rc, 0, np.array([[w - 1], [h - 1]]), out=rc)
        rc[:, 1] *= pitch
        return np.take(flat, rc[:, 1, :, None] + rc[:, 0, None, :])


def _template(img: np.ndarray, centres: np.ndarray, win: int) -> np.ndarray:
    """[N, win+2, win+2] windows centred at sub-pixel `centres` [N,2] (x, y), bilinear."""
    tl = centres - ((win - 1) * 0.5 + 1.0)
    itl = np.floor(tl)
    a = (tl - itl).astype(np.float32)
    ii = itl.astype(np.intp)
    wins = _Windows(img, win + 3)
    p = wins.get(ii, wins.inside(ii))
    ax = a[:, 0, None, None]
    ay = a[:, 1, None, None]
    top = p[:, :-1, :-1] + ax * (p[:, :-1, 1:] - p[:, :-1, :-1])
    bot = p[:, 1:, :-1] + ax * (p[:, 1:, 1:] - p[:, 1:, :-1])
    return top + ay * (bot - top)


def _prepare(patches: np.ndarray, prm: LKParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window constants of LK from templates with a one-pixel border [M, win+2, win+2].

    Forward-additive LK as in OpenCV: the template I, its gradients g and the structure
    tensor G come from the previous image once; each iteration only samples the next
    image J at the moved window and adds delta = -G^-1 sum(g (J - I)). Everything that
    does not depend on the window's position is folded into per-window constants: with
    h = -G^-1 g, delta = sum(h J) - sum(h I), and since bilinear sampling is linear in its
    four taps, sum(h J) = sum_k w_k sum(h_k P), where P is the (win+1)^2 integer
    neighbourhood and h_k is h placed at tap k's offset in it. An iteration is then one
    gather of P, one [8, (win+1)^2] matrix-vector product per point and the four
    bilinear weights. Returns (taps [M, 8, (win+1)^2] float32 ordered (x/y, dy, dx),
    sum(h I) [M,2,1], trackable [M]).
    """
    win = prm.window
    area = float(win * win)
    m = len(patches)
    gx, gy = scharr_valid(patches)
    tmpl = patches[:, 1:-1, 1:-1].reshape(m, -1, 1)
    grads = np.stack([gx.reshape(m, -1), gy.reshape(m, -1)], axis=1)  # [M,2,P]
    gram = (grads @ grads.transpose(0, 2, 1)).astype(np.float64)  # [M,2,2] structure tensor
    a11, a12, a22 = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
    det = a11 * a22 - a12 * a12
    # Smallest eigenvalue per pixel, in cv2's units: its intensities are scaled by 32 and
    # its products by 2^-20, i.e. our squared gradients divided by 1024.
    min_eig = (a11 + a22 - np.sqrt((a11 - a22) ** 2 + 4.0 * a12 * a12)) / (2.0 * area * 1024.0)
    ok = (min_eig >= prm.min_eig) & (det > np.finfo(np.float32).eps)
    safe = np.where(ok, det, 1.0)
    neg_inv = np.stack([np.stack([-a22, a12], 1), np.stack([a12, -a11], 1)], 1) / safe[:, None, None]
    steep = neg_inv @ grads  # [M,2,P] float64: h = -G^-1 g
    base = steep @ tmpl  # [M,2,1]: sum(h I)
    # float32 suffices for sum(h_k P): h is in pixels per intensity unit, so the products
    # are a few pixels at most and their rounding is ~1e-6 px.
    s = win + 1
    taps = np.zeros((m, 2, 2, 2, s, s), np.float32)  # [M, x/y, tap dy, tap dx, S, S]
    h4 = steep.reshape(m, 2, win, win)
    for dy in (0, 1):
        for dx in (0, 1):
            taps[:, :, dy, dx, dy : dy + win, dx : dx + win] = h4
    return taps.reshape(m, 8, s * s), base, ok


def _lk_level(nxt: np.ndarray, guess: np.ndarray, taps: np.ndarray, base: np.ndarray,
              ok: np.ndarray, prm: LKParams, last: bool) -> tuple[np.ndarray, np.ndarray]:
    """LK iterations of one pyramid level for all points (constants from _prepare).

    guess: window centres in level coordinates. Returns (centres, ok).
    """
    win = prm.window
    half = (win - 1) * 0.5
    n = len(guess)
    s = win + 1
    wins = _Windows(nxt, s)
    hgt, wid = nxt.shape
    lim = np.array([wid, hgt], dtype=np.float64)
    wts = np.empty((n, 2, 2))  # [N, x/y, (1 - frac, frac)]
    tl = guess.astype(np.float64) - half  # window top-left corners
    moving = ok.copy()
    prev_delta = None
    eps2 = prm.eps * prm.eps
    for _ in range(prm.iterations):
        if not moving.any():
            break
        itl = np.floor(tl)
        frac = tl - itl
        ii = itl.astype(np.intp)
        fast = wins.inside(ii)
        if not fast:  # (every window inside the image implies every point inside)
            inside = ((tl > -win) & (tl < lim)).all(axis=1)
            if last:
                ok &= inside | ~moving
            moving &= inside
        nb = wins.get(ii, fast).reshape(n, s * s, 1)
        wts[:, :, 1] = frac
        np.subtract(1.0, frac, out=wts[:, :, 0])
        bil = (wts[:, 1, :, None] * wts[:, 0, None, :]).reshape(n, 4, 1)  # [dy, dx] weights
        delta = ((taps @ nb).reshape(n, 2, 4) @ bil - base)[:, :, 0]
        delta *= moving[:, None]
        tl += delta
        small = (delta * delta).sum(axis=1) <= eps2
        # Oscillating between two positions: settle halfway (as OpenCV does).
        if prev_delta is not None:
            osc = moving & ~small & (np.abs(delta + prev_delta).max(axis=1) < 0.01)
            if osc.any():
                tl[osc] -= delta[osc] * 0.5
                moving &= ~osc
        moving &= ~small
        prev_delta = delta
    return tl + half, ok


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

    Returns (new points [N,2] float32, status [N] bool). A point fails when it starts
    outside the image or is not finite, when its window is flat (smallest structure-tensor
    eigenvalue under the threshold), or when it leaves the image. Failed points keep their
    last estimate; callers drop them by status.

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
    with np.errstate(invalid="ignore"):  # NaN compares False: such a point is not inside
        finite = np.isfinite(pts).all(axis=1) & (pts[:, 0] >= 0) & (pts[:, 1] >= 0) \
            & (pts[:, 0] <= w - 1) & (pts[:, 1] <= h - 1)  # fmt: skip
    if not finite.any():  # nothing inside the frame to track
        return pts.astype(np.float32), np.zeros(n, bool)
    safe_pts = np.where(finite[:, None], pts, 0.0)
    x0, y0, x1, y1 = crop_rect(np.where(finite[:, None], pts, np.nan), (h, w), prm)
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
    # Templates of every level first (they depend on the previous frame only), so the
    # per-window constants of all levels come from one batch of array operations.
    patches = []
    for lvl in range(prm.levels - 1, -1, -1):
        c = local / float(1 << lvl)
        patches.append(_template(pyr_p[lvl], c[:, ::-1] if lvl % 2 else c, prm.window))
    taps, base, trackable = _prepare(np.concatenate(patches), prm)
    for i, lvl in enumerate(range(prm.levels - 1, -1, -1)):
        sl = slice(i * n, (i + 1) * n)
        ok0 = status & trackable[sl]
        if lvl % 2:  # stored transposed: track in (y, x) coordinates there
            g, ok = _lk_level(pyr_n[lvl], guess[:, ::-1], taps[sl], base[sl], ok0, prm, lvl == 0)
            guess = g[:, ::-1]
        else:
            guess, ok = _lk_level(pyr_n[lvl], guess, taps[sl], base[sl], ok0, prm, lvl == 0)
        if lvl == 0:
            status &= ok  # a coarse level that cannot refine just hands its guess down
        else:
            guess = guess * 2.0
    out = guess + off
    status &= (out[:, 0] >= 0) & (out[:, 1] >= 0) & (out[:, 0] <= w - 1) & (out[:, 1] <= h - 1)
    return out.astype(np.float32), status
