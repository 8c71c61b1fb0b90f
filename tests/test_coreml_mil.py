"""The ``coreml-mil`` runner: a saved ``.mlpackage`` executed in numpy on Linux.

Kernels against PyTorch (conv, resample, upsampling, pooling), compressed-weight kernels
against coremltools' own decompression, fp16 index arithmetic computed in fp16 as a device
does, the saved package (not the in-memory model) being what runs, a clear error for an op
without a kernel, no torch needed, and end to end: ``mirror compile`` reports ``coreml-mil``
parity for a user model (both samplers) and for the generator at a small size.

Tolerances: fp32 packages max abs <= 1e-3 and mean abs <= 1e-5, fp16 PSNR >= 40 dB (the
recipes' bounds, ``mirror/precisions.py``); kernels against PyTorch 1e-4 (float reordering).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirror.runners.base import RunnerError
from mirror.runners.coreml_mil import CoreMLMilRunner
from mirror.runners.mil_ops import KERNELS, OpCall

ct = pytest.importorskip("coremltools")

TESTS = Path(__file__).resolve().parent
KERNEL_TOL = 1e-4


def call(op_type: str, out_shape=None, **inputs) -> np.ndarray:
    """One kernel on numpy inputs (strings and numbers as the package would hold them)."""
    args = {k: (v if isinstance(v, (tuple, np.ndarray)) else np.asarray(v)) for k, v in inputs.items()}
    return KERNELS[op_type](OpCall(op_type, "test", args, [None], [out_shape]))


def rand(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Kernels against PyTorch


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,groups,size",
    [
        (3, 8, 3, 1, 1, 1, 1, (17, 13)),  # the common 3x3
        (8, 16, 3, 2, 1, 1, 1, (16, 12)),  # stride-2 downsampling (im2col path)
        (6, 4, 1, 1, 0, 1, 1, (9, 7)),  # 1x1
        (8, 8, 3, 1, 2, 2, 1, (12, 10)),  # dilated
        (8, 12, 3, 1, 1, 1, 4, (10, 9)),  # grouped
        (8, 8, 3, 2, 1, 1, 8, (11, 9)),  # depthwise, strided
        (4, 5, (3, 5), (2, 1), (0, 2), 1, 1, (12, 11)),  # rectangular, asymmetric
    ],
)
def test_conv_matches_torch(cin, cout, k, stride, pad, dil, groups, size):
    k2 = k if isinstance(k, tuple) else (k, k)
    s2 = stride if isinstance(stride, tuple) else (stride, stride)
    p2 = pad if isinstance(pad, tuple) else (pad, pad)
    x, w, b = rand(2, cin, *size), rand(cout, cin // groups, *k2, seed=1), rand(cout, seed=2)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), s2, p2, dil, groups).numpy()
    got = call("conv", x=x, weight=w, bias=b, strides=np.asarray(s2), pad_type="custom",
               pad=np.asarray([p2[0], p2[0], p2[1], p2[1]]), dilations=np.asarray([dil, dil]), groups=groups)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < KERNEL_TOL


def test_conv_same_padding_and_1d():
    x, w = rand(1, 4, 10, 7), rand(6, 4, 3, 3, seed=1)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same").numpy()
    assert np.abs(call("conv", x=x, weight=w, pad_type="same") - want).max() < KERNEL_TOL
    x1, w1 = rand(2, 3, 20), rand(5, 3, 4, seed=1)
    want1 = F.conv1d(torch.from_numpy(x1), torch.from_numpy(w1), stride=2, padding=1).numpy()
    got1 = call("conv", x=x1, weight=w1, strides=np.asarray([2]), pad_type="custom", pad=np.asarray([1, 1]))
    assert np.abs(got1 - want1).max() < KERNEL_TOL


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
def test_resample_matches_grid_sample(mode, padding, align):
    x = rand(2, 3, 9, 7)
    grid = rand(2, 5, 6, 2, seed=1) * 1.3  # some points outside the image
    want = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode, padding_mode=padding,
                         align_corners=align).numpy()  # fmt: skip
    # coremltools maps torch's reflection to MIL "reflection" (about the edge pixels' centres)
    # with align_corners=True and to "symmetric" (about the image's edges) without it.
    mil_padding = {"zeros": "constant", "border": "border"}.get(padding) or ("reflection" if align else "symmetric")
    got = call("resample", x=x, coordinates=grid, sampling_mode=mode, padding_mode=mil_padding,
               padding_value=np.float32(0), coordinates_mode="normalized_minus_one_to_one", align_corners=align)
    assert np.abs(got - want).max() < KERNEL_TOL


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("size", [(16, 12), (31, 40)])  # x2, and a resize to any size (the parser's)
def test_upsample_bilinear_matches_interpolate(align, size):
    x = rand(1, 3, 8, 6)
    want = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=align).numpy()
    got = call("upsample_bilinear", out_shape=(1, 3, *size), x=x, scale_factor_height=size[0] / 8,
               scale_factor_width=size[1] / 6, align_corners=align)
    assert np.abs(got - want).max() < KERNEL_TOL
    want_nn = F.interpolate(torch.from_numpy(x), scale_factor=2, mode="nearest").numpy()
    assert np.array_equal(call("upsample_nearest_neighbor", x=x, scale_factor_height=2.0, scale_factor_width=2.0),
                          want_nn)  # fmt: skip


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pools_match_torch(ceil_mode):
    x = torch.from_numpy(rand(1, 2, 11, 8))
    want = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=ceil_mode).numpy()
    got = call("max_pool", out_shape=want.shape, x=x.numpy(), kernel_sizes=np.asarray([3, 3]),
               strides=np.asarray([2, 2]), pad_type="custom", pad=np.asarray([1, 1, 1, 1]), ceil_mode=ceil_mode)
    assert np.abs(got - want).max() == 0
    for include in (True, False):
        want = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=ceil_mode, count_include_pad=include).numpy()
        got = call("avg_pool", out_shape=want.shape, x=x.numpy(), kernel_sizes=np.asarray([3, 3]),
                   strides=np.asarray([2, 2]), pad_type="custom", pad=np.asarray([1, 1, 1, 1]),
                   ceil_mode=ceil_mode, exclude_padding_from_average=not include)  # fmt: skip
        assert np.abs(got - want).max() < KERNEL_TOL, include


def test_slice_by_index_masks():
    x = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    got = call("slice_by_index", x=x, begin=np.asarray([1, 0, -1]), end=np.asarray([3, 5, 0]),
               stride=np.asarray([1, 2, 1]), begin_mask=np.asarray([False, True, False]),
               end_mask=np.asarray([False, True, False]), squeeze_mask=np.asarray([False, False, True]))
    assert np.array_equal(got, x[1:3, ::2, -1])


def test_gather_out_of_range_is_an_error_not_a_read():
    from mirror.runners.mil_ops import KernelError

    with pytest.raises(KernelError, match="out of range"):
        call("gather", x=np.arange(10.0), indices=np.asarray([3, 10]), axis=0)


# ---------------------------------------------------------------------------------------
# Kernels against coremltools' own value inference (pymil computes these ops on constants)

_X = np.random.default_rng(0).uniform(-2, 2, (2, 8, 4, 6)).astype(np.float32)
_P = np.random.default_rng(1).uniform(0.1, 2, (2, 8, 4, 6)).astype(np.float32)
_I = np.random.default_rng(2).integers(0, 4, (2, 3)).astype(np.int32)
_J = np.random.default_rng(3).integers(0, 8, (2, 3, 4, 6)).astype(np.int32)
VALUE_CASES = {
    **{op: {"x": _X} for op in ("abs", "atan", "ceil", "floor", "round", "sign", "cos", "cosh", "sin", "sinh", "tanh",
                                "exp", "exp2", "square", "erf", "relu", "softsign", "softplus", "gelu")},
    **{op: {"x": _X / 3} for op in ("acos", "asin", "atanh", "tan")},
    **{op: {"x": _P} for op in ("sqrt", "log", "rsqrt", "inverse")},
    "relu6": {"x": _X * 4}, "sigmoid": {"x": _X * 4}, "leaky_relu": {"x": _X, "alpha": 0.1},
    "elu": {"x": _X, "alpha": 0.7}, "clamped_relu": {"x": _X, "alpha": 0.2, "beta": 1.5},
    "thresholded_relu": {"x": _X, "alpha": 0.5}, "threshold": {"x": _X, "alpha": 0.3},
    "scaled_tanh": {"x": _X, "alpha": 1.5, "beta": 0.7}, "linear_activation": {"x": _X, "alpha": 1.5, "beta": 0.7},
    "sigmoid_hard": {"x": _X, "alpha": 0.2, "beta": 0.5}, "clip": {"x": _X, "alpha": -0.5, "beta": 0.7},
    **{op: {"x": _X, "y": _P} for op in ("add", "sub", "mul", "real_div", "floor_div", "mod", "maximum", "minimum")},
    "pow": {"x": _P, "y": _X}, "greater": {"x": _X, "y": _P - 1}, "less_equal": {"x": _X, "y": _P - 1},
    "reduce_sum": {"x": _X, "axes": [1, 3], "keep_dims": True}, "reduce_mean": {"x": _X, "axes": [-1]},
    "reduce_max": {"x": _X, "axes": [2]}, "reduce_prod": {"x": _P, "axes": [1]},
    **{op: {"x": _X, "axes": [1]} for op in ("reduce_l2_norm", "reduce_l1_norm", "reduce_log_sum_exp",
                                             "reduce_sum_square")},
    "reduce_log_sum": {"x": _P, "axes": [1]}, "reduce_argmax": {"x": _X, "axis": 1},
    "reduce_argmin": {"x": _X, "axis": -1, "keep_dims": True}, "softmax": {"x": _X, "axis": 1},
    "transpose": {"x": _X, "perm": [0, 2, 3, 1]}, "expand_dims": {"x": _X, "axes": [0, -1]},
    "squeeze": {"x": _X[:, :1], "axes": [1]}, "tile": {"x": _X, "reps": [1, 2, 1, 3]},
    "split": {"x": _X, "split_sizes": [3, 5], "axis": 1}, "stack": {"values": (_X, _P), "axis": 1},
    "pad": {"x": _X, "pad": np.array([1, 2, 2, 1], np.int32), "mode": "reflect"},
    "band_part": {"x": _X, "lower": 1, "upper": 0}, "argsort": {"x": _X, "axis": 1},
    "gather": {"x": _X, "indices": _I, "axis": 1}, "gather_along_axis": {"x": _X, "indices": _J, "axis": 1},
    "reverse": {"x": _X, "axes": [1, 3]}, "slice_by_size": {"x": _X, "begin": [0, 1, 1, 0], "size": [-1, 3, 2, -1]},
    "range_1d": {"start": 1.0, "end": 7.0, "step": 1.5}, "fill": {"shape": np.array([2, 3], np.int32), "value": 2.5},
    "flatten2d": {"x": _X, "axis": 2}, "matmul": {"x": _X, "y": _P.transpose(0, 1, 3, 2)}, "l2_norm": {"x": _X},
    "layer_norm": {"x": _X, "axes": [2, 3]}, "select": {"cond": _X > 0, "a": _X, "b": _P},
    "logical_not": {"x": _X > 0}, "cast": {"x": _X * 3, "dtype": "int32"},
}  # fmt: skip


@pytest.mark.parametrize("op_type", sorted(VALUE_CASES))
def test_kernel_matches_coremltools_value_inference(op_type):
    from coremltools.converters.mil import Builder as mb

    kwargs = VALUE_CASES[op_type]
    got: dict = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=ct.target.iOS16)
    def prog(x):
        copies = {k: ([np.copy(a) for a in v] if isinstance(v, tuple) else np.copy(v) if isinstance(v, np.ndarray)
                      else v) for k, v in kwargs.items()}  # fmt: skip
        out = getattr(mb, op_type)(**copies)
        got["want"] = [o.val for o in out] if isinstance(out, (list, tuple)) else [out.val]
        return x

    args = {k: (tuple(np.asarray(a) for a in v) if isinstance(v, tuple) else np.asarray(v)) for k, v in kwargs.items()}
    result = KERNELS[op_type](OpCall(op_type, "test", args, [None], [None]))
    result = list(result) if isinstance(result, (tuple, list)) else [result]
    assert len(result) == len(got["want"])
    for r, w in zip(result, got["want"], strict=True):
        assert w is not None
        assert np.shape(r) == np.shape(w)
        assert np.allclose(np.asarray(r, np.float64), np.asarray(w, np.float64), rtol=1e-5, atol=1e-5)


def test_kernels_pymil_cannot_evaluate_match_torch():
    x = rand(2, 8, 4, 6)
    t = torch.from_numpy(x)
    assert np.array_equal(call("pixel_shuffle", x=x, upscale_factor=2), F.pixel_shuffle(t, 2).numpy())
    assert np.array_equal(call("pixel_unshuffle", x=x, downscale_factor=2), F.pixel_unshuffle(t, 2).numpy())
    assert np.array_equal(call("depth_to_space", x=call("space_to_depth", x=x, block_size=2), block_size=2), x)
    assert np.abs(call("instance_norm", x=x, epsilon=1e-5) - F.instance_norm(t).numpy()).max() < KERNEL_TOL
    assert np.abs(call("silu", x=x) - F.silu(t).numpy()).max() < KERNEL_TOL
    idx = np.asarray([[0, 3], [2, 1]])
    one_hot = call("one_hot", indices=idx, one_hot_vector_size=4, axis=-1)
    assert np.array_equal(one_hot, F.one_hot(torch.from_numpy(idx), 4))
    nd = np.asarray([[1, 2], [0, 7]])
    assert np.array_equal(call("gather_nd", x=x, indices=nd), x[nd[:, 0], nd[:, 1]])
    assert np.allclose(call("cumsum", x=x, axis=1, exclusive=True), np.cumsum(x, axis=1) - x, atol=1e-6)


def test_concat_interleave_as_documented():
    # MIL's documentation: output[0::2] = in1, output[1::2] = in2 (pymil's value inference
    # ignores interleave, so it is not the reference here).
    a, b = np.arange(6).reshape(3, 2), np.arange(6, 12).reshape(3, 2)
    got = call("concat", values=(a, b), axis=0, interleave=True)
    assert np.array_equal(got[0::2], a) and np.array_equal(got[1::2], b)


# ---------------------------------------------------------------------------------------
# Compressed weights: as coremltools itself expands them


def test_constexpr_kernels_match_coremltools():
    from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as cx
    from coremltools.optimize import _utils as opt

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 127, (8, 3, 3, 3), dtype=np.int8)
    scale, zero = rng.uniform(0.01, 0.1, 8).astype(np.float16), rng.integers(-3, 3, 8).astype(np.int8)
    want = cx.constexpr_affine_dequantize.decompress(q, zero, scale, 0)
    got = call("constexpr_affine_dequantize", quantized_data=q, zero_point=zero, scale=scale, axis=0)
    assert got.dtype == want.dtype and np.array_equal(got, want)

    lut = rng.uniform(-1, 1, 64).astype(np.float16)
    idx = rng.integers(0, 64, 8 * 27).astype(np.uint8)
    packed = opt.pack_elements_into_bits(idx, 6)
    want = cx.constexpr_lut_to_dense.decompress(lut, packed, np.asarray([8, 3, 3, 3]))
    got = call("constexpr_lut_to_dense", lut=lut, indices=packed, shape=np.asarray([8, 3, 3, 3], np.uint32))
    assert np.array_equal(got, want)


# ---------------------------------------------------------------------------------------
# Packages saved by coremltools


def _save(prog, path: Path, precision) -> Path:
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=precision, skip_model_load=True)  # fmt: skip
    model.save(str(path))
    return path


H, W = 64, 48  # linear indices reach 3071: not exact in fp16 (integers are exact up to 2048)


def _index_program():
    """``image.flat[y * W + x]``: a decomposed sampler's gather, index arithmetic included."""
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(H * W,)), mb.TensorSpec(shape=(40,)), mb.TensorSpec(shape=(40,))],
                opset_version=ct.target.iOS16)  # fmt: skip
    def prog(image, y, x):
        lin = mb.add(x=mb.mul(x=y, y=np.float32(W)), y=x)
        return mb.gather(x=image, indices=mb.cast(x=lin, dtype="int32"), axis=0, name="picked")

    return prog


@pytest.fixture(scope="module")
def index_packages(tmp_path_factory):
    out = tmp_path_factory.mktemp("mil")
    precisions = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}
    return {p: _save(_index_program(), out / f"index_{p}.mlpackage", c) for p, c in precisions.items()}


def test_fp16_index_arithmetic_reads_the_pixels_a_device_reads(index_packages):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, H * W).astype(np.float32)
    y = rng.integers(43, H, 40).astype(np.float32)  # rows whose linear index is above 2048
    x = rng.integers(0, W, 40).astype(np.float32)
    feeds = {"image": image, "y": y, "x": x}
    exact = image[(y * W + x).astype(int)]
    # fp32: the right pixels.
    assert np.array_equal(CoreMLMilRunner(index_packages["fp32"]).run(feeds)["picked"], exact)
    # fp16: every op rounds to fp16, as on the GPU or the Neural Engine.
    got = CoreMLMilRunner(index_packages["fp16"]).run(feeds)["picked"]
    h = np.float16
    lin16 = (h(y) * h(W)).astype(h) + h(x)  # numpy fp16: one rounding per op
    assert np.array_equal(got, image.astype(h)[lin16.astype(np.int32)].astype(np.float32))
    wrong = got != exact.astype(h).astype(np.float32)
    assert wrong.sum() >= 10  # odd indices above 2048 land on a neighbour


def test_an_op_without_a_kernel_names_its_type(index_packages, monkeypatch):
    monkeypatch.delitem(KERNELS, "gather")
    runner = CoreMLMilRunner(index_packages["fp32"])
    with pytest.raises(RunnerError, match=r"MIL op gather has no numpy kernel in coreml-mil"):
        runner.run({"image": np.zeros(H * W, np.float32), "y": np.zeros(40, np.float32),
                    "x": np.zeros(40, np.float32)})  # fmt: skip


def test_runner_protocol_and_errors(index_packages, tmp_path):
    runner = CoreMLMilRunner(index_packages["fp32"])
    assert runner.name == "coreml-mil" and runner.accelerator == "cpu"
    assert runner.availability() == (True, "")
    with pytest.raises(RunnerError, match="missing input"):
        runner.run({"image": np.zeros(H * W, np.float32)})
    with pytest.raises(RunnerError, match=r"input y is \[3\], the package takes \[40\]"):
        runner.run({"image": np.zeros(H * W, np.float32), "y": np.zeros(3, np.float32), "x": np.zeros(40, np.float32)})
    assert runner.diagnostics()["op_types"] == {"add": 1, "cast": 1, "gather": 1, "mul": 1}
    with pytest.raises(RunnerError, match="not an .mlpackage"):
        CoreMLMilRunner(tmp_path).run({})
    with pytest.raises(RunnerError, match="no such package"):
        CoreMLMilRunner(tmp_path / "missing.mlpackage").run({})


class TwoConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.b = torch.nn.Conv2d(64, 3, 3, padding=1)

    def forward(self, image):
        return torch.tanh(self.b(torch.relu(self.a(image))))


@pytest.fixture(scope="module")
def conv_package(tmp_path_factory):
    torch.manual_seed(0)
    model = TwoConvs().eval()
    example = (torch.rand(1, 3, 16, 12) * 2 - 1,)
    program = torch.export.export(model, example).run_decompositions({})
    mlmodel = ct.convert(program, inputs=[ct.TensorType(name="image", shape=(1, 3, 16, 12))],
                         outputs=[ct.TensorType(name="out")], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32,
                         skip_model_load=True)  # fmt: skip
    path = tmp_path_factory.mktemp("conv") / "two_convs.mlpackage"
    mlmodel.save(str(path))
    return model, example, path


@pytest.mark.slow
def test_the_saved_weights_are_what_runs(conv_package, tmp_path):
    """Weights come from the package's blob on disk: changing them there changes the output."""
    import shutil

    model, example, path = conv_package
    feeds = {"image": example[0].numpy()}
    got = CoreMLMilRunner(path).run(feeds)["out"]
    with torch.no_grad():
        want = model(*example).numpy()
    assert np.abs(got - want).max() < 1e-5
    copy = tmp_path / "edited.mlpackage"
    shutil.copytree(path, copy)
    blob = next(copy.rglob("weight.bin"))
    data = bytearray(blob.read_bytes())
    data[200:260] = bytes(60)  # zero some weights of the first conv
    blob.write_bytes(bytes(data))
    edited = CoreMLMilRunner(copy).run(feeds)["out"]
    assert np.abs(edited - want).max() > 1e-3


@pytest.mark.slow
def test_runs_without_torch(conv_package, tmp_path):
    """The runner needs no torch: with torch unimportable it gives the same outputs."""
    _, example, path = conv_package
    want = CoreMLMilRunner(path).run({"image": example[0].numpy()})["out"]
    np.save(tmp_path / "image.npy", example[0].numpy())
    script = textwrap.dedent(f"""
        import sys
        for m in ("torch", "torchvision", "torchaudio", "torchao", "executorch"):
            sys.modules[m] = None  # import torch fails from here on
        import numpy as np
        from mirror.runners.coreml_mil import CoreMLMilRunner
        out = CoreMLMilRunner({str(path)!r}).run({{"image": np.load({str(tmp_path / "image.npy")!r})}})["out"]
        np.save({str(tmp_path / "out.npy")!r}, out)
        assert not [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None]
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "out.npy"), want)


# ---------------------------------------------------------------------------------------
# End to end: mirror compile reports coreml-mil parity


def _compile(out: Path, monkeypatch, *args: str, config: str | None = None) -> dict:
    from mirror.compiler import cli

    monkeypatch.syspath_prepend(str(TESTS))
    extra = []
    if config is not None:
        (out.parent / f"{out.name}.toml").write_text(config)
        extra = ["--config", str(out.parent / f"{out.name}.toml")]
    code = cli.main(["compile", "--out", str(out), "--no-baseline", "--targets", "coreml", *extra, *args])
    report = json.loads((out / "report.json").read_text())
    assert code == 0, report["summary"]
    return report


def _check_mil(report: dict, precisions: set[str]) -> dict[str, dict]:
    by = {a["precision"]: a["parity"] for a in report["artifacts"] if a["target"] == "coreml"}
    assert set(by) == precisions
    for precision, parity in by.items():
        assert "coreml" in parity  # Core ML itself: runs on macOS, says why not elsewhere
        mil = parity["coreml-mil"]
        assert mil["passed"], (precision, mil)
        if precision == "fp32":
            assert mil["max_abs"] <= 1e-3 and mil["mean_abs"] <= 1e-5, mil
        else:
            assert mil["psnr_db"] >= (40 if precision == "fp16" else 30), mil
    return by


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["fp16_exact", "native"])
def test_compile_reports_coreml_mil_for_a_user_model(sampling, tmp_path, monkeypatch):
    report = _compile(tmp_path / "b", monkeypatch, "--model", "user_models:flow_warp", "--precisions", "fp32,fp16",
                      config=f'[sampling]\ncoreml = "{sampling}"\n')  # fmt: skip
    _check_mil(report, {"fp32", "fp16"})
    ops = {a["precision"]: a["info"]["ops"] for a in report["artifacts"]}
    assert ("resample" in ops["fp32"]) == (sampling == "native")
    if sampling == "native":  # the resample's coordinates are computed in fp32 in the fp16 package
        fp16 = next(a for a in report["artifacts"] if a["precision"] == "fp16")
        assert fp16["info"]["fp32_ops"], fp16["info"]
    # mirror validate runs it on a lone package too.
    from mirror.compiler import cli

    pkg = tmp_path / "b" / "flowwarp_fp16.mlpackage"
    assert cli.main(["validate", "--artifact", str(pkg), "--model", "user_models:flow_warp",
                     "--precision", "fp16"]) == 0  # fmt: skip
    data = json.loads((tmp_path / "b" / "flowwarp_fp16.mlpackage.validate.json").read_text())
    assert data["artifacts"][0]["parity"]["coreml-mil"]["passed"]


@pytest.mark.slow
def test_compile_reports_coreml_mil_for_the_generator(tmp_path, monkeypatch):
    report = _compile(tmp_path / "g", monkeypatch, "--graphs", "gen", "--precisions", "fp32,fp16,int8",
                      config="[graph.gen]\nsize = [64, 64]\n")  # fmt: skip
    _check_mil(report, {"fp32", "fp16", "int8"})
