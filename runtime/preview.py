"""VITOFF Preview: track the body through a video once and decide where DIVTON must run.

For every frame (960x540 portrait RGB) Preview
1. runs the parser, if one is given (on every frame), and on a keyframe (frame 1, or
   when a trigger fired) takes the body box and keypoint mask from it (labels 1-4 box
   padded 20 px in x, 20 px above, 30 px below; labels 2-4 dilated 3x3 three times as
   keypoint mask) or, without a parser, from the user's region of interest (on later
   keyframes, the tracked box), and detects up to 30 corners at least 20 px apart;
2. otherwise tracks the surviving keypoints from the previous frame with pyramidal LK,
   moves the box by their mean displacement, fits the TPS from current to keyframe
   points, and evaluates the WE (NCC) and KE triggers;
3. records box, keypoints, letterbox paddings, the TPS (what regenerates the grid), NCC
   and its threshold, KE and the decision; keyframes also keep their parsing crop (or
   ROI mask) at 256x192, the only frames DIVTON sees, so memory grows by a few hundred
   bytes per ordinary frame.

Nothing here calls a DNN: the parser is an optional callable (frame -> labels). Runtime
replays the records (see replay.py) without repeating any of this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mirror import MirrorError

from .crop import DNN_H, DNN_W, box_pixels, letterbox_paddings, to_dnn
from .imgproc import rgb_to_gray
from .keypoints import detect_keypoints, keypoint_mask_from_parsing, roi_mask
from .lk import LKParams, track
from .remap import Source
from .tps import TPSDegenerate, fit_tps
from .triggers import KE_THRESHOLD, box_lattice, calibrate_ncc_threshold, keypoint_error, warp_ncc
from .video import FRAME_H, FRAME_W

Parser = Callable[[np.ndarray], np.ndarray]
STAGES = ("parse", "gray", "detect", "lk", "ke", "tps", "ncc")


@dataclass(frozen=True)
class VitoffConfig:
    """VITOFF's settings; the defaults are the paper's."""

    max_points: int = 30
    min_distance: float = 20.0
    quality: float = 0.01
    mask_dilations: int = 3
    ke_threshold: float = KE_THRESHOLD
    calibration_shift: float = 10.0
    ncc_stride: int = 4  # WE is measured every 4th pixel in x and y (see triggers.py)
    min_points: int = 3
    lk: LKParams = field(default_factory=LKParams)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PreviewResult:
    """Per-frame arrays (T frames, P = max_points) plus what produced them."""

    boxes: np.ndarray  # [T,4] float64 (x, y, w, h)
    dnn: np.ndarray  # [T] bool
    reasons: list[str]
    keyframe: np.ndarray  # [T] int32: frame whose DNN output frame t replays
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

    # -- keyframes -----------------------------------------------------------------------
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

    def _keyframe_geometry(self, labels: np.ndarray | None,
                           gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(box, keypoint mask, 256x192 parsing crop) for a new keyframe."""
        h, w = gray.shape
        if labels is not None:
            person = np.isin(labels, (1, 2, 3, 4))
            if person.any():
                ys, xs = np.nonzero(person.any(axis=1))[0], np.nonzero(person.any(axis=0))[0]
                x0, x1 = xs[0] - 20, xs[-1] + 1 + 20
                y0, y1 = ys[0] - 20, ys[-1] + 1 + 30
                box = np.array([x0, y0, x1 - x0, y1 - y0], np.float64)
            else:
                box = self._current_box() if self._t else np.array([0, 0, w, h], np.float64)
            mask = keypoint_mask_from_parsing(labels, dilations=self.cfg.mask_dilations)
            return box, mask, self._crop(labels, box)
        box = self.roi.copy() if not self._t else self._current_box()
        box = np.array(box_pixels(box), np.float64)
        return box, roi_mask((h, w), tuple(box)), self._crop(None, box)

    def _current_box(self) -> np.ndarray:
        return self._state["box"].copy()

    def _new_keyframe(self, labels: np.ndarray | None, gray: np.ndarray, timings: dict) -> None:
        box, mask, crop = self._keyframe_geometry(labels, gray)
        t0 = time.perf_counter()
        pts = detect_keypoints(gray, mask, self.cfg.max_points, self.cfg.min_distance,
                               self.cfg.quality)
        key_src = Source(gray)  # prepared once, sampled by WE on every frame until the next keyframe
        thr = calibrate_ncc_threshold(gray, box, self.cfg.ncc_stride, self.cfg.calibration_shift,
                                      key_src)
        timings["detect"] += (time.perf_counter() - t0) * 1e3
        self._state = {"key": self._t, "key_src": key_src, "key_box": box.copy(), "box": box,
                       "pts": pts.astype(np.float64), "key_pts": pts.astype(np.float64),
                       "thr": thr, "crop": crop}

    # -- per frame -----------------------------------------------------------------------
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
        ncc_val, ke, spline, reason = float("nan"), float("nan"), None, "first frame"
        if self._t > 0:
            ncc_val, ke, spline, reason = self._track(gray, timings)
        dnn = bool(reason)
        if dnn:
            self._new_keyframe(labels, gray, timings)
            spline = None
        row = self._record(dnn, reason, ncc_val, ke, spline, labels, timings)
        self._cols.append(row)
        self._prev_gray = gray
        self._t += 1
        return row

    def _track(self, gray: np.ndarray, timings: dict) -> tuple[float, float, Any, str]:
        """LK from the previous frame, then KE, TPS and WE.

        Returns (ncc, ke, spline, why the DNN must run: "" when it need not)."""
        cfg, st = self.cfg, self._state
        ncc_val, spline, reason = float("nan"), None, ""
        t0 = time.perf_counter()
        new, ok = track(self._prev_gray, gray, st["pts"], cfg.lk, self._lk_cache)
        if ok.any():
            st["box"] = st["box"] + np.r_[(new[ok] - st["pts"][ok]).mean(axis=0), 0.0, 0.0]
        st["pts"], st["key_pts"] = new[ok].astype(np.float64), st["key_pts"][ok]
        timings["lk"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        ke = keypoint_error(st["pts"], st["box"], st["key_pts"], st["key_box"])
        timings["ke"] = (time.perf_counter() - t0) * 1e3
        if len(st["pts"]) < cfg.min_points:
            return ncc_val, ke, None, f"only {len(st['pts'])} keypoints tracked"
        t0 = time.perf_counter()
        try:
            spline = fit_tps(st["pts"], st["key_pts"])
        except TPSDegenerate as exc:
            reason = f"degenerate TPS: {exc}"
        timings["tps"] = (time.perf_counter() - t0) * 1e3
        if spline is not None:
            t0 = time.perf_counter()
            xs, ys = box_lattice(st["box"], gray.shape, cfg.ncc_stride)
            mx, my = spline.grid_at(xs, ys)
            ncc_val = warp_ncc(gray, st["key_src"], xs, ys, mx, my)
            timings["ncc"] = (time.perf_counter() - t0) * 1e3
            if ncc_val < st["thr"]:
                reason = f"WE: NCC {ncc_val:.3f} < {st['thr']:.3f}"
            elif not ke <= cfg.ke_threshold:
                reason = f"KE: {ke:.3f} > {cfg.ke_threshold}"
        return ncc_val, ke, spline, reason

    def _record(
        self, dnn: bool, reason: str, ncc_val: float, ke: float, spline: Any, labels: np.ndarray | None, timings: dict
    ) -> dict:
        """The frame's record, with points and TPS padded to ``max_points`` rows."""
        st = self._state
        n = len(st["pts"])
        p = self.cfg.max_points
        pts = np.full((p, 2), np.nan, np.float32)
        kpts = np.full((p, 2), np.nan, np.float32)
        pts[:n], kpts[:n] = st["pts"], st["key_pts"]
        ctrl = np.full((p, 2), np.nan)
        coef = np.zeros((p + 3, 2))
        norm = np.zeros(3)
        if spline is not None:
            ctrl, coef, norm = spline.to_arrays(p)
        _, _, bw, bh = box_pixels(st["box"])
        return {
            "box": st["box"].copy(), "dnn": dnn, "reason": reason, "keyframe": st["key"],
            "n_points": n, "points": pts, "key_points": kpts, "tps_ok": spline is not None,
            "tps_ctrl": ctrl, "tps_coef": coef, "tps_norm": norm,
            "paddings": letterbox_paddings(bw, bh), "ncc": ncc_val,
            "ncc_threshold": st["thr"], "tps_error": ke,
            "parsing": st["crop"] if dnn else None,  # DIVTON sees keyframes only
            "stage_ms": timings,
        }

    def result(self) -> PreviewResult:
        cols = self._cols
        if not cols.n:
            raise MirrorError("the video has no frames")
        a = cols.arrays()
        return PreviewResult(
            boxes=a["box"], dnn=a["dnn"], reasons=list(cols.reasons), keyframe=a["keyframe"],
            n_points=a["n_points"], points=a["points"], key_points=a["key_points"], tps_ok=a["tps_ok"],
            tps_ctrl=a["tps_ctrl"], tps_coef=a["tps_coef"], tps_norm=a["tps_norm"], paddings=a["paddings"],
            ncc=a["ncc"], ncc_threshold=a["ncc_threshold"], tps_error=a["tps_error"],
            parsing=np.stack(cols.parsing).astype(np.uint8),
            stage_ms={s: a["stage_ms"][:, i].copy() for i, s in enumerate(STAGES)},
            frame_size=self.frame_size,
            mask_source="parser" if self.parser is not None else "roi",
            config=self.cfg.as_dict(),
        )


_COLUMNS = {"box": np.float64, "dnn": bool, "keyframe": np.int32, "n_points": np.int32,
            "points": np.float32, "key_points": np.float32, "tps_ok": bool, "tps_ctrl": np.float64,
            "tps_coef": np.float64, "tps_norm": np.float64, "paddings": np.int32, "ncc": np.float32,
            "ncc_threshold": np.float32, "tps_error": np.float32, "stage_ms": np.float64}


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
    """Run Preview over 960x540 RGB frames (an array [T,960,540,3] or any iterable of frames).

    roi = (x, y, w, h) in processed-frame pixels, used when no parser is given.
    progress, if given, is called with the number of frames done after each frame.
    """
    pv = Preview(roi=roi, parser=parser, config=config)
    for k, frame in enumerate(frames):
        pv.step(np.asarray(frame))
        if progress is not None:
            progress(k + 1)
    return pv.result()


__all__ = ["Preview", "PreviewResult", "VitoffConfig", "run_preview", "DNN_H", "DNN_W", "STAGES"]
