"""Core ML target: an ``.mlpackage`` (ML program) from the transformed ExportedProgram.

Conversion: ``drop_aliases`` (``.detach()`` exports as ``aten.alias``, which coremltools 9
rejects), ``run_decompositions({})``, user inputs recorded with a non-contiguous layout
(a channels-last or permuted example input) re-declared contiguous (coremltools 9 rejects any
other dim order; ``contiguous_user_inputs``), the core-ATen overloads coremltools 9 lacks
(``where.ScalarOther``) routed to its existing translations (``register_missing_torch_ops``),
integer clamp bounds on float tensors made floats (``float_clamp_bounds``),
then ``ct.convert(convert_to="mlprogram",
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
network's heavy ops stay fp16. ``fp32_ops="none"`` converts everything; a callable
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
import platform
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.targets.base import Artifact, atomic_path, describe_artifact

COREML_PRECISIONS = ("fp16", "fp32", "int8", "palettize6")
PALETTIZE_MIN_WEIGHTS = 10_000
SAMPLERS = ("decomposed", "resample", "auto")
NOT_RUN_REASON = "not run: Core ML prediction is macOS-only"

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

_MANIFEST_NS = uuid.UUID("6f1f6d0e-5a8e-4a47-9a43-6d6972726f72")  # fixed: "mirror" manifest ids


class CoreMLEmitter:
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
    precisions = COREML_PRECISIONS

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
        # The last program's preparation and conversions by compute precision: fp16, int8 and
        # palettize6 packages of one program share one fp16 conversion (the slow step).
        self._cache_key: int | None = None
        self._cache: dict[str, Any] = {}

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
        if precision not in COREML_PRECISIONS:
            raise MirrorError(
                f"Core ML target: unknown precision {precision!r}; use one of {', '.join(COREML_PRECISIONS)}"
            )
        if len(example_inputs) != len(input_names):
            raise MirrorError(
                f"Core ML target: {len(example_inputs)} example inputs but {len(input_names)} input names"
            )
        t0 = time.perf_counter()
        info: dict[str, Any] = {
            "minimum_deployment_target": self.minimum_deployment_target,
            "weight_threshold": self.weight_threshold,
        }

        if self._cache_key != id(program):
            self._cache_key, self._cache = id(program), {"source": program}  # keeps the id alive
            self._cache["prepared"] = _prepare(program, graph)
        program, n_grid, relaid = self._cache["prepared"]
        if relaid:
            info["inputs_made_contiguous"] = relaid
        if sampler == "decomposed" and n_grid:
            raise MirrorError(
                f"Core ML target: {graph} still has {n_grid} grid_sample op(s) but sampler='decomposed';"
                " run the gpu_grid_sample pass first, or ask for sampler='resample'"
            )
        info["sampler_requested"] = sampler
        info["grid_sample_ops"] = n_grid

        t = time.perf_counter()
        compute = "fp32" if precision == "fp32" else "fp16"
        key = f"converted-{compute}-{sampler}"
        if key not in self._cache:
            self._cache[key] = self._convert(program, graph, compute, example_inputs, input_names, output_names)
        else:
            info["conversion_reused"] = compute
        mlmodel, kept = self._cache[key]
        info["convert_s"] = round(time.perf_counter() - t, 3)
        info["compute_precision"] = compute
        if precision != "fp32":
            info["fp32_ops_rule"] = self.fp32_ops if isinstance(self.fp32_ops, str) else "callable"
            info["fp32_ops"] = sorted(kept)

        if precision in ("int8", "palettize6"):
            t = time.perf_counter()
            mlmodel, info["compression"] = _compress(mlmodel, precision, self.weight_threshold, graph)
            info["compress_s"] = round(time.perf_counter() - t, 3)

        final = Path(out_dir) / f"{graph}_{precision}.mlpackage"
        with atomic_path(final) as tmp:
            try:
                with _quiet():
                    mlmodel.save(str(tmp))
            except Exception as exc:  # noqa: BLE001
                raise MirrorError(f"Core ML target: saving {final.name} failed: {_one_line(exc)}") from exc
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
        info["emit_s"] = round(time.perf_counter() - t0, 3)
        return describe_artifact(self.target, graph, precision, final, input_names, output_names, info)

    def runners(self, artifact: Artifact) -> list[CoreMLRunner]:
        return [CoreMLRunner(artifact.path)]

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
            with _quiet():
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
            raise MirrorError(f"Core ML conversion of {graph} failed: {_one_line(exc)}") from exc
        return mlmodel, kept


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------


def _prepare(program: Any, graph: str) -> tuple[Any, int, list[str]]:
    """Drop alias nodes, decompose to core ATen, give user inputs a contiguous layout;
    count grid samplers left. Returns (program, grid samplers, inputs re-laid out)."""
    from mirror.passes.cleanup import drop_aliases

    try:
        program = drop_aliases(program).program
        program = program.run_decompositions({})
        relaid = contiguous_user_inputs(program)
        float_clamp_bounds(program)
    except Exception as exc:  # noqa: BLE001
        raise MirrorError(f"Core ML target: preparing {graph} failed: {_one_line(exc)}") from exc
    n_grid = sum(
        1
        for n in program.graph.nodes
        if n.op == "call_function" and "grid_sampler" in str(getattr(n.target, "__name__", n.target))
    )
    return program, n_grid, relaid


def contiguous_user_inputs(program: Any) -> list[str]:
    """Give every user-input placeholder of ``program`` a contiguous (row-major) value; in place.

    ``torch.export`` records the strides of the example inputs it was traced with, so a
    channels-last or permuted example (``one_hot(...).permute(0, 3, 1, 2)``,
    ``x.to(memory_format=torch.channels_last)``) makes the placeholder's ``dim_order()``
    something other than ``(0, 1, ..., n-1)``. coremltools 9 refuses such an input outright
    ("Core ML does not have general support for non-contiguous dim order"), although the
    strides are irrelevant to it: a Core ML input is a dense MLMultiArray in logical (row-major)
    order and every aten op of the program is defined on logical values. Only the recorded
    layout changes here; the graph and its results do not. Interior values (permute outputs,
    strided views) are not checked by coremltools and are left alone.

    Returns the names of the placeholders that were re-laid out.
    """
    import torch
    from torch._guards import detect_fake_mode
    from torch.export.graph_signature import InputKind

    user = {s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    changed: list[str] = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim_order() == tuple(range(val.dim())):
            continue
        fake_mode = detect_fake_mode([val])
        with fake_mode if fake_mode is not None else contextlib.nullcontext():
            dense = torch.empty(val.shape, dtype=val.dtype, device=val.device)
        node.meta["val"] = dense
        if "tensor_meta" in node.meta:
            from torch.fx.passes.shape_prop import _extract_tensor_metadata

            node.meta["tensor_meta"] = _extract_tensor_metadata(dense)
        changed.append(node.name)
    return changed


def float_clamp_bounds(program: Any) -> int:
    """Make an integer ``clamp_min``/``clamp_max`` bound on a floating tensor a float; in place.

    ``torch.clamp_max(x, 127)`` on a float ``x`` is valid torch (the result stays float), but
    coremltools 9 translates ``clamp_min``/``clamp_max`` with ``assert x.dtype == y.dtype``
    and fails with a bare AssertionError (its ``clamp``, ``minimum`` and ``maximum`` promote).
    The bound becomes the equal Python float, which is what torch computes with anyway.
    Returns how many nodes were changed.
    """
    import torch

    aten = torch.ops.aten
    targets = (aten.clamp_min.default, aten.clamp_max.default)
    changed = 0
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in targets or len(node.args) < 2:
            continue
        x, bound = node.args[0], node.args[1]
        val = getattr(x, "meta", {}).get("val")
        if (
            isinstance(bound, int)
            and not isinstance(bound, bool)
            and isinstance(val, torch.Tensor)
            and val.dtype.is_floating_point
        ):
            node.args = (x, float(bound), *node.args[2:])
            changed += 1
    if changed:
        program.graph_module.recompile()
    return changed


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


def _compress(mlmodel: Any, precision: str, weight_threshold: int, graph: str) -> tuple[Any, dict[str, Any]]:
    import coremltools.optimize.coreml as cto

    try:
        with _quiet():
            if precision == "int8":
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
        raise MirrorError(f"Core ML {precision} compression of {graph} failed: {_one_line(exc)}") from exc
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
    from mirror.targets.onnx import index_region

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
                if op.op_type in MIL_INDEX_SINKS and name == "indices":
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


# --------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------


class CoreMLRunner:
    """Runs an ``.mlpackage`` with Core ML, which exists only on macOS.

    Elsewhere ``available()`` is False, ``reason()`` says why, and ``run`` raises a
    MirrorError with that reason, so validation can record "not run" instead of a number.
    """

    name = "coreml"

    def __init__(self, path: str | Path, *, compute_units: str = "ALL") -> None:
        self.path = Path(path)
        self.compute_units = compute_units
        self._model = None

    @staticmethod
    def available() -> bool:
        return CoreMLRunner.reason() is None

    @staticmethod
    def reason() -> str | None:
        """None when Core ML prediction can run here, else why not."""
        if platform.system() != "Darwin":
            return f"{NOT_RUN_REASON} (this is {platform.system() or 'an unknown OS'})"
        try:
            import coremltools.libcoremlpython  # noqa: F401
        except ImportError:
            return f"{NOT_RUN_REASON}: coremltools has no native runtime in this install"
        return None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        why = self.reason()
        if why is not None:
            raise MirrorError(why)
        if self._model is None:
            import coremltools as ct

            self._model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, self.compute_units))
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        out = self._model.predict(feeds)
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


# --------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


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
