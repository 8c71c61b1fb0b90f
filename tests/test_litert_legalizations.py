"""LiteRT legalizations found on the coarse parser: a constant-left matmul and a ``where``
with broadcast constant branches, each rewritten exactly (to float32 rounding)."""

from __future__ import annotations

import torch

from mirror.passes.base import run_pipeline
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


def test_select_at_a_runtime_scalar_compiles_onto_the_gpu(tmp_path, monkeypatch):
    """litert-torch failed on the exported form ("Abstract tracer value"); after the pass the
    model converts, runs 100% on the real GPU delegate, and Core ML's package (whose shape
    arithmetic concatenates scalars) runs on coreml-mil."""
    import json
    from pathlib import Path

    from mirror.compiler import cli

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    code = cli.main(["compile", "--model", "user_models:row_pick", "--targets", "tflite,coreml",
                     "--precisions", "fp32", "--no-baseline", "--out", str(tmp_path)])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0 and report["summary"]["passed"], report["summary"]
    tflite = next(a for a in report["artifacts"] if a["target"] == "tflite")
    gpu = tflite["gpu_delegate"]
    assert gpu["ops_on_gpu"] == gpu["ops_total"] and gpu["partitions"] == 1, gpu
    assert tflite["parity"]["litert-cpu"]["max_abs"] <= 1e-5
    coreml = next(a for a in report["artifacts"] if a["target"] == "coreml")
    assert coreml["parity"]["coreml-mil"]["max_abs"] <= 1e-5
