"""GPU-delegate verification on converted models: the real delegate and the static rules.

A conv/resize/tanh model must be fully accelerated; a model with stock ``F.grid_sample``
(which litert-torch lowers to GATHER_ND, rank-5 reshapes and int32 index arithmetic) must
not. The real delegate (LiteRT WebGPU on SwiftShader) and the static rules must agree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mirror.runners.vulkan import SWIFTSHADER_ICD, find_vulkan_driver

pytestmark = pytest.mark.slow


class ConvResizeTanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(F.relu(self.c1(x)), scale_factor=2, mode="bilinear")
        return torch.tanh(self.c2(x))


class StockGridSample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.f = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        y = self.c(x)
        grid = torch.tanh(self.f(y)).permute(0, 2, 3, 1)
        return F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from mirror.passes.base import run_pipeline
    from mirror.passes.registry import PIPELINES
    from mirror.targets.tflite import TFLiteEmitter

    out = tmp_path_factory.mktemp("gpu")
    paths = {}
    for name, cls in (("convtanh", ConvResizeTanh), ("gridsample", StockGridSample)):
        torch.manual_seed(0)
        m = cls().eval()
        args = (torch.rand(1, 3, 32, 32) * 2 - 1,)
        emitter = TFLiteEmitter()
        # "native": the LiteRT pipeline without the grid_sample lowering, so the stock
        # F.grid_sample reaches litert-torch (what the delegate and the rules must refuse).
        pipeline = [*PIPELINES["default"], *emitter.pipeline("native")]
        program, _ = run_pipeline(torch.export.export(m, args), pipeline, name)
        art = emitter.emit(
            program, name, "fp32", out,
            example_inputs=args, input_names=["image"], output_names=["out"],
        )
        paths[name] = art.path
    return paths


def _needs_vulkan():
    d = find_vulkan_driver()
    if not d.found:
        pytest.skip(
            f"SwiftShader Vulkan driver {SWIFTSHADER_ICD} not found ({d.reason}); "
            "apt-get install chromium"
        )


def test_static_rules_pass_conv_tanh(models):
    from mirror.targets.gpu_delegate import check_static

    r = check_static(models["convtanh"])
    assert r["fully_accelerated"] and r["unsupported"] == [] and r["partitions"] == 1
    assert r["ops_on_gpu"] == r["ops_total"]


def test_static_rules_flag_stock_grid_sample(models):
    from mirror.targets.gpu_delegate import check_static

    r = check_static(models["gridsample"])
    assert not r["fully_accelerated"]
    ops = {u["op"]: u["reason"] for u in r["unsupported"]}
    assert ops["GATHER_ND"] == "Operation is not supported."
    assert any("less than 5" in u["reason"] for u in r["unsupported"])  # rank-5 tensors
    assert any("INT32" in u["reason"] for u in r["unsupported"])  # int32 index arithmetic
    assert r["ops_on_gpu"] < r["ops_total"] and r["partitions"] >= 2


@pytest.mark.gpu_delegate
def test_real_delegate_and_rules_agree(models):
    _needs_vulkan()
    from mirror.targets.gpu_delegate import check_static, verify_gpu_delegate

    ok = verify_gpu_delegate(models["convtanh"])
    assert ok["verified_on"].startswith("litert-gpu/webgpu on SwiftShader Vulkan")
    assert ok["fully_accelerated"] and ok["unsupported"] == []
    assert ok["ops_on_gpu"] == ok["ops_total"] and ok["partitions"] == 1
    assert ok["static"]["fully_accelerated"] is True

    bad = verify_gpu_delegate(models["gridsample"])
    assert not bad["fully_accelerated"]
    refused = {u["op"] for u in bad["unsupported"]}
    assert "GATHER_ND" in refused
    assert any("less than 5" in u["reason"] for u in bad["unsupported"])
    assert bad["static"]["fully_accelerated"] is False  # the classic rules agree
    assert 0 < bad["ops_on_gpu"] < bad["ops_total"]
    # The partition model reproduces the delegate's own count, and the webgpu rules
    # predict it without running anything.
    assert bad["ops_on_gpu_derived"] == bad["ops_on_gpu"]
    assert check_static(models["gridsample"], "webgpu")["ops_on_gpu"] == bad["ops_on_gpu"]
    static_refused = {u["op"] for u in check_static(models["gridsample"], "webgpu")["unsupported"]}
    assert static_refused == refused


@pytest.mark.gpu_delegate
def test_verdict_from_a_runner_reuses_its_load(models):
    """After a parity run, the GPU runner's own load log gives the verdict: no second child."""
    _needs_vulkan()
    import numpy as np

    from mirror.runners.litert import LiteRTGpuRunner
    from mirror.targets.gpu_delegate import verify_gpu_delegate

    with LiteRTGpuRunner(models["gridsample"]) as runner:
        runner.run({"image": np.zeros((1, 3, 32, 32), np.float32)})
        pid = runner._child.process.pid
        loaded = runner.loaded
        verdict = verify_gpu_delegate(models["gridsample"], runner=runner)
        assert runner.loaded is loaded and runner._child.process.pid == pid
    own = verify_gpu_delegate(models["gridsample"])
    for key in ("fully_accelerated", "ops_total", "ops_on_gpu", "ops_on_cpu", "partitions"):
        assert verdict[key] == own[key], key
    assert not verdict["fully_accelerated"] and {u["op"] for u in verdict["unsupported"]} >= {"GATHER_ND"}
