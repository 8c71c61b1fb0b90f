"""The LiteRT (TFLite) target: its pipeline, litert-torch conversion, ai-edge-quantizer recipes.

``TFLiteEmitter.emit`` writes ``<out_dir>/<graph>_<precision>.tflite``:

- The program has been through the LiteRT backend pipeline (``pipeline``): ``grid_sample``
  lowered, wide convolutions split, broadcasts (``expand``) written as gathers,
  ``index_select`` legalized to ``tfl.gather`` = GATHER v1. It is converted with
  ``litert_torch`` from the program's own GraphModule (no wrapper module), so that the
  flatbuffer carries one signature whose key is the graph name and whose inputs and outputs
  carry the given names (``person``, ``parsing``, ... / ``warped_cloth``, ...). litert-torch
  names the boundary tensors ``<key>_<input>`` and ``<key>_<output>_output``; apps should
  address them through the signature. Every other tensor is named after the torch module
  path and FX node of the op that makes it (``warp/aflow_net/netRefine.3/0/conv2d_12;4``, see
  ``_named_module``).
  Layout stays NCHW, as in PyTorch (litert-torch inserts the transposes).
- The precision recipes of ``mirror/precisions.py`` are realized with ai-edge-quantizer
  on the float flatbuffer: ``fp16`` = float16 weight casting, ``int8``/``int8-weight`` =
  per-channel int8 weights dequantized before each op, ``int8-full`` = static int8 weights
  and activations from calibration (int8 inputs/outputs).
- Conversion of the same program is byte-for-byte deterministic with litert-torch 0.10 and
  ai-edge-quantizer 0.10; ``TFLiteEmitter(check_determinism=True)`` converts twice and
  records the answer in ``artifact.info["deterministic"]``.

Its artifacts run on ``runners/litert.py``'s CPU and GPU runners.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.files import atomic_path, failure_reason, size_of
from mirror.passes.base import PipelineSpec
from mirror.passes.litert_gather import count_index_selects, count_litert_gathers
from mirror.passes.registry import lowering_passes
from mirror.precisions import for_target, get_recipe
from mirror.runners.litert import LiteRTCpuRunner, LiteRTGpuRunner
from mirror.runners.tflite_file import read_tflite
from mirror.targets.base import Artifact, EmitterBase, describe_artifact
from mirror.targets.calibration import calibration_set

_NO_QUANT = "fp32"


def quiet_litert_torch() -> Any:
    """litert_torch, with its progress display off (the CLI's output stays ours)."""
    from mirror.runners.litert import quiet_converter_import

    with quiet_converter_import():
        import litert_torch

    try:
        litert_torch.config.show_progress = False
    except AttributeError:
        pass
    return litert_torch


def _named_module(program: Any, input_names: list[str], output_names: list[str], root: str) -> Any:
    """The program as a GraphModule that takes named inputs (kwargs) and returns a dict of
    named outputs, with every op labelled by its torch module path.

    litert-torch names each tensor after its op's ``nn_module_stack``, one ``/``-separated
    level per module, each written ``<class>_<last attribute>``: a ModuleList's index hides
    which list it indexes (``netMain.0`` and ``netRefine.0`` both read ``Sequential_0``), and a
    wrapper module would put its own class at the root. Relabelled here, a level reads as its
    path relative to its parent and the innermost level is the FX node:
    ``warp/aflow_net/netRefine.3/0/conv2d_12;4`` for node ``conv2d_12`` of
    ``aflow_net.netRefine.3.0`` (the root is ``root``, the signature key), which Netron and
    Model Explorer show as is and ``runners.tflite_file.module_path``/``fx_node`` read back.
    """
    import torch

    gm = program.module()  # a fresh copy: renaming its nodes leaves the program alone
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(input_names):
        raise MirrorError(f"the graph takes {len(placeholders)} inputs but {len(input_names)} input names were given")
    for node, name in zip(placeholders, input_names, strict=True):
        node.target = node.name = name
    _label_module_paths(graph, root)
    output = next(n for n in graph.nodes if n.op == "output")
    values = output.args[0] if isinstance(output.args[0], (tuple, list)) else (output.args[0],)
    if len(values) != len(output_names):
        raise MirrorError(
            f"the graph returns {len(values)} outputs but {len(output_names)} output "
            f"names were given ({', '.join(output_names)})"
        )
    output.args = (dict(zip(output_names, values, strict=True)),)
    # The unlifted module flattens its arguments with pytree code and checks them against
    # the exported signature in a pre-hook; both expect positional inputs.
    graph._codegen = torch.fx.graph.CodeGen()
    gm._forward_pre_hooks.clear()
    gm.recompile()
    # litert-torch warns on modules in training mode; exported modules refuse .eval().
    gm.training = False
    return gm


def _label_module_paths(graph: Any, root: str) -> None:
    """Rewrite each node's module stack so litert-torch writes relative module paths."""
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        labelled, parent = {}, ""
        for key, (path, _cls) in stack.items():
            relative = path[len(parent) + 1 :] if parent and path.startswith(parent + ".") else path
            # An empty name makes litert-torch write the label alone (no "_<attribute>").
            labelled[key] = ("", relative or root)
            parent = path or parent
        # The FX node itself as the innermost level: validation matches tensors to the
        # reference's nodes by it (``--localize``).
        labelled[f"{node.name}@fx"] = ("", node.name)
        node.meta["nn_module_stack"] = labelled


def convert_to_bytes(
    program: Any,
    example_inputs: tuple[Any, ...],
    input_names: list[str],
    output_names: list[str],
    signature_key: str,
) -> bytes:
    """Convert an (already legalized) program to a float32 .tflite flatbuffer."""
    lt = quiet_litert_torch()
    if len(example_inputs) != len(input_names):
        raise MirrorError(f"{len(example_inputs)} example inputs but {len(input_names)} input names")
    import torch

    if not isinstance(program, torch.export.ExportedProgram):
        program = torch.export.export(program.eval(), tuple(example_inputs))
    module = _named_module(program, input_names, output_names, signature_key)
    kwargs = dict(zip(input_names, example_inputs, strict=True))
    # Lightweight conversion: constants stay resources during the MLIR passes and the LiteRT
    # runtime folds the constant subgraphs afterwards, instead of MLIR folding each weight
    # element by element (the coarse parser's 66.7 M parameters took 3 to 5 minutes that way,
    # 20 s this way). What MLIR folding also did, batch norms into convolutions, the
    # ``fold_batch_norm`` pass has done before (without it, one MUL per batch norm stays).
    # On warp, gen and parser the two modes give the same ops, tensor names and outputs.
    try:
        edge = lt.signature(signature_key, module, sample_kwargs=kwargs).convert(lightweight_conversion=True)
    except Exception as exc:  # noqa: BLE001 - one clear line; the compile goes on with the other targets
        raise MirrorError(f"LiteRT conversion of {signature_key} failed: {failure_reason(exc)}") from exc
    return bytes(edge.model_content())


def _ai_edge_quantizer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-quantizer")
    except PackageNotFoundError:
        return "unknown"


def quantize_bytes(
    float_model: bytes,
    recipe_name: str,
    signature_key: str,
    input_names: list[str],
    calibration: list[tuple[np.ndarray, ...]] | None = None,
) -> bytes:
    """Apply a ``mirror.precisions`` recipe to a float .tflite with ai-edge-quantizer."""
    recipe = get_recipe(recipe_name)
    if recipe.name == _NO_QUANT:
        return float_model
    import contextlib
    import io

    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(bytearray(float_model))
    _configure(q, recipe.name)
    calibration_result = None
    # ai-edge-quantizer prints a size summary, a progress bar and a debugging warning
    # during calibration; keep the CLI's output ours.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UserWarning)
        if recipe.needs_calibration:
            if not calibration:
                raise MirrorError(f"recipe {recipe.name} needs calibration samples")
            data = {
                signature_key: [
                    {n: np.asarray(a, np.float32) for n, a in zip(input_names, s, strict=True)} for s in calibration
                ]
            }
            calibration_result = q.calibrate(data, num_threads=1)
        result = q.quantize(calibration_result)
    return bytes(result.quantized_model)


def _configure(q: Any, recipe: str) -> None:
    """The ai-edge-quantizer configuration that realizes ``recipe``."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    channelwise = qtyping.QuantGranularity.CHANNELWISE
    min_max = AlgorithmName.MIN_MAX_UNIFORM_QUANT
    if recipe == "fp16":
        q.add_weight_only_config(regex=".*", operation_name=ops, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif recipe == "int8-weight":
        q.add_weight_only_config(regex=".*", operation_name=ops, num_bits=8, granularity=channelwise,
                                 algorithm_key=min_max)  # fmt: skip
        # The GPU delegate refuses the whole model ("Shape mismatch" while building its kernels)
        # when a batched matmul's or a rank-3/4 fully-connected's constant comes out of a
        # DEQUANTIZE: the coarse parser's pooling matrices (litert::matmul_constant_lhs). They
        # are a few hundred elements (the batched one 64 K), so they stay float: BATCH_MATMUL
        # operands always, FULLY_CONNECTED weights under 1024 elements.
        q.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName.BATCH_MATMUL,
                                     algorithm_key=AlgorithmName.NO_QUANTIZE)  # fmt: skip
        weights = qtyping.TensorQuantizationConfig(num_bits=8, symmetric=True, granularity=channelwise,
                                                   dtype=qtyping.TensorDataType.INT)  # fmt: skip
        q.update_quantization_recipe(
            regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED, algorithm_key=min_max,
            op_config=qtyping.OpQuantizationConfig(weight_tensor_config=weights,
                                                   compute_precision=qtyping.ComputePrecision.FLOAT,
                                                   explicit_dequantize=True, min_weight_elements=1024),
        )  # fmt: skip
    elif recipe == "int8-full":
        q.add_static_config(regex=".*", operation_name=ops, activation_num_bits=8, weight_num_bits=8,
                            weight_granularity=channelwise, algorithm_key=min_max)  # fmt: skip
    else:  # a recipe added to mirror.precisions without a LiteRT realization
        raise MirrorError(f"the LiteRT target has no realization of recipe {recipe!r}")


def _as_numpy_samples(calibration: list[tuple[Any, ...]]) -> list[tuple[np.ndarray, ...]]:
    def conv(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        return np.asarray(x, np.float32)

    return [tuple(conv(x) for x in s) for s in calibration]


class TFLiteEmitter(EmitterBase):
    """Writes LiteRT flatbuffers; see the module docstring."""

    target = "tflite"
    delegate = "GPU delegate"

    def __init__(
        self,
        *,
        signature_key: str | None = None,
        check_determinism: bool = False,
        calibration_samples: int = 16,
        calibration_seed: int = 0,
    ) -> None:
        self.signature_key = signature_key  # None: the graph name
        self.check_determinism = check_determinism
        self.calibration_samples = calibration_samples
        self.calibration_seed = calibration_seed
        # The last float conversion, reused when the same program is emitted at several
        # precisions (converting a DIVTON warper takes about a minute).
        self._float_cache: tuple[Any, tuple[Any, ...], bytes] | None = None

    def pipeline(self, lowering: str) -> PipelineSpec:
        """The passes a LiteRT artifact goes through after the shared pipeline."""
        return [
            *lowering_passes(lowering),  # first, so it is shared with a Core ML pipeline of the same lowering
            ("fold_constants", {}),  # the lowering's own index constants, and affine_grid's base grid
            # Batch norms into their convolutions here, in torch: the converter's own fusion is MLIR
            # constant folding, minutes on a large model (passes/conv_batch_norm.py).
            ("fold_batch_norm", {}),
            ("litert::einsum_as_bmm", {}),  # before legalize_rank, which takes its rank-5 views
            ("legalize_rank", {}),
            ("scatter_as_cat", {}),
            ("index_as_select", {}),
            ("litert::gather_as_select", {}),
            ("litert::one_hot_as_compare", {}),
            ("litert::float_cast_first", {}),
            ("litert::replicate_pad_as_cat", {}),
            ("litert::adaptive_pool_as_matmul", {}),  # before matmul_constant_lhs, which takes its P_h @ x
            ("litert::adaptive_max_as_pool", {}),
            ("litert::bicubic_as_phases", {}),
            ("resize_as_matmul", {}),  # before matmul_constant_lhs, which takes its A_h @ x
            ("litert::unfold_as_conv", {}),
            ("litert::topk_as_max", {}),
            ("litert::log_softmax", {}),
            ("litert::matmul_constant_lhs", {}),
            ("litert::select_operands", {}),
            ("litert::split_wide_conv", {"max_in_channels": 512}),
            ("litert::broadcast_as_gather", {}),
            ("litert::constant_operands_4d", {}),
            ("litert::gather_v1", {}),
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
        calibration: list[tuple[Any, ...]] | None = None,
    ) -> Artifact:
        recipe = for_target(self.target, precision)
        key = self.signature_key or graph
        final = Path(out_dir) / f"{graph}_{precision}.tflite"
        t0 = time.perf_counter()
        float_model = self._float_model(program, tuple(example_inputs), input_names, output_names, key)
        t_convert = time.perf_counter() - t0
        samples, calib_info = self._calibration(recipe.needs_calibration, calibration, example_inputs, input_names)
        t1 = time.perf_counter()
        model = quantize_bytes(float_model, recipe.name, key, input_names, samples)
        t_quant = time.perf_counter() - t1
        deterministic = None
        if self.check_determinism:
            again = convert_to_bytes(program, tuple(example_inputs), input_names, output_names, key)
            same = again == float_model
            if recipe.name != _NO_QUANT:
                same = same and quantize_bytes(again, recipe.name, key, input_names, samples) == model
            deterministic = bool(same)
        with atomic_path(final) as tmp:
            tmp.write_bytes(model)
        info = {
            **_describe_flatbuffer(final, recipe, len(float_model)),
            "deterministic": deterministic,
            "convert_s": round(t_convert, 2),
            "quantize_s": round(t_quant, 2),
            "legalized": not count_index_selects(program),
            "litert_gathers": count_litert_gathers(program),
            **calib_info,
        }
        return describe_artifact(self.target, graph, precision, final, input_names, output_names, info)

    def runners(self, artifact: Artifact) -> list[Any]:
        """The CPU runner and the GPU runner (which says itself when no Vulkan driver is found)."""
        return [LiteRTCpuRunner(artifact.path), LiteRTGpuRunner(artifact.path)]

    def delegate_check(self, artifact: Artifact, runners: list[Any], mode: str) -> dict[str, Any] | None:
        """The GPU delegate's verdict (``targets/gpu_delegate.py``); a GPU runner that already
        loaded the artifact lends its load log instead of a second load."""
        from mirror.targets.gpu_delegate import locate_sources, verify_gpu_delegate

        loaded = next((r for r in runners if isinstance(r, LiteRTGpuRunner) and r.loaded is not None), None)
        result = verify_gpu_delegate(artifact.path, mode=mode, runner=loaded)
        if result.get("unsupported") and self._float_cache is not None:
            # The program this artifact was just converted from names the user's lines.
            locate_sources(result, artifact.path, self._float_cache[0], artifact.output_names)
        return result

    def _float_model(
        self, program: Any, example_inputs: tuple[Any, ...], input_names: list[str], output_names: list[str], key: str
    ) -> bytes:
        names = (key, tuple(input_names), tuple(output_names))
        if self._float_cache is not None and self._float_cache[0] is program and self._float_cache[1] == names:
            return self._float_cache[2]
        float_model = convert_to_bytes(program, example_inputs, input_names, output_names, key)
        # Keep `program` referenced so the identity check stays meaningful.
        self._float_cache = (program, names, float_model)
        return float_model

    def _calibration(
        self, needed: bool, given: list[tuple[Any, ...]] | None, example_inputs: tuple[Any, ...], input_names: list[str]
    ) -> tuple[list[tuple[np.ndarray, ...]] | None, dict[str, Any]]:
        if not needed:
            return None, {}
        if given:
            samples = _as_numpy_samples(given)
            return samples, {"calibration": "given", "calibration_samples": len(samples)}
        samples = calibration_set(
            example_inputs, n=self.calibration_samples, seed=self.calibration_seed, input_names=input_names
        )
        return samples, {
            "calibration": f"synthetic (value ranges from input names, seed {self.calibration_seed})",
            "calibration_samples": len(samples),
        }


def _describe_flatbuffer(path: Path, recipe: Any, float_bytes: int) -> dict[str, Any]:
    """What the written flatbuffer holds: recipe, signature, tensor names, dtypes and ops."""
    fb = read_tflite(path)
    return {
        "recipe": recipe.name,
        "weights": recipe.weights,
        "activations": recipe.activations,
        "quantizer": None if recipe.name == _NO_QUANT else f"ai-edge-quantizer {_ai_edge_quantizer_version()}",
        "signature_key": fb.signature_key,
        "signature_inputs": [n for n, _ in fb.signature_inputs],
        "signature_outputs": [n for n, _ in fb.signature_outputs],
        "tensor_names": {
            "inputs": [fb.tensors[i].name for _, i in fb.signature_inputs],
            "outputs": [fb.tensors[i].name for _, i in fb.signature_outputs],
        },
        "io_dtypes": {n: fb.tensors[i].dtype for n, i in fb.signature_inputs + fb.signature_outputs},
        "layout": "NCHW",
        "ops": fb.op_histogram(),
        "ops_total": len(fb.ops),
        "fp32_size_bytes": float_bytes,
        "size_ratio_vs_fp32": round(size_of(path) / float_bytes, 4),
    }


def convert_stock(module: Any, example_inputs: tuple[Any, ...], path: Path | str) -> Path:
    """Plain litert-torch conversion of an eager module: no MIRROR passes, no legalization.

    This is the baseline the compile report sets beside MIRROR's own artifacts.
    """
    lt = quiet_litert_torch()
    edge = lt.convert(module.eval(), tuple(example_inputs))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(edge.model_content()))
    return path
