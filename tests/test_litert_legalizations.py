"""LiteRT legalizations found on the coarse parser: a constant-left matmul and a ``where``
with broadcast constant branches, each rewritten exactly (to float32 rounding)."""

from __future__ import annotations

import pytest
import torch

from mirror.passes.base import get_pass, run_pipeline
from mirror.passes.constant_folding import lifted_value

aten = torch.ops.aten


class _PoolAndArgmax(torch.nn.Module):
    """A pooling matrix on the left of a matmul, and a float argmax through ``where``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pool_h", torch.rand(2, 6), persistent=False)
        self.register_buffer("index", torch.arange(3.0).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.matmul(self.pool_h, x)
        top = torch.amax(x, dim=1, keepdim=True)
        labels = torch.amin(torch.where(x >= top, self.index, torch.full_like(self.index, 3.0)), dim=1, keepdim=True)
        return pooled, labels


def test_constant_lhs_matmul_and_where_branches():
    model, x = _PoolAndArgmax(), torch.rand(1, 3, 6, 5)
    program = torch.export.export(model, (x,))
    new, records = run_pipeline(program, [("fold_constants", {}), ("litert::matmul_constant_lhs", {}),
                                          ("litert::select_operands", {})], "m")  # fmt: skip
    assert [r.changed for r in records] == [True, True, True]
    for node in new.graph.nodes:
        if node.target is aten.matmul.default:  # the constant is on the right now
            assert lifted_value(new, node.args[0]) is None and lifted_value(new, node.args[1]) is not None
        if node.target is aten.where.self:  # both branches at the output's shape
            assert all(a.meta["val"].shape == node.meta["val"].shape for a in node.args[1:])
    want, got = model(x), new.module()(x)
    assert torch.allclose(got[0], want[0], atol=1e-6) and torch.equal(got[1], want[1])


def test_int8_keeps_pooling_matrices_float(tmp_path):
    """The GPU delegate refused the whole int8 parser when a pooling matrix (a FULLY_CONNECTED
    weight, a BATCH_MATMUL constant) came out of a DEQUANTIZE; int8 keeps them float."""
    from mirror.runners.tflite_file import read_tflite
    from mirror.targets.tflite import convert_to_bytes, quantize_bytes

    model, x = _PoolAndArgmax(), torch.rand(1, 3, 6, 5)
    program, _ = run_pipeline(torch.export.export(model, (x,)), [("fold_constants", {}),
                              ("litert::matmul_constant_lhs", {}), ("litert::select_operands", {})], "m")  # fmt: skip
    float_model = convert_to_bytes(program, (x,), ["x"], ["pooled", "labels"], "m")
    path = tmp_path / "m_int8.tflite"
    path.write_bytes(quantize_bytes(float_model, "int8", "m", ["x"]))
    graph = read_tflite(path)
    made_by = {out: op.name for op in graph.ops for out in op.outputs}
    matmuls = [op for op in graph.ops if op.name in ("FULLY_CONNECTED", "BATCH_MATMUL")]
    assert matmuls
    for op in matmuls:
        assert all(made_by.get(i) != "DEQUANTIZE" for i in op.inputs if i >= 0)


def test_select_at_a_runtime_scalar_becomes_index_select():
    """``x.select(2, j)`` and ``x[:, :, :, k]`` with 0-d tensor indices: index_select at the
    wrapped index (no ``item``, no data-dependent select left), the same values for every
    index, negative ones included."""
    from user_models import row_pick

    model, (x,) = row_pick()
    program = torch.export.export(model, (x,))
    new, records = run_pipeline(program, [("index_as_select", {})], "m")
    assert records[0].changed
    targets = {n.target for n in new.graph.nodes}
    assert aten.item.default not in targets and aten.index.Tensor not in targets
    assert aten.index_select.default in targets
    selects = [n for n in new.graph.nodes if n.target is aten.select.int]
    assert not [n for n in selects if isinstance(n.args[2], torch.fx.Node)]  # x[0, 0, 0, 0]'s constant ones stay
    run = new.module()
    for j in (-16, -3, -1, 0, 5, 15):
        probe = x.clone()
        probe[0, 0, 0, 0], probe[0, 1, 0, 0] = j / 4, -j / 4
        assert torch.equal(run(probe), model(probe)), j


def test_select_at_a_runtime_scalar_compiles_onto_the_gpu(compile_user_model):
    """litert-torch failed on the exported form ("Abstract tracer value"); after the pass the
    model converts, runs 100% on the real GPU delegate, and Core ML's package (whose shape
    arithmetic concatenates scalars) runs on coreml-mil."""
    from compile_checks import whole_on_gpu

    code, report = compile_user_model("user_models:row_pick", "tflite,coreml")
    tflite = whole_on_gpu(report)
    assert code == 0 and tflite["parity"]["litert-cpu"]["max_abs"] <= 1e-5
    coreml = next(a for a in report["artifacts"] if a["target"] == "coreml")
    assert coreml["parity"]["coreml-mil"]["max_abs"] <= 1e-5


class _Gather(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, self.dim, idx)


def _gathers(program) -> list[str]:
    return [n.name for n in program.graph.nodes if n.target is aten.gather.default]


def test_gather_becomes_an_exact_one_hot_select():
    """``torch.gather`` at a runtime index (RowPeaks, and gathers along every dimension with an
    index smaller than x in the other dimensions): no gather left, nothing above rank 4, and
    bit-identical outputs in float32."""
    from user_models import row_peaks

    model, (x,) = row_peaks()
    result = get_pass("litert::gather_as_select")(torch.export.export(model, (x,)))
    assert result.details == {"rewritten": ["gather"]}
    new = result.program
    assert not _gathers(new)
    assert all(n.meta["val"].dim() <= 4 for n in new.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor))
    run = new.module()
    for seed in range(4):
        probe = torch.randn(1, 3, 16, 12, generator=torch.Generator().manual_seed(seed)) * 3
        assert torch.equal(run(probe), model(probe)), seed
    for shape, dim, index in [((2, 5, 7, 3), 1, (2, 9, 7, 3)), ((2, 5, 7, 3), -2, (1, 4, 3, 2)),
                              ((6, 9), 0, (2, 9)), ((6, 9), 1, (4, 3)), ((10,), 0, (4,))]:  # fmt: skip
        x, idx = torch.randn(shape), torch.randint(0, shape[dim], index)
        new = get_pass("litert::gather_as_select")(torch.export.export(_Gather(dim), (x, idx))).program
        assert not _gathers(new)
        assert torch.equal(new.module()(x, idx), torch.gather(x, dim, idx)), (shape, dim, index)


def test_gather_as_select_is_exact_in_float16_up_to_2048():
    """The program exported in float16 (what a phone's GPU computes in) casts the index and
    compares it with arange(K) in float16. At K = 2048 every position is an exact float16, so
    the select picks exactly x's float16 value: the only difference from the float32
    reference is x's rounding to float16, at most half an ulp, 2**-12 for |x| < 1."""
    x = torch.rand(2, 2048, 3) * 2 - 1
    idx = torch.randint(0, 2048, (2, 300, 2))
    idx[0, :4, 0] = torch.tensor([2047, 2046, 1024, 0])
    program = torch.export.export(_Gather(1), (x.half(), idx))
    new = get_pass("litert::gather_as_select")(program).program
    assert not _gathers(new)
    got = new.module()(x.half(), idx)
    assert got.dtype == torch.float16
    assert torch.equal(got, torch.gather(x.half(), 1, idx))
    assert float((got.float() - torch.gather(x, 1, idx)).abs().max()) <= 2**-12


def test_gather_past_float16_or_the_budget_is_left():
    """K = 2049 (the positions 2048 and 2049 are the same float16) and a one-hot product over
    MAX_ELEMENTS (2**22) keep their gather, named under "left" for the CPU fallback report."""
    from mirror.passes.gather_as_select import MAX_ELEMENTS

    assert torch.tensor(2049.0).half() == torch.tensor(2048.0).half()
    wide = (torch.rand(2, 2049), torch.randint(0, 2049, (2, 4)))
    big = (torch.rand(2, 2048), torch.randint(0, 2048, (2, 1025)))
    assert big[1].numel() * 2048 > MAX_ELEMENTS
    for x, idx in (wide, big):
        program = torch.export.export(_Gather(1), (x, idx))
        result = get_pass("litert::gather_as_select")(program)
        assert result.details["left"] == ["gather"] and _gathers(result.program) == ["gather"]
        assert torch.equal(result.program.module()(x, idx), torch.gather(x, 1, idx))


@pytest.mark.slow
@pytest.mark.gpu_delegate
def test_gather_as_select_runs_whole_on_the_gpu_delegate(tmp_path):
    """RowPeaks through the LiteRT pipeline: without this pass its GATHER_ND (and rank-5 index
    ops) fall back to the CPU; with it (after index_as_select, as the pipeline runs it) the
    .tflite holds no GATHER_ND and runs whole on the real delegate, one partition, matching
    PyTorch."""
    import numpy as np
    from user_models import row_peaks

    from mirror.passes.registry import PIPELINES
    from mirror.runners.litert import run_litert_once
    from mirror.runners.tflite_file import read_tflite
    from mirror.runners.vulkan import find_vulkan_driver
    from mirror.targets.gpu_delegate import verify_gpu_delegate
    from mirror.targets.tflite import TFLiteEmitter, convert_to_bytes

    driver = find_vulkan_driver()
    if not driver.found:
        pytest.skip(f"LiteRT's GPU delegate needs a Vulkan driver: {driver.reason}")
    model, (x,) = row_peaks()
    with torch.no_grad():
        want = model(x).numpy()
    program = torch.export.export(model, (x,))
    ours = list(TFLiteEmitter().pipeline("native"))
    names = [name for name, _ in ours]
    assert names.index("index_as_select") < names.index("litert::gather_as_select") < names.index("litert::gather_v1")
    stock = [step for step in ours if step[0] != "litert::gather_as_select"]
    verdicts = {}
    for name, pipeline in (("stock", stock), ("select", ours)):
        new, _ = run_pipeline(program, [*PIPELINES["default"], *pipeline], "m")
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(convert_to_bytes(new, (x,), ["x"], ["picked"], "m"))
        verdicts[name] = verify_gpu_delegate(path, mode="delegate")
        verdicts[name]["ops"] = {op.name for op in read_tflite(path).ops}
    assert "GATHER_ND" in verdicts["stock"]["ops"] and not verdicts["stock"]["fully_accelerated"]
    gpu = verdicts["select"]
    assert "GATHER_ND" not in gpu["ops"] and "EQUAL" in gpu["ops"]
    assert gpu["fully_accelerated"] and gpu["ops_on_gpu"] == gpu["ops_total"] and gpu["partitions"] == 1, gpu
    child = run_litert_once(tmp_path / "select.tflite", accelerator="gpu", inputs={"x": x.numpy()}, driver=driver)
    assert child.ok and child.result["fully_accelerated"], child.error
    assert float(np.abs(next(iter(child.outputs.values())) - want).max()) <= 1e-5


class _Gram(torch.nn.Module):
    """Style statistics: the Gram matrix of conv features, written with einsum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        return torch.einsum("bchw,bdhw->bcd", f, f)


def test_einsum_becomes_bmm():
    model, x = _Gram().eval(), torch.rand(1, 3, 8, 6)
    result = get_pass("litert::einsum_as_bmm")(torch.export.export(model, (x,)))
    targets = {n.target for n in result.program.graph.nodes}
    assert result.changed and aten.einsum.default not in targets and aten.bmm.default in targets
    with torch.no_grad():
        torch.testing.assert_close(result.program.module()(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.gpu_delegate
def test_gram_matrix_runs_on_the_gpu_delegate(tmp_path):
    """litert-torch's own einsum lowering reads one tensor twice in a BATCH_MATMUL, and the
    real delegate aborted the process building its graph ("Node 4 is already a consumer of
    the value 5"); through the pipeline the Gram matrix runs on it and matches PyTorch."""
    import numpy as np

    from mirror.passes.registry import PIPELINES
    from mirror.runners.litert import run_litert_once
    from mirror.runners.tflite_file import read_tflite
    from mirror.runners.vulkan import find_vulkan_driver
    from mirror.targets.tflite import TFLiteEmitter, convert_to_bytes

    driver = find_vulkan_driver()
    if not driver.found:
        pytest.skip(f"LiteRT's GPU delegate needs a Vulkan driver: {driver.reason}")
    model, x = _Gram().eval(), torch.rand(1, 3, 8, 6)
    new, _ = run_pipeline(torch.export.export(model, (x,)),
                          [*PIPELINES["default"], *TFLiteEmitter().pipeline("native")], "gram")  # fmt: skip
    path = tmp_path / "gram.tflite"
    path.write_bytes(convert_to_bytes(new, (x,), ["x"], ["gram"], "gram"))
    graph = read_tflite(path)
    assert not [op for op in graph.ops if len({i for i in op.inputs if i >= 0}) < len([i for i in op.inputs if i >= 0])
                and op.name == "BATCH_MATMUL"]  # fmt: skip
    child = run_litert_once(path, accelerator="gpu", inputs={"x": x.numpy()}, driver=driver)
    assert child.ok, child.error
    with torch.no_grad():
        assert float(np.abs(next(iter(child.outputs.values())) - model(x).numpy()).max()) <= 1e-5


class _TopK(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = x.flatten(2).topk(4, dim=2)
        b = torch.topk(x, 3, dim=1, largest=False)
        return a.values, a.indices, b.values, b.indices


def test_topk_becomes_rounds_of_max():
    """k largest along the last dimension, k smallest along another: the same values and
    indices as ``torch.topk`` (distinct values), no topk left; k = 33 is left."""
    x = torch.randn(2, 5, 6, 7)
    result = get_pass("litert::topk_as_max")(torch.export.export(_TopK(), (x,)))
    assert len(result.details["rewritten"]) == 2
    assert not [n for n in result.program.graph.nodes if n.target is aten.topk.default]
    for seed in range(3):
        probe = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(seed))
        for got, want in zip(result.program.module()(probe), _TopK()(probe), strict=True):
            assert got.dtype == want.dtype and torch.equal(got, want)

    class Wide(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.topk(33).values

    wide = get_pass("litert::topk_as_max")(torch.export.export(Wide(), (torch.randn(2, 40),)))
    assert wide.details["left"] == ["topk"] and not wide.changed


@pytest.mark.slow
@pytest.mark.gpu_delegate
def test_topk_model_runs_whole_on_the_gpu(compile_user_model):
    """``user_models:peak_scores`` (a values-only and an indices-only topk): stock litert-torch
    makes a STABLEHLO_SORT that neither LiteRT's CPU nor its GPU runs and a TOPK_V2 the
    delegate refuses; through the pipeline it runs whole on the real delegate, and the Core
    ML package (MIL ``topk``) matches PyTorch on coreml-mil."""
    from compile_checks import whole_on_gpu

    code, report = compile_user_model("user_models:peak_scores", "tflite,coreml")
    tflite = whole_on_gpu(report)
    assert code == 0 and tflite["parity"]["litert-gpu"]["max_abs"] <= 1e-5
    coreml = next(a for a in report["artifacts"] if a["target"] == "coreml")
    assert coreml["parity"]["coreml-mil"]["max_abs"] <= 1e-5
