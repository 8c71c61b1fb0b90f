"""Replicate padding, uneven adaptive average pools and bicubic upsampling, for LiteRT's GPU
delegate: ``litert::replicate_pad_as_cat`` (exact), ``litert::adaptive_pool_as_matmul`` and
``litert::bicubic_as_phases`` (to float rounding) rewrite them, and a PSPNet-style head
with all three then runs whole on the real delegate."""

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


@pytest.mark.slow
@pytest.mark.gpu_delegate
def test_psp_head_compiles_whole_onto_the_gpu(compile_user_model):
    """``user_models:psp_head``: stock litert-torch leaves most of its ops on the CPU
    (MIRROR_PAD's replicate mode, GATHER_ND, rank-6 tensors); through the pipeline every op
    runs on the real delegate, one partition, matching PyTorch."""
    from compile_checks import whole_on_gpu

    code, report = compile_user_model("user_models:psp_head", "tflite")
    tflite = whole_on_gpu(report)
    parity = tflite["parity"]
    assert code == 0 and parity["litert-gpu"]["max_abs"] <= 1e-5 and parity["litert-cpu"]["max_abs"] <= 1e-5
