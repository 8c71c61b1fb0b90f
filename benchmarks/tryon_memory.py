"""Peak resident memory of `mirror preview` and `mirror tryon` on a short and a long clip.

Streaming means a frame is decoded, processed, encoded and dropped, so peak memory
should not grow with the clip's length. This writes two 960x540 portrait clips at 30 fps
(default 10 s and 60 s: a textured body sliding over a plain background, H.264), runs
each command on each clip in a fresh process, and reads the process's peak RSS from the
kernel (wait4's ru_maxrss). Prints one table row per command and clip, and the ratio of
long to short.

Usage: python benchmarks/tryon_memory.py --build BUILD [--target tflite] [--seconds 10,60]
                                          [--work DIR]
BUILD is a `mirror compile` output with warp and gen for the target (fp32).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from mirror.runtime.encode import open_mp4
from mirror.runtime.video import VideoInfo

H, W, FPS = 960, 540, 30
BODY = (150, 220, 240, 420)  # x, y, w, h of the textured body in the first frame


def _texture(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 60 * np.sin(xs * f + ys * g + p) for f, g, p in
                    ((0.05, 0.031, 0.0), (0.023, 0.07, 1.0), (0.041, 0.017, 2.0))], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_clip(path: Path, seconds: int) -> None:
    """The body slides +-20 px in x and +-10 px in y, with a 3 s period."""
    x, y, bw, bh = BODY
    tex = _texture(bh, bw)
    info = VideoInfo(W, H, Fraction(FPS), Fraction(1, FPS), seconds * FPS, 0, False)
    with open_mp4(path, info) as writer:
        for t in range(seconds * FPS):
            frame = np.full((H, W, 3), 200, np.uint8)
            dx = int(round(20 * np.sin(2 * np.pi * t / 90)))
            dy = int(round(10 * np.sin(4 * np.pi * t / 90)))
            frame[y + dy : y + dy + bh, x + dx : x + dx + bw] = tex
            writer.write(frame, t)


def _garment(path: Path) -> None:
    from PIL import Image

    img = np.full((256, 192, 3), 255, np.uint8)
    img[40:230, 40:152] = (200, 40, 50)
    Image.fromarray(img).save(path)


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one command in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{err}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--target", default="tflite", choices=("tflite", "onnx"))
    ap.add_argument("--seconds", default="10,60")
    ap.add_argument("--work", help="folder for the clips and outputs (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="tryon-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    _garment(work / "garment.png")
    mirror = [sys.executable, "-m", "mirror.compiler.cli"]
    roi = ",".join(str(v + d) for v, d in zip(BODY, (-25, -15, 50, 30), strict=True))
    rows = {}
    print(f"{'command':8} {'clip':>6} {'frames':>6} {'peak RSS MB':>12} {'wall s':>7}")
    for s in (int(v) for v in args.seconds.split(",")):
        clip = work / f"clip{s}s.mp4"
        if not clip.exists():
            write_clip(clip, s)
        ctx = work / f"ctx{s}s"
        runs = {
            "preview": [*mirror, "preview", str(clip), "--out", str(ctx), "--roi", roi, "--quiet"],
            "tryon": [*mirror, "tryon", str(clip), str(work / "garment.png"), "--context", str(ctx), "--build",
                      args.build, "--target", args.target, "--out", str(work / f"out{s}s.mp4"), "--quiet"],
        }
        for name, argv in runs.items():
            rss, wall = peak_rss_mb(argv)
            rows[name, s] = rss
            print(f"{name:8} {s:>5}s {s * FPS:>6} {rss:>12.1f} {wall:>7.1f}", flush=True)
    secs = sorted({s for _, s in rows})
    if len(secs) > 1:
        for name in ("preview", "tryon"):
            print(f"{name}: peak RSS {secs[-1]} s / {secs[0]} s = {rows[name, secs[-1]] / rows[name, secs[0]]:.3f}")


if __name__ == "__main__":
    main()
