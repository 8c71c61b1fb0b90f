"""Files the toolkit writes and checks: atomic writes, sizes and digests.

Shared by every layer (the compiler writes artifacts, the runtime checks their digests),
so it imports nothing but the standard library.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256_of(path: Path) -> str:
    """Digest of a file, or of a package folder (relative paths and contents, sorted)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file in a package folder."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``final`` only if the block succeeds.

    A failed write therefore never leaves a file that looks like a valid artifact.
    Works for files and for package folders (.mlpackage).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


# Below this much free space a converter's failure is blamed on the disk: converters stage
# whole models (hundreds of MB for the default graphs) in the system temp folder and beside
# the output, and on a full disk they fail with their own messages (a protobuf or MIL error,
# not "no space").
LOW_SPACE = 64 << 20


def space_problem(exc: BaseException, *folders: str | Path) -> str:
    """Why a library's failure is the disk's, in one line, or '' when it is not.

    The disk is to blame when an ENOSPC error is anywhere in the exception's chain, or
    when a folder the library wrote to (``folders`` and the system temp folder, where
    coremltools and litert-torch stage their files) has under ``LOW_SPACE`` free.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            where = f" writing {e.filename}" if e.filename else ""
            return f"no space left on the device{where}; free some space or choose another output folder"
        e = e.__cause__ or e.__context__
    temp = tempfile.gettempdir()
    for folder in (*folders, temp):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if free < LOW_SPACE:
            hint = " (set TMPDIR to a folder on a disk with room)" if str(folder) == temp else ""
            return f"only {free >> 20} MiB free in {folder}; free some space{hint}"
    return ""


def failure_reason(exc: BaseException, *folders: str | Path) -> str:
    """A library's failure in one line: the disk's (space_problem) if it is to blame,
    else ``Type: first line of the message``."""
    from mirror import one_line

    return space_problem(exc, *folders) or one_line(exc)
