"""``mirror validate --localize``: per runner, the first layer of an artifact that diverges
from the PyTorch reference, and for quantized artifacts the layers that add most error.

The reference program is rebuilt the way the compile built it (the graph's export, its
shared pipeline, the target's pipeline with the compile's grid_sample lowering), so its
FX nodes carry the names the artifact's tensors were given. Each runner's intermediate
tensors come from ``runners/taps.py``; the comparison is ``validation/localize.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.compiler.config import DEFAULT_SAMPLING
from mirror.compiler.driver import emitter_for
from mirror.compiler.units import CompileUnit, export_program
from mirror.passes.base import run_pipeline
from mirror.passes.registry import PIPELINES
from mirror.runners.taps import GPU_TAPS_UNAVAILABLE, coreml_mil_taps, litert_cpu_taps, onnxruntime_taps
from mirror.targets.base import Artifact
from mirror.validation.localize import Localization, localize


class ReferenceCache:
    """The program of the last (graph, target, lowering) localized: every precision of a
    target comes from the same program, so export and passes run once per target."""

    def __init__(self) -> None:
        self._key: tuple[str, str, str] | None = None
        self._program: Any = None
        self.passes: list[str] = []

    def program(self, unit: CompileUnit, target: str, lowering: str) -> Any:
        if self._key != (unit.name, target, lowering):
            self._program = None  # drop the previous one before building the next
            self._program, self.passes = artifact_program(unit, target, lowering)
            self._key = (unit.name, target, lowering)
        return self._program


def artifact_program(unit: CompileUnit, target: str, lowering: str) -> tuple[Any, list[str]]:
    """The program a target's artifacts of ``unit`` were emitted from, and its passes."""
    if unit.pipeline not in PIPELINES:
        raise MirrorError(f"unknown pipeline {unit.pipeline!r}; known: {', '.join(PIPELINES)}")
    emitter = emitter_for(target)
    spec = [*PIPELINES[unit.pipeline], *emitter.pipeline(lowering)]
    program, _ = run_pipeline(export_program(unit), spec, unit.name)
    program = emitter.named_program(program, example_inputs=unit.example_inputs, input_names=unit.input_names,
                                    output_names=unit.output_names)  # fmt: skip
    return program, [name for name, _ in spec]


def localize_artifact(
    unit: CompileUnit, artifact: Artifact, feeds: dict[str, np.ndarray], cache: ReferenceCache,
    recorded: list[str] | None = None, lowering: str | None = None,
) -> dict[str, Localization]:
    """One ``Localization`` per runner of the artifact's target (or why it cannot run).

    ``recorded``: the passes the build's report says made the artifact; ``lowering``: the
    compile's grid_sample lowering for the target (default: ``DEFAULT_SAMPLING``'s)."""
    program = cache.program(unit, artifact.target, lowering or DEFAULT_SAMPLING[artifact.target])
    stale = None
    if recorded and recorded != cache.passes:  # its tensor names belong to another program
        stale = (f"the artifact was made by passes {', '.join(recorded)}; this mirror runs "
                 f"{', '.join(cache.passes)}: recompile it to localize")  # fmt: skip
    found: dict[str, Localization] = {}
    for runner, taps in _tap_sources(artifact):
        if stale:
            found[runner] = Localization(runner, unavailable=stale)
            continue
        try:
            found[runner] = localize(runner, program, feeds, unit.input_names, taps(artifact, feeds),
                                     artifact.precision)  # fmt: skip
        except MirrorError as exc:
            found[runner] = Localization(runner, unavailable=str(exc))
    if artifact.target == "tflite":
        found["litert-gpu"] = Localization("litert-gpu", unavailable=GPU_TAPS_UNAVAILABLE)
    return found


def _tap_sources(artifact: Artifact) -> list[tuple[str, Any]]:
    if artifact.target == "tflite":
        return [("litert-cpu", lambda a, f: litert_cpu_taps(a.path, f))]
    if artifact.target == "onnx":
        return [("onnxruntime", lambda a, f: onnxruntime_taps(a.path, f))]
    return [("coreml-mil", lambda a, f: coreml_mil_taps(a.path, f))]
