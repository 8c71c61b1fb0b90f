"""Core ML target: an ``.mlpackage`` (ML program) from the transformed ExportedProgram.

The Core ML backend pipeline (``CoreMLEmitter.pipeline``) runs, after the shared passes
(which drop the ``aten.alias`` nodes coremltools 9 rejects): the grid_sample lowering,
``coreml::core_aten`` (``run_decompositions({})``), ``coreml::contiguous_inputs`` (user
inputs recorded with a non-contiguous layout re-declared contiguous; coremltools 9 rejects
any other dim order) and ``coreml::float_clamp_bounds``. The emitter then routes the
core-ATen overloads coremltools 9 lacks (``where.ScalarOther``) to its existing translations
(``register_missing_torch_ops``) and calls ``ct.convert(convert_to="mlprogram",
minimum_deployment_target=iOS16+)`` with float32 inputs/outputs named as the graph's.

Precisions ("recipes"):
  fp16        fp16 compute, fp16 weights (Core ML's usual choice).
  fp32        fp32 compute, for parity checks.
  int8        fp16 compute, int8 linear-symmetric per-channel weights
              (``coremltools.optimize.coreml.linear_quantize_weights``).
  palettize6  fp16 compute, 6-bit k-means palettized weights
              (``coremltools.optimize.coreml.palettize_weights(nbits=6)``).
Weights smaller than ``weight_threshold`` elements (coremltools' default 2048) stay fp16.

The grid_sample lowering is chosen by which program the caller passes:
  sampler="resample"    the program still calls ``grid_sampler_2d``; coremltools maps it to
                        MIL ``resample`` (reported to run on the CPU in Xcode's profiler).
  sampler="decomposed"  the program went through the GPU-friendly decomposition (gathers and
                        index arithmetic); a leftover ``grid_sampler_2d`` is an error.
  sampler="auto"        accept either and record which one it was.

fp16 and index arithmetic: in an fp16 package a decomposed sampler would compute
``floor(x)``, ``y * W + x`` and the bilinear fractions in fp16, where integers are exact only
up to 2048 (a 256x192 map has linear indices up to 49151). With ``fp32_ops="index"`` (the
default) the emitter passes ``ct.transform.FP16ComputePrecision(op_selector=...)`` whose
selector keeps in fp32 every op that computes a gather's indices, walking back from the
``indices`` input through elementwise/shape ops only (add, sub, mul, real_div, floor, clip,
cast, reshape, slice ...) and forward to the ops that derive only from those (``x - floor(x)``,
``1 - fx``). The walk stops at anything else (conv, activations, the gather itself), so the
network's heavy ops stay fp16. The same walk starts from MIL ``resample``'s ``coordinates``
(the native sampler): a grid built in pixels (meshgrid plus offsets, then normalized) would
otherwise be rounded to 1/8 px above 128 in fp16; ``coreml-mil`` measured warp's fp16 package
with the native sampler at 35.8 dB PSNR that way. coremltools still casts the coordinates to
fp16 at the ``resample`` itself (its fp16 kernel takes fp16 coordinates), so the normalized
grid keeps fp16's resolution there (about 0.05 px at 256x192), as with the decomposed
sampler's flow. ``fp32_ops="none"`` converts everything; a callable
``fp32_ops(op) -> bool`` (True = keep fp32) replaces the rule. ``info["fp32_ops"]`` lists the
MIL ops kept.

Byte determinism: coremltools' own output is not reproducible. ``Manifest.json`` gets fresh
random UUIDs on every save, the spec carries a ``conversion_date`` entry, and its metadata
map is serialized in hash order. With ``reproducible=True`` (default) the emitter rewrites
the manifest's item identifiers as UUIDv5 of the item path, drops ``conversion_date`` and
re-serializes the spec with deterministic map order; the weights blob is already stable.
Two runs then give byte-identical packages (tests/test_coreml_target.py).

There is no Core ML runtime on Linux (``MLModel.predict`` is macOS-only): ``CoreMLRunner``
says so instead of pretending; ``coreml_op_summary`` reads the saved spec on any platform.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.files import atomic_path, failure_reason
from mirror.passes.base import PipelineSpec
from mirror.passes.registry import lowering_passes
from mirror.precisions import for_target
from mirror.runners.coreml import CoreMLRunner
from mirror.runners.coreml_mil import CoreMLMilRunner
from mirror.targets.base import Artifact, EmitterBase, describe_artifact
from mirror.targets.coreml_names import module_path_names, record_module_paths
from mirror.targets.index_region import index_region

PALETTIZE_MIN_WEIGHTS = 10_000
SAMPLERS = ("decomposed", "resample", "auto")

# Core ML spec version -> the OS that introduced it (ML programs start at 5 = iOS15).
SPEC_VERSION_TO_TARGET = {5: "iOS15", 6: "iOS16", 7: "iOS16", 8: "iOS17", 9: "iOS18", 10: "iOS26"}
_MIN_TARGETS = ("iOS16", "iOS17", "iOS18", "iOS26")

# MIL op types that may carry sampling coordinates and gather indices.
MIL_INDEX_OPS = frozenset(
    {
        "add",
        "sub",
        "mul",
        "real_div",
        "floor_div",
        "floor",
        "ceil",
        "round",
        "clip",
        "maximum",
        "minimum",
        "cast",
        "reshape",
        "transpose",
        "slice_by_index",
        "slice_by_size",
        "split",
        "concat",
        "expand_dims",
        "squeeze",
        "tile",
        "stack",
        "identity",
        "greater",
        "greater_equal",
        "less",
        "less_equal",
        "equal",
        "not_equal",
        "logical_and",
        "logical_or",
        "logical_not",
        "select",
        "mod",
        "abs",
        "sign",
        "sqrt",
    }
)
MIL_INDEX_SINKS = frozenset({"gather", "gather_along_axis", "gather_nd", "scatter", "scatter_along_axis", "scatter_nd"})
# MIL ops whose "coordinates" input holds sampling positions: computed in pixels (meshgrid plus
# offsets, up to 255 at 256x192), fp16 rounds them to 1/8 px; the same rule keeps them fp32.
MIL_COORDINATE_SINKS = frozenset({"resample"})

_MANIFEST_NS = uuid.UUID("6f1f6d0e-5a8e-4a47-9a43-6d6972726f72")  # fixed: "mirror" manifest ids


class CoreMLEmitter(EmitterBase):
    """Emits ``<graph>_<precision>.mlpackage``.

    Options:
      sampler: "decomposed" | "resample" | "auto" (see the module docstring); ``emit`` may
        override it per call.
      minimum_deployment_target: "iOS16" or later.
      fp32_ops: "index" (keep gather-index arithmetic in fp32 in fp16 packages), "none",
        or a callable ``op -> bool`` (True = keep that MIL op in fp32).
      weight_threshold: weights with fewer elements are not quantized/palettized.
      reproducible: make two emits byte-identical (see the module docstring).
    """

    target = "coreml"

    def __init__(
        self,
        *,
        sampler: str = "auto",
        minimum_deployment_target: str = "iOS16",
        fp32_ops: str | Callable[[Any], bool] = "index",
        weight_threshold: int = 2048,
        reproducible: bool = True,
    ) -> None:
        if sampler not in SAMPLERS:
            raise MirrorError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        if minimum_deployment_target not in _MIN_TARGETS:
            raise MirrorError(
                f"Core ML minimum deployment target {minimum_deployment_target!r} not supported;"
                f" use one of {', '.join(_MIN_TARGETS)}"
            )
        if not callable(fp32_ops) and fp32_ops not in ("index", "none"):
            raise MirrorError("fp32_ops must be 'index', 'none' or a callable")
        self.sampler = sampler
        self.minimum_deployment_target = minimum_deployment_target
        self.fp32_ops = fp32_ops
        self.weight_threshold = weight_threshold
        self.reproducible = reproducible
        # The last program's conversions by compute precision: fp16, int8 and
        # palettize6 packages of one program share one fp16 conversion (the slow step).
        self._cache_key: int | None = None
        self._cache: dict[str, Any] = {}

    def pipeline(self, lowering: str) -> PipelineSpec:
        """The passes a Core ML package goes through after the shared pipeline: the grid_sample
        lowering, then what coremltools 9 needs (core ATen, contiguous inputs, float clamp bounds)."""
        return [
            *lowering_passes(lowering),
            ("resize_as_matmul", {}),  # coremltools converts an antialiased resize as a plain one
            ("coreml::core_aten", {}),
            ("scatter_as_cat", {}),  # slice assignments become scatters in core ATen; the MIL interpreter has none
            ("coreml::contiguous_inputs", {}),
            ("coreml::float_clamp_bounds", {}),
        ]

    def emit(
        self,
        program: Any,
        graph: str,
        precision: str,
        out_dir: Path,
        *,
        example_inputs: tuple[Any, ...],
        input_names: list[str],
        output_names: list[str],
        calibration: list[tuple[Any, ...]] | None = None,  # unused: weight-only recipes
        sampler: str | None = None,
    ) -> Artifact:
        sampler = sampler or self.sampler
        if sampler not in SAMPLERS:
            raise MirrorError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        recipe = for_target(self.target, precision).name
        if len(example_inputs) != len(input_names):
            raise MirrorError(
                f"Core ML target: {len(example_inputs)} example inputs but {len(input_names)} input names"
            )
        t0 = time.perf_counter()
        info: dict[str, Any] = {
            "recipe": recipe,
            "minimum_deployment_target": self.minimum_deployment_target,
            "weight_threshold": self.weight_threshold,
        }
        n_grid = grid_samplers(program)
        if sampler == "decomposed" and n_grid:
            raise MirrorError(
                f"Core ML target: {graph} still has {n_grid} grid_sample op(s) but sampler='decomposed';"
                " run the gpu_grid_sample pass first, or ask for sampler='resample'"
            )
        info["sampler_requested"] = sampler
        info["grid_sample_ops"] = n_grid
        mlmodel = self._converted(program, graph, recipe, sampler, example_inputs, input_names, output_names, info)
        if recipe in ("int8-weight", "palettize6"):
            t = time.perf_counter()
            mlmodel, info["compression"] = _compress(mlmodel, recipe, self.weight_threshold, graph)
            info["compress_s"] = round(time.perf_counter() - t, 3)
        final = Path(out_dir) / f"{graph}_{precision}.mlpackage"
        self._save(mlmodel, final, info)
        info["emit_s"] = round(time.perf_counter() - t0, 3)
        return describe_artifact(self.target, graph, precision, final, input_names, output_names, info)

    def runners(self, artifact: Artifact) -> list[Any]:
        # Core ML itself (macOS only) and the numpy executor of the saved package (any OS).
        return [CoreMLRunner(artifact.path), CoreMLMilRunner(artifact.path)]

    def _converted(
        self, program: Any, graph: str, recipe: str, sampler: str, example_inputs: tuple[Any, ...],
        input_names: list[str], output_names: list[str], info: dict[str, Any],
    ) -> Any:  # fmt: skip
        """The converted model at the recipe's compute precision; one conversion per program
        and compute precision (fp16, int8 and palettize6 packages share the fp16 one)."""
        if self._cache_key != id(program):
            self._cache_key, self._cache = id(program), {"source": program}  # keeps the id alive
        t = time.perf_counter()
        compute = "fp32" if recipe == "fp32" else "fp16"
        key = f"converted-{compute}-{sampler}"
        if key not in self._cache:
            self._cache[key] = self._convert(program, graph, compute, example_inputs, input_names, output_names)
        else:
            info["conversion_reused"] = compute
        mlmodel, kept = self._cache[key]
        info["convert_s"] = round(time.perf_counter() - t, 3)
        info["compute_precision"] = compute
        if recipe != "fp32":
            info["fp32_ops_rule"] = self.fp32_ops if isinstance(self.fp32_ops, str) else "callable"
            info["fp32_ops"] = sorted(kept)
        return mlmodel

    def _save(self, mlmodel: Any, final: Path, info: dict[str, Any]) -> None:
        """Save the package atomically (made reproducible) and describe its ops."""
        with atomic_path(final) as tmp:
            try:
                with _quiet():
                    mlmodel.save(str(tmp))
            except Exception as exc:  # noqa: BLE001
                why = failure_reason(exc, final.parent)
                raise MirrorError(f"Core ML target: saving {final.name} failed: {why}") from exc
            if self.reproducible:
                info["conversion_date"] = make_reproducible(tmp)
            info["ops"] = coreml_op_summary(tmp)
            gathers = sum(v for k, v in info["ops"].items() if k in MIL_INDEX_SINKS)
            info["sampler"] = "resample" if info["ops"].get("resample") else ("decomposed" if gathers else "none")
            info["spec_version"] = _load_spec(tmp).specificationVersion
        info["deterministic"] = bool(self.reproducible)
        info["determinism_basis"] = (
            "manifest ids derived from item paths, conversion_date dropped, spec serialized "
            "with sorted maps; verified byte-identical across runs in tests"
            if self.reproducible
            else "coremltools default: Manifest.json UUIDs are random on every save"
        )

    # ---------------------------------------------------------------------------------

    def _convert(
        self,
        program: Any,
        graph: str,
        precision: str,
        example_inputs: tuple[Any, ...],
        input_names: list[str],
        output_names: list[str],
    ) -> tuple[Any, set[str]]:
        import coremltools as ct

        kept: set[str] = set()
        if precision == "fp32":
            compute_precision: Any = ct.precision.FLOAT32
        elif self.fp32_ops == "none":
            compute_precision = ct.precision.FLOAT16
        else:
            keep = index_op_selector() if self.fp32_ops == "index" else self.fp32_ops

            def to_fp16(op: Any) -> bool:
                if keep(op):
                    kept.add(op.name)
                    return False
                return True

            compute_precision = ct.transform.FP16ComputePrecision(op_selector=to_fp16)

        register_missing_torch_ops()
        inputs = [
            ct.TensorType(name=n, shape=tuple(int(d) for d in t.shape), dtype=np.float32)
            for n, t in zip(input_names, example_inputs, strict=True)
        ]
        outputs = [ct.TensorType(name=n, dtype=np.float32) for n in output_names]
        try:
            with _quiet(), module_path_names(program) as paths:
                mlmodel = ct.convert(
                    program,
                    inputs=inputs,
                    outputs=outputs,
                    minimum_deployment_target=getattr(ct.target, self.minimum_deployment_target),
                    convert_to="mlprogram",
                    compute_precision=compute_precision,
                    skip_model_load=True,
                )
        except Exception as exc:  # noqa: BLE001 - one clear line for the user
            raise MirrorError(f"Core ML conversion of {graph} failed: {failure_reason(exc)}") from exc
        record_module_paths(mlmodel, paths)
        return mlmodel, kept


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------


def register_missing_torch_ops() -> list[str]:
    """Teach coremltools the core-ATen overloads it lacks; returns the ones added (idempotent).

    ``aten.where.ScalarOther`` (``torch.where(cond, x, 0.0)``: a Python number as the
    "else" value, e.g. a clamp written as a select) is what ``run_decompositions`` leaves,
    and coremltools 9 has ``where.self``/``where.ScalarSelf`` but not it ("Unsupported fx
    node where, kind where.scalarother"). coremltools' own ``where`` translation already
    promotes dtypes and broadcasts a scalar operand, so the overload is routed to it through
    the public ``register_torch_op``. A coremltools release that handles it natively keeps
    its own translation.
    """
    from coremltools.converters.mil.frontend.torch import ops as ct_ops
    from coremltools.converters.mil.frontend.torch import register_torch_op
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    added: list[str] = []
    if _TORCH_OPS_REGISTRY.get_func("where.scalarother") is None:

        def mirror_where_scalarother(context: Any, node: Any) -> None:
            ct_ops.where(context, node)

        register_torch_op(mirror_where_scalarother, torch_alias=["where.scalarother"])
        added.append("where.scalarother")
    return added


def grid_samplers(program: Any) -> int:
    """How many ``grid_sampler`` calls a program still holds."""
    return sum(
        1
        for n in program.graph.nodes
        if n.op == "call_function" and "grid_sampler" in str(getattr(n.target, "__name__", n.target))
    )


def _compress(mlmodel: Any, precision: str, weight_threshold: int, graph: str) -> tuple[Any, dict[str, Any]]:
    import coremltools.optimize.coreml as cto

    try:
        with _quiet():
            if precision == "int8-weight":
                op_config = cto.OpLinearQuantizerConfig(
                    mode="linear_symmetric",
                    dtype="int8",
                    granularity="per_channel",
                    weight_threshold=weight_threshold,
                )
                out = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
                desc = {
                    "method": "coremltools.optimize.coreml.linear_quantize_weights",
                    "mode": "linear_symmetric",
                    "dtype": "int8",
                    "granularity": "per_channel",
                }
            else:
                # coremltools clusters weights below 10,000 elements with scikit-learn, which
                # MIRROR does not depend on; such small weights stay fp16 (a tiny share of bytes).
                op_config = cto.OpPalettizerConfig(
                    mode="kmeans",
                    nbits=6,
                    granularity="per_tensor",
                    weight_threshold=max(weight_threshold, PALETTIZE_MIN_WEIGHTS),
                )
                out = cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
                desc = {
                    "method": "coremltools.optimize.coreml.palettize_weights",
                    "mode": "kmeans",
                    "nbits": 6,
                    "granularity": "per_tensor",
                }
    except Exception as exc:  # noqa: BLE001
        raise MirrorError(f"Core ML {precision} compression of {graph} failed: {failure_reason(exc)}") from exc
    return out, desc


def index_op_selector() -> Callable[[Any], bool]:
    """``op -> bool``: True for MIL ops that compute (or derive only from) gather indices.

    The region is computed once per MIL block on first use, before the fp16 pass inserts
    its casts.
    """
    cache: dict[int, set[int]] = {}

    def keep(op: Any) -> bool:
        block = op.enclosing_block
        key = id(block)
        if key not in cache:
            cache[key] = mil_index_ops(block)
        return id(op) in cache[key]

    return keep


def mil_index_ops(block: Any) -> set[int]:
    """ids of the ops of a MIL block that compute gather indices (see index_region)."""

    ops = list(block.operations)
    nodes = []
    seeds = []
    for op in ops:
        prods: list[str | None] = []
        for name, value in op.inputs.items():
            vars_ = value if isinstance(value, (list, tuple)) else [value]
            for v in vars_:
                src = getattr(v, "op", None)
                if src is None or src.op_type == "const":
                    prods.append(None)
                    continue
                prods.append(str(id(src)))
                if (op.op_type in MIL_INDEX_SINKS and name == "indices") or (
                    op.op_type in MIL_COORDINATE_SINKS and name == "coordinates"
                ):
                    seeds.append(str(id(src)))
        nodes.append((str(id(op)), op.op_type, prods))
    return {int(i) for i in index_region(nodes, seeds, MIL_INDEX_OPS)}


def make_reproducible(package: Path) -> str | None:
    """Rewrite a saved package so that its bytes depend on the model alone.

    Returns the conversion date that was dropped (for the artifact's info).
    """
    package = Path(package)
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entries = manifest.get("itemInfoEntries", {})
    remap = {
        old: str(uuid.uuid5(_MANIFEST_NS, f"{entry.get('author', '')}/{entry.get('path', '')}")).upper()
        for old, entry in entries.items()
    }
    manifest["itemInfoEntries"] = {remap[k]: v for k, v in sorted(entries.items(), key=lambda kv: remap[kv[0]])}
    if manifest.get("rootModelIdentifier") in remap:
        manifest["rootModelIdentifier"] = remap[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")

    spec_path = _spec_path(package)
    spec = _load_spec(package)
    meta = spec.description.metadata.userDefined
    date = meta.pop("com.github.apple.coremltools.conversion_date", None)
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    return date


# --------------------------------------------------------------------------------------
# Reading a saved package (any platform)
# --------------------------------------------------------------------------------------


def _spec_path(package: Path) -> Path:
    package = Path(package)
    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    return package / "Data" / root["path"]


def _load_spec(package: Path) -> Any:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(_spec_path(package).read_bytes())
    return spec


def _walk_ops(block: Any):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def coreml_op_summary(path: str | Path) -> dict[str, int]:
    """How many MIL ops of each type the saved package's program holds (consts included)."""
    spec = _load_spec(Path(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise MirrorError(f"{path} is not an ML program package")
    counts: Counter = Counter()
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            counts.update(op.type for op in _walk_ops(block))
    return dict(sorted(counts.items()))


def coreml_op_dtypes(path: str | Path) -> dict[str, dict[str, int]]:
    """Per MIL op type (consts excluded), how many ops produce fp16 / fp32 / int outputs."""
    from coremltools.proto import MIL_pb2

    names = {v: k.lower() for k, v in MIL_pb2.DataType.items()}
    spec = _load_spec(Path(path))
    out: dict[str, Counter] = {}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in _walk_ops(block):
                if op.type == "const" or not op.outputs:
                    continue
                t = op.outputs[0].type
                dt = names.get(t.tensorType.dataType, "?") if t.HasField("tensorType") else "?"
                out.setdefault(op.type, Counter())[dt] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def coreml_package_info(path: str | Path) -> dict[str, Any]:
    """Spec version, deployment target, inputs/outputs and MIL opset of a saved package."""
    from coremltools.proto import FeatureTypes_pb2

    spec = _load_spec(Path(path))
    names = {v: k for k, v in FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}

    def feat(f: Any) -> dict[str, Any]:
        a = f.type.multiArrayType
        return {"name": f.name, "shape": list(a.shape), "dtype": names.get(a.dataType, "?")}

    return {
        "specification_version": spec.specificationVersion,
        "minimum_deployment_target": SPEC_VERSION_TO_TARGET.get(spec.specificationVersion, "?"),
        "opsets": sorted({fn.opset for fn in spec.mlProgram.functions.values()}),
        "inputs": [feat(f) for f in spec.description.input],
        "outputs": [feat(f) for f in spec.description.output],
        "metadata": dict(spec.description.metadata.userDefined),
    }


@contextlib.contextmanager
def _quiet():
    """coremltools prints progress bars and version warnings; keep the CLI's output clean."""
    names = ["coremltools", "root"]
    loggers = [logging.getLogger(None if n == "root" else n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    import warnings

    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
