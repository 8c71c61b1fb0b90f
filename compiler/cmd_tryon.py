"""`mirror tryon [VIDEO] [GARMENT]`: put a garment on a video, end to end.

With no arguments it runs on the built-in sample (a synthetic clip and a shirt photo,
made in ./mirror-sample). It compiles the build first if there is none (warp + gen,
the chosen target and precision), runs Preview if the video has no context store yet
(a second garment on the same video reuses it; --parser-checkpoint makes Preview use
SCHP's compiled parser, compiler/parser_build.py), then the Runtime phase: DIVTON (the
build's compiled warp + gen) only on Preview's keyframes, VITOFF replay on every other
frame, streamed from the decoder to the .mp4 encoder. Output paths are checked before
any work. Everything stays on this machine: nothing here opens a network connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from mirror import MirrorError

from .cmd_preview import Progress, check_roi

HELP = "put a garment on a video (no arguments: the built-in sample)"
SAMPLE_DIR = "mirror-sample"
CONTEXT_DIR = "mirror-context"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", nargs="?", help="video: .mp4 .mov .avi .mkv .webm .y4m or .npy (default: the sample)")
    parser.add_argument("garment", nargs="?", help="product photo: .jpg .png .webp .bmp (alpha = garment mask)")
    parser.add_argument("--edge", help="garment mask image, white on black (default: alpha, or found from the photo)")
    parser.add_argument("--build", default="build", help="folder written by `mirror compile` (default: build)")
    parser.add_argument("--context", help=f"context store folder (default: {CONTEXT_DIR}/<video>-<digest>)")
    parser.add_argument("--roi", metavar="x,y,w,h",
                        help="torso-and-arms region for Preview (default: the body model finds the person)")
    parser.add_argument("--out", default="tryon.mp4", help="output video, .mp4 (default: tryon.mp4)")
    parser.add_argument("--stats", help="write the run's figures to this .json file")
    parser.add_argument("--target", choices=("tflite", "onnx"), default="tflite", help="artifacts to run")
    parser.add_argument("--precision", default="fp32", help="artifact precision (default: fp32)")
    parser.add_argument("--gpu", action="store_true", help="run LiteRT on its GPU accelerator")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    from .parser_build import add_parser_arguments

    add_parser_arguments(parser)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"tryon: {text}", file=sys.stderr, flush=True)


def check_output(path: Path, suffix: str, flag: str) -> None:
    """An output path we can write, checked before any work."""
    if path.suffix.lower() != suffix:
        raise MirrorError(f"{flag} must end in {suffix}, got '{path.name}'")
    if path.is_dir():
        raise MirrorError(f"{flag} {path} is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MirrorError(f"the folder of {flag} {path} does not exist; create it first")
    try:  # a real write, not os.access: permissions are not the only reason a write fails
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise MirrorError(f"cannot write {flag} {path}: the folder {parent} is not writable "
                          f"({exc.strerror or exc}); choose another folder") from None
    os.close(fd)
    os.unlink(probe)


def _inputs(args: argparse.Namespace) -> tuple[Path, Path, str | None]:
    """(video, garment, roi text), making the built-in sample when no video is given."""
    if args.video is None:
        from mirror.runtime.sample import ensure_sample, sample_roi

        _say(args, f"no video given: using the built-in sample in {SAMPLE_DIR}/")
        video, garment = ensure_sample(SAMPLE_DIR, Progress(args.quiet))
        # The sample's region is a default: a parser the user asked for finds the person instead.
        roi = args.roi or (None if args.parser_checkpoint else ",".join(map(str, sample_roi())))
        return video, Path(args.garment or garment), roi
    if args.garment is None:
        raise MirrorError("give a garment photo after the video: `mirror tryon VIDEO GARMENT`")
    return Path(args.video), Path(args.garment), args.roi


def _ensure_build(args: argparse.Namespace) -> None:
    """Compile warp + gen for the chosen target and precision when the build has no manifest."""
    from mirror.precisions import get_recipe

    get_recipe(args.precision)  # an unknown precision stops here, before a compile, with the known names
    build = Path(args.build)
    if (build / "manifest.json").is_file():
        return
    from . import cli

    _say(args, f"no build in {build}/: compiling warp + gen ({args.target}, {args.precision}) first")
    argv = ["compile", "--graphs", "warp,gen", "--targets", args.target, "--precisions", args.precision,
            "--no-baseline", "--out", str(build)]
    if cli.main(argv) != 0:
        raise MirrorError(f"compiling {build} failed (see above); fix it or give --build")


def _store(args: argparse.Namespace, clip, roi_text: str | None):
    """The video's context store: reused when it exists (and is this video's), else made by Preview."""
    from mirror.files import sha256_of
    from mirror.runtime.pipeline import run_preview_video
    from mirror.runtime.store import MANIFEST, open_store, video_fingerprint

    from .parser_build import parser_from_args

    path = Path(args.context) if args.context else None
    if path is None:
        digest = video_fingerprint(clip.path)["sha256"][:12]
        # A store made with SCHP's parser is not the body model's: each has its own default folder.
        parser = ""
        if args.parser_checkpoint:
            parser = f"-parser-{sha256_of(Path(args.parser_checkpoint))[:12]}-{args.parser_size}"
        path = Path(CONTEXT_DIR) / f"{clip.path.stem}-{digest}{parser}"
    if (path / MANIFEST).is_file():
        store = open_store(path)
        store.check_source(clip.path)
        _say(args, f"reusing the context store {path}/ (Preview already ran on this video)")
        return store, None
    roi = check_roi(roi_text, clip.info.width, clip.info.height) if roi_text is not None else None
    parser = parser_from_args(args, lambda text: _say(args, text), args.quiet)  # only when Preview runs
    _say(args, f"Preview: tracking {clip.info.frames} frames -> {path}/")
    try:
        _, clock = run_preview_video(clip, path, roi, Progress(args.quiet), parser=parser)
    finally:
        if parser is not None:
            parser.close()
    return open_store(path), clock


def run(args: argparse.Namespace) -> int:
    from mirror.runtime.divton import DivtonRunner
    from mirror.runtime.garment import Garment
    from mirror.runtime.perf import tune_allocator
    from mirror.runtime.pipeline import run_tryon_video
    from mirror.runtime.stats import summary_line, tryon_stats
    from mirror.runtime.video import open_video

    from .parser_build import check_parser_args

    out = Path(args.out)
    check_output(out, ".mp4", "--out")
    if args.stats:
        check_output(Path(args.stats), ".json", "--stats")
    if args.gpu and args.target != "tflite":
        raise MirrorError("the GPU accelerator is LiteRT's: use --target tflite")
    tune_allocator()
    t0 = time.perf_counter()
    video, garment_path, roi_text = _inputs(args)
    check_parser_args(argparse.Namespace(**{**vars(args), "roi": roi_text}))  # before any long step
    garment = Garment.load(garment_path, args.edge)
    clip = open_video(video)
    _ensure_build(args)
    # The artifacts are found and checked before Preview, so a wrong --build fails at once.
    dnn = DivtonRunner(args.build, garment, args.target, args.precision, "gpu" if args.gpu else "cpu")
    try:
        store, preview_clock = _store(args, clip, roi_text)
        dnn.roi_mode = store.preview.get("mask_source") == "roi"
        _say(args, f"Runtime: DIVTON on {int(store['dnn'].sum())} of {store.frames} frames, VITOFF elsewhere -> {out}")
        clock, keyframe_ms = run_tryon_video(clip, store, dnn, out, Progress(args.quiet))
    finally:
        dnn.close()
    ms = dict(clock.ms)
    if preview_clock is not None:
        ms["preview"] = preview_clock.ms.get("preview", 0.0)
        ms["decode"] += preview_clock.ms.get("decode", 0.0)
    stats = tryon_stats(store.frames, int(store["dnn"].sum()), ms, dnn.latencies_ms, keyframe_ms,
                        int(store["absent"].sum()))
    stats |= {"video": str(video), "garment": str(garment_path), "out": str(out), "context": str(store.path),
              "target": args.target, "precision": args.precision, "accelerator": "gpu" if args.gpu else "cpu",
              "preview_ran": preview_clock is not None, "wall_s": round(time.perf_counter() - t0, 3)}
    if args.stats:
        from mirror.files import atomic_path

        with atomic_path(Path(args.stats)) as tmp:
            tmp.write_text(json.dumps(stats, indent=1))
    print(summary_line(stats, str(out)))
    return 0
