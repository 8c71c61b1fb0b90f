"""Reading a user's ``.npy`` file: one array of numbers, never pickled objects, never a crash.

``np.load`` also opens ``.npz`` archives (anything that starts like a zip file) and raises
``zipfile.BadZipFile`` on a damaged one; a video, image or mask given as ``.npy`` must be
exactly one array, so every other outcome is one clear error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mirror import MirrorError


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """The array in ``path`` (memory-mapped read-only with ``mmap``); MirrorError otherwise."""
    try:
        obj = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MirrorError(f"{path} is not a numpy array file ({exc})") from None
    if not isinstance(obj, np.ndarray):  # an .npz archive
        obj.close()
        raise MirrorError(f"{path} is not a numpy array file (it is an .npz archive; save one array with np.save)")
    return obj
