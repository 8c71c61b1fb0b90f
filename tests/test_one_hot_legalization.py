"""One-hot encodings and integer compares inside a model, for LiteRT's GPU delegate:
``litert::one_hot_as_compare`` and ``litert::float_cast_first`` rewrite them exactly, and a
label-conditioned user model then converts and runs whole on the real delegate."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F

from mirror.passes.base import get_pass
from mirror.passes.one_hot_as_compare import INT_DTYPES

aten = torch.ops.aten


class _OneHot(torch.nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.k).permute(0, 3, 1, 2).float()


class _Compares(torch.nn.Module):
    """The hand-written one-hot (litert-torch turns it into ONE_HOT), a background mask and
    an ordering compare on int32 ids."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.register_buffer("classes", torch.arange(classes, dtype=torch.int32).view(1, classes, 1, 1))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (ids.unsqueeze(1) == self.classes).float(), (ids == 0).float(), (ids < 3).float()


def _int_nodes(program) -> list[str]:
    """Compares and one-hots still reading an integer tensor."""
    picked = []
    for n in program.graph.nodes:
        ints = [a for a in n.args[:2] if isinstance(a, torch.fx.Node) and a.meta["val"].dtype in INT_DTYPES]
        if n.target is aten.one_hot.default or (ints and n.target in {aten.eq.Tensor, aten.eq.Scalar, aten.lt.Scalar}):
            picked.append(n.name)
    return picked


def test_one_hot_and_int_compares_become_exact_float_compares():
    labels = torch.randint(0, 7, (2, 16, 12))
    result = get_pass("litert::one_hot_as_compare")(torch.export.export(_OneHot(7), (labels,)))
    assert result.details["rewritten"] == ["one_hot"] and not _int_nodes(result.program)
    for seed in range(3):
        probe = torch.randint(0, 7, (2, 16, 12), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(result.program.module()(probe), _OneHot(7)(probe))
    ids = torch.randint(0, 7, (1, 16, 12), dtype=torch.int32)
    result = get_pass("litert::one_hot_as_compare")(torch.export.export(_Compares(), (ids,)))
    assert len(result.details["rewritten"]) == 3 and not _int_nodes(result.program)
    for got, want in zip(result.program.module()(ids), _Compares()(ids), strict=True):
        assert torch.equal(got, want)


def test_float16_compares_of_integers_with_small_constants_are_exact():
    """The delegate usually computes in float16: an integer there is rounded (above 2048) or
    infinite (above 65504), but rounding is monotone, so against a constant |c| < 2048 every
    compare still answers as it does on the integers."""
    values = torch.arange(-70000, 70001)
    for c in (-2047, -1, 0, 1, 6, 2046, 2047):
        for op in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge):
            assert torch.equal(op(values.half(), torch.tensor(float(c)).half()), op(values, c)), (c, op)


def test_one_hots_and_compares_past_float16_are_left():
    """2049 classes (2048 and 2049 are one float16), a compare with 5000 and a compare of two
    runtime tensors keep their integer form and are named under "left"."""

    class Both(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return (a == 5000).float(), (a == b).float()

    a, b = torch.randint(0, 9000, (4, 5)), torch.randint(0, 9000, (4, 5))
    result = get_pass("litert::one_hot_as_compare")(torch.export.export(Both(), (a, b)))
    assert len(result.details["left"]) == 2 and not result.changed
    labels = torch.randint(0, 2049, (1, 3, 2))
    wide = get_pass("litert::one_hot_as_compare")(torch.export.export(_OneHot(2049), (labels,)))
    assert wide.details["left"] == ["one_hot"] and not wide.changed


def test_float_cast_moves_in_front_of_layout_ops():
    """``ids.long().permute().reshape().float()``: the cast to float comes first (the int64
    widening dropped), the permute and reshape move floats, the values are the same; a chain
    whose integer result is also used elsewhere is left alone."""

    class Chain(torch.nn.Module):
        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            moved = ids.long().permute(0, 2, 1).reshape(1, -1).float()
            shared = ids.permute(0, 2, 1)
            return moved * 2, shared.float() + shared.sum()

    ids = torch.randint(-5, 300, (1, 4, 6), dtype=torch.int32)
    result = get_pass("litert::float_cast_first")(torch.export.export(Chain(), (ids,)))
    assert len(result.details["rewritten"]) == 1
    layout = [n for n in result.program.graph.nodes if n.target in (aten.permute.default, aten.reshape.default,
                                                                    aten.view.default)]
    floats = [n for n in layout if n.meta["val"].is_floating_point()]
    assert len(floats) == 2 and len(layout) == 3  # the shared permute stays integer
    for got, want in zip(result.program.module()(ids), Chain()(ids), strict=True):
        assert torch.equal(got, want)


@pytest.mark.slow
@pytest.mark.gpu_delegate
def test_label_conditioned_model_compiles_whole_onto_the_gpu(compile_user_model, tmp_path):
    """``user_models:label_cond`` (int64 class ids in, ``F.one_hot`` and a background compare
    inside): litert-torch could not convert it; through the pipeline it holds no ONE_HOT and no
    integer tensor past the input's CAST, runs 100% on the real delegate in one partition, and
    every artifact matches PyTorch on random class ids."""
    from compile_checks import whole_on_gpu

    from mirror.runners.tflite_file import read_tflite

    code, report = compile_user_model("user_models:label_cond", "tflite,coreml,onnx")
    tflite = whole_on_gpu(report)
    assert code == 0 and tflite["parity"]["litert-gpu"]["max_abs"] <= 1e-5
    graph = read_tflite(tmp_path / tflite["path"])
    assert "ONE_HOT" not in {op.name for op in graph.ops}
    int_ops = [op.name for op in graph.ops if any(graph.tensors[i].dtype == "INT32" for i in op.inputs[:1] if i >= 0)]
    assert int_ops == ["CAST"], int_ops
    for a in report["artifacts"]:
        assert all(p["max_abs"] <= 1e-5 for p in a["parity"].values() if p.get("max_abs") is not None), a
