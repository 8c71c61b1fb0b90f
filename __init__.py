"""MIRROR: compile, verify and profile on-device video try-on models.

Layers, in the only direction data flows:
graphs -> passes -> targets -> validation -> compiler (driver, CLI).
runtime/ is the on-device side (VITOFF and the video pipeline): numpy plus the
LiteRT/onnxruntime runners, never torch and never the compiler.
"""

__version__ = "0.1.0"


class MirrorError(Exception):
    """A user-facing error: its message names the problem and what to do.

    The CLI prints it as one line and exits non-zero, never a traceback.
    """


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for reporting a library's exception in one line."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
