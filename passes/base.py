"""Pass infrastructure: a pass takes an exported program and returns it plus what changed.

Passes work on ``torch.export.ExportedProgram`` so that every target (LiteRT, Core ML,
ONNX) is emitted from the same transformed graph. A pass is registered by name; a
pipeline is a named list of ``(pass name, options)``. Running a pipeline produces one
``PassRecord`` per pass, which the compile report keeps.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import keyword
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import ExportGraphSignature, TensorArgument

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


@dataclass
class _Figures:
    """What ``run_pipeline`` measures of a program between passes."""

    ops: Counter
    flops: int
    params: int
    max_abs: float | None

    @classmethod
    def of(cls, program: ExportedProgram, reference: Any, example_inputs: Any, max_abs: float | None = None,
           want: Callable[[], Any] | None = None) -> Any:  # fmt: skip
        if max_abs is None and reference is not None and example_inputs is not None:
            max_abs = analysis.max_abs_difference(program, reference, example_inputs, want=want() if want else None)
        return cls(analysis.op_counts(program), analysis.count_flops(program), analysis.count_params(program), max_abs)


class _ReferenceOutputs:
    """The reference's outputs on the pipeline's inputs, computed once and only when needed.

    Every pass that changes the program is checked against the eager reference; the
    reference's side of that comparison is the same each time, so it runs once per
    pipeline (once per compile of a graph when the caller shares ``cache``) instead of
    once per pass. On the coarse parser (ResNet-101 at 512x512) one reference run costs
    5 to 10 s on two cores, and its LiteRT pipeline changes the program 4 times.
    """

    def __init__(self, reference: Any, example_inputs: Any, cache: dict[Any, Any] | None) -> None:
        self.reference, self.example_inputs, self.cache = reference, example_inputs, cache
        self.key = ("reference outputs", id(reference), id(example_inputs))
        self.outputs: Any = None

    def __call__(self) -> Any:
        if self.outputs is None and self.cache is not None and self.key in self.cache:
            # The cache keeps the reference and the inputs alive, so their ids stay theirs.
            self.outputs = self.cache[self.key][2]
        if self.outputs is None:
            self.outputs = analysis.reference_outputs(self.reference, self.example_inputs)
            if self.cache is not None:
                self.cache[self.key] = (self.reference, self.example_inputs, self.outputs)
        return self.outputs


# Names torch.fx will not give a node: a copy of the graph renames such a placeholder.
_FX_RESERVED = frozenset(getattr(torch.fx.graph, "_illegal_names", {})) | set(keyword.kwlist) | set(vars(builtins))


def stable_input_names(program: ExportedProgram) -> ExportedProgram:
    """``program``, or a copy whose input placeholders keep their names when copied.

    ``torch.export`` names a placeholder after the forward's argument, and ``input`` (the
    argument of ``nn.Sequential`` and of many modules) is a Python builtin: a deep copy of
    the program, which passes make, renames the placeholder ``input_1`` and leaves the
    graph signature saying ``input``; coremltools then stops with ``KeyError: 'input'``.
    Renamed here, on a copy whose signature is brought in line, the names stay put under
    copies; ``run_decompositions`` retraces with the forward's own names, so ``run_pipeline``
    checks again after every pass.
    """
    sig = program.graph_signature
    if not any(spec.arg.name in _FX_RESERVED for spec in sig.input_specs):
        return program
    new = copy.deepcopy(program)
    placeholders = [n for n in new.graph.nodes if n.op == "placeholder"]
    specs = [dataclasses.replace(spec, arg=TensorArgument(name=node.name)) if isinstance(spec.arg, TensorArgument)
             else spec for spec, node in zip(sig.input_specs, placeholders, strict=True)]  # fmt: skip
    new._graph_signature = ExportGraphSignature(input_specs=specs, output_specs=list(sig.output_specs))
    return new


def run_pipeline(
    program: ExportedProgram,
    pipeline: PipelineSpec,
    graph: str,
    reference: Callable[..., Any] | None = None,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    pipeline_name: str = "",
    cache: dict[Any, Any] | None = None,
) -> tuple[ExportedProgram, list[PassRecord]]:
    """Run ``pipeline`` on ``program``; record ops, FLOPs, params and parity per pass.

    ``reference`` (e.g. the eager reference module) and ``example_inputs`` give each record
    ``max_abs_vs_reference``: the largest absolute difference over all outputs. A pass that
    changed nothing keeps the figures it was given. ``cache`` (a dict the caller keeps)
    shares work between pipelines that start alike on the same program: a prefix already
    run is not run again, and its records are repeated under this pipeline's name.
    """
    records: list[PassRecord] = []
    program = stable_input_names(program)
    key: tuple[Any, ...] = (id(program),)
    if cache is not None:
        cache.setdefault(key, (program, None))  # keeps the program, and so its id, alive
    want = _ReferenceOutputs(reference, example_inputs, cache)
    figures = None
    for name, options in pipeline:
        key = (*key, name, repr(sorted(dict(options).items())))
        if cache is not None and key in cache:
            program, record, figures = cache[key]
            records.append(dataclasses.replace(record, pipeline=pipeline_name))
            continue
        if figures is None:
            # A program that an earlier pipeline sharing ``cache`` made and measured
            # (the shared pipeline's result, which each backend pipeline starts from)
            # keeps its parity: a first pass that changes nothing need not run it again.
            known = cache.get(("max abs", id(program), id(reference), id(example_inputs))) if cache else None
            figures = _Figures.of(program, None, None, max_abs=known[1] if known else None)
        result = get_pass(name)(program, **dict(options))
        program = stable_input_names(result.program)  # a retrace gives the forward's names back
        after = figures if not result.changed and figures.max_abs is not None else None
        after = after or _Figures.of(program, reference, example_inputs, want=want)
        records.append(_record(name, graph, pipeline_name, result, figures, after))
        figures = after
        if cache is not None:
            cache[key] = (program, records[-1], figures)
    if cache is not None and figures is not None and figures.max_abs is not None:
        cache[("max abs", id(program), id(reference), id(example_inputs))] = (program, figures.max_abs)
    return program, records


def _record(name: str, graph: str, pipeline: str, result: PassResult, before: _Figures, after: _Figures) -> PassRecord:
    return PassRecord(
        name=name,
        graph=graph,
        changed=result.changed,
        ops_added=dict(sorted((after.ops - before.ops).items())),
        ops_removed=dict(sorted((before.ops - after.ops).items())),
        flops_before=before.flops,
        flops_after=after.flops,
        params_before=before.params,
        params_after=after.params,
        max_abs_vs_reference=after.max_abs,
        details=result.details,
        pipeline=pipeline,
    )
