"""A real body model for Preview, offline: MediaPipe's pose models -> MIRROR's 7-class parsing.

MIRROR's Preview needs a coarse human parsing (0 background, 1 head, 2 torso, 3 upper
arms, 4 lower arms, 5 upper legs, 6 lower legs) on every frame. Its SCHP parser's
checkpoint is not available offline; MediaPipe's BlazePose models are (see pose.py), so
`BodyModel` builds the parsing from them:

1. Finding the person. BlazePose's own detector (`pose_detection.tflite`) runs first
   on the whole frame (letterboxed to 224x224, ~10 ms). A person that is small on the
   canvas (a pedestrian 70 px high: its face box is a few pixels after letterboxing)
   is missed there, so the scan continues on overlapping square tiles of the picture
   (the canvas's black bars left out) at two sizes, each upscaled to 224x224. Each
   detection becomes a landmark crop, and the first, in score order, whose landmark
   run reports a pose present (>= 0.5) is the subject; detector false positives (a
   jacket on the grass) fail that check. The detector is used rather than selfie
   segmentation (trained on close-ups: it does not see a small walker) or landmark runs
   on a sliding set of crops (tens of crops per scan at ~17 ms each).
2. Staying on it. Later frames crop where the previous frame's landmarks say (hips
   centre and body circle, MediaPipe's tracking), so one landmark run per frame. When
   the pose is lost (an occluding post, people crossing) the detector searches only
   around the last body box and takes the detection whose body square overlaps it
   most, so the model does not jump to another person; a frame whose body box does not
   overlap the previous one counts as lost too. After `forget_after` lost frames a
   whole-frame scan (on every `scan_every`-th frame of the clip: it costs ~0.1-0.5 s)
   may pick anyone again.
3. Parsing. The landmark model's segmentation logits are resampled onto the frame
   (logit > 0: person). Each person pixel takes the label of the body part whose
   skeleton is nearest, less the part's half-width: head (a disc around the face
   landmarks), torso (the shoulder-hip quadrilateral, 0 inside), upper/lower arms
   (shoulder-elbow, elbow-wrist-hand) and legs (hip-knee, knee-ankle-foot). A limb whose
   landmarks are not visible (behind the body, out of the frame) is left out, so its
   pixels go to what is visible. Distances are computed at a reduced resolution
   (<= ~40k pixels) and repeated up, which keeps a frame at a few milliseconds beyond
   the landmark model.

No person (nothing found, pose presence below 0.5, or an empty mask) gives an all-zero
label map and `last_mask = None`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .crop import box_iou
from .pose import LM_SIZE, Detection, Landmarks, PoseDetector, PoseLandmarker, Roi, invert_affine, warp_affine

PRESENCE = 0.5
VISIBLE = 0.5  # a limb segment is drawn when both its ends are at least this visible (MediaPipe's own
# drawing threshold)
_GRID_PIXELS = 40_000  # parsing distances are computed on at most about this many pixels
_TILES = (240, 160)  # whole-frame scan: tile sides (canvas pixels), each at half-side stride

# Landmark indices (BlazePose topology).
HEAD = list(range(11))
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = 23, 24, 25, 26, 27, 28
L_HAND, R_HAND = (15, 17, 19, 21), (16, 18, 20, 22)
L_FOOT, R_FOOT = (27, 29, 31), (28, 30, 32)


class BodyModel:
    """Callable frame (HxWx3 uint8 RGB) -> 7-class label map (HxW uint8); follows one person."""

    def __init__(self, landmark_model: Path | None = None, detector_model: Path | None = None,
                 threads: int = 2, scan_every: int = 10, forget_after: int = 30) -> None:
        from .assets import asset_path

        self.landmarker = PoseLandmarker(landmark_model or asset_path("pose_landmark_full.tflite"), threads)
        self.detector = PoseDetector(detector_model or asset_path("pose_detection.tflite"), threads)
        self.scan_every = scan_every
        self.forget_after = forget_after
        self.last_mask: np.ndarray | None = None  # person mask of the last call (None: no person)
        self.last_landmarks: Landmarks | None = None
        self._roi: Roi | None = None  # where to crop the next frame
        self._box: np.ndarray | None = None  # last body box (x0, y0, x1, y1)
        self._lost = 0  # frames since the person was last seen
        self._frame = 0  # frames seen: whole-frame scans keep to a clock (see _redetect)

    def reset(self) -> None:
        """Forget the tracked person (a new clip)."""
        self._roi, self._box, self._lost, self._frame = None, None, 0, 0
        self.last_mask, self.last_landmarks = None, None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self._frame += 1
        found = self._track(frame) if self._roi is not None else None
        if found is None:
            found = self._redetect(frame)
        result = None if found is None else parse_body(found, frame.shape[:2])
        if result is None:
            return self._absent(frame.shape[:2])
        labels, mask, box = result
        self._roi, self._box, self._lost = found.next_roi(), box, 0
        self.last_mask, self.last_landmarks = mask, found
        return labels

    def _absent(self, shape: tuple[int, int]) -> np.ndarray:
        self._lost += 1
        self._roi = None
        if self._lost > self.forget_after:
            self._box = None  # too long gone: anyone found by a whole-frame scan will do
        self.last_mask, self.last_landmarks = None, None
        return np.zeros(shape, np.uint8)

    def _track(self, frame: np.ndarray) -> Landmarks | None:
        assert self._roi is not None
        found = self.landmarker(frame, self._roi)
        return found if found.presence >= PRESENCE and self._overlaps(found) else None

    def _overlaps(self, found: Landmarks) -> bool:
        """Whether the pose's body box overlaps the last one (no jump to another person)."""
        if self._box is None:
            return True
        return bool(box_iou(self._box, landmark_box(found.points)[None])[0] > 0)

    def _redetect(self, frame: np.ndarray) -> Landmarks | None:
        if self._box is not None:
            return self._local_search(frame)
        # Whole-frame scans are costly: not on every frame of an empty stretch. They keep to
        # the clip's clock (frames 1, 1 + scan_every, ...), not to when the person was lost,
        # so two decodings of one clip (a colour conversion's rounding) that lose the
        # person a frame apart still scan, and so re-acquire, on the same frames.
        if (self._frame - 1) % self.scan_every:
            return None
        return self._scan(frame)

    def _confirm(self, frame: np.ndarray, dets: list[Detection], limit: int = 3) -> Landmarks | None:
        """The first detection (in the given order) whose landmark run finds a pose."""
        for det in dets[:limit]:
            found = self.landmarker(frame, det.roi())
            if found.presence >= PRESENCE:
                return found
        return None

    def _local_search(self, frame: np.ndarray) -> Landmarks | None:
        """Detect around the last body box; the detection that overlaps it most, if any."""
        assert self._box is not None
        x0, y0, x1, y1 = self._box
        side = max(2.5 * max(x1 - x0, y1 - y0), 160.0)
        region = ((x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side)
        dets = self.detector(frame, region)
        grown = _grow(self._box, 0.25)
        overlap = [(float(box_iou(grown, np.array(d.roi().box())[None])[0]), d) for d in dets]
        dets = [d for o, d in sorted(overlap, key=lambda t: -t[0]) if o > 0]
        found = self._confirm(frame, dets, 2)
        return found if found is not None and self._overlaps(found) else None

    def _scan(self, frame: np.ndarray) -> Landmarks | None:
        """Whole frame, then tiles of the picture: the most confident person found."""
        dets = sorted(self.detector(frame), key=lambda d: -d.score)
        found = self._confirm(frame, dets)
        if found is not None:
            return found
        x0, y0, x1, y1 = picture_box(frame)
        for side in _TILES:
            dets = []
            for ty in _starts(y0, y1, side):
                for tx in _starts(x0, x1, side):
                    dets += self.detector(frame, (tx, ty, float(side)))
            found = self._confirm(frame, sorted(dets, key=lambda d: -d.score))
            if found is not None:
                return found
        return None


def _starts(a: int, b: int, side: int) -> list[float]:
    """Tile origins covering [a, b) with tiles of `side` at half-side stride."""
    if b - a <= side:
        return [(a + b - side) / 2]
    n = math.ceil((b - a - side) / (side / 2)) + 1
    return list(np.linspace(a, b - side, n))


def picture_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """The frame's bounds without the canvas's black bars (x0, y0, x1, y1)."""
    lit = frame.max(axis=2) > 8
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if not len(rows):
        return 0, 0, frame.shape[1], frame.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _grow(box: np.ndarray, frac: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return box + np.array([-w, -h, w, h]) * frac


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Bounds (x0, y0, x1, y1) of the 33 body landmarks."""
    p = points[:33]
    return np.concatenate([p.min(axis=0), p.max(axis=0)])


def _segment_dist(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of grid points (px [1,W], py [H,1]) to the segment a-b."""
    dx, dy = float(b[0] - a[0]), float(b[1] - a[1])
    ux, uy = px - float(a[0]), py - float(a[1])
    t = np.clip((ux * dx + uy * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(ux - t * dx, uy - t * dy)


def _polygon_dist(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of grid points to a closed polygon, 0 inside (even-odd rule)."""
    inside = np.zeros(np.broadcast_shapes(px.shape, py.shape), bool)
    dist = np.full(inside.shape, np.inf, np.float64)
    for k in range(len(poly)):
        a, b = poly[k], poly[(k + 1) % len(poly)]
        dist = np.minimum(dist, _segment_dist(px, py, a, b))
        if a[1] != b[1]:  # the edge crosses the point's row to its right: flip
            crosses = (py >= min(a[1], b[1])) & (py < max(a[1], b[1]))
            x_at = a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            inside ^= crosses & (px < x_at)
    return np.where(inside, 0.0, dist)


def body_parts(points: np.ndarray, vis: np.ndarray) -> tuple[list[tuple], float]:
    """([(label, kind, geometry, allowance)], torso length) from 39 landmarks (frame pixels).

    kind is "disc" (centre, radius in the allowance), "poly" or "seg"; a part's score for
    a pixel is its distance to the geometry less the allowance, and the lowest wins.
    """
    p = points
    mid_sh, mid_hip = (p[L_SH] + p[R_SH]) / 2, (p[L_HIP] + p[R_HIP]) / 2
    torso = max(float(np.hypot(*(mid_sh - mid_hip))), 1.0)
    centre = p[HEAD].mean(axis=0)
    radius = max(1.4 * float(np.hypot(*(p[HEAD] - centre).T).max()), 0.15 * torso)
    parts: list[tuple] = [(1, "disc", centre, radius),
                          (2, "poly", p[[L_SH, R_SH, R_HIP, L_HIP]], 0.0)]  # fmt: skip
    arm_w, leg_w = 0.10 * torso, 0.13 * torso
    for sh, el, wr, hand, hip, kn, an, foot in ((L_SH, L_EL, L_WR, L_HAND, L_HIP, L_KN, L_AN, L_FOOT),
                                                (R_SH, R_EL, R_WR, R_HAND, R_HIP, R_KN, R_AN, R_FOOT)):
        chains = ((3, arm_w, [sh, el]), (4, arm_w, [el, wr]), (4, arm_w, [wr, hand]),
                  (5, leg_w, [hip, kn]), (6, leg_w, [kn, an]), (6, leg_w, [an, foot]))  # fmt: skip
        for label, width, (a, b) in chains:
            ia, ib = (a, b) if isinstance(b, int) else (a, b[0])
            if min(vis[ia], vis[ib]) < VISIBLE:
                continue  # hidden behind the body or out of the frame: its pixels go to what is seen
            end = p[b] if isinstance(b, int) else p[list(b)].mean(axis=0)
            parts.append((label, "seg", (p[a], end), width))
    return parts, torso


def _label_grid(px: np.ndarray, py: np.ndarray, points: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Nearest body part's label at each grid point (0 farther than any part can reach)."""
    parts, torso = body_parts(points, vis)
    scores = np.empty((len(parts), py.shape[0], px.shape[1]), np.float32)
    for k, (_, kind, geom, allow) in enumerate(parts):
        if kind == "disc":
            d = np.hypot(px - geom[0], py - geom[1])
        elif kind == "poly":
            d = _polygon_dist(px, py, geom)
        else:
            d = _segment_dist(px, py, *geom)
        scores[k] = d - allow
    best = scores.argmin(axis=0)
    labels = np.array([lab for lab, *_ in parts], np.uint8)[best]
    labels[scores.min(axis=0) > 0.6 * torso] = 0  # a mask blob far from this skeleton: not this person
    return labels


def parse_body(found: Landmarks, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(labels HxW uint8, person mask HxW bool, mask box) from one landmark run; None if empty."""
    h, w = shape
    rx0, ry0, rx1, ry1 = found.roi.box()
    x0, y0 = max(0, math.floor(rx0)), max(0, math.floor(ry0))
    x1, y1 = min(w, math.ceil(rx1)), min(h, math.ceil(ry1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    bw, bh = x1 - x0, y1 - y0
    to_crop = invert_affine(found.roi.crop_to_frame(LM_SIZE))
    to_crop[:, 2] += to_crop[:, :2] @ np.array([x0, y0], np.float64)
    # As uint8 probabilities: Pillow resamples 8-bit images faster than float ones.
    prob = (255.0 / (1.0 + np.exp(-np.clip(found.mask_logits, -30, 30)))).astype(np.uint8)
    person = warp_affine(prob, to_crop, (bw, bh)) > 127
    if not person.any():
        return None
    s = max(1, math.ceil(math.sqrt(bw * bh / _GRID_PIXELS)))
    px = (x0 + np.arange(0, bw, s, dtype=np.float32) + s / 2)[None, :]
    py = (y0 + np.arange(0, bh, s, dtype=np.float32) + s / 2)[:, None]
    grid = _label_grid(px, py, found.points, found.visibility)
    up = np.repeat(np.repeat(grid, s, axis=0), s, axis=1)[:bh, :bw]
    region = up * person
    inside = region > 0
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not len(rows):
        return None
    labels = np.zeros(shape, np.uint8)
    labels[y0:y1, x0:x1] = region
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = inside
    box = np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1], np.float64)
    return labels, mask, box
