"""The parser build behind ``--parser-checkpoint``: SCHP compiled once per checkpoint, then reused.

``mirror preview`` and ``mirror tryon`` take a real SCHP checkpoint
(``exp-schp-201908270938-pascal-person-part.pth``) and run it through the compiled parser,
as the app would, not through PyTorch. ``ensure_parser_build`` compiles the ``parser``
graph with that checkpoint into a build folder (default
``mirror-context/parser-<first 12 hex of the checkpoint's SHA-256>/``) with the regular
compile driver, and the runtime wrapper (``runtime/schp.py``) loads the artifact.

The graph is compiled at SCHP's own resolution: input ``size`` x ``size`` (512, SCHP's
Pascal-Person-Part setting), network at the same size, logits out at the network's 1/4.
So the graph's internal resizes are identities, and the wrapper does SCHP's resize to
512x512 and back to the frame once each, in numpy, for any frame size.

Reuse. A folder whose ``parser-build.json`` stamp names the same checkpoint digest and
settings, and whose manifest lists the artifact with its file's digest, is used as is:
no torch is imported and nothing is exported. Otherwise the compile driver runs; it too
reuses unchanged artifacts (``compiler/reuse.py``), and the stamp is written once the
compile succeeded. The stamp deliberately leaves out MIRROR's code version: a compiled
parser stays valid across MIRROR updates; ``--parser-build`` a fresh folder (or deleting
this one) rebuilds.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mirror import MirrorError
from mirror.compiler.progress import Progress
from mirror.files import atomic_path, sha256_of

STAMP = "parser-build.json"
DEFAULT_ROOT = Path("mirror-context")
DEFAULT_SIZE = 512  # SCHP's Pascal-Person-Part input resolution
TARGETS = ("onnx", "tflite")
PRECISION = "fp32"


def check_size(size: int) -> int:
    """The parser's square input size: a positive multiple of 32 (the backbone's strides)."""
    if size <= 0 or size % 32:
        raise MirrorError(f"--parser-size must be a positive multiple of 32 (SCHP: 512), got {size}")
    return size


def _check_file(checkpoint: Path) -> None:
    if not checkpoint.is_file():
        what = "is a folder" if checkpoint.is_dir() else "does not exist"
        raise MirrorError(f"--parser-checkpoint {checkpoint} {what}; give SCHP's .pth file")


def settings(digest: str, target: str, size: int) -> dict[str, Any]:
    """What decides the parser artifact; the stamp holds exactly this."""
    return {"checkpoint_sha256": digest, "target": target, "precision": PRECISION, "size": [size, size],
            "options": {"net_size": [size, size], "out_size": [size // 4, size // 4]}}  # fmt: skip


def ensure_parser_build(checkpoint: str | Path, build: str | Path | None = None, target: str = "onnx",
                        size: int = DEFAULT_SIZE, say: Callable[[str], None] = print,
                        quiet: bool = False) -> Path:  # fmt: skip
    """The parser build folder for ``checkpoint``, compiled now unless an up-to-date one is there."""
    checkpoint = Path(checkpoint)
    if target not in TARGETS:
        raise MirrorError(f"--parser-target must be one of {', '.join(TARGETS)}, not {target!r}")
    check_size(size)
    _check_file(checkpoint)
    digest = sha256_of(checkpoint)
    folder = Path(build) if build is not None else DEFAULT_ROOT / f"parser-{digest[:12]}"
    want = settings(digest, target, size)
    if _up_to_date(folder, want):
        say(f"reusing the parser build {folder}/ ({target} {PRECISION}, {size}x{size})")
        return folder
    # Said once the checkpoint has loaded (the compile's first step), so that a file that is
    # no SCHP checkpoint gives the error line alone.
    header = f"compiling the parser ({checkpoint.name}, {target} {PRECISION}, {size}x{size}) into {folder}/"
    _compile(checkpoint, folder, want, _Progress(lambda: say(header), quiet))
    with atomic_path(folder / STAMP) as tmp:
        tmp.write_text(json.dumps(want, indent=1))
    return folder


def _up_to_date(folder: Path, want: dict[str, Any]) -> bool:
    """The stamp matches and the manifest's artifact is there with its digest."""
    from mirror.runtime.divton import find_artifact

    try:
        if json.loads((folder / STAMP).read_text()) != want:
            return False
        find_artifact(folder, "parser", want["target"], PRECISION)
    except (OSError, ValueError, MirrorError):
        return False
    return True


class _Progress(Progress):
    """The compile's progress lines, after a header said before the first of them."""

    def __init__(self, header: Callable[[], None], quiet: bool) -> None:
        super().__init__(io.StringIO() if quiet else None)
        self.header: Callable[[], None] | None = header

    def log(self, message: str) -> None:
        if self.header is not None:
            self.header, header = None, self.header
            header()
        super().log(message)


def _compile(checkpoint: Path, folder: Path, want: dict[str, Any], progress: Progress) -> None:
    """Run the compile driver on the parser alone; a failure is one line."""
    load_config, compile_all = _compile_side()
    graph = {"size": want["size"], "options": want["options"]}
    # CPU inference in Preview: no GPU-delegate checks, no stock-converter baseline.
    config = load_config(None, out=folder, graphs=["parser"], targets=[want["target"]], precisions=[PRECISION],
                         checkpoints={"parser": str(checkpoint)}, graph={"parser": graph}, baseline=False,
                         gpu_check="static", gpu_parity="none", allow_cpu_fallback=True)  # fmt: skip
    report = compile_all(config, progress)
    summary = report["summary"]
    if summary["emit_failed"]:
        raise MirrorError(f"compiling the parser failed: {summary['emit_failed'][0]} (see {folder}/report.json)")
    # The graph's own argmax output is unused (the wrapper takes the argmax at the frame's
    # size): a near-tie broken differently there is no reason to refuse the artifact.
    bad = [f for a in report["artifacts"] for r in (a.get("parity") or {}).values()
           for f in r.get("failures") or [] if not f.startswith("labels:")]  # fmt: skip
    if bad:
        raise MirrorError(f"the compiled parser does not match PyTorch: {bad[0]} (see {folder}/report.json)")


def _compile_side() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(load_config, compile_all). The runtime wheel leaves the compile side out
    (compiler/runtime_wheel.py COMPILE_SIDE): there a parser build made by the full toolkit
    is reused (``--parser-build``), never compiled."""
    try:
        from mirror.compiler.cmd_compile import quiet_converters
        from mirror.compiler.config import load_config
        from mirror.compiler.driver import compile_all
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("mirror.", "torch")):
            raise
        raise MirrorError(f"compiling the parser needs the full MIRROR toolkit (this one lacks {exc.name}); "
                          "compile it there and pass its folder with --parser-build") from None  # fmt: skip
    quiet_converters()
    return load_config, compile_all


def add_parser_arguments(parser: Any) -> None:
    """``--parser-checkpoint`` and its build options, shared by ``mirror preview`` and ``mirror tryon``."""
    parser.add_argument("--parser-checkpoint", metavar="PTH",
                        help="SCHP checkpoint (exp-schp-201908270938-pascal-person-part.pth): Preview finds the "
                             "person with SCHP's parser, compiled once, instead of the body model")  # fmt: skip
    parser.add_argument("--parser-build", metavar="DIR",
                        help="folder of the compiled parser (default: mirror-context/parser-<checkpoint digest>)")
    parser.add_argument("--parser-target", choices=TARGETS, default="onnx",
                        help="onnx (default): the ONNX export of ResNet-101 builds in under a minute and "
                             "onnxruntime runs it on the CPU; tflite: LiteRT's CPU interpreter, whose conversion "
                             "takes longer (minutes)")  # fmt: skip
    parser.add_argument("--parser-size", type=int, default=DEFAULT_SIZE, metavar="N",
                        help="the parser's input resolution, N x N (default 512, SCHP's; smaller is faster and "
                             "coarser; a multiple of 32)")  # fmt: skip


def check_parser_args(args: Any) -> bool:
    """Whether ``--parser-checkpoint`` is given, refusing what cannot work before any long step."""
    if not getattr(args, "parser_checkpoint", None):
        return False
    if getattr(args, "roi", None) is not None:
        raise MirrorError("--roi and --parser-checkpoint both say where the person is; give one of them")
    check_size(args.parser_size)
    _check_file(Path(args.parser_checkpoint))
    return True


def parser_from_args(args: Any, say: Callable[[str], None], quiet: bool = False) -> Any:
    """The compiled SCHP parser ``--parser-checkpoint`` asks for (built or reused), or None."""
    if not check_parser_args(args):
        return None
    folder = ensure_parser_build(args.parser_checkpoint, args.parser_build, args.parser_target, args.parser_size,
                                 say, quiet=quiet)  # fmt: skip
    from mirror.runtime.schp import CompiledParser

    return CompiledParser.from_build(folder, args.parser_target, PRECISION)
