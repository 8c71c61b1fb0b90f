"""Per-frame VITOFF cost at 960x540 with 30 keypoints: numpy runtime vs the same steps in OpenCV.

Both sides run the same steps on the same synthetic clip (moderate non-rigid motion, a
textured body on a plain background) in the same process, stage by stage, interleaved
so machine load affects both alike. Stages of a tracked (non-keyframe) frame:

  gray       RGB -> luma                    rgb_to_gray            | cv2.cvtColor
  lk         pyramidal LK, 30 points        runtime.lk.track       | cv2.calcOpticalFlowPyrLK
  ke         keypoint-error TPS (31x33)     numpy (both)           | numpy (both)
  tps        TPS fit + dense grid over box  numpy (both)           | numpy (both)
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

Usage: python benchmarks/vitoff_vs_opencv.py [--frames N] [--repeat R] [--cv2-threads K]
                                             [--workers K]
"""

# The timed closures are called immediately, inside the iteration that defines them.
# ruff: noqa: B023

from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2
import numpy as np

from mirror.runtime.imgproc import rgb_to_gray
from mirror.runtime.keypoints import detect_keypoints, roi_mask
from mirror.runtime.lk import LKParams, crop_rect, track
from mirror.runtime.perf import set_workers, tune_allocator, workers
from mirror.runtime.remap import Source
from mirror.runtime.replay import paste, warp_colour, warp_mask
from mirror.runtime.synthetic import Motion, SyntheticClip
from mirror.runtime.tps import fit_tps
from mirror.runtime.triggers import box_lattice, keypoint_error, warp_ncc

STAGES = ("gray", "lk", "ke", "tps", "we", "remap", "composite")
_CRIT = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12, help="tracked frames to time")
    ap.add_argument("--repeat", type=int, default=5, help="runs per stage and frame (min taken)")
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

    clip = SyntheticClip(motion=Motion())
    n = args.frames + 1
    frames = clip.frames(n)
    roi = clip.roi(0)
    prm = LKParams()
    g0 = rgb_to_gray(frames[0])
    mask = roi_mask(g0.shape, roi)
    key_pts = detect_keypoints(g0, mask)
    kbox = np.array(roi, np.float64)
    x0, y0, bw, bh = roi
    key_rgb = frames[0][y0 : y0 + bh, x0 : x0 + bw].astype(np.float32)
    key_mask = np.zeros((bh, bw), np.float32)
    ys, xs = np.nonzero(clip.body_mask(0)[y0 : y0 + bh, x0 : x0 + bw])
    key_mask[ys, xs] = 1.0
    key_src, key_msk = Source(key_rgb), Source(key_mask)
    key_gray_src = Source(g0)
    key_rgb_u8 = np.ascontiguousarray(frames[0][y0 : y0 + bh, x0 : x0 + bw])

    ours = {s: [] for s in STAGES}
    theirs = {s: [] for s in STAGES}
    det = {"ours": [], "cv2": []}

    # Keyframe detection, same crop for both (mask box + the 3 px filter margin).
    yy, xx = np.nonzero(mask)
    cy0, cy1 = max(0, yy.min() - 3), min(960, yy.max() + 4)
    cx0, cx1 = max(0, xx.min() - 3), min(540, xx.max() + 4)
    g0u8 = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    crop_u8 = np.ascontiguousarray(g0u8[cy0:cy1, cx0:cx1])
    crop_mask = mask[cy0:cy1, cx0:cx1].astype(np.uint8)
    for _ in range(3):
        ms, _ = _timed(lambda: detect_keypoints(g0, mask), args.repeat)
        det["ours"].append(ms)
        ms, _ = _timed(lambda: cv2.goodFeaturesToTrack(crop_u8, 30, 0.01, 20, mask=crop_mask,
                                                       blockSize=3), args.repeat)
        det["cv2"].append(ms)

    prev_f, prev_u8 = g0, g0u8
    pts_o = key_pts.astype(np.float64)
    lk_cache: dict = {}
    lk_cached: list[float] = []
    tps_lattice: list[float] = []
    for t in range(1, n):
        frame = frames[t]
        # gray
        ms, gray = _timed(lambda: rgb_to_gray(frame), args.repeat)
        ours["gray"].append(ms)
        ms, gray_u8 = _timed(lambda: cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), args.repeat)
        theirs["gray"].append(ms)
        # lk: the same crop on both sides, both building the two pyramids every call
        # (OpenCV's Python binding cannot take prebuilt pyramids). Ours is also timed
        # with its pyramid cache, which Preview uses, as an extra line.
        rect = crop_rect(pts_o, gray.shape, prm)
        ms, (new, ok) = _timed(lambda: track(prev_f, gray, pts_o, prm), args.repeat)
        ours["lk"].append(ms)
        cache_state = dict(lk_cache)

        def ours_lk_cached():
            lk_cache.clear()
            lk_cache.update(cache_state)
            return track(prev_f, gray, pts_o, prm, lk_cache)

        ms, _ = _timed(ours_lk_cached, args.repeat)
        lk_cached.append(ms)
        lx0, ly0, lx1, ly1 = rect
        a = np.ascontiguousarray(prev_u8[ly0:ly1, lx0:lx1])
        b = np.ascontiguousarray(gray_u8[ly0:ly1, lx0:lx1])
        p32 = (pts_o - [lx0, ly0]).astype(np.float32).reshape(-1, 1, 2)

        def cv_lk():
            return cv2.calcOpticalFlowPyrLK(a, b, p32, None, winSize=(15, 15), maxLevel=2,
                                            criteria=_CRIT)

        ms, _ = _timed(cv_lk, args.repeat)
        theirs["lk"].append(ms)
        box = kbox + np.r_[(new[ok] - pts_o[ok]).mean(axis=0), 0, 0]
        cur, kp = new[ok].astype(np.float64), key_pts[ok]
        # ke (numpy in both)
        ms, _ = _timed(lambda: keypoint_error(cur, box, kp, kbox), args.repeat)
        ours["ke"].append(ms)
        theirs["ke"].append(ms)
        # tps fit + dense grid over the moved box (numpy in both)
        bx0, by0 = int(round(box[0])), int(round(box[1]))
        xa, xb, ya, yb = max(0, bx0), min(540, bx0 + bw), max(0, by0), min(960, by0 + bh)

        def tps_dense():
            sp = fit_tps(cur, kp)
            return sp, sp.grid(xa, ya, xb - xa, yb - ya)

        ms, (spline, (mx, my)) = _timed(tps_dense, args.repeat)
        ours["tps"].append(ms)
        theirs["tps"].append(ms)
        ms, _ = _timed(lambda: fit_tps(cur, kp).grid(xa, ya, xb - xa, yb - ya, step=4), args.repeat)
        tps_lattice.append(ms)
        # we: NCC of the current crop and the keyframe remapped on the stride-4 lattice;
        # the lattice TPS grid is numpy on both sides, sampling + NCC differ.
        lxs, lys = box_lattice(box, gray.shape, 4)

        def we_ours():  # Preview's code path (the keyframe Source is prepared per keyframe)
            gmx, gmy = spline.grid_at(lxs, lys)
            return warp_ncc(gray, key_gray_src, lxs, lys, gmx, gmy)

        def we_cv2():
            gmx, gmy = spline.grid_at(lxs, lys)
            w = cv2.remap(g0u8, gmx, gmy, cv2.INTER_LINEAR)
            c = np.ascontiguousarray(gray_u8[lys[:, None], lxs[None, :]])
            return float(cv2.matchTemplate(c, w, cv2.TM_CCOEFF_NORMED)[0, 0])

        ms, _ = _timed(we_ours, args.repeat)
        ours["we"].append(ms)
        ms, _ = _timed(we_cv2, args.repeat)
        theirs["we"].append(ms)
        # remap of the keyframe try-on: nearest mask over the box, bicubic colour under it
        # (exactly Runtime's code path), then the paste into the frame.
        kx, ky = mx - x0, my - y0

        def remap_ours():
            sel = warp_mask(key_msk, kx, ky)
            return sel, warp_colour(key_src, kx, ky, sel, "bicubic")

        def remap_cv2_masked():  # our formulation: colour only under the mask
            m = cv2.remap(key_mask, kx, ky, cv2.INTER_NEAREST) > 0.5
            sel = np.flatnonzero(m)
            fx, fy = _as_2d(kx.reshape(-1)[sel]), _as_2d(ky.reshape(-1)[sel])
            vals = cv2.remap(key_rgb_u8, fx, fy, cv2.INTER_CUBIC).reshape(-1, 3)[: sel.size]
            return m, vals

        def remap_cv2_box():  # the usual OpenCV formulation: remap the whole box
            m = cv2.remap(key_mask, kx, ky, cv2.INTER_NEAREST) > 0.5
            return m, cv2.remap(key_rgb_u8, kx, ky, cv2.INTER_CUBIC)

        ms, (sel, colour) = _timed(remap_ours, args.repeat)
        ours["remap"].append(ms)
        ms = min(_timed(remap_cv2_masked, args.repeat)[0], _timed(remap_cv2_box, args.repeat)[0])
        theirs["remap"].append(ms)
        _, (m, patch_u8) = _timed(remap_cv2_box, 1)
        m_u8 = m.astype(np.uint8)

        def comp_cv2():
            out = frame.copy()
            cv2.copyTo(patch_u8, m_u8, out[ya:yb, xa:xb])
            return out

        ms, _ = _timed(lambda: paste(frame, sel, colour, xa, ya, xb - xa), args.repeat)
        ours["composite"].append(ms)
        ms, _ = _timed(comp_cv2, args.repeat)
        theirs["composite"].append(ms)
        prev_f, prev_u8, pts_o = gray, gray_u8, new.astype(np.float64)

    print(f"VITOFF per tracked frame, 960x540, {len(key_pts)} keypoints, body box {bw}x{bh}, "
          f"{args.frames} frames x {args.repeat} runs (min per run, median over frames); "
          f"numpy {np.__version__} ({workers()} worker threads), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), malloc tuning {'on' if tuned else 'off'}")
    print(f"{'stage':<10} {'numpy ms':>9} {'opencv ms':>10} {'ratio':>7}   note")
    notes = {"ke": "numpy on both sides", "tps": "numpy on both sides (fit + dense grid)"}
    tot_o = tot_c = 0.0
    for s in STAGES:
        o, c = statistics.median(ours[s]), statistics.median(theirs[s])
        tot_o += o
        tot_c += c
        print(f"{s:<10} {o:9.2f} {c:10.2f} {o / c:6.2f}x   {notes.get(s, '')}")
    print(f"{'total':<10} {tot_o:9.2f} {tot_c:10.2f} {tot_o / tot_c:6.2f}x   per tracked frame")
    no_tps_o = tot_o - statistics.median(ours["tps"]) - statistics.median(ours["ke"])
    no_tps_c = tot_c - statistics.median(theirs["tps"]) - statistics.median(theirs["ke"])
    print(f"{'w/o tps,ke':<10} {no_tps_o:9.2f} {no_tps_c:10.2f} {no_tps_o / no_tps_c:6.2f}x   "
          "stages with an OpenCV counterpart only")
    print(f"{'lk cached':<10} {statistics.median(lk_cached):9.2f} {'':>10} {'':>7}   ours with the "
          "pyramid of the previous frame reused (as in Preview)")
    print(f"{'tps step 4':<10} {statistics.median(tps_lattice):9.2f} {'':>10} {'':>7}   grid exact every "
          "4th pixel, linear in between (replay(grid_step=4); ~0.01 px from exact)")
    do, dc = statistics.median(det["ours"]), statistics.median(det["cv2"])
    print(f"{'detect':<10} {do:9.2f} {dc:10.2f} {do / dc:6.2f}x   keyframes only (goodFeaturesToTrack)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
