"""The grid_sample model zoo (``tests/zoo.py``): each legalization pass is exact on its own,
and every zoo model compiles to LiteRT fully on the real GPU delegate, in one partition."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mirror.compiler import cli
from mirror.passes.base import get_pass, run_pipeline

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import zoo  # noqa: E402

aten = torch.ops.aten
_LOWERED = [("drop_aliases", {}), ("affine_grid", {}), ("fold_constants", {}), ("gpu_grid_sample", {}),
            ("fold_constants", {})]  # fmt: skip


def _outputs(out):
    return out if isinstance(out, (tuple, list)) else (out,)


@torch.no_grad()
def _max_abs(model, program, example) -> float:
    want, got = _outputs(model(*example)), _outputs(program.module()(*example))
    return max(float((w - g).abs().max()) for w, g in zip(want, got, strict=True))



def _targets(program) -> list:
    return [n.target for n in program.graph.nodes if n.op == "call_function"]


def _exported(name: str):
    model, example, *_ = zoo.ZOO[name]()
    return model, example, torch.export.export(model, example)


@pytest.mark.parametrize("name", ["flow_warp", "deform_conv", "ms_deform_attn", "video_sr"])
def test_fold_constants_turns_base_grids_into_constants(name):
    model, example, program = _exported(name)
    result = get_pass("fold_constants")(program)
    assert result.changed and result.details["folded"]
    creators = {aten.arange.start, aten.arange.default, aten.arange.start_step, aten.linspace.default,
                aten.zeros_like.default}  # fmt: skip
    assert creators & set(_targets(program))  # the grid is built in forward ...
    assert not creators & set(_targets(result.program))  # ... and no longer at run time
    assert _max_abs(model, result.program, example) <= 1e-5


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_after_folding_every_op_depends_on_an_input(name):
    """The invariant of fold_constants: no op is left that reads only buffers and constants
    (registered identity grids, folded grids, creation ops like ``arange``)."""
    model, example, program = _exported(name)
    new = get_pass("fold_constants")(program).program
    kinds = {s.arg.name: s.kind.name for s in new.graph_signature.input_specs}
    runtime = {n for n in new.graph.nodes if n.op == "placeholder" and kinds[n.name] in ("USER_INPUT", "PARAMETER")}
    for node in new.graph.nodes:
        if node.op == "call_function":
            if any(a in runtime for a in node.all_input_nodes):
                runtime.add(node)
            else:
                assert node.meta.get("val") is None, f"{name}: {node.name} reads only constants"
    assert _max_abs(model, new, example) <= 1e-5


@pytest.mark.parametrize("name", ["deform_conv", "ms_deform_attn"])
def test_legalize_rank_leaves_no_tensor_above_rank_4(name):
    model, example, program = _exported(name)
    lowered, _ = run_pipeline(program, _LOWERED, name)

    def high(p) -> int:
        return sum(1 for n in p.graph.nodes if isinstance(v := n.meta.get("val"), torch.Tensor) and v.dim() > 4)

    assert high(lowered) > 0
    result = get_pass("legalize_rank")(lowered)
    assert result.changed and result.details["left"] == [] and high(result.program) == 0
    assert _max_abs(model, result.program, example) <= 1e-5


def test_scatter_and_index_become_slices_and_concats():
    model, example, program = _exported("registration")
    lowered, _ = run_pipeline(program, _LOWERED, "vxm")
    assert aten.select_scatter.default in _targets(lowered) and aten.index.Tensor in _targets(lowered)
    new, records = run_pipeline(lowered, [("scatter_as_cat", {}), ("index_as_select", {})], "vxm")
    assert all(r.changed for r in records)
    assert aten.select_scatter.default not in _targets(new) and aten.index.Tensor not in _targets(new)
    assert _max_abs(model, new, example) <= 1e-5


def test_affine_grid_and_log_softmax_rewrites():
    model, example, program = _exported("spatial_transformer")
    new, records = run_pipeline(program, [("affine_grid", {}), ("fold_constants", {}), ("litert::log_softmax", {})],
                                "stn")  # fmt: skip
    assert all(r.changed for r in records)
    assert aten.affine_grid_generator.default not in _targets(new) and aten.log_softmax.int not in _targets(new)
    assert _max_abs(model, new, example) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_model_runs_whole_on_the_gpu_delegate(name, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    code = cli.main(["compile", "--model", f"zoo:{name}", "--out", str(tmp_path), "--targets", "tflite",
                     "--precisions", "fp32,fp16", "--gpu-parity", "all"])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, report["summary"]
    for a in report["artifacts"]:
        gpu = a["gpu_delegate"]
        assert gpu["verified_on"].startswith("litert-gpu"), gpu["verified_on"]  # the real delegate answered
        assert gpu["fully_accelerated"] and gpu["partitions"] == 1 and gpu["ops_on_cpu"] == 0, gpu
        # The static rules agree with the real delegate, op for op.
        assert gpu["static"]["fully_accelerated"] and gpu["static"]["ops_on_gpu"] == gpu["ops_total"], gpu["static"]
        assert all(p.get("passed") for p in a["parity"].values()), a["parity"]
        if a["precision"] == "fp32":
            assert a["parity"]["litert-cpu"]["max_abs"] <= 1e-4 and a["parity"]["litert-gpu"]["max_abs"] <= 1e-4
    # The stock conversion of the same model is judged alike by the rules and the delegate.
    [stock] = [b["gpu_delegate"] for b in report["baseline"]]
    assert stock["static"]["fully_accelerated"] == stock["fully_accelerated"], stock


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_model_converts_to_core_ml(name, tmp_path, monkeypatch):
    """fp32 and fp16 packages convert (affine_grid, 6-D views and max_pool2d without a stride
    included) and match PyTorch on the MIL interpreter."""
    monkeypatch.syspath_prepend(str(TESTS))
    code = cli.main(["compile", "--model", f"zoo:{name}", "--out", str(tmp_path), "--targets", "coreml",
                     "--precisions", "fp32,fp16", "--no-baseline"])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, report["summary"]
    assert sorted(a["precision"] for a in report["artifacts"] if not a.get("error")) == ["fp16", "fp32"]
    fp32 = next(a for a in report["artifacts"] if a["precision"] == "fp32")
    assert fp32["parity"]["coreml-mil"]["max_abs"] <= 1e-4
