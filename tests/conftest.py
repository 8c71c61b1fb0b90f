"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def compile_user_model(tmp_path, monkeypatch):
    """``compile_user_model("user_models:name", "tflite,coreml")``: `mirror compile` of a model
    from tests/user_models.py at fp32 into tmp_path; returns (exit code, report.json), with
    the artifacts under tmp_path."""
    import json
    from pathlib import Path

    from mirror.compiler import cli

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))

    def run(model: str, targets: str) -> tuple[int, dict]:
        code = cli.main(["compile", "--model", model, "--targets", targets, "--precisions", "fp32",
                         "--no-baseline", "--out", str(tmp_path)])  # fmt: skip
        return code, json.loads((tmp_path / "report.json").read_text())

    return run

