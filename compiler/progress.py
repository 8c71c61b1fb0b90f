"""Progress of long commands on stderr: one line per step, with its time."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM. The request is sticky: a library that swallows the first exception
    (some converters catch everything) meets it again at the next progress line."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


_stop_requests: list[str] = []
_deferring: list[bool] = []


def request_stop(signame: str) -> None:
    """Signal handler body: remember the request and stop now (or, inside
    ``stop_after_writing``, when that block ends)."""
    _stop_requests.append(signame)
    if not _deferring:
        raise Stopped(signame)


@contextmanager
def stop_after_writing() -> Iterator[None]:
    """Write a set of outputs that belong together (profile.json, profile.csv and
    report.html): a stop requested meanwhile takes effect once they are all written, so
    no new file sits beside an old one it contradicts. The writes are short."""
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
    check_stop()


def check_stop() -> None:
    if _stop_requests:
        raise Stopped(_stop_requests[0])


def clear_stop() -> None:
    _stop_requests.clear()


class Progress:
    """One line per step on stderr: ``[  12.3s] warp: export ... 7.7s``."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def log(self, message: str) -> None:
        check_stop()
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[dict[str, Any]]:
        """Log the start and end of a step; the block may set ``note["result"]`` for the end line."""
        t0 = time.perf_counter()
        note: dict[str, Any] = {}
        self.log(f"{message} ...")
        yield note
        extra = f" ({note['result']})" if note.get("result") else ""
        self.log(f"{message} done in {time.perf_counter() - t0:.1f}s{extra}")
