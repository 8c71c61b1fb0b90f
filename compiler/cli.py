"""The `mirror` command line.

Each subcommand lives in its own module under compiler/ (``cmd_<name>.py``) exposing
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their command runs, because torch, litert-torch and coremltools take seconds to import.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading
import traceback
from typing import Any

from mirror import MirrorError, __version__
from mirror.compiler.progress import clear_stop, request_stop
from mirror.files import space_problem

# name -> module; the order is the order of `mirror --help`.
COMMANDS: dict[str, str] = {
    "compile": "mirror.compiler.cmd_compile",
    "doctor": "mirror.compiler.cmd_doctor",
    "fetch": "mirror.compiler.cmd_fetch",
    "preview": "mirror.compiler.cmd_preview",
    "profile": "mirror.compiler.cmd_profile",
    "tryon": "mirror.compiler.cmd_tryon",
    "validate": "mirror.compiler.cmd_validate",
}

_HELP: dict[str, str] = {
    "compile": "export, transform, emit and verify LiteRT / Core ML / ONNX artifacts",
    "doctor": "report package versions and whether the LiteRT GPU accelerator works here",
    "fetch": "download the pose/segmentation models and the sample clips into the local cache (once)",
    "preview": "run VITOFF Preview on a video and write its context store",
    "profile": "per-layer latency keyed by module path: measured here, estimated for phone GPUs, on a phone",
    "tryon": "put a garment on a video (no arguments: the built-in sample)",
    "validate": "rerun parity for a build's artifacts, or for one model file, on fresh or given inputs",
}


def _build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirror", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported (for its arguments).
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name in COMMANDS:
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name])
        if name == chosen:
            _load(name).add_arguments(p)
    return parser


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == COMMANDS[name]:
            raise MirrorError(f"command '{name}' is not available in this build") from None
        raise


def _on_signal(signum: int, frame: Any) -> None:
    """Ctrl-C and SIGTERM stop every command the same way (``compiler/progress.py``)."""
    request_stop(signal.Signals(signum).name)


def _os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return space_problem(exc)
    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not allowed{where} ({exc.strerror}); choose a writable output folder"
    return f"{exc.strerror or exc}{where}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    clear_stop()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv: list[str]) -> int:
    try:
        parser = _build_parser(argv)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return int(_load(args.command).run(args) or 0)
    except MirrorError as exc:
        print(f"mirror: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the disk, not the toolkit: say which file and what to do
        if os.environ.get("MIRROR_DEBUG"):
            raise
        print(f"mirror: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        term = getattr(exc, "signame", "") == "SIGTERM"
        what = "terminated (SIGTERM)" if term else "interrupted"
        print(f"mirror: {what}; finished outputs are kept, nothing half-written is left", file=sys.stderr)
        return 143 if term else 130
    except Exception as exc:  # noqa: BLE001 - one line, unless asked for the traceback
        if os.environ.get("MIRROR_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"mirror: internal error: {type(exc).__name__}: {message}{at} "
            "(rerun with MIRROR_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
