"""Image ops of other projects' models, for LiteRT's GPU delegate (and Core ML): replicate
padding, adaptive average and max pools, bicubic, antialiased and nearest-exact resizes,
and unfold. Each pass rewrites its op exactly or to float rounding, and models using them
then run whole on the real delegate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mirror.passes.base import get_pass

aten = torch.ops.aten


class _Pads(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (F.pad(x, (2, 0, 1, 3), mode="replicate"), F.pad(x[0], (3, 1), mode="replicate"),
                F.pad(x[0, 0], (1, 1), mode="replicate"))  # fmt: skip


def test_replicate_padding_becomes_copied_edges():
    """Asymmetric pads on 4-D and 3-D tensors: no pad left, bit-identical outputs; a 2-D
    tensor (the delegate slices 3-D and 4-D only) keeps its pad, named under "left"."""
    x = torch.randn(1, 3, 5, 4)
    result = get_pass("litert::replicate_pad_as_cat")(torch.export.export(_Pads(), (x,)))
    assert len(result.details["rewritten"]) == 2 and len(result.details["left"]) == 1
    pads = [n for n in result.program.graph.nodes if n.target is aten.pad.default]
    assert len(pads) == 1 and pads[0].meta["val"].dim() == 2
    for seed in range(3):
        probe = torch.randn(1, 3, 5, 4, generator=torch.Generator().manual_seed(seed))
        for got, want in zip(result.program.module()(probe), _Pads()(probe), strict=True):
            assert torch.equal(got, want)


class _Pools(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(F.adaptive_avg_pool2d(x, size) for size in ((3, 5), (6, 6), (1, 1), (4, 4), (7, 3)))


def test_uneven_adaptive_pools_become_averaging_matmuls():
    """Output sizes that do not divide a 16x12 map (3x5, 6x6, 7x3) become P_h @ x @ P_w^T
    and match to float rounding; 1x1 and 4x4 (even: an average pool) are not touched."""
    x = torch.randn(2, 3, 16, 12)
    result = get_pass("litert::adaptive_pool_as_matmul")(torch.export.export(_Pools(), (x,)))
    assert len(result.details["rewritten"]) == 3
    left = [n for n in result.program.graph.nodes if n.target is aten.adaptive_avg_pool2d.default]
    assert sorted(tuple(n.args[1]) for n in left) == [(1, 1), (4, 4)]
    for got, want in zip(result.program.module()(x), _Pools()(x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


class _MaxPools(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.adaptive_max_pool2d(x, (4, 3)), F.adaptive_max_pool2d(x, (3, 5)),
                F.adaptive_max_pool2d(x, 2, return_indices=True)[1].float())  # fmt: skip


def test_adaptive_max_pools_become_max_pools_or_bin_maxima():
    """4x3 bins of a 16x12 map (even: MAX_POOL_2D) and 3x5 (uneven: the maximum of each
    bin), bit-identical; a pool whose indices are used is left."""
    x = torch.randn(2, 3, 16, 12)
    result = get_pass("litert::adaptive_max_as_pool")(torch.export.export(_MaxPools(), (x,)))
    assert len(result.details["rewritten"]) == 2 and len(result.details["left"]) == 1
    for got, want in zip(result.program.module()(x), _MaxPools()(x), strict=True):
        assert torch.equal(got, want)


class _Bicubic(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.interpolate(x, scale_factor=2, mode="bicubic"), F.interpolate(x, scale_factor=(3, 1), mode="bicubic"),
                F.interpolate(x, size=(12, 9), mode="bicubic"),
                F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=True))  # fmt: skip


def test_integer_bicubic_upsampling_becomes_fixed_taps():
    """2x and 3x-by-1x bicubic upsampling (align_corners=False) becomes slices times constant
    weights, PyTorch's values to float rounding, with no gather and nothing above rank 4; a
    size that is no integer multiple and align_corners=True are left."""
    x = torch.randn(2, 3, 6, 5) * 4
    result = get_pass("litert::bicubic_as_phases")(torch.export.export(_Bicubic(), (x,)))
    assert len(result.details["rewritten"]) == 2 and len(result.details["left"]) == 2
    vals = [n.meta["val"] for n in result.program.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert all(v.dim() <= 4 for v in vals)
    for got, want in zip(result.program.module()(x), _Bicubic()(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


class _Resizes(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True),
                F.interpolate(x, size=(7, 5), mode="bilinear", antialias=True, align_corners=True),
                F.interpolate(x, scale_factor=0.3, mode="bilinear", antialias=True),
                F.interpolate(x, scale_factor=1.7, mode="nearest-exact"))  # fmt: skip


def test_antialiased_and_nearest_exact_resizes_become_resampling_matmuls():
    """Each resize (sizes or scale factors, align_corners either way) becomes A_h @ x @ A_w^T
    with PyTorch's own weights: nearest-exact bit-identical, antialiased bilinear to float
    rounding."""
    x = torch.randn(2, 3, 16, 12)
    result = get_pass("resize_as_matmul")(torch.export.export(_Resizes(), (x,)))
    assert len(result.details["rewritten"]) == 4
    got, want = result.program.module()(x), _Resizes()(x)
    for g, w in zip(got[:3], want[:3], strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
    assert torch.equal(got[3], want[3])


class _Unfolds(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return F.unfold(x, 3, padding=1), F.unfold(x, (2, 3), dilation=2, stride=(1, 2)), F.unfold(x.half(), 3)


def test_unfold_becomes_a_one_hot_depthwise_conv():
    """im2col with padding, dilation and stride, in float32 and float16: a grouped conv with
    one-hot kernels, bit-identical to ``F.unfold``."""
    x = torch.randn(2, 3, 8, 6)
    result = get_pass("litert::unfold_as_conv")(torch.export.export(_Unfolds(), (x,)))
    assert len(result.details["rewritten"]) == 3
    assert not [n for n in result.program.graph.nodes if n.target is aten.im2col.default]
    for got, want in zip(result.program.module()(x), _Unfolds()(x), strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.slow
@pytest.mark.gpu_delegate
@pytest.mark.parametrize("model", ["psp_head", "unfold_corr", "thumbnail"])
def test_models_using_them_compile_whole_onto_the_gpu(compile_user_model, model):
    """``psp_head`` (replicate-padded convs, a 1/2/3/6 pyramid, a 2x bicubic upsampling) and
    ``unfold_corr`` (a 3x3 correlation through ``F.unfold``), ``thumbnail`` (an antialiased
    downscale, a nearest-exact upscale): stock litert-torch leaves part of each on the CPU
    (MIRROR_PAD's replicate mode, GATHER_ND, rank-6 tensors) or cannot convert it; through
    the pipeline every op runs on the real delegate, one partition, and LiteRT and the Core
    ML package (coreml-mil) match PyTorch."""
    from compile_checks import whole_on_gpu

    code, report = compile_user_model(f"user_models:{model}", "tflite,coreml")
    tflite = whole_on_gpu(report)
    parity = tflite["parity"]
    assert code == 0 and parity["litert-gpu"]["max_abs"] <= 1e-5 and parity["litert-cpu"]["max_abs"] <= 1e-5
    coreml = next(a for a in report["artifacts"] if a["target"] == "coreml")
    assert coreml["parity"]["coreml-mil"]["max_abs"] <= 1e-5
