"""`mirror preview VIDEO --out CONTEXT [--roi x,y,w,h]`: run VITOFF Preview on a video.

Reads a video (.mp4 .mov .avi .mkv .webm .y4m, or .npy frames) one frame at a time,
fits each onto the processing canvas (960x540 in the video's own orientation), tracks
the body with VITOFF and writes the context store (manifest.json, context.npz,
parsing.npz, preview.json) atomically, with the video's fingerprint. The body is found
on every frame by the offline body model (MediaPipe's pose models, runtime/body.py;
`mirror fetch` puts them in the cache), or by SCHP's parser compiled from --parser-checkpoint (compiler/parser_build.py,
runtime/schp.py), or given by --roi, in the input video's pixels (after its rotation),
which tracks that region instead. Progress goes to stderr, a one-line summary to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mirror import MirrorError

HELP = "run VITOFF Preview on a video and write its context store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="input video: .mp4 .mov .avi .mkv .webm .y4m, or .npy (uint8 [T,H,W,3])")
    parser.add_argument(
        "--out", required=True, metavar="CONTEXT", help="context store folder to write (replaced only if it is a store)"
    )
    parser.add_argument(
        "--roi",
        metavar="x,y,w,h",
        help="torso-and-arms region in the input video's pixels (default: the body model finds the person)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    from .parser_build import add_parser_arguments

    add_parser_arguments(parser)


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


class Progress:
    """Prints 'PHASE: N/T frames' to stderr about every 10% (and at most every second)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.quiet or total < 30:
            return
        now = time.monotonic()
        if done == total or (done % max(1, total // 10) == 0 and now - self.last >= 1.0):
            self.last = now
            print(f"{phase}: {done}/{total} frames", file=sys.stderr, flush=True)


def check_roi(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """--roi parsed and checked against the video's (display) size."""
    x, y, w, h = parse_roi(text)
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise MirrorError(f"--roi {text} lies outside the {width}x{height} video")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        x0, y0 = max(x, 0), max(y, 0)
        fit = f"{x0},{y0},{min(x + w, width) - x0},{min(y + h, height) - y0}"
        raise MirrorError(f"--roi {text} reaches past the {width}x{height} video; the part inside it is {fit}")
    return x, y, w, h


def say(args: argparse.Namespace, command: str) -> Callable[[str], None]:
    """Progress lines of a command on stderr (nothing with --quiet)."""
    if args.quiet:
        return lambda text: None
    return lambda text: print(f"{command}: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from mirror.runtime.perf import tune_allocator
    from mirror.runtime.pipeline import run_preview_video
    from mirror.runtime.video import open_video

    from .parser_build import check_parser_args, parser_from_args

    if args.roi is not None:
        parse_roi(args.roi)
    with_parser = check_parser_args(args)  # a wrong combination stops before any decoding or compiling
    if args.roi is None and not with_parser:
        from mirror.runtime.assets import asset_path

        asset_path("pose_landmark_full.tflite")  # a missing model stops here, naming `mirror fetch`
        asset_path("pose_detection.tflite")
    tune_allocator()  # a short-lived command: keep freed memory for reuse (see runtime/perf.py)
    clip = open_video(args.video)  # validates the file before any decoding
    roi = check_roi(args.roi, clip.info.width, clip.info.height) if args.roi is not None else None
    parser = parser_from_args(args, say(args, "preview"), args.quiet)  # the video is known good: compile now
    try:
        res, _ = run_preview_video(clip, Path(args.out), roi, Progress(args.quiet), parser=parser)
    finally:
        if parser is not None:
            parser.close()
    n_dnn = int(res.dnn.sum())
    print(f"wrote {args.out}: {res.frames} frames, DIVTON on {n_dnn} ({100.0 * (1 - res.dnn_fraction):.1f}% DNN-free)")
    return 0
