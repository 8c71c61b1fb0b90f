"""The protocol every target follows: a pipeline of its own, an emitter, runners for its artifacts.

A backend (``tflite``, ``onnx``, ``coreml``) declares the passes its artifacts go through
after the shared pipeline (``pipeline(lowering)``), writes one artifact per precision
(``emit``) and names the runners (``runners/``) that run what it wrote. Which precisions
it realizes is stated once, in ``mirror/precisions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mirror.files import sha256_of, size_of
from mirror.passes.base import PipelineSpec


@dataclass
class Artifact:
    """One emitted model file (or package folder) and what it was made from."""

    graph: str
    target: str  # "tflite", "coreml", "onnx"
    precision: str  # the precision name asked for ("fp16", "int8", "int8-full", ...)
    path: Path
    input_names: list[str]
    output_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)


class Emitter(Protocol):
    """Writes artifacts for one target."""

    target: str
    delegate: str | None  # the GPU delegate ``delegate_check`` asks ("GPU delegate"), None without one

    def pipeline(self, lowering: str) -> PipelineSpec:
        """The backend's passes, run after the shared pipeline (``lowering``: grid_sample's)."""
        ...

    def emit(
        self,
        program: Any,  # torch.export.ExportedProgram after the shared and backend pipelines
        graph: str,  # "warp", "gen", "parser" or a user model's name
        precision: str,  # a name from mirror.precisions
        out_dir: Path,
        *,
        example_inputs: tuple[Any, ...],  # torch tensors, in input order
        input_names: list[str],
        output_names: list[str],
        calibration: list[tuple[Any, ...]] | None = None,  # for full-integer int8
    ) -> Artifact:
        """Write the artifact atomically into ``out_dir`` and describe it."""
        ...

    def runners(self, artifact: Artifact) -> list[Any]:
        """The runners (``mirror.runners``) that can run ``artifact``."""
        ...

    def delegate_check(self, artifact: Artifact, runners: list[Any], mode: str) -> dict[str, Any] | None:
        """What the target's GPU delegate says of ``artifact`` (ops it takes, partitions), or
        None where the target has no such check; ``runners`` are the ones that just ran it."""
        ...

    def named_program(self, program: Any, *, example_inputs: tuple[Any, ...], input_names: list[str],
                      output_names: list[str]) -> Any:  # fmt: skip
        """The program whose FX node names the artifact's tensors carry (``--localize``
        matches by them): ``program`` itself unless the converter re-traces it."""
        ...


class EmitterBase:
    """Defaults for the optional parts of the protocol."""

    delegate: str | None = None

    def delegate_check(self, artifact: Artifact, runners: list[Any], mode: str) -> dict[str, Any] | None:
        return None

    def named_program(self, program: Any, *, example_inputs: tuple[Any, ...], input_names: list[str],
                      output_names: list[str]) -> Any:  # fmt: skip
        return program


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
