"""The small protocol every target follows: an emitter writes an artifact, runners run it.

Validation treats PyTorch, onnxruntime, LiteRT CPU, LiteRT GPU and Core ML alike: each is a
``Runner`` that takes named float32 numpy inputs and returns named numpy outputs, in the
reference graph's input and output order.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class Artifact:
    """One emitted model file (or package folder) and what it was made from."""

    graph: str
    target: str  # "tflite", "coreml", "onnx"
    precision: str  # "fp32", "fp16", "int8", or a recipe name such as "int8-weight"
    path: Path
    input_names: list[str]
    output_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """Runs one artifact (or the PyTorch reference) on numpy inputs."""

    name: str  # "pytorch", "onnxruntime", "litert-cpu", "litert-gpu", "onnxruntime-ort", "coreml"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Emitter(Protocol):
    """Writes artifacts for one target."""

    target: str

    def emit(
        self,
        program: Any,  # torch.export.ExportedProgram after the pass pipeline
        graph: str,  # "warp", "gen", "parser" or a user model's name
        precision: str,  # a name from PRECISIONS or a target-specific recipe
        out_dir: Path,
        *,
        example_inputs: tuple[Any, ...],  # torch tensors, in input order
        input_names: list[str],
        output_names: list[str],
        calibration: list[tuple[Any, ...]] | None = None,  # for full-integer int8
    ) -> Artifact:
        """Write the artifact atomically into ``out_dir`` and describe it."""
        ...

    def runners(self, artifact: Artifact) -> list[Runner]: ...


def describe_artifact(
    target: str,
    graph: str,
    precision: str,
    path: Path,
    input_names: list[str],
    output_names: list[str],
    info: dict[str, Any],
) -> Artifact:
    """The Artifact for a file an emitter has written, with its size and digest in ``info``."""
    info["size_bytes"] = size_of(path)
    info["sha256"] = sha256_of(path)
    return Artifact(graph, target, precision, path, list(input_names), list(output_names), info)


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
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``final`` only if the block succeeds.

    A failed emit therefore never leaves a file that looks like a valid artifact.
    Works for files and for package folders (.mlpackage).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"emitter wrote nothing to {tmp}")
        if final.is_dir():
            import shutil

            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        import shutil

        shutil.rmtree(tmp_dir, ignore_errors=True)
