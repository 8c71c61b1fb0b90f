"""Keypoint detection for VITOFF: Shi-Tomasi corners inside the body mask.

The corner response is the smaller eigenvalue of the 3x3-windowed structure tensor of
3x3 Sobel gradients (the quantity cv2.cornerMinEigenVal returns for 8-bit input).
Candidates are 3x3 local maxima above 1% of the strongest response inside the mask,
ranked by response; a greedy non-max suppression keeps a candidate only when it lies
at least `min_distance` pixels from every point kept before it, up to `max_points`.

The mask is the coarse parsing's torso and arm labels (2-4) dilated by a 3x3 square
three times, or a user-given region of interest when no parser is at hand.

Only the mask's bounding box (plus the 3-pixel margin the filters need) is filtered,
and the greedy selection is solved for a whole block of candidates at once as the
fixed point of "kept = not in conflict with an earlier kept candidate", so nothing
loops over pixels or keypoints.

`fit_box_motion` moves the body box with its points: a similarity without rotation
(scale s about the box centre, then shift d) fitted robustly, since some of the points
a box holds are not on the subject (background inside a region of interest, a limb
that swings): s is the weighted median of the ratios of pairwise distances, d the
weighted median of the displacements left after scaling, and points near the box edge
(where background is) weigh less. A mean would be pulled by every such point; the
median moves with the majority of the subject.
"""

from __future__ import annotations

import numpy as np

from .imgproc import box_sum, dilate3x3, max3x3, sobel

TORSO_ARM_LABELS = (2, 3, 4)

# OpenCV's cornerMinEigenVal scales 8-bit Sobel output by 1 / (2^(ksize-1) * blockSize * 255).
_SOBEL_SCALE = 1.0 / (4.0 * 3.0 * 255.0)


def keypoint_mask_from_parsing(parsing: np.ndarray, labels: tuple[int, ...] = TORSO_ARM_LABELS,
                               dilations: int = 3) -> np.ndarray:
    """Boolean mask of the given parsing labels, dilated with a 3x3 square `dilations` times."""
    return dilate3x3(np.isin(parsing, labels), dilations)


def roi_mask(shape: tuple[int, int], roi: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean [H,W] mask that is set inside roi = (x, y, w, h), clipped to the image."""
    h, w = shape
    x, y, rw, rh = (int(round(v)) for v in roi)
    m = np.zeros((h, w), dtype=bool)
    m[max(0, y) : max(0, min(h, y + rh)), max(0, x) : max(0, min(w, x + rw))] = True
    return m


def min_eigen_response(gray: np.ndarray) -> np.ndarray:
    """Shi-Tomasi response (min eigenvalue of the 3x3-summed structure tensor), float32.

    `gray` holds intensities in [0, 255]; the scale matches cv2.cornerMinEigenVal(img, 3, 3)
    on the corresponding uint8 image.
    """
    dx, dy = sobel(gray)
    dx *= _SOBEL_SCALE
    dy *= _SOBEL_SCALE
    a = box_sum(dx * dx, 3) * 0.5
    b = box_sum(dx * dy, 3)
    c = box_sum(dy * dy, 3) * 0.5
    return (a + c) - np.sqrt((a - c) * (a - c) + b * b)


def _greedy_block(cand: np.ndarray, kept: np.ndarray, min_d2: float) -> np.ndarray:
    """Greedy suppression of one block of ranked candidates, solved as a fixed point.

    cand: [M,2] candidates in rank order; kept: [K,2] points kept from earlier blocks.
    Candidate i survives iff it is not within min_distance of a kept point and of no
    surviving candidate j < i. Iterating keep <- free & ~any(conflict & keep) from
    keep = free makes the first m entries final after m iterations, and in practice it
    settles after a few (conflict chains are short), each step one [M,M] boolean product.
    """
    if kept.size:
        d2k = ((cand[:, None, :] - kept[None, :, :]) ** 2).sum(-1)
        free = ~(d2k < min_d2).any(axis=1)
    else:
        free = np.ones(len(cand), dtype=bool)
    d2 = ((cand[:, None, :] - cand[None, :, :]) ** 2).sum(-1)
    conflict = np.tril(d2 < min_d2, k=-1).astype(np.float32)  # [i, j]: j ranked before i
    keep = free.copy()
    for _ in range(len(cand) + 1):
        new = free & ((conflict @ keep.astype(np.float32)) == 0)
        if np.array_equal(new, keep):
            break
        keep = new
    return keep


def detect_keypoints(gray: np.ndarray, mask: np.ndarray, max_points: int = 30,
                     min_distance: float = 20.0, quality: float = 0.01,
                     block: int = 64) -> np.ndarray:
    """Detect up to `max_points` corners inside `mask`, at least `min_distance` px apart.

    gray: [H,W] intensities in [0,255]; mask: [H,W] bool. Returns [N,2] float32 (x, y),
    strongest first; N may be 0 when the mask is empty or textureless. The selection is
    the one cv2.goodFeaturesToTrack(maxCorners, quality, minDistance, mask, blockSize=3)
    makes (ties in response are broken towards the later raster position, as there).
    """
    if gray.shape != mask.shape:
        raise ValueError(f"gray {gray.shape} and mask {mask.shape} differ in shape")
    h, w = gray.shape
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if ys.size == 0:
        return np.zeros((0, 2), np.float32)
    m = 3  # Sobel (1) + box (1) + local-max (1) margin: the crop's values equal the full frame's.
    y0, y1 = max(0, ys[0] - m), min(h, ys[-1] + 1 + m)
    x0, x1 = max(0, xs[0] - m), min(w, xs[-1] + 1 + m)
    eig = min_eigen_response(gray[y0:y1, x0:x1])
    msk = mask[y0:y1, x0:x1]
    vmax = float(eig[msk].max())
    if not vmax > 0.0:
        return np.zeros((0, 2), np.float32)
    eig = np.where(eig > vmax * quality, eig, 0.0).astype(np.float32)
    peak = (eig > 0) & (eig == max3x3(eig)) & msk
    # goodFeaturesToTrack never returns the image's outermost pixels.
    gy, gx = np.mgrid[y0:y1, x0:x1]
    peak &= (gy > 0) & (gy < h - 1) & (gx > 0) & (gx < w - 1)
    py, px = np.nonzero(peak)
    vals = eig[py, px]
    flat = (py + y0) * w + (px + x0)
    order = np.lexsort((-flat, -vals))  # response descending, then later raster position first
    cand = np.stack([px[order] + x0, py[order] + y0], axis=1).astype(np.float64)
    kept = np.zeros((0, 2), np.float64)
    min_d2 = float(min_distance) ** 2
    for start in range(0, len(cand), block):  # blocks of candidates, not single points
        keep = _greedy_block(cand[start : start + block], kept, min_d2)
        kept = np.concatenate([kept, cand[start : start + block][keep]])
        if len(kept) >= max_points:
            break
    return kept[:max_points].astype(np.float32)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value where the cumulative weight (values sorted) first reaches half the total."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def edge_weights(pts: np.ndarray, box: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """1 for points in the inner half of box = (x, y, w, h), falling linearly to `floor`
    at its edge (and beyond): background shows most near a body box's edges."""
    c = np.array([box[0] + 0.5 * box[2], box[1] + 0.5 * box[3]])
    r = np.abs((pts - c) / (0.5 * np.array([box[2], box[3]]))).max(axis=1)
    return np.clip(2.0 * (1.0 - r), floor, 1.0)


def fit_box_motion(key_pts: np.ndarray, pts: np.ndarray, key_box: np.ndarray,
                   min_baseline: float = 0.3) -> tuple[float, np.ndarray, np.ndarray]:
    """Robust fit of pts ~ s (key_pts - c) + c + d, c the centre of key_box (x, y, w, h).

    Returns (s, d [2], residuals [N] in px). Pairs shorter than `min_baseline` of the box's
    size do not vote for the scale (a pixel of tracking noise is a large ratio there);
    with no pair left s = 1. s is kept within [0.5, 2].
    """
    key_pts = np.asarray(key_pts, np.float64).reshape(-1, 2)
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return 1.0, np.zeros(2), np.zeros(0)
    c = np.array([key_box[0] + 0.5 * key_box[2], key_box[1] + 0.5 * key_box[3]])
    w = edge_weights(key_pts, key_box)
    s = 1.0
    i, j = np.triu_indices(len(pts), k=1)
    dk = np.linalg.norm(key_pts[i] - key_pts[j], axis=1)
    use = dk >= min_baseline * np.sqrt(key_box[2] * key_box[3])
    if use.any():
        ratio = np.linalg.norm(pts[i] - pts[j], axis=1)[use] / dk[use]
        s = float(np.clip(weighted_median(ratio, (w[i] * w[j])[use]), 0.5, 2.0))
    rest = pts - c - s * (key_pts - c)
    d = np.array([weighted_median(rest[:, 0], w), weighted_median(rest[:, 1], w)])
    return s, d, np.linalg.norm(rest - d, axis=1)
