"""`mirror compile --model` end to end on a small flow-warping model: every target and
precision, parity against PyTorch, the real GPU delegate, report and manifest, and
byte-identical artifacts across two compiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.compiler import cli
from mirror.files import sha256_of
from mirror.runners.vulkan import find_vulkan_driver

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
# The passes each backend's pipeline must hold for this model (a grid_sample to lower).
BACKEND_PASSES = {
    "tflite": {"litert::split_wide_conv", "gpu_grid_sample", "litert::broadcast_as_gather", "litert::gather_v1",
               "fold_constants", "fold_batch_norm", "legalize_rank", "scatter_as_cat", "index_as_select",
               "litert::gather_as_select", "litert::one_hot_as_compare", "litert::float_cast_first",
               "litert::replicate_pad_as_cat", "litert::adaptive_pool_as_matmul", "litert::bicubic_as_phases",
               "litert::adaptive_max_as_pool",
               "resize_as_matmul", "litert::unfold_as_conv", "litert::einsum_as_bmm", "litert::topk_as_max",
               "litert::log_softmax", "litert::matmul_constant_lhs", "litert::select_operands",
               "litert::constant_operands_4d"},
    "onnx": {"gpu_grid_sample"},
    "coreml": {"gpu_grid_sample", "resize_as_matmul", "coreml::core_aten", "scatter_as_cat",
               "coreml::contiguous_inputs", "coreml::float_clamp_bounds"},
}
SHARED = ["drop_aliases", "explicit_pool_stride", "affine_grid", "fold_constants", "legalize_rank"]


def backend_passes(target: str) -> list[str]:
    """The names of ``target``'s pipeline at its default grid_sample lowering, in order."""
    from mirror.compiler.config import DEFAULT_SAMPLING
    from mirror.compiler.driver import emitter_for

    names = [name for name, _ in emitter_for(target).pipeline(DEFAULT_SAMPLING[target])]
    assert set(names) == BACKEND_PASSES[target], names
    return names


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
    # The torch-free runtime is written next to the artifacts (tests/test_runtime_wheel.py installs one).
    assert (out / "mirror_runtime-0.1.0-py3-none-any.whl").is_file() and (out / "RUNTIME.md").is_file()


def test_every_target_and_precision_is_reported(compiled):
    _, out, report = compiled
    got = {(a["target"], a["precision"]) for a in report["artifacts"]}
    assert got == {(t, p) for t in ("tflite", "coreml", "onnx") for p in ("fp32", "fp16", "int8")}
    for a in report["artifacts"]:
        path = out / a["path"]
        assert path.exists(), a["path"]
        assert a["bytes"] > 0 and a["sha256"] == sha256_of(path)
        assert a["graph"] == "flowwarp"
        # The shared "default" pipeline, then the backend's, in the order they ran.
        assert a["passes"] == [*SHARED, *backend_passes(a["target"])], a["passes"]


def test_parity_runners(compiled):
    _, _, report = compiled
    by = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    tfl = by[("tflite", "fp32")]["parity"]
    assert set(tfl) == {"litert-cpu", "litert-gpu"}  # the GPU runner is always reported
    assert "skipped" not in tfl["litert-cpu"]
    driver = find_vulkan_driver()
    if driver.found:
        assert "skipped" not in tfl["litert-gpu"], tfl["litert-gpu"]
    else:
        assert tfl["litert-gpu"] == {"skipped": driver.reason}
    for runner, p in tfl.items():
        if "skipped" in p:
            continue
        assert p["passed"] and p["max_abs"] <= 1e-3 and p["mean_abs"] <= 1e-5, (runner, p)
    onnx = by[("onnx", "fp32")]["parity"]["onnxruntime"]
    assert onnx["passed"] and onnx["max_abs"] <= 1e-3
    for precision in ("fp16", "int8"):
        p = by[("tflite", precision)]["parity"]["litert-cpu"]
        assert p["passed"] and p["psnr_db"] >= (40 if precision == "fp16" else 30)
        # --gpu-parity fp32 (the default): reduced precisions skip GPU inference, and say why.
        gpu = by[("tflite", precision)]["parity"]["litert-gpu"]
        assert set(gpu) == {"skipped"} and gpu["skipped"], gpu
    for precision in ("fp32", "fp16", "int8"):
        coreml = by[("coreml", precision)]["parity"]
        # Core ML itself runs on macOS only; coreml-mil runs the saved package here.
        assert "macOS" in coreml["coreml"].get("skipped", "macOS"), coreml["coreml"]
        mil = coreml["coreml-mil"]
        assert mil["passed"], mil
        if precision == "fp32":
            assert mil["max_abs"] <= 1e-3 and mil["mean_abs"] <= 1e-5, mil


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
    # One record per backend, each with the lowering its target uses.
    assert sorted((r["pipeline"], r["details"]["lowering"]) for r in records) == [
        ("coreml", "fp16_exact"), ("onnx", "flat"), ("tflite", "fp16_exact")]


def test_pass_records_name_their_pipeline(compiled):
    _, _, report = compiled
    by_pipeline: dict[str, list[str]] = {}
    for r in report["passes"]:
        assert r["graph"] == "flowwarp"
        by_pipeline.setdefault(r["pipeline"], []).append(r["name"])
    assert by_pipeline == {"default": SHARED, **{t: backend_passes(t) for t in BACKEND_PASSES}}
    gather = next(r for r in report["passes"] if r["name"] == "litert::gather_v1")
    assert gather["changed"] and gather["details"]["litert_gathers"] > 0


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
    artifacts = json.loads((again / "report.json").read_text())["artifacts"]
    second = {a["path"]: a["sha256"] for a in artifacts}
    differ = [a["path"] for a in report["artifacts"] if second.get(a["path"]) != a["sha256"]]
    assert differ == []
    # --gpu-parity none: still reported, as skipped, on every LiteRT artifact.
    for a in artifacts:
        if a["target"] == "tflite":
            assert set(a["parity"]["litert-gpu"]) == {"skipped"}, a["parity"]["litert-gpu"]


def test_a_compile_prints_only_its_own_progress(tmp_path):
    """The converters' chatter (absl's pre-init notice, oneDNN's INFO line, torchao's
    'Failed to load' lines, XNNPACK's INFO line, pytree warnings) stays off the terminal."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    args = ["compile", "--model", "user_models:flow_warp", "--targets", "tflite,onnx", "--precisions", "fp32",
            "--gpu-parity", "none", "--out", str(tmp_path / "b")]  # fmt: skip
    mirror = Path(sys.executable).with_name("mirror")
    r = subprocess.run([str(mirror), *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    foreign = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert not foreign, foreign
