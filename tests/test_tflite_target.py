"""The LiteRT target: conversion, names, quantization recipes, runners, real GPU delegate.

One small two-input, two-output model is converted once per module (the emitter reuses
its float conversion across precisions), so the whole file stays within seconds of that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mirror import MirrorError
from mirror.runners.base import RunnerError
from mirror.runners.litert import litert_runner, run_litert_once
from mirror.runners.vulkan import SWIFTSHADER_ICD, find_vulkan_driver

pytestmark = pytest.mark.slow

INPUTS = ["person", "parsing"]
OUTPUTS = ["rendered", "mask"]


def _needs_vulkan():
    d = find_vulkan_driver()
    if not d.found:
        pytest.skip(
            f"SwiftShader Vulkan driver {SWIFTSHADER_ICD} not found ({d.reason}); "
            "apt-get install chromium"
        )


class TinyTryOn(nn.Module):
    """Conv / resize / tanh / sigmoid: everything the GPU delegate accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(10, 96, 3, padding=1)
        self.c2 = nn.Conv2d(96, 96, 3, padding=1)
        self.c3 = nn.Conv2d(96, 4, 3, padding=1)

    def forward(self, person, parsing):
        x = torch.cat([person, parsing], 1)
        x = F.relu(self.c1(x))
        x = F.interpolate(x, scale_factor=2, mode="bilinear")
        y = self.c3(F.relu(self.c2(x)))
        return torch.tanh(y[:, :3]), torch.sigmoid(y[:, 3:])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mirror.passes.base import run_pipeline
    from mirror.passes.registry import PIPELINES
    from mirror.targets.tflite import TFLiteEmitter

    torch.manual_seed(0)
    model = TinyTryOn().eval()
    person = torch.rand(1, 3, 32, 32) * 2 - 1
    labels = torch.randint(0, 7, (1, 32, 32))
    parsing = F.one_hot(labels, 7).permute(0, 3, 1, 2).float()
    args = (person, parsing)
    emitter = TFLiteEmitter()
    # The emitter takes a program that went through the shared and the LiteRT pipelines.
    program, _ = run_pipeline(
        torch.export.export(model, args), [*PIPELINES["default"], *emitter.pipeline("fp16_exact")], "tryon"
    )
    with torch.no_grad():
        ref = [t.numpy() for t in model(*args)]
    out = tmp_path_factory.mktemp("tflite")
    arts = {}
    for precision in ("fp32", "fp16", "int8", "int8-full"):
        arts[precision] = emitter.emit(
            program,
            "tryon",
            precision,
            out,
            example_inputs=args,
            input_names=INPUTS,
            output_names=OUTPUTS,
        )
    feeds = {"person": person.numpy(), "parsing": parsing.numpy()}
    return {"program": program, "args": args, "ref": ref, "arts": arts, "feeds": feeds,
            "emitter": emitter, "out": out}


def test_fp32_artifact_names_and_layout(setup):
    a = setup["arts"]["fp32"]
    assert a.path.name == "tryon_fp32.tflite" and a.path.is_file()
    assert a.target == "tflite" and a.input_names == INPUTS and a.output_names == OUTPUTS
    info = a.info
    assert info["signature_key"] == "tryon"
    assert info["signature_inputs"] == INPUTS and info["signature_outputs"] == OUTPUTS
    assert info["tensor_names"]["inputs"] == ["tryon_person", "tryon_parsing"]
    assert info["layout"] == "NCHW"
    assert info["io_dtypes"] == dict.fromkeys(INPUTS + OUTPUTS, "FLOAT32")
    assert info["sha256"] and info["size_bytes"] == a.path.stat().st_size
    assert info["legalized"] is True and info["litert_gathers"] == 0  # no index_select to legalize
    # no stray temporary files next to the artifact
    assert sorted(p.name for p in setup["out"].iterdir()) == sorted(
        f"tryon_{p}.tflite" for p in ("fp32", "fp16", "int8", "int8-full")
    )


def test_cpu_runner_matches_pytorch(setup):
    r = litert_runner(setup["arts"]["fp32"].path, "cpu")
    assert r.name == "litert-cpu"
    assert r.availability() == (True, "")
    out = r.run(setup["feeds"])
    assert list(out) == OUTPUTS
    for name, ref in zip(OUTPUTS, setup["ref"], strict=True):
        assert out[name].shape == ref.shape  # NCHW in, NCHW out
        assert np.abs(out[name] - ref).max() < 1e-5
    with pytest.raises(MirrorError, match="missing input"):
        r.run({"person": setup["feeds"]["person"]})
    r.close()
    with pytest.raises(MirrorError, match="accelerator must be 'cpu' or 'gpu'"):
        litert_runner(setup["arts"]["fp32"].path, "npu")


def test_quantized_sizes_and_parity(setup):
    arts = setup["arts"]
    fp32 = arts["fp32"].info["size_bytes"]
    assert arts["fp16"].info["size_bytes"] <= 0.51 * fp32
    assert arts["int8"].info["size_bytes"] <= 0.27 * fp32
    assert arts["int8"].info["recipe"] == "int8-weight"
    assert arts["int8-full"].info["size_bytes"] <= 0.30 * fp32
    assert arts["int8-full"].info["io_dtypes"]["person"] == "INT8"
    assert arts["int8-full"].info["calibration_samples"] == 16
    tol = {"fp16": 1e-3, "int8": 1e-2, "int8-full": 5e-2}
    for precision, t in tol.items():
        out = litert_runner(arts[precision].path, "cpu").run(setup["feeds"])
        for name, ref in zip(OUTPUTS, setup["ref"], strict=True):
            err = np.abs(out[name] - ref).max()
            assert err < t, (precision, name, err)


def test_int8_full_with_given_calibration(setup, tmp_path):
    from mirror.targets.calibration import calibration_set

    calib = calibration_set(setup["args"], n=4, seed=3, input_names=INPUTS)
    a = setup["emitter"].emit(
        setup["program"], "tryon", "int8-full", tmp_path,
        example_inputs=setup["args"], input_names=INPUTS, output_names=OUTPUTS,
        calibration=calib,
    )
    assert a.info["calibration"] == "given" and a.info["calibration_samples"] == 4
    out = litert_runner(a.path, "cpu").run(setup["feeds"])
    assert np.abs(out["rendered"] - setup["ref"][0]).max() < 0.1


def test_conversion_is_deterministic(setup, tmp_path):
    from mirror.targets.tflite import TFLiteEmitter

    a = TFLiteEmitter(check_determinism=True).emit(
        setup["program"], "tryon", "fp16", tmp_path,
        example_inputs=setup["args"], input_names=INPUTS, output_names=OUTPUTS,
    )
    assert a.info["deterministic"] is True
    assert a.info["sha256"] == setup["arts"]["fp16"].info["sha256"]


def test_unknown_precision_is_a_user_error(setup, tmp_path):
    with pytest.raises(MirrorError, match="unknown precision"):
        setup["emitter"].emit(
            setup["program"], "tryon", "int4", tmp_path,
            example_inputs=setup["args"], input_names=INPUTS, output_names=OUTPUTS,
        )
    assert not list(tmp_path.iterdir())


def test_crashing_child_becomes_an_error_result(setup, tmp_path):
    # A truncated flatbuffer makes the LiteRT loader segfault; the caller survives.
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(setup["arts"]["fp32"].path.read_bytes()[:3000])
    res = run_litert_once(bad, accelerator="cpu", timeout=60)
    assert not res.ok
    assert res.error and "\n" not in res.error
    assert res.stage == "load"
    if res.crashed:
        assert res.returncode < 0
        assert "crashed with SIG" in res.error and res.error.endswith("during load")


@pytest.mark.gpu_delegate
def test_gpu_runner_matches_cpu(setup):
    _needs_vulkan()
    emitter = setup["emitter"]
    runners = emitter.runners(setup["arts"]["fp32"])
    assert [r.name for r in runners] == ["litert-cpu", "litert-gpu"]
    cpu, gpu = (r.run(setup["feeds"]) for r in runners)
    assert list(gpu) == OUTPUTS
    for name in OUTPUTS:
        assert np.abs(gpu[name] - cpu[name]).max() < 1e-4
    assert runners[1].diagnostics()["fully_accelerated"] is True
    assert runners[1].loaded.ok and runners[1].loaded.result["fully_accelerated"] is True
    for r in runners:
        r.close()
    # int8 inputs/outputs are (de)quantized by the runner on the GPU path too
    with litert_runner(setup["arts"]["int8-full"].path, "gpu") as gpu_int8:
        out = gpu_int8.run(setup["feeds"])
    assert np.abs(out["rendered"] - setup["ref"][0]).max() < 5e-2


@pytest.mark.gpu_delegate
def test_gpu_runner_crash_is_reported(setup, tmp_path):
    _needs_vulkan()
    path = tmp_path / "m.tflite"
    path.write_bytes(setup["arts"]["fp32"].path.read_bytes())
    runner = litert_runner(path, "gpu")
    path.write_bytes(path.read_bytes()[:3000])  # broken after the runner read its signature
    with pytest.raises(RunnerError) as err:
        runner.run(setup["feeds"])
    assert "\n" not in str(err.value) and str(err.value).startswith("litert-gpu on m.tflite: ")
    assert runner.loaded.ok is False and runner.loaded.error in str(err.value)
    diagnostics = runner.diagnostics()
    assert diagnostics["ok"] is False and err.value.diagnostics == diagnostics
    if runner.loaded.crashed:
        assert diagnostics["crashed"] is True and "crashed with SIG" in str(err.value)
    runner.close()
