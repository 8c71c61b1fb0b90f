"""Process-level tuning for VITOFF's numpy workload: allocator settings and worker threads.

VITOFF's stages create many short-lived arrays of 0.1-2 MB per frame. glibc's malloc
serves blocks that large with fresh mmap() pages and gives freed memory back to the
kernel, so every frame pays page faults and page zeroing again: on our 2-core machine
a bicubic remap of 100k pixels spent 7 ms in the kernel for 3 ms of arithmetic.
`tune_allocator()` raises glibc's mmap and trim thresholds so freed blocks are reused
in-process. It changes process-wide allocator behaviour, so it is opt-in: `mirror
preview` and the benchmark call it; an app embedding the runtime decides for itself.
It does nothing (and returns False) where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Keep freed heap memory for reuse (glibc mallopt). True if the settings took effect."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok)


# Worker threads for the big per-pixel stages (dense TPS grid, bicubic remap). numpy
# releases the GIL inside its array operations, so row blocks of those stages can run on
# several cores at once; every output element is computed by the same operations, in the
# same chunks, as on one thread, so results are identical for any worker count. One
# worker is the default: on an idle 2-core machine two workers took the dense TPS grid
# from ~11.4 to ~7.1 ms, but where another process keeps a core busy the extra thread
# only waits for it (the grid got ~40% slower), so an app enables them where it owns
# the cores.
_workers: int | None = None
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _default_workers() -> int:
    return 1


def available_cores() -> int:
    """Cores this process may run on (a sensible set_workers value, capped at 4)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def set_workers(n: int | None) -> None:
    """Threads used by the per-pixel stages: n >= 1, or None for the default (1)."""
    global _workers, _pool
    if n is not None and n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _workers = n


def workers() -> int:
    """The number of threads the per-pixel stages use (see set_workers)."""
    global _workers
    if _workers is None:
        _workers = _default_workers()
    return _workers


def run_split(fn: Callable[[int, int], object], n: int, grain: int) -> None:
    """Call fn(start, stop) over [0, n) split into contiguous parts, one per worker thread.

    Parts start at multiples of `grain` and hold at least `grain` items (fewer parts
    otherwise), so a caller that processes each part in chunks of `grain` sees the same
    chunks for any worker count. The calling thread runs the first part itself. fn must
    write disjoint outputs per range.
    """
    global _pool
    grain = max(1, grain)
    parts = min(workers(), n // grain)
    if parts <= 1:
        fn(0, n)
        return
    with _lock:
        if _pool is None or _pool._max_workers < parts - 1:  # noqa: SLF001
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers() - 1, thread_name_prefix="vitoff")
        pool = _pool
    units = -(-n // grain)
    cuts = [min(n, (units * i // parts) * grain) for i in range(parts + 1)]
    futures = [pool.submit(fn, a, b) for a, b in zip(cuts[1:-1], cuts[2:], strict=True)]
    try:
        fn(cuts[0], cuts[1])
    finally:
        for f in futures:
            f.result()
