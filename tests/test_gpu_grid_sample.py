"""gpu_grid_sample: parity with F.grid_sample, the pass on exported programs, float16
exactness of the index arithmetic, LiteRT GPU legality and the real GPU delegate."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import MirrorError
from mirror.passes import sampling
from mirror.passes.base import get_pass
from mirror.passes.registry import PIPELINES, lowering_passes

COMBOS = list(itertools.product(["bilinear", "nearest"], ["zeros", "border"], [False, True]))
GRID_OPS = {"grid_sampler", "grid_sampler_2d"}


def _op_names(program) -> list[str]:
    return [
        getattr(n.target, "__name__", str(n.target)).split(".")[0]
        for n in program.graph.nodes
        if n.op == "call_function"
    ]


def _random_grid(gen, n, ho, wo, spread):
    g = (torch.rand(n, ho, wo, 2, generator=gen) * 2 - 1) * spread
    flat = g.view(-1)
    # Far outside the image, exactly on the border, and on pixel centres / half-way points.
    k = flat.numel()
    picks = torch.randint(0, k, (min(k, 6),), generator=gen)
    flat[picks] = torch.tensor([1e4, -1e4, 1.0, -1.0, 0.0, 3.5])[: len(picks)]
    return g


# ----------------------------------------------------------------------------- parity


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 11),
    w=st.integers(1, 11),
    ho=st.integers(1, 6),
    wo=st.integers(1, 6),
    spread=st.sampled_from([0.5, 1.0, 1.5, 4.0, 1e3]),
    quantize=st.booleans(),
)
def test_decomposition_matches_grid_sample(seed, n, c, h, w, ho, wo, spread, quantize):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    grid = _random_grid(gen, n, ho, wo, spread)
    if quantize:  # many exact ties between pixels (nearest rounds half to even)
        grid = torch.round(grid * 2 * max(h, w)) / (2 * max(h, w))
    for lowering in sampling.LOWERINGS:
        for mode, padding, align in COMBOS:
            want = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align)
            got = sampling.grid_sample_decomposed(x, grid, mode, padding, align, lowering)
            assert got.shape == want.shape
            err = float((got - want).abs().max())
            assert err <= 1e-5, (lowering, mode, padding, align, err)


def test_non_finite_grid_values_never_index_out_of_range():
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    nan, inf = float("nan"), float("inf")
    grid = torch.tensor([[[[inf, 0.3], [-inf, 0.1], [0.2, nan], [nan, nan]]]])
    for lowering in sampling.LOWERINGS:
        for mode, align in itertools.product(["bilinear", "nearest"], [False, True]):
            zeros = sampling.grid_sample_decomposed(x, grid, mode, "zeros", align, lowering)
            assert torch.equal(zeros, torch.zeros_like(zeros))
            border = sampling.grid_sample_decomposed(x, grid, mode, "border", align, lowering)
            want = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=align)
            assert torch.allclose(border, want, atol=1e-5)  # NaN reads pixel 0, like PyTorch


def test_choose_block_keeps_indices_fp16_exact():
    assert sampling.choose_block(1, 256, 192) == 32
    assert sampling.choose_block(1, 128, 96) == 8
    assert sampling.choose_block(1, 8, 6) == 1
    with pytest.raises(sampling.UnsupportedSampling):
        sampling.choose_block(1, 4000, 8)


def test_large_batch_is_split_into_exact_gathers():
    # float64: at 500 rows float32 coordinates alone differ from PyTorch's FMA kernel
    # by an ulp, which random neighbours turn into ~1e-5.
    x = torch.randn(5, 1, 500, 40, dtype=torch.float64)
    grid = torch.rand(5, 7, 9, 2, dtype=torch.float64) * 2.4 - 1.2
    assert sampling._images_per_gather(5, 500, 40, "bilinear") == 4
    want = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    got = sampling.grid_sample_fp16_exact(x, grid, "bilinear", "border", False)
    assert float((got - want).abs().max()) <= 1e-5


# ----------------------------------------------------------------------------- the pass


class _Sampler(torch.nn.Module):
    """A conv plus every supported grid_sample flavour, like a flow warper would use."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, grid):
        feat = self.conv(x)
        outs = [
            F.grid_sample(feat, grid, mode=m, padding_mode=p, align_corners=a)
            for m, p, a in COMBOS
        ]
        return torch.cat(outs, 1)


def _export(module, args):
    return torch.export.export(module.eval(), args)


def test_pass_rewrites_every_grid_sample():
    args = (torch.randn(1, 3, 20, 14), torch.rand(1, 9, 11, 2) * 3 - 1.5)
    program = _export(_Sampler(), args)
    before = _op_names(program)
    for lowering in sampling.LOWERINGS:
        result = get_pass("gpu_grid_sample")(program, lowering=lowering)
        assert result.changed
        ops = _op_names(result.program)
        assert not GRID_OPS & set(ops)
        assert "alias" not in ops  # Core ML refuses aten.alias
        assert "index_select" in ops
        assert len(result.details["rewritten"]) == len(COMBOS)
        with torch.no_grad():
            want = program.module()(*args)
            got = result.program.module()(*args)
        assert float((got - want).abs().max()) <= 1e-5
    assert _op_names(program) == before  # the input program is untouched


def test_pass_leaves_programs_without_grid_sample_alone():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.ReLU())
    program = _export(module, (torch.randn(1, 3, 8, 8),))
    result = get_pass("gpu_grid_sample")(program)
    assert not result.changed
    assert result.program is program


class _Bicubic(torch.nn.Module):
    def forward(self, x, grid):
        return F.grid_sample(x, grid, mode="bicubic", align_corners=False)


def test_unsupported_calls_are_kept_and_reported():
    args = (torch.randn(1, 2, 6, 5), torch.rand(1, 3, 3, 2))
    program = _export(_Bicubic(), args)
    result = get_pass("gpu_grid_sample")(program)
    assert not result.changed
    assert result.details["skipped"][0]["reason"] == "mode bicubic"
    with pytest.raises(MirrorError, match="bicubic"):
        get_pass("gpu_grid_sample")(program, strict=True)
    with pytest.raises(MirrorError, match="lowering"):
        get_pass("gpu_grid_sample")(program, lowering="resampler")


def test_pass_runs_in_each_backend_pipeline_not_the_shared_one():
    """The shared pipelines only clean up and legalize (no grid_sample lowering there); each
    backend lowers grid_sample its own way, first, or keeps it ("native")."""
    from mirror.targets.coreml import CoreMLEmitter
    from mirror.targets.onnx import ONNXEmitter
    from mirror.targets.tflite import TFLiteEmitter

    shared = ["drop_aliases", "explicit_pool_stride", "affine_grid", "fold_constants", "legalize_rank"]
    assert [n for n, _ in PIPELINES["default"]] == shared
    assert [n for n, _ in PIPELINES["divton-warp"]] == ["strip_correlation", *shared]
    for lowering in sampling.LOWERINGS:
        step = ("gpu_grid_sample", {"lowering": lowering})
        assert list(lowering_passes(lowering)) == [step]
        tfl = TFLiteEmitter().pipeline(lowering)
        names = [n for n, _ in tfl]
        assert tfl[0] == step  # first, so a Core ML pipeline of the same lowering shares it
        assert {"litert::broadcast_as_gather", "litert::split_wide_conv", "legalize_rank"} <= set(names)
        # gather_v1 comes last: it legalizes the index_selects the lowering emits.
        assert names[-1] == "litert::gather_v1"
        assert list(ONNXEmitter().pipeline(lowering)) == [step]
        cml = CoreMLEmitter().pipeline(lowering)
        assert cml[0] == step
        assert [n for n, _ in cml[1:]] == ["resize_as_matmul", "coreml::core_aten", "scatter_as_cat",
                                           "coreml::contiguous_inputs", "coreml::float_clamp_bounds"]
    assert list(lowering_passes("native")) == []
    assert list(ONNXEmitter().pipeline("native")) == []
    assert "gpu_grid_sample" not in [n for n, _ in CoreMLEmitter().pipeline("native")]
    assert "gpu_grid_sample" not in [n for n, _ in TFLiteEmitter().pipeline("native")]


def test_legalize_for_litert_turns_index_select_into_tfl_gather():
    from mirror.passes.litert_gather import count_index_selects, count_litert_gathers, legalize_for_litert

    args = (torch.randn(1, 3, 12, 10), torch.rand(1, 5, 4, 2) * 2 - 1)
    program = get_pass("gpu_grid_sample")(_export(_Sampler(), args)).program
    legal = legalize_for_litert(program)
    assert "index_select" in _op_names(program)  # input untouched
    assert "index_select" not in _op_names(legal)
    assert count_litert_gathers(legal) == len(COMBOS)
    assert count_index_selects(legal) == 0 and count_index_selects(program) == len(COMBOS)
    with torch.no_grad():
        assert torch.equal(legal.module()(*args), program.module()(*args))
    # The same rewrite as the LiteRT backend's registered pass.
    result = get_pass("litert::gather_v1")(program)
    assert result.changed and result.details["litert_gathers"] == len(COMBOS)
    assert count_index_selects(result.program) == 0
    assert "index_select" in _op_names(program)  # input untouched


# ----------------------------------------------------------------------------- float16


def _oracle(x, ix, iy, mode, padding):
    """float64 grid_sample given pixel coordinates (independent of the decomposition)."""
    n, c, h, w = x.shape
    if padding == "border":
        ix, iy = ix.clamp(0, w - 1), iy.clamp(0, h - 1)
    src = x.permute(0, 2, 3, 1)
    batch = torch.arange(n).view(n, 1, 1).expand_as(ix)

    def tap(xi, yi):
        inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)).unsqueeze(-1)
        return src[batch, yi.clamp(0, h - 1), xi.clamp(0, w - 1)] * inside

    if mode == "nearest":
        out = tap(torch.round(ix).long(), torch.round(iy).long())
    else:
        x0, y0 = torch.floor(ix), torch.floor(iy)
        fx, fy = (ix - x0).unsqueeze(-1), (iy - y0).unsqueeze(-1)
        x0, y0 = x0.long(), y0.long()
        out = (
            tap(x0, y0) * (1 - fx) * (1 - fy)
            + tap(x0 + 1, y0) * fx * (1 - fy)
            + tap(x0, y0 + 1) * (1 - fx) * fy
            + tap(x0 + 1, y0 + 1) * fx * fy
        )
    return out.permute(0, 3, 1, 2)


def _ulp16(v: torch.Tensor) -> torch.Tensor:
    """float16 spacing at magnitude v (per channel)."""
    return torch.exp2(torch.floor(torch.log2(v.clamp(min=2.0**-14))) - 10)


@pytest.mark.parametrize("mode,padding,align", COMBOS)
def test_fp16_exact_reads_the_right_pixels_in_float16(mode, padding, align):
    """At DIVTON's full size (256x192) the fp16_exact sampler, run entirely in float16,
    differs from an exact float64 sampler at the same float16 pixel coordinates only by
    value rounding (a few float16 ulps of each channel's range); the flat-index lowering
    reads wrong pixels (errors of many pixels in a coordinate image)."""
    h, w = 256, 192
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # Channels: x coordinate, y coordinate (wrong taps show as pixel errors), noise.
    x = torch.cat([torch.stack([xs, ys]).float()[None], torch.randn(1, 2, h, w)], 1).half()
    grid = (torch.rand(1, h, w, 2) * 2.4 - 1.2).half()
    # The pixel coordinates a float16 GPU computes (same formula as the sampler).
    ix = sampling.unnormalize(grid[..., 0], w, align).double()
    iy = sampling.unnormalize(grid[..., 1], h, align).double()
    want = _oracle(x.double(), ix, iy, mode, padding)
    bound = 4 * _ulp16(x.double().abs().amax(dim=(0, 2, 3))).view(1, -1, 1, 1)

    got = sampling.grid_sample_fp16_exact(x, grid, mode, padding, align)
    assert got.dtype == torch.float16
    err = (got.double() - want).abs()
    assert bool((err <= bound).all()), (err.amax(dim=(0, 2, 3)), bound.flatten())

    flat = sampling.grid_sample_flat(x, grid, mode, padding, align)
    flat_err = (flat.double() - want).abs().amax(dim=(0, 2, 3))
    assert float(flat_err[:2].max()) >= 8  # wrong taps, many pixels away


# ----------------------------------------------------------------------------- LiteRT


def run_litert(path: Path, inputs: list[np.ndarray], accel: str):
    """Run a stock-converted .tflite (inputs args_0, args_1, ...) in a child process."""
    from mirror.runners.litert import run_litert_once

    return run_litert_once(path, accelerator=accel, inputs={f"args_{i}": a for i, a in enumerate(inputs)})


class _Warp(torch.nn.Module):
    """conv -> flow -> grid_sample in three flavours, the shape of DIVTON's warping."""

    def __init__(self):
        super().__init__()
        self.feat = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.flow = torch.nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, img, grid):
        f = self.feat(img)
        g = grid + 0.1 * torch.tanh(self.flow(f)).permute(0, 2, 3, 1)
        a = F.grid_sample(f, g, mode="bilinear", padding_mode="border", align_corners=False)
        b = F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        c = F.grid_sample(img, g, mode="nearest", padding_mode="zeros", align_corners=False)
        return torch.cat([a, b, c], 1)


@pytest.fixture(scope="module")
def litert_model(tmp_path_factory):
    pytest.importorskip("litert_torch")
    import litert_torch

    from mirror.passes.litert_gather import legalize_for_litert

    torch.manual_seed(0)
    args = (torch.randn(1, 3, 48, 40), torch.rand(1, 48, 40, 2) * 2.6 - 1.3)
    program = _export(_Warp(), args)
    lowered = get_pass("gpu_grid_sample")(program).program
    legal = legalize_for_litert(lowered)
    path = tmp_path_factory.mktemp("litert") / "warp.tflite"
    litert_torch.convert(legal.module(), args).export(str(path))
    with torch.no_grad():
        want = program.module()(*args).numpy()
    return path, [a.numpy() for a in args], want


@pytest.mark.slow
def test_litert_model_is_gpu_legal(litert_model):
    from mirror.runners.tflite_file import read_tflite
    from mirror.targets.gpu_delegate import check_static

    path, inputs, want = litert_model
    graph = read_tflite(path)
    kinds = {op.name for op in graph.ops}
    assert "GATHER" in kinds and "GATHER_ND" not in kinds
    consumers_of_int32 = {"CAST", "GATHER", "ONE_HOT"}
    for op in graph.ops:
        tensors = [graph.tensors[i] for i in op.inputs + op.outputs if i >= 0]
        assert all(len(t.shape) < 5 for t in tensors), op
        if op.name == "GATHER":
            idx = graph.tensors[op.inputs[1]]
            assert op.version == 1 and idx.dtype == "INT32" and len(idx.shape) == 1
        if op.name not in consumers_of_int32:
            assert not any(graph.tensors[i].dtype == "INT32" and not graph.tensors[i].constant
                           for i in op.inputs if i >= 0), op
    verdict = check_static(path, profile="classic")
    assert verdict["fully_accelerated"], verdict["unsupported"]

    cpu = run_litert(path, inputs, "cpu")
    assert cpu.ok, cpu.log[-2000:]
    assert float(np.abs(next(iter(cpu.outputs.values())) - want).max()) <= 1e-4


@pytest.mark.slow
@pytest.mark.gpu_delegate
def test_real_gpu_delegate_runs_everything(litert_model):
    from mirror.runners.vulkan import find_vulkan_driver

    driver = find_vulkan_driver()
    if not driver.found:
        pytest.skip(f"LiteRT's GPU delegate needs a Vulkan driver: {driver.reason}")
    path, inputs, _ = litert_model
    gpu = run_litert(path, inputs, "gpu")
    cpu = run_litert(path, inputs, "cpu")
    assert gpu.ok, gpu.log[-3000:]
    assert "not supported by GPU delegate" not in gpu.log, gpu.log[-3000:]
    assert gpu.result["fully_accelerated"], gpu.log[-3000:]
    gpu_out, cpu_out = next(iter(gpu.outputs.values())), next(iter(cpu.outputs.values()))
    assert float(np.abs(gpu_out - cpu_out).max()) <= 1e-4
