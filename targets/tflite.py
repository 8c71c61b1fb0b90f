"""The LiteRT (TFLite) target: litert-torch conversion, ai-edge-quantizer recipes, runners.

``TFLiteEmitter.emit`` writes ``<out_dir>/<graph>_<precision>.tflite``:

- The program (after the pass pipeline) is legalized for LiteRT (``index_select`` becomes
  ``tfl.gather`` = GATHER v1, see ``targets/tflite_ops.py``) and converted with
  ``litert_torch`` through a thin wrapper, so that the flatbuffer carries one signature
  whose key is the graph name and whose inputs and outputs carry the given names
  (``person``, ``parsing``, ... / ``warped_cloth``, ...). litert-torch names the underlying
  tensors ``<key>_<input>`` and ``<key>_<output>_output``; apps should address them through
  the signature. Layout stays NCHW, as in PyTorch (litert-torch inserts the transposes).
- The quantization recipes of ``passes/quantization.py`` are realized with ai-edge-quantizer
  on the float flatbuffer: ``fp16`` = float16 weight casting, ``int8``/``int8-weight`` =
  per-channel int8 weights dequantized before each op, ``int8-full`` = static int8 weights
  and activations from calibration (int8 inputs/outputs).
- Conversion of the same program is byte-for-byte deterministic with litert-torch 0.10 and
  ai-edge-quantizer 0.10; ``TFLiteEmitter(check_determinism=True)`` converts twice and
  records the answer in ``artifact.info["deterministic"]``.

``LiteRTRunner(path, "cpu")`` runs in-process (XNNPACK); ``LiteRTRunner(path, "gpu")`` runs
LiteRT's GPU accelerator in a child process (see ``litert_env``), since the delegate can
crash; a crash raises ``LiteRTRunError`` instead of killing the caller.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.targets.base import Artifact, atomic_path, describe_artifact, size_of

_NO_QUANT = "fp32"


class LiteRTRunError(MirrorError):
    """Running a LiteRT model failed (a delegate crash, a load error); ``child`` has the log."""

    def __init__(self, message: str, child: Any = None):
        super().__init__(message)
        self.child = child


def _quiet_litert_torch() -> Any:
    import litert_torch

    try:
        litert_torch.config.show_progress = False
    except AttributeError:
        pass
    return litert_torch


def _named_module(program: Any, input_names: list[str], output_names: list[str]) -> Any:
    """Wrap the program so litert-torch sees named inputs (kwargs) and named outputs (a dict)."""
    import torch

    gm = program.module() if isinstance(program, torch.export.ExportedProgram) else program

    class NamedIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = gm

        def forward(self, **kwargs: Any) -> dict[str, Any]:
            out = self.inner(*[kwargs[n] for n in input_names])
            if not isinstance(out, (tuple, list)):
                out = (out,)
            if len(out) != len(output_names):
                raise MirrorError(
                    f"the graph returns {len(out)} outputs but {len(output_names)} output "
                    f"names were given ({', '.join(output_names)})"
                )
            return dict(zip(output_names, out, strict=True))

    wrapper = NamedIO()
    # litert-torch warns on modules in training mode; exported modules refuse .eval().
    wrapper.training = False
    return wrapper


def _legalize(program: Any) -> tuple[Any, dict[str, Any]]:
    """Run the LiteRT legalization (index_select -> GATHER v1) if this build has it."""
    try:
        from mirror.targets import tflite_ops
    except ImportError as exc:
        return program, {
            "legalized": False,
            "legalize_note": f"targets/tflite_ops.py unavailable ({exc}); index_select is "
            "converted by stock litert-torch (GATHER_ND, refused by the GPU delegate)",
        }
    import torch

    if not isinstance(program, (torch.export.ExportedProgram, torch.fx.GraphModule)):
        return program, {"legalized": False, "legalize_note": "not an exported program"}
    legal = tflite_ops.legalize_for_litert(program)
    info: dict[str, Any] = {"legalized": True}
    if hasattr(tflite_ops, "count_litert_gathers"):
        info["litert_gathers"] = tflite_ops.count_litert_gathers(legal)
    return legal, info


def convert_to_bytes(
    program: Any,
    example_inputs: tuple[Any, ...],
    input_names: list[str],
    output_names: list[str],
    signature_key: str,
) -> bytes:
    """Convert an (already legalized) program to a float32 .tflite flatbuffer."""
    lt = _quiet_litert_torch()
    if len(example_inputs) != len(input_names):
        raise MirrorError(f"{len(example_inputs)} example inputs but {len(input_names)} input names")
    module = _named_module(program, input_names, output_names)
    kwargs = dict(zip(input_names, example_inputs, strict=True))
    edge = lt.signature(signature_key, module, sample_kwargs=kwargs).convert()
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
    """Apply a ``passes.quantization`` recipe to a float .tflite with ai-edge-quantizer."""
    from mirror.passes.quantization import get_recipe

    recipe = get_recipe(recipe_name)
    if recipe.name == _NO_QUANT:
        return float_model
    import contextlib
    import io

    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(bytearray(float_model))
    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    if recipe.name == "fp16":
        q.add_weight_only_config(regex=".*", operation_name=ops, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif recipe.name == "int8-weight":
        q.add_weight_only_config(
            regex=".*",
            operation_name=ops,
            num_bits=8,
            granularity=qtyping.QuantGranularity.CHANNELWISE,
            algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT,
        )
    elif recipe.name == "int8-full":
        q.add_static_config(
            regex=".*",
            operation_name=ops,
            activation_num_bits=8,
            weight_num_bits=8,
            weight_granularity=qtyping.QuantGranularity.CHANNELWISE,
            algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT,
        )
    else:  # a recipe added to passes.quantization without a LiteRT realization
        raise MirrorError(f"the LiteRT target has no realization of recipe {recipe.name!r}")
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


def _as_numpy_samples(calibration: list[tuple[Any, ...]]) -> list[tuple[np.ndarray, ...]]:
    def conv(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        return np.asarray(x, np.float32)

    return [tuple(conv(x) for x in s) for s in calibration]


class TFLiteEmitter:
    """Writes LiteRT flatbuffers; see the module docstring."""

    target = "tflite"
    precisions = ("fp32", "fp16", "int8", "int8-weight", "int8-full")

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
        self._float_cache: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any], bytes]] = {}

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
        from mirror.passes.quantization import calibration_set, get_recipe
        from mirror.targets.gpu_delegate import read_tflite

        recipe = get_recipe(precision)
        key = self.signature_key or graph
        final = Path(out_dir) / f"{graph}_{precision}.tflite"
        t0 = time.perf_counter()
        cache_key = (id(program), graph, key, tuple(input_names), tuple(output_names))
        cached = self._float_cache.get(cache_key)
        if cached is not None and cached[0] is program:
            _, legal, legal_info, float_model = cached
        else:
            legal, legal_info = _legalize(program)
            float_model = convert_to_bytes(legal, tuple(example_inputs), input_names, output_names, key)
            # Keep `program` referenced so its id is not reused while cached.
            self._float_cache = {cache_key: (program, legal, legal_info, float_model)}
        t_convert = time.perf_counter() - t0

        calib_info: dict[str, Any] = {}
        samples = None
        if recipe.needs_calibration:
            if calibration:
                samples = _as_numpy_samples(calibration)
                calib_info = {"calibration": "given", "calibration_samples": len(samples)}
            else:
                samples = calibration_set(
                    example_inputs,
                    n=self.calibration_samples,
                    seed=self.calibration_seed,
                    input_names=input_names,
                )
                calib_info = {
                    "calibration": f"synthetic (value ranges from input names, seed {self.calibration_seed})",
                    "calibration_samples": len(samples),
                }
        t1 = time.perf_counter()
        model = quantize_bytes(float_model, recipe.name, key, input_names, samples)
        t_quant = time.perf_counter() - t1

        deterministic = None
        if self.check_determinism:
            again = convert_to_bytes(legal, tuple(example_inputs), input_names, output_names, key)
            same_float = again == float_model
            same_quant = True
            if recipe.name != _NO_QUANT:
                same_quant = quantize_bytes(again, recipe.name, key, input_names, samples) == model
            deterministic = bool(same_float and same_quant)

        with atomic_path(final) as tmp:
            tmp.write_bytes(model)

        fb = read_tflite(final)
        info: dict[str, Any] = {
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
            "fp32_size_bytes": len(float_model),
            "size_ratio_vs_fp32": round(size_of(final) / len(float_model), 4),
            "deterministic": deterministic,
            "convert_s": round(t_convert, 2),
            "quantize_s": round(t_quant, 2),
            **legal_info,
            **calib_info,
        }
        return describe_artifact(self.target, graph, precision, final, input_names, output_names, info)

    def runners(self, artifact: Artifact, gpu: bool | None = None) -> list[Any]:
        """The CPU runner, plus the GPU runner where a Vulkan driver is found (``gpu=None``)."""
        from mirror.targets.litert_env import find_vulkan_driver

        out: list[Any] = [LiteRTRunner(artifact.path, "cpu")]
        if gpu is None:
            gpu = find_vulkan_driver().found
        if gpu:
            out.append(LiteRTRunner(artifact.path, "gpu"))
        return out


class LiteRTRunner:
    """Runs a .tflite file on float32 NCHW numpy inputs, keyed by signature input names.

    Quantized (int8) inputs and outputs are quantized/dequantized with the tensors' own
    scales, so callers always see float32. Outputs come back in the signature's order.
    """

    def __init__(
        self,
        path: Path | str,
        accelerator: str = "cpu",
        *,
        signature: str | None = None,
        num_threads: int = 2,
        enforce_f32: bool = False,
    ) -> None:
        from mirror.targets.gpu_delegate import read_tflite

        if accelerator not in ("cpu", "gpu"):
            raise MirrorError(f"accelerator must be 'cpu' or 'gpu', not {accelerator!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise MirrorError(f"no such LiteRT model: {self.path}")
        self.accelerator = accelerator
        self.name = f"litert-{accelerator}"
        self.num_threads = num_threads
        self.enforce_f32 = enforce_f32
        fb = read_tflite(self.path, signature)
        if fb.signature_key is None:
            raise MirrorError(f"{self.path} has no signature; convert it with a signature key")
        self.signature = fb.signature_key
        self.input_names = [n for n, _ in fb.signature_inputs]
        self.output_names = [n for n, _ in fb.signature_outputs]
        self._in = {n: fb.tensors[i] for n, i in fb.signature_inputs}
        self._out = {n: fb.tensors[i] for n, i in fb.signature_outputs}
        self._runner: Any = None
        self.last_run: dict[str, Any] = {}
        self.last_child: Any = None

    # -- quantized boundaries
    @staticmethod
    def _np_dtype(dtype: str) -> Any:
        return {
            "FLOAT32": np.float32,
            "INT8": np.int8,
            "UINT8": np.uint8,
            "INT32": np.int32,
            "FLOAT16": np.float16,
            "INT16": np.int16,
            "BOOL": np.bool_,
        }.get(dtype, np.float32)

    def _encode(self, name: str, x: np.ndarray) -> np.ndarray:
        t = self._in[name]
        dt = self._np_dtype(t.dtype)
        if t.dtype in ("INT8", "UINT8", "INT16") and t.scale:
            info = np.iinfo(dt)
            zp = t.zero_point[0] if t.zero_point else 0
            q = np.round(np.asarray(x, np.float32) / t.scale[0]) + zp
            return np.clip(q, info.min, info.max).astype(dt)
        return np.ascontiguousarray(x, dtype=dt)

    def _decode(self, name: str, y: np.ndarray) -> np.ndarray:
        t = self._out[name]
        if t.dtype in ("INT8", "UINT8", "INT16") and t.scale:
            zp = t.zero_point[0] if t.zero_point else 0
            return ((y.astype(np.float32) - zp) * t.scale[0]).astype(np.float32)
        return np.asarray(y, np.float32) if t.dtype in ("FLOAT32", "FLOAT16") else np.asarray(y)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise MirrorError(
                f"{self.path.name}: missing input(s) {', '.join(missing)}; the signature "
                f"{self.signature!r} takes {', '.join(self.input_names)}"
            )
        feeds = {n: self._encode(n, inputs[n]) for n in self.input_names}
        if self.accelerator == "cpu":
            raw = self._run_cpu(feeds)
        else:
            raw = self._run_gpu(feeds)
        return {n: self._decode(n, raw[n]) for n in self.output_names}

    def _run_cpu(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runner is None:
            from ai_edge_litert.interpreter import Interpreter

            interp = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
            self._runner = interp.get_signature_runner(self.signature)
        out = self._runner(**feeds)
        self.last_run = {"accelerator": "cpu"}
        return {n: np.array(v) for n, v in out.items()}

    def _run_gpu(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mirror.targets.litert_env import find_vulkan_driver, run_litert_child

        driver = find_vulkan_driver()
        if not driver.found:
            raise LiteRTRunError(f"cannot run {self.name}: {driver.reason}")
        child = run_litert_child(
            self.path,
            accelerator="gpu",
            inputs=feeds,
            signature=self.signature,
            enforce_f32=self.enforce_f32,
            driver=driver,
        )
        self.last_child = child  # verify_gpu_delegate(child=...) reads the delegate's log from it
        self.last_run = {
            "accelerator": "gpu",
            "driver": driver.describe(),
            "fully_accelerated": child.result.get("fully_accelerated"),
            "ok": child.ok,
            "error": child.error,
        }
        if not child.ok:
            raise LiteRTRunError(f"{self.name} on {self.path.name}: {child.error}", child)
        return child.outputs


def convert_stock(module: Any, example_inputs: tuple[Any, ...], path: Path | str) -> Path:
    """Plain litert-torch conversion of an eager module: no MIRROR passes, no legalization.

    This is the baseline the compile report sets beside MIRROR's own artifacts.
    """
    lt = _quiet_litert_torch()
    edge = lt.convert(module.eval(), tuple(example_inputs))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(edge.model_content()))
    return path
