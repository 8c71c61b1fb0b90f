"""litert::broadcast_as_gather: ``expand`` becomes gathers of index 0, exactly, and the model
that had a BROADCAST_TO on the CPU runs whole on the GPU delegate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mirror.compiler import cli
from mirror.passes.base import get_pass

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from user_models import expand_head  # noqa: E402

EXPAND = torch.ops.aten.expand.default


def _calls(program, target) -> int:
    return sum(1 for n in program.graph.nodes if n.op == "call_function" and n.target == target)


class _Views(torch.nn.Module):
    """One expand that broadcasts two axes (and adds a leading one), one that only views."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = x.mean(dim=(2, 3), keepdim=True).expand(2, 1, 4, 5, 6)
        same = y.expand(1, 3, 5, 6)
        return grid, same * 2


def test_expand_becomes_exact_index_selects():
    x, y = torch.rand(1, 4, 5, 6), torch.rand(1, 3, 5, 6)
    program = torch.export.export(_Views(), (x, y))
    assert _calls(program, EXPAND) == 2
    result = get_pass("litert::broadcast_as_gather")(program)
    assert result.changed
    assert [r["axes"] for r in result.details["rewritten"]] == [[0, 3, 4]]  # the view is not listed
    new = result.program
    assert _calls(new, EXPAND) == 0 and _calls(new, torch.ops.aten.index_select.default) == 3
    assert _calls(program, EXPAND) == 2  # the input program is untouched
    want, got = _Views()(x, y), new.module()(x, y)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and torch.equal(g, w)  # copies, not arithmetic: bit-exact


def test_a_program_without_broadcasts_is_returned_as_is():
    program = torch.export.export(torch.nn.Conv2d(3, 4, 3), (torch.rand(1, 3, 8, 8),))
    result = get_pass("litert::broadcast_as_gather")(program)
    assert not result.changed and result.program is program


@pytest.mark.slow
def test_expanding_model_runs_whole_on_the_gpu_delegate(tmp_path, monkeypatch):
    model, example, _, _ = expand_head()
    program = torch.export.export(model, example)
    assert _calls(program, EXPAND) == 1  # what stock litert-torch turns into BROADCAST_TO
    monkeypatch.syspath_prepend(str(TESTS))
    code = cli.main(["compile", "--model", "user_models:expand_head", "--out", str(tmp_path), "--no-baseline",
                     "--targets", "tflite", "--precisions", "fp32,fp16", "--gpu-parity", "all"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, report["summary"]
    for a in report["artifacts"]:
        gpu = a["gpu_delegate"]
        assert gpu["fully_accelerated"] and gpu["partitions"] == 1, gpu
        assert "BROADCAST_TO" not in a["info"]["ops"] and a["info"]["ops"]["GATHER"] == 2
        assert all(p.get("passed") or "skipped" in p for p in a["parity"].values()), a["parity"]
    fp32 = next(a for a in report["artifacts"] if a["precision"] == "fp32")
    assert fp32["parity"]["litert-cpu"]["max_abs"] <= 1e-5
