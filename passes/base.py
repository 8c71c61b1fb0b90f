"""Pass infrastructure: a pass takes an exported program and returns it plus what changed.

Passes work on ``torch.export.ExportedProgram`` so that every target (LiteRT, Core ML,
ONNX) is emitted from the same transformed graph. A pass is registered by name; a
pipeline is a named list of ``(pass name, options)``. Running a pipeline produces one
``PassRecord`` per pass, which the compile report keeps.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.export import ExportedProgram

from mirror import MirrorError
from mirror.passes import analysis


@dataclass
class PassResult:
    """What a pass returns: the (possibly new) program and whether anything changed."""

    program: ExportedProgram
    changed: bool
    details: dict[str, Any] = field(default_factory=dict)


class GraphPass(Protocol):
    """``pass(program, **options) -> PassResult``. Must not mutate its input in place."""

    def __call__(self, program: ExportedProgram, **options: Any) -> PassResult: ...


@dataclass
class PassRecord:
    """What one pass did to one graph, as written to report.json."""

    name: str
    graph: str
    changed: bool
    ops_added: dict[str, int]
    ops_removed: dict[str, int]
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    max_abs_vs_reference: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    pipeline: str = ""  # the pipeline that ran it: a shared one ("divton-warp") or a backend ("tflite")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REGISTRY: dict[str, GraphPass] = {}


def register(name: str) -> Callable[[GraphPass], GraphPass]:
    """Register a pass under ``name`` (decorator)."""

    def deco(fn: GraphPass) -> GraphPass:
        if name in _REGISTRY:
            raise ValueError(f"pass {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_pass(name: str) -> GraphPass:
    _load_builtin_passes()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise MirrorError(f"unknown pass {name!r}; known passes: {known}") from None


def registered_passes() -> list[str]:
    _load_builtin_passes()
    return sorted(_REGISTRY)


def _load_builtin_passes() -> None:
    # Importing the modules registers them; kept lazy so `passes.base` stays cheap.
    from mirror.passes import registry  # noqa: F401


PipelineSpec = Sequence[tuple[str, dict[str, Any]]]


def run_pipeline(
    program: ExportedProgram,
    pipeline: PipelineSpec,
    graph: str,
    reference: Callable[..., Any] | None = None,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    pipeline_name: str = "",
) -> tuple[ExportedProgram, list[PassRecord]]:
    """Run ``pipeline`` on ``program``; record ops, FLOPs, params and parity per pass.

    ``reference`` (e.g. the eager reference module) and ``example_inputs`` give each record
    ``max_abs_vs_reference``: the largest absolute difference over all outputs.
    """
    records: list[PassRecord] = []
    for name, options in pipeline:
        fn = get_pass(name)
        ops_before = analysis.op_counts(program)
        flops_before = analysis.count_flops(program)
        params_before = analysis.count_params(program)
        result = fn(program, **dict(options))
        program = result.program
        ops_after = analysis.op_counts(program)
        added = ops_after - ops_before
        removed = ops_before - ops_after
        max_abs = None
        if reference is not None and example_inputs is not None:
            max_abs = analysis.max_abs_difference(program, reference, example_inputs)
        records.append(
            PassRecord(
                name=name,
                graph=graph,
                changed=result.changed,
                ops_added=dict(sorted(Counter(added).items())),
                ops_removed=dict(sorted(Counter(removed).items())),
                flops_before=flops_before,
                flops_after=analysis.count_flops(program),
                params_before=params_before,
                params_after=analysis.count_params(program),
                max_abs_vs_reference=max_abs,
                details=result.details,
                pipeline=pipeline_name,
            )
        )
    return program, records
