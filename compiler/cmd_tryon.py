"""`mirror tryon VIDEO --context CONTEXT --garment CLOTH --out OUT`: the Runtime phase.

Puts one garment on a previewed video: DIVTON (the compiled warp + gen artifacts of a
build) runs only on the keyframes Preview chose; every other frame replays the stored
VITOFF tracking (TPS grid, remap, paste). Everything stays local: the video, the context
store and the output never leave this machine, and nothing here opens a network
connection. Output is .y4m (play it with ffplay/mpv, or `ffmpeg -i out.y4m out.mp4`) or
.npy, written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mirror import MirrorError

HELP = "run the Runtime phase: put a garment on a previewed video"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="the clip given to `mirror preview` (.y4m or .npy)")
    parser.add_argument("--context", required=True, help="context store written by `mirror preview`")
    parser.add_argument("--garment", required=True, help="product image: .ppm (P6) or .npy uint8 [H,W,3]")
    parser.add_argument("--edge", help="garment mask image (default: found from the product image)")
    parser.add_argument("--build", default="build", help="folder written by `mirror compile` (default: build)")
    parser.add_argument("--target", choices=("tflite", "onnx"), default="tflite", help="artifacts to run")
    parser.add_argument("--precision", default="fp32", help="artifact precision (default: fp32)")
    parser.add_argument("--gpu", action="store_true", help="run LiteRT on its GPU accelerator")
    parser.add_argument("--out", required=True, help="output video: .y4m or .npy")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mirror.runtime.divton import DivtonRunner
    from mirror.runtime.garment import Garment
    from mirror.runtime.perf import tune_allocator
    from mirror.runtime.replay import iter_replay
    from mirror.runtime.store import open_store
    from mirror.runtime.video import load_frames, write_y4m

    out = Path(args.out)
    if out.suffix.lower() not in (".y4m", ".npy"):
        raise MirrorError(f"--out must end in .y4m or .npy, got {out.name}")
    tune_allocator()
    t0 = time.perf_counter()
    store = open_store(args.context)
    garment = Garment.load(args.garment, args.edge)
    roi_mode = store.preview.get("mask_source") == "roi"
    dnn = DivtonRunner(args.build, garment, args.target, args.precision, "gpu" if args.gpu else "cpu", roi_mode)
    frames, _ = load_frames(args.video)
    composited = []
    try:
        for t, frame in enumerate(iter_replay(store, dnn, frames)):
            composited.append(frame)
            if not args.quiet and (t + 1) % 30 == 0:
                print(f"tryon: {t + 1}/{store.frames} frames, {dnn.calls} DIVTON runs", file=sys.stderr, flush=True)
    finally:
        dnn.close()
    video = np.stack(composited)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if out.suffix.lower() == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, video)
        else:
            write_y4m(tmp, video)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    total = time.perf_counter() - t0
    per_dnn = f", {1000 * dnn.seconds / dnn.calls:.0f} ms per DIVTON run" if dnn.calls else ""
    print(
        f"tryon: {store.frames} frames, DIVTON on {dnn.calls} ({dnn.calls / max(store.frames, 1):.1%}){per_dnn}, "
        f"{total:.1f} s in all -> {out}"
    )
    return 0
