"""VITOFF Preview: track the body through a video once and decide where DIVTON must run.

Every frame (RGB on the processing canvas: 960x540 in the video's orientation,
`frame_size`) ends in one of three states:

- keyframe (DNN): the box is (re-)anchored and keypoints are detected afresh. With a
  parser the anchor is the parser's labels on that frame (labels 1-4 box, the *core*,
  padded 20 px in x, 20 px above, 30 px below; labels 2-4 dilated 3x3 three times as
  keypoint mask); without one, the user's region of interest on the first keyframe and
  the tracked box afterwards. Up to 30 corners are kept, at least `spacing` apart; a
  keyframe with fewer than `min_points` is detected again with half, then a quarter of
  the spacing and a lower quality threshold, so it can track.
- tracked (DNN-free): the keypoints follow pyramidal LK from the previous frame; the
  core box moves by a robust fit of the points (keypoints.fit_box_motion: weighted-median
  scale and shift, edge points down-weighted, gross outliers dropped), and the TPS from
  current to keyframe points is checked. The DNN must run again (a trigger) when
  "few-points" (fewer than `min_points` left, or a degenerate spline), "drift" (with a
  parser: the core box overlaps the parser's labels 1-4 box with IoU < 0.5), "fold"
  (the spline folds or shears the box: triggers.warp_support), WE or KE fire.
- absent (no DNN, no paste): the parser finds no person (or no upper body), or the box
  is mostly (over half its area) outside the frame, or, without a parser, the region
  holds nothing to track. Frames before the first body are absent; tracking resumes
  with a new keyframe when the person is back (with a parser; without one, a region
  that left the frame has nothing to bring it back, so it stays absent).

Constants scale with the subject. The paper's 20 px NMS spacing and 10 px WE
calibration shift are pixels for its framing: an upper body filling a 960x540
portrait frame, whose core box is about 400 px in size (sqrt(w h); the synthetic
clip's body box, 310x488, gives 389). VITOFF uses 0.05 and 0.025 of the subject's size,
which are the paper's 20 px and 10 px at 400 px, with minimums of 5 px and 2 px: a
40x60 walker then gets points 5 px apart (the paper's 20 px left it 2-7 points, and KE
fired on one pixel of noise) and is judged against a 2 px misregistration, the same
fraction of its size as the paper's 10 px of a 400 px body. WE is measured over the
body: with a parser, the core box's lattice points whose keyframe position lies on the
keyframe's labels 1-4 (the pixels the garment is drawn on); without one, the whole core
box. Background does not move with the body's warp, and around a small subject it is
most of the samples: the padded box's 20-30 px margins (51% of vtest.avi's frames needed
the DNN when WE was measured over the padded box, 21% over the core box on the portrait
canvas) and, inside the core box, the road between a walker's arms and torso (vtest.avi,
150 frames on its landscape canvas: WE fired on 14 frames over the core box, 11 over
the body; carphone.mp4, 120 frames: 6 and 0). The calibration uses the same samples.
The WE lattice stride shrinks with the subject (4 px at 400 px, 1 px at 100 px or
less), keeping enough samples.

Each frame records box, keypoints, letterbox paddings, the TPS (what regenerates the
grid), NCC and its threshold, KE, the decision, whether it is absent, and (with a
parser) the IoU of the core box with the parser's labels 1-4 box (the body the garment
goes on; see PreviewResult.box_on_body_fraction). Keyframes also keep their parsing crop
(or ROI mask) at 256x192, the only frames DIVTON sees, so memory grows by a few hundred
bytes per ordinary frame.

Nothing here calls a DNN: the parser is an optional callable (frame -> labels, all
zero where no person is in view). Runtime replays the records (see replay.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mirror import MirrorError

from .crop import DNN_H, DNN_W, box_pixels, letterbox_paddings, to_dnn
from .crop import box_iou as crop_box_iou
from .imgproc import rgb_to_gray
from .keypoints import detect_keypoints, fit_box_motion, keypoint_mask_from_parsing, roi_mask
from .lk import LKParams, track
from .remap import Source
from .tps import TPSDegenerate, fit_tps
from .triggers import (
    KE_THRESHOLD,
    MAX_ANISOTROPY,
    box_lattice,
    calibrate_ncc_threshold,
    keypoint_error,
    warp_ncc,
    warp_support,
)
from .video import FRAME_H, FRAME_W

Parser = Callable[[np.ndarray], np.ndarray]
STAGES = ("parse", "gray", "detect", "lk", "ke", "tps", "ncc")
BODY_LABELS = (1, 2, 3, 4)  # head, torso, arms: the person crop box of DIVTON's pre-processing
PADDING = (20.0, 20.0, 30.0)  # px added to the labels 1-4 box: x (each side), above, below
SUBJECT_REF_PX = 400.0  # sqrt(w h) of the paper's body box, where its pixel constants hold


@dataclass(frozen=True)
class VitoffConfig:
    """VITOFF's settings. Sizes are fractions of the subject's size sqrt(w h) of its core
    box, chosen to equal the paper's pixels at its 400 px subject (see the module doc)."""

    max_points: int = 30
    spacing_frac: float = 0.05  # NMS spacing: the paper's 20 px at 400 px
    min_spacing: float = 5.0  # px; retries on a keyframe short of points go down to 2 px
    quality: float = 0.01
    mask_dilations: int = 3
    ke_threshold: float = KE_THRESHOLD
    shift_frac: float = 0.025  # WE calibration shift: the paper's 10 px at 400 px
    min_shift: float = 2.0  # px: below ~2 px LK noise and resampling blur dominate the NCC
    ncc_stride: int = 4  # WE lattice stride at 400 px and above (see triggers.py)
    # A TPS needs 3 points, but a 3- or 4-point spline interpolates its points exactly with
    # nothing to average out their noise: 5 is the fewest a keyframe or a tracked frame keeps.
    min_points: int = 5
    # The spline from current to keyframe points is a smoothing TPS (tps.fit_tps): an exact
    # one passes through every point's LK noise, and two close points with opposite errors
    # bend it into a fold or shear of the box that the body never made (vtest.avi walkers:
    # 2 of 150 frames re-ran DIVTON for it; and on a colour-converted copy of the clip the
    # noise differs, so the decisions did). 0.05 leaves 0.07-0.09 px mean residual at the
    # points on the synthetic body and 0.22 px on vtest's walkers: LK's own noise level.
    tps_smoothing: float = 0.05
    max_anisotropy: float = MAX_ANISOTROPY  # fold trigger: the warp's largest shear
    outlier_frac: float = 0.2  # points further than this x size from the box fit are dropped
    min_inside: float = 0.5  # a box with less of its area in the frame is absent
    drift_iou: float = 0.5  # with a parser: a core box overlapping the body less re-anchors
    lk: LKParams = field(default_factory=LKParams)

    def as_dict(self) -> dict:
        return asdict(self)

    def spacing(self, size: float) -> float:
        return max(self.min_spacing, self.spacing_frac * size)

    def shift(self, size: float) -> float:
        return max(self.min_shift, self.shift_frac * size)

    def stride(self, size: float) -> int:
        return int(min(self.ncc_stride, max(1, round(size / 100.0))))


@dataclass
class PreviewResult:
    """Per-frame arrays (T frames, P = max_points) plus what produced them."""

    boxes: np.ndarray  # [T,4] float64 (x, y, w, h)
    dnn: np.ndarray  # [T] bool
    reasons: list[str]
    keyframe: np.ndarray  # [T] int32: frame whose DNN output frame t replays (-1: absent)
    n_points: np.ndarray  # [T] int32
    points: np.ndarray  # [T,P,2] float32, NaN-padded: current positions
    key_points: np.ndarray  # [T,P,2] float32: the same points in the keyframe
    tps_ok: np.ndarray  # [T] bool: a TPS (current -> keyframe) exists for the frame
    tps_ctrl: np.ndarray  # [T,P,2] float64
    tps_coef: np.ndarray  # [T,P+3,2] float64
    tps_norm: np.ndarray  # [T,3] float64
    paddings: np.ndarray  # [T,4] int32 (top, bottom, left, right) of the 256x192 crop
    ncc: np.ndarray  # [T] float32 (NaN where not measured)
    ncc_threshold: np.ndarray  # [T] float32
    tps_error: np.ndarray  # [T] float32 (KE; inf when no spline)
    absent: np.ndarray  # [T] bool: no subject to dress (no DNN, no paste)
    box_iou: np.ndarray  # [T] float32: core box vs parser's labels 1-4 box (NaN: no parser/absent)
    parsing: np.ndarray  # [K,256,192] uint8 parsing crop of each DNN frame, in order (ROI mode: 1 inside the ROI)
    stage_ms: dict[str, np.ndarray]  # stage -> [T] milliseconds
    frame_size: tuple[int, int] = (FRAME_H, FRAME_W)
    mask_source: str = "roi"
    config: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(len(self.dnn))

    @property
    def dnn_fraction(self) -> float:
        return float(self.dnn.mean()) if self.frames else 0.0

    @property
    def absent_fraction(self) -> float:
        return float(self.absent.mean()) if self.frames else 0.0

    @property
    def box_on_body_fraction(self) -> float | None:
        """Of the DNN-free tracked frames, the fraction whose core box overlaps the body
        (the parser's labels 1-4 box, the region the garment goes on) with IoU >= 0.5.

        None without a parser, or with no tracked frame. The labels 1-4 box, not the whole
        person mask, is the reference: the garment box leaves the legs out by design, so
        a perfectly placed box on a walker would score ~0.5 against the full figure.
        """
        tracked = ~self.dnn & ~self.absent
        if self.mask_source != "parser" or not tracked.any():
            return None
        return float((self.box_iou[tracked] >= 0.5).mean())


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    corners = np.array([[a[0], a[1], a[0] + a[2], a[1] + a[3]], [b[0], b[1], b[0] + b[2], b[1] + b[3]]], np.float64)
    return float(crop_box_iou(corners[0], corners[1:])[0])


def inside_fraction(box: np.ndarray, frame_size: tuple[int, int]) -> float:
    """Fraction of the box's area inside the frame."""
    h, w = frame_size
    iw = min(w, box[0] + box[2]) - max(0.0, box[0])
    ih = min(h, box[1] + box[3]) - max(0.0, box[1])
    return float(max(0.0, iw) * max(0.0, ih) / max(box[2] * box[3], 1e-9))


def labels_box(labels: np.ndarray, which: tuple[int, ...] = BODY_LABELS) -> np.ndarray | None:
    """Bounding box (x, y, w, h) of the given labels, or None when none is present."""
    person = np.isin(labels, which)
    rows, cols = np.nonzero(person.any(axis=1))[0], np.nonzero(person.any(axis=0))[0]
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]], np.float64)


def subject_size(core: np.ndarray) -> float:
    """A box's size: the side of the square of the same area."""
    return math.sqrt(max(float(core[2] * core[3]), 1.0))


class Preview:
    """Frame-by-frame Preview state machine; feed frames with step(), then call result()."""

    def __init__(self, roi: tuple[float, float, float, float] | None = None,
                 parser: Parser | None = None, config: VitoffConfig | None = None,
                 frame_size: tuple[int, int] = (FRAME_H, FRAME_W)) -> None:
        if roi is None and parser is None:
            raise MirrorError("no human parser is available: give a region of interest "
                              "(--roi x,y,w,h) around the torso and arms")
        self.cfg = config or VitoffConfig()
        if roi is not None:
            x, y, w, h = (float(v) for v in roi)
            if not (w >= 1 and h >= 1 and x < frame_size[1] and y < frame_size[0]
                    and x + w > 0 and y + h > 0):
                raise MirrorError(f"the region of interest {x:g},{y:g},{w:g},{h:g} does not "
                                  f"overlap the {frame_size[1]}x{frame_size[0]} frame")
        self.roi = None if roi is None else np.asarray(roi, np.float64)
        self.parser = parser
        self.frame_size = frame_size
        self._cols = _Columns()
        self._t = 0
        self._lk_cache: dict = {}
        self._body: np.ndarray | None = None
        self._state: dict | None = None  # None: no keyframe to track from (start, or absent)
        # The last known core box: the ROI until tracking moves it (absent frames keep it).
        fh, fw = frame_size
        self._core = self.roi.copy() if roi is not None else np.array([0.0, 0.0, fw, fh])
        self._keyframes = 0
        self._velocity: np.ndarray | None = None  # the core box's last motion, px per frame

    # -- geometry --------------------------------------------------------------------------
    def _pad(self, core: np.ndarray) -> np.ndarray:
        """The box DIVTON crops: the core padded as the paper pads labels 1-4 (ROI: itself)."""
        if self.parser is None:
            return core.copy()
        px, top, bottom = PADDING
        return np.array([core[0] - px, core[1] - top, core[2] + 2 * px, core[3] + top + bottom])

    def _parse(self, frame: np.ndarray, timings: dict) -> np.ndarray | None:
        if self.parser is None:
            return None
        t0 = time.perf_counter()
        labels = np.asarray(self.parser(frame))
        timings["parse"] += (time.perf_counter() - t0) * 1e3
        if labels.shape != frame.shape[:2]:
            raise MirrorError(f"the parser returned labels of shape {labels.shape}, "
                              f"expected {frame.shape[:2]}")
        return labels.astype(np.uint8, copy=False)

    def _crop(self, labels: np.ndarray | None, box: np.ndarray) -> np.ndarray:
        """256x192 parsing crop of `box` (ROI mode: 1 where the box lies inside the frame)."""
        if labels is None:
            labels = roi_mask(self.frame_size, tuple(box)).astype(np.uint8)
        return to_dnn(labels, box, 0, nearest=True)

    # -- keyframes -------------------------------------------------------------------------
    def _detect(self, gray: np.ndarray, mask: np.ndarray, size: float) -> np.ndarray:
        """Keypoints inside mask; short of min_points, again with a smaller spacing and a
        lower quality threshold (weaker corners in a small or plain subject still track)."""
        cfg, pts = self.cfg, np.zeros((0, 2), np.float32)
        for spacing, quality in ((1.0, 1.0), (0.5, 0.1), (0.25, 0.01)):
            pts = detect_keypoints(gray, mask, cfg.max_points, max(2.0, cfg.spacing(size) * spacing),
                                   cfg.quality * quality)
            if len(pts) >= cfg.min_points:
                break
        return pts

    def _moving_apart(self, gray: np.ndarray, pts: np.ndarray, core: np.ndarray) -> np.ndarray:
        """ROI mode: of fresh corners in the region, those that move apart from the background.

        A region holds background as well as the subject; with no body model, what tells
        them apart is motion. The background's motion over the last frame is the median
        motion of corners in a ring around the region (half its size wide), tracked back
        one frame; the region's corners are kept when their own motion differs from it by
        more than 1 px. When fewer than min_points do (a still subject, or a panning camera
        that moves everything alike) all corners stay: motion cannot tell them apart then.
        """
        if self._t == 0 or len(pts) == 0:
            return pts
        fh, fw = self.frame_size
        ring = roi_mask((fh, fw), (core[0] - 0.5 * core[2], core[1] - 0.5 * core[3], 2 * core[2], 2 * core[3]))
        ring &= ~roi_mask((fh, fw), tuple(core))
        size = subject_size(core)
        bg_pts = detect_keypoints(gray, ring, self.cfg.max_points, self.cfg.spacing(size), self.cfg.quality)
        both = np.concatenate([pts, bg_pts]).astype(np.float64)
        back, ok = track(gray, self._prev_gray, both, self.cfg.lk)
        moved = both - back
        bg_ok = ok[len(pts):]
        if bg_ok.sum() < 3:
            return pts
        bg = np.median(moved[len(pts):][bg_ok], axis=0)
        apart = ok[: len(pts)] & (np.hypot(*(moved[: len(pts)] - bg).T) > 1.0)
        return pts[apart] if apart.sum() >= self.cfg.min_points else pts

    def _anchor(self, labels: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """(core box, keypoint mask, why absent) for a new keyframe."""
        if labels is None:
            core = np.array(box_pixels(self._core), np.float64)
            return core, roi_mask(self.frame_size, tuple(core)), ""
        core = self._body
        if core is None:
            return None, None, "absent: no upper body in view"
        return core, keypoint_mask_from_parsing(labels, dilations=self.cfg.mask_dilations), ""

    def _new_keyframe(self, labels: np.ndarray | None, gray: np.ndarray, timings: dict) -> str:
        """Anchor a keyframe on this frame; returns "" or why the frame is absent instead."""
        cfg = self.cfg
        core, mask, absent = self._anchor(labels)
        if absent:
            return absent
        box = self._pad(core)
        if inside_fraction(box, self.frame_size) < cfg.min_inside:
            return "absent: the box is mostly outside the frame"
        size = subject_size(core)
        t0 = time.perf_counter()
        pts = self._detect(gray, mask, size)
        if labels is None:
            pts = self._moving_apart(gray, pts, core)
        if len(pts) == 0 and labels is None:
            timings["detect"] += (time.perf_counter() - t0) * 1e3
            return "absent: nothing to track in the region"
        key_src = Source(gray)  # prepared once, sampled by WE on every frame until the next keyframe
        stride = cfg.stride(size)
        # WE looks at the body, not the background: around a small subject the paper's
        # fixed 20-30 px paddings, and much of the core box itself (the road between a
        # walker's arms and torso), are background, which does not move with the body's
        # warp and pulls the NCC down on every frame. With a parser, WE samples the core
        # box where the keyframe's labels 1-4 are (the pixels the garment is drawn on).
        key_mask = None if labels is None else np.isin(labels, BODY_LABELS)
        thr = calibrate_ncc_threshold(gray, core, stride, cfg.shift(size), key_src, key_mask)
        timings["detect"] += (time.perf_counter() - t0) * 1e3
        self._core = core
        self._keyframes += 1
        self._state = {"key": self._t, "key_src": key_src, "key_box": box.copy(), "box": box,
                       "key_core": core.copy(), "core": core.copy(), "stride": stride,
                       "key_mask": key_mask,
                       "pts": pts.astype(np.float64), "key_pts": pts.astype(np.float64),
                       "thr": thr, "crop": self._crop(labels, box)}
        return ""

    # -- per frame -------------------------------------------------------------------------
    def step(self, frame: np.ndarray) -> dict:
        """Process the next frame; returns its record."""
        if frame.shape != (*self.frame_size, 3):
            raise MirrorError(f"frame {self._t + 1} is {frame.shape[1]}x{frame.shape[0]}, "
                              f"VITOFF needs {self.frame_size[1]}x{self.frame_size[0]} RGB")
        timings = dict.fromkeys(STAGES, 0.0)
        t0 = time.perf_counter()
        gray = rgb_to_gray(frame)
        timings["gray"] = (time.perf_counter() - t0) * 1e3
        labels = self._parse(frame, timings)
        # The body's box (labels 1-4) of this frame: anchoring, drift and the recorded IoU share it.
        self._body = None if labels is None else labels_box(labels)
        ncc_val, ke, spline = float("nan"), float("nan"), None
        if labels is not None and not labels.any():
            reason = "absent: no person in view"
        elif self._state is None:
            reason = ("first frame" if self._t == 0 else "first body" if not self._keyframes
                      else "subject back in view")
        else:
            ncc_val, ke, spline, reason = self._track(gray, labels, timings)
        kind = "track" if not reason else "absent" if reason.startswith("absent") else "key"
        if kind == "absent" and labels is not None and labels.any():
            kind = "key"  # the parser still sees the person: re-anchor on it
        if kind == "key":
            spline = None
            why = self._new_keyframe(labels, gray, timings)
            if why:
                kind, reason = "absent", why
        if kind == "absent":
            self._state, spline, self._velocity = None, None, None
        row = self._record(kind, reason, ncc_val, ke, spline, labels, timings)
        self._cols.append(row)
        self._prev_gray = gray
        self._t += 1
        return row

    def _move_box(self, pts: np.ndarray, key_pts: np.ndarray) -> None:
        """Move the core box by the robust fit of the points to their keyframe positions
        (relative to the keyframe, so noise does not accumulate frame after frame) and
        drop the points that disagree with it grossly (background, lost tracks)."""
        cfg, st = self.cfg, self._state
        kc = st["key_core"]
        s, d, res = fit_box_motion(key_pts, pts, kc)
        keep = res <= max(3.0, cfg.outlier_frac * subject_size(kc) * s)
        if keep.sum() >= cfg.min_points and not keep.all():
            pts, key_pts = pts[keep], key_pts[keep]
            s, d, _ = fit_box_motion(key_pts, pts, kc)
        if len(pts):
            w, h = kc[2] * s, kc[3] * s
            cx, cy = kc[0] + 0.5 * kc[2] + d[0], kc[1] + 0.5 * kc[3] + d[1]
            old = st["core"]
            self._velocity = np.array([cx - old[0] - 0.5 * old[2], cy - old[1] - 0.5 * old[3]])
            st["core"] = np.array([cx - 0.5 * w, cy - 0.5 * h, w, h])
            st["box"] = self._pad(st["core"])
            self._core = st["core"].copy()
        st["pts"], st["key_pts"] = pts, key_pts

    def _track(self, gray: np.ndarray, labels: np.ndarray | None,
               timings: dict) -> tuple[float, float, Any, str]:
        """LK from the previous frame, the box fit, then the triggers in order of cost.

        Returns (ncc, ke, spline, why the DNN must run: "" when it need not; "absent: ..."
        when the box left the frame)."""
        cfg, st = self.cfg, self._state
        nan = float("nan")
        t0 = time.perf_counter()
        new, ok = track(self._prev_gray, gray, st["pts"], cfg.lk, self._lk_cache)
        self._move_box(new[ok].astype(np.float64), st["key_pts"][ok])
        timings["lk"] = (time.perf_counter() - t0) * 1e3
        if inside_fraction(st["box"], self.frame_size) < cfg.min_inside:
            return nan, nan, None, "absent: the box is mostly outside the frame"
        t0 = time.perf_counter()
        ke = keypoint_error(st["pts"], st["box"], st["key_pts"], st["key_box"])
        timings["ke"] = (time.perf_counter() - t0) * 1e3
        n = len(st["pts"])
        if n < cfg.min_points:
            return nan, ke, None, f"few-points: only {n} keypoints tracked"
        if labels is not None:
            iou = 0.0 if self._body is None else box_iou(st["core"], self._body)
            if iou < cfg.drift_iou:
                return nan, ke, None, f"drift: the box overlaps the body with IoU {iou:.2f} < {cfg.drift_iou:g}"
        return self._check_warp(gray, ke, timings)

    def _check_warp(self, gray: np.ndarray, ke: float, timings: dict) -> tuple[float, float, Any, str]:
        """Fit the TPS and run the warp triggers: few-points (degenerate), fold, WE, KE."""
        cfg, st = self.cfg, self._state
        t0 = time.perf_counter()
        try:
            spline = fit_tps(st["pts"], st["key_pts"], smoothing=cfg.tps_smoothing)
        except TPSDegenerate as exc:
            return float("nan"), ke, None, f"few-points: degenerate TPS: {exc}"
        reason = warp_support(spline, st["box"], cfg.max_anisotropy)
        timings["tps"] = (time.perf_counter() - t0) * 1e3
        if reason:
            return float("nan"), ke, spline, reason
        t0 = time.perf_counter()
        xs, ys = box_lattice(st["core"], gray.shape, st["stride"])
        mx, my = spline.grid_at(xs, ys)
        ncc_val = warp_ncc(gray, st["key_src"], xs, ys, mx, my, st["key_mask"])
        timings["ncc"] = (time.perf_counter() - t0) * 1e3
        if ncc_val < st["thr"]:
            reason = f"WE: NCC {ncc_val:.3f} < {st['thr']:.3f}"
        elif not ke <= cfg.ke_threshold:
            reason = f"KE: {ke:.3f} > {cfg.ke_threshold}"
        return ncc_val, ke, spline, reason

    def _record(self, kind: str, reason: str, ncc_val: float, ke: float, spline: Any,
                labels: np.ndarray | None, timings: dict) -> dict:
        """The frame's record, with points and TPS padded to ``max_points`` rows."""
        st = self._state if kind != "absent" else None
        p = self.cfg.max_points
        pts = np.full((p, 2), np.nan, np.float32)
        kpts = np.full((p, 2), np.nan, np.float32)
        n = 0 if st is None else len(st["pts"])
        if n:
            pts[:n], kpts[:n] = st["pts"], st["key_pts"]
        ctrl, coef, norm = np.full((p, 2), np.nan), np.zeros((p + 3, 2)), np.zeros(3)
        if spline is not None:
            ctrl, coef, norm = spline.to_arrays(p)
        box = self._pad(self._core) if st is None else st["box"].copy()
        iou = float("nan")
        if labels is not None and st is not None:
            iou = 0.0 if self._body is None else box_iou(st["core"], self._body)
        _, _, bw, bh = box_pixels(box)
        return {
            "box": box, "dnn": kind == "key", "reason": reason,
            "keyframe": -1 if st is None else st["key"], "n_points": n, "points": pts,
            "key_points": kpts, "tps_ok": spline is not None, "tps_ctrl": ctrl, "tps_coef": coef,
            "tps_norm": norm, "paddings": letterbox_paddings(bw, bh), "ncc": ncc_val,
            "ncc_threshold": float("nan") if st is None else st["thr"], "tps_error": ke,
            "absent": kind == "absent", "box_iou": iou,
            "parsing": st["crop"] if kind == "key" else None,  # DIVTON sees keyframes only
            "stage_ms": timings,
        }

    def result(self) -> PreviewResult:
        cols = self._cols
        if not cols.n:
            raise MirrorError("the video has no frames")
        a = cols.arrays()
        parsing = (np.stack(cols.parsing) if cols.parsing
                   else np.zeros((0, DNN_H, DNN_W))).astype(np.uint8)
        return PreviewResult(
            boxes=a["box"], dnn=a["dnn"], reasons=list(cols.reasons), keyframe=a["keyframe"],
            n_points=a["n_points"], points=a["points"], key_points=a["key_points"], tps_ok=a["tps_ok"],
            tps_ctrl=a["tps_ctrl"], tps_coef=a["tps_coef"], tps_norm=a["tps_norm"], paddings=a["paddings"],
            ncc=a["ncc"], ncc_threshold=a["ncc_threshold"], tps_error=a["tps_error"],
            absent=a["absent"], box_iou=a["box_iou"], parsing=parsing,
            stage_ms={s: a["stage_ms"][:, i].copy() for i, s in enumerate(STAGES)},
            frame_size=self.frame_size,
            mask_source="parser" if self.parser is not None else "roi",
            config=self.cfg.as_dict(),
        )


_COLUMNS = {"box": np.float64, "dnn": bool, "keyframe": np.int32, "n_points": np.int32,
            "points": np.float32, "key_points": np.float32, "tps_ok": bool, "tps_ctrl": np.float64,
            "tps_coef": np.float64, "tps_norm": np.float64, "paddings": np.int32, "ncc": np.float32,
            "ncc_threshold": np.float32, "tps_error": np.float32, "absent": bool,
            "box_iou": np.float32, "stage_ms": np.float64}


class _Columns:
    """Frame records packed into blocks of 256 frames (about 1.7 KB a frame, where a dict of
    small arrays per frame costs several), so Preview's memory barely grows with the clip."""

    BLOCK = 256

    def __init__(self) -> None:
        self.blocks: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS}
        self.n = 0
        self.reasons: list[str] = []
        self.parsing: list[np.ndarray] = []  # keyframes only

    def append(self, row: dict) -> None:
        row = row | {"stage_ms": [row["stage_ms"][s] for s in STAGES]}
        k = self.n % self.BLOCK
        for name, dtype in _COLUMNS.items():
            value = np.asarray(row[name], dtype)
            if k == 0:
                self.blocks[name].append(np.empty((self.BLOCK, *value.shape), dtype))
            self.blocks[name][-1][k] = value
        self.n += 1
        self.reasons.append(row["reason"])
        if row["dnn"]:
            self.parsing.append(row["parsing"])

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(blocks)[: self.n] for name, blocks in self.blocks.items()}


def run_preview(frames: Iterable[np.ndarray], roi: tuple[float, float, float, float] | None = None,
                parser: Parser | None = None, config: VitoffConfig | None = None,
                progress: Callable[[int], None] | None = None) -> PreviewResult:
    """Run Preview over canvas RGB frames (an array [T,H,W,3] or any iterable of frames);
    the frame size is the first frame's (960x540 portrait or landscape, see video.py).

    roi = (x, y, w, h) in processed-frame pixels, used when no parser is given.
    progress, if given, is called with the number of frames done after each frame.
    """
    pv: Preview | None = None
    for k, frame in enumerate(frames):
        frame = np.asarray(frame)
        if pv is None:
            pv = Preview(roi=roi, parser=parser, config=config, frame_size=frame.shape[:2])
        pv.step(frame)
        if progress is not None:
            progress(k + 1)
    if pv is None:
        raise MirrorError("the video has no frames")
    return pv.result()


__all__ = ["Preview", "PreviewResult", "VitoffConfig", "run_preview", "box_iou", "labels_box", "DNN_H", "DNN_W",
           "STAGES"]
