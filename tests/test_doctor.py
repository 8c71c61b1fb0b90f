"""`mirror doctor` through the CLI entry point."""

from __future__ import annotations

import pytest

from mirror.compiler.cli import main
from mirror.runners.vulkan import find_vulkan_driver


def test_doctor_quick_without_driver(capsys, monkeypatch, tmp_path):
    missing = tmp_path / "vk_swiftshader_icd.json"
    monkeypatch.setenv("MIRROR_VK_ICD", str(missing))
    assert main(["doctor", "--quick"]) == 0
    out = capsys.readouterr().out
    for pkg in ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "coremltools",
                "onnx", "onnxruntime", "onnxscript", "onnxsim", "numpy", "python"):
        assert f"  {pkg} " in out
    gpu = next(line for line in out.splitlines() if line.startswith("LiteRT GPU accelerator:"))
    assert str(missing) in gpu and "apt-get install chromium" in gpu and "static rules" in gpu
    assert "macOS-only" in out
    assert "doctor: ready" in out


def test_doctor_reports_missing_package(capsys, monkeypatch):
    from importlib.metadata import PackageNotFoundError

    from mirror.compiler import cmd_doctor

    real = cmd_doctor._versions

    def fake():
        v = real()
        v["onnxsim"] = None
        return v

    monkeypatch.setattr(cmd_doctor, "_versions", fake)
    assert main(["doctor", "--quick", "--no-gpu"]) == 1
    out = capsys.readouterr().out
    assert "onnxsim" in out and "NOT INSTALLED" in out
    assert "doctor: NOT READY" in out and PackageNotFoundError


@pytest.mark.slow
def test_doctor_full_run(capsys):
    import time

    t = time.perf_counter()
    rc = main(["doctor"])
    elapsed = time.perf_counter() - t
    out = capsys.readouterr().out
    assert rc == 0, out
    assert sum(" imports (" in line and line.startswith("  ") for line in out.splitlines()) == 10
    gpu = next(line for line in out.splitlines() if line.startswith("LiteRT GPU accelerator:"))
    if find_vulkan_driver().found:
        assert gpu.startswith("LiteRT GPU accelerator: OK: WebGPU on SwiftShader")
    else:
        assert "apt-get install chromium" in gpu
    assert elapsed < 90  # about 12 s on an idle 2-core machine
