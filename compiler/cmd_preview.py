"""`mirror preview VIDEO --out CONTEXT [--roi x,y,w,h]`: run VITOFF Preview on a video.

Reads a .y4m or .npy clip, fits it onto the 960x540 portrait canvas, tracks the body
with VITOFF and writes the context store (manifest.json, context.npz, parsing.npz,
preview.json) atomically. Without a human parser checkpoint the body is given by
--roi, in the input video's pixels. Progress goes to stderr, a one-line summary to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time

from mirror import MirrorError

HELP = "run VITOFF Preview on a video and write its context store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="input clip: .y4m (YUV4MPEG2, 8-bit) or .npy (uint8 [T,H,W,3])")
    parser.add_argument(
        "--out", required=True, metavar="CONTEXT", help="context store folder to write (replaced only if it is a store)"
    )
    parser.add_argument(
        "--roi",
        metavar="x,y,w,h",
        help="torso-and-arms region in the input video's pixels (required: no human parser checkpoint is available)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def parse_roi(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' -> four ints with w, h > 0 (MirrorError otherwise)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise MirrorError(f"--roi must be four integers x,y,w,h (pixels), got '{text}'") from None
    if w <= 0 or h <= 0:
        raise MirrorError(f"--roi width and height must be positive, got '{text}'")
    return x, y, w, h


class _Progress:
    """Prints 'preview: N/T frames' to stderr about every 10% (and at most every second)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.step = max(1, total // 10)
        self.last = 0.0

    def __call__(self, done: int) -> None:
        if self.quiet or self.total < 30:
            return
        now = time.monotonic()
        if done == self.total or (done % self.step == 0 and now - self.last >= 1.0):
            self.last = now
            print(f"preview: {done}/{self.total} frames", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from mirror.runtime.perf import tune_allocator
    from mirror.runtime.preview import run_preview
    from mirror.runtime.store import write_store
    from mirror.runtime.video import Y4MReader, load_frames, open_video

    if args.roi is None:
        raise MirrorError(
            "--roi x,y,w,h is required: no human parser checkpoint is available to find the torso and arms"
        )
    roi_src = parse_roi(args.roi)
    tune_allocator()  # a short-lived command: keep freed memory for reuse (see runtime/perf.py)
    t0 = time.perf_counter()
    clip = open_video(args.video)  # validates the file before any decoding
    h_src, w_src = (clip.height, clip.width) if isinstance(clip, Y4MReader) else clip.shape[1:3]
    x, y, w, h = roi_src
    if x >= w_src or y >= h_src or x + w <= 0 or y + h <= 0:
        raise MirrorError(f"--roi {args.roi} lies outside the {w_src}x{h_src} video")
    if x < 0 or y < 0 or x + w > w_src or y + h > h_src:
        x0, y0 = max(x, 0), max(y, 0)
        fit = f"{x0},{y0},{min(x + w, w_src) - x0},{min(y + h, h_src) - y0}"
        raise MirrorError(f"--roi {args.roi} reaches past the {w_src}x{h_src} video; the part inside it is {fit}")
    frames, place = load_frames(args.video)
    t_src = len(frames)
    decode_ms = (time.perf_counter() - t0) * 1e3
    cx, cy = place.to_canvas(x, y)
    roi = (cx, cy, w * place.scale, h * place.scale)
    res = run_preview(frames, roi=roi, progress=_Progress(len(frames), args.quiet))
    extra = {
        "source": {
            "path": str(args.video),
            "frames": int(t_src),
            "width": int(w_src),
            "height": int(h_src),
            "decode_and_fit_ms": round(decode_ms, 3),
        },
        "placement": place.as_dict(),
        "roi": {"input": list(roi_src), "canvas": [round(v, 3) for v in roi]},
    }
    path = write_store(args.out, res, extra)
    n_dnn = int(res.dnn.sum())
    print(f"wrote {path}: {res.frames} frames, DIVTON on {n_dnn} ({100.0 * (1 - res.dnn_fraction):.1f}% DNN-free)")
    return 0
