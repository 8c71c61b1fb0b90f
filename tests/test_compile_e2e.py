"""`mirror compile --model` end to end on a small flow-warping model: every target and
precision, parity against PyTorch, the real GPU delegate, report and manifest, and
byte-identical artifacts across two compiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.compiler import cli
from mirror.targets.base import sha256_of

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent


def _compile(out: Path, monkeypatch, *extra: str) -> int:
    monkeypatch.syspath_prepend(str(TESTS))
    return cli.main(["compile", "--model", "user_models:flow_warp", "--out", str(out), "--no-baseline", *extra])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as mp:
        code = _compile(out, mp)
    return code, out, json.loads((out / "report.json").read_text())


def test_exit_code_and_summary(compiled):
    code, out, report = compiled
    assert code == 0, report["summary"]
    assert report["summary"]["passed"] and not report["summary"]["parity_failed"]
    assert not (out / ".staging").exists()


def test_every_target_and_precision_is_reported(compiled):
    _, out, report = compiled
    got = {(a["target"], a["precision"]) for a in report["artifacts"]}
    assert got == {(t, p) for t in ("tflite", "coreml", "onnx") for p in ("fp32", "fp16", "int8")}
    for a in report["artifacts"]:
        path = out / a["path"]
        assert path.exists(), a["path"]
        assert a["bytes"] > 0 and a["sha256"] == sha256_of(path)
        assert a["graph"] == "flowwarp"


def test_parity_runners(compiled):
    _, _, report = compiled
    by = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    tfl = by[("tflite", "fp32")]["parity"]
    assert set(tfl) >= {"litert-cpu"}
    for runner, p in tfl.items():
        if "skipped" in p:
            continue
        assert p["passed"] and p["max_abs"] <= 1e-3 and p["mean_abs"] <= 1e-5, (runner, p)
    onnx = by[("onnx", "fp32")]["parity"]["onnxruntime"]
    assert onnx["passed"] and onnx["max_abs"] <= 1e-3
    for precision in ("fp16", "int8"):
        p = by[("tflite", precision)]["parity"]["litert-cpu"]
        assert p["passed"] and p["psnr_db"] >= (40 if precision == "fp16" else 30)
    coreml = by[("coreml", "fp16")]["parity"]
    assert all("macOS" in p.get("skipped", "macOS") for p in coreml.values())


def test_gpu_delegate_figures(compiled):
    _, _, report = compiled
    for a in report["artifacts"]:
        if a["target"] != "tflite":
            continue
        gpu = a["gpu_delegate"]
        assert {"ops_total", "ops_on_gpu", "partitions", "unsupported", "verified_on"} <= set(gpu)
        assert gpu["ops_on_gpu"] == gpu["ops_total"] and gpu["partitions"] == 1, gpu
        assert gpu["unsupported"] == []


def test_passes_rewrote_grid_sample(compiled):
    _, _, report = compiled
    records = [r for r in report["passes"] if r["name"] == "gpu_grid_sample"]
    assert records and all(r["changed"] for r in records)
    assert all(r["max_abs_vs_reference"] <= 1e-4 for r in records)
    assert {r["details"]["lowering"] for r in records} == {"fp16_exact", "flat"}


def test_manifest(compiled):
    _, out, report = compiled
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == len(report["artifacts"])
    entry = manifest["artifacts"][0]
    assert entry["tensors"]["inputs"] == {"source": [1, 3, 32, 24], "target": [1, 3, 32, 24]}
    assert set(entry["tensors"]["outputs"]) == {"warped", "offsets"}


def test_second_compile_is_byte_identical(compiled, tmp_path, monkeypatch):
    _, out, report = compiled
    again = tmp_path / "again"
    assert _compile(again, monkeypatch, "--gpu-parity", "none") == 0
    second = {a["path"]: a["sha256"] for a in json.loads((again / "report.json").read_text())["artifacts"]}
    differ = [a["path"] for a in report["artifacts"] if second.get(a["path"]) != a["sha256"]]
    assert differ == []
