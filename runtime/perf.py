"""Process-level tuning for VITOFF's numpy workload.

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
import platform

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
