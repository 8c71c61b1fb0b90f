"""A LiteRT artifact that leaves ops on the CPU fails the compile (unless allowed), and the
compile says which ops and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror import MirrorError
from mirror.compiler import cli
from mirror.compiler.config import load_config

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent


def _compile(out: Path, monkeypatch, *extra: str) -> int:
    monkeypatch.syspath_prepend(str(TESTS))
    return cli.main(["compile", "--model", "user_models:gather_head", "--out", str(out), "--no-baseline",
                     "--targets", "tflite", "--precisions", "fp32", *extra])


def test_cpu_fallback_fails_the_compile_and_names_the_op(tmp_path, monkeypatch, capsys):
    assert _compile(tmp_path, monkeypatch) == 1
    summary = json.loads((tmp_path / "report.json").read_text())["summary"]
    assert not summary["passed"] and not summary["parity_failed"]  # right, but not on the GPU
    [line] = summary["not_fully_on_gpu"]
    assert line.startswith("gatherhead/tflite/fp32: ") and "1 x GATHER_ND" in line
    # The refused op is traced back to the user's line: GatherHead.forward's torch.gather.
    gather_line = next(i for i, t in enumerate((TESTS / "user_models.py").read_text().splitlines(), 1)
                       if "torch.gather(" in t)  # fmt: skip
    assert f"(at tests/user_models.py:{gather_line})" in line or f"user_models.py:{gather_line})" in line, line
    err = capsys.readouterr().err
    assert "gatherhead: tflite fp32: on the CPU: 1 x GATHER_ND" in err
    assert "NOT FULLY ON GPU gatherhead/tflite/fp32" in err and "not fully on the GPU" in err


def test_allow_cpu_fallback(tmp_path, monkeypatch, capsys):
    assert _compile(tmp_path, monkeypatch, "--allow-cpu-fallback") == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["passed"] and report["config"]["allow_cpu_fallback"] is True
    assert report["summary"]["not_fully_on_gpu"]  # still reported
    assert "(allowed by --allow-cpu-fallback)" in capsys.readouterr().err


def test_the_setting_is_a_real_boolean(tmp_path):
    cfg = tmp_path / "mirror.toml"
    cfg.write_text('allow_cpu_fallback = "false"\n')
    with pytest.raises(MirrorError, match='allow_cpu_fallback must be true or false; got .false.'):
        load_config(cfg)
    cfg.write_text("allow_cpu_fallback = true\n")
    assert load_config(cfg).allow_cpu_fallback is True
    assert load_config(None).allow_cpu_fallback is False
