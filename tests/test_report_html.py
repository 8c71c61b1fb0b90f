"""report.html: one self-contained page, rendered in headless Chromium; every plot is drawn
and non-empty, and the page names no network resource."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mirror.profiling import heatmap, html, layers, roofline, table

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ["latency-toy", "coverage", "parity", "sizes"]


def _build(folder: Path) -> None:
    """A build folder's report.json and profile.json, shaped as compile and profile write them."""
    parity = {
        "litert-cpu": {"max_abs": 2e-6, "mean_abs": 1e-7, "psnr_db": 120.0, "passed": True, "failures": []},
        "litert-gpu": {"max_abs": 3e-3, "mean_abs": 1e-4, "psnr_db": 48.0, "passed": False, "failures": ["x"]},
    }
    gpu = {"ops_total": 120, "ops_on_gpu": 120, "ops_on_cpu": 0, "partitions": 1}
    report = {
        "artifacts": [
            {"graph": "toy", "target": "tflite", "precision": p, "path": f"toy_{p}.tflite", "bytes": b,
             "parity": parity, "gpu_delegate": gpu} for p, b in (("fp32", 4_000_000), ("fp16", 2_000_000))
        ] + [{"graph": "toy", "target": "onnx", "precision": "fp32", "path": "toy_fp32.onnx", "bytes": 3_900_000,
              "parity": {"onnxruntime": parity["litert-cpu"]}}],
        "baseline": [{"graph": "toy", "gpu_delegate": {"ops_total": 300, "ops_on_gpu": 90}}],
        "passes": [{"name": "gpu_grid_sample", "graph": "toy", "pipeline": "tflite", "ops_removed": {"grid_sampler": 1},
                    "ops_added": {"index_select": 4, "mul": 9}, "flops_after": 10**9, "params_after": 1234,
                    "max_abs_vs_reference": 1e-6}],
    }  # fmt: skip
    (folder / "report.json").write_text(json.dumps(report))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))
    x = torch.rand(1, 3, 32, 32)
    lay = layers.layers_of(torch.export.export(model.eval(), (x,)))
    measured = [table.Measured("pytorch", 1.5, {"0": 1.0, "1": 0.1, "2": 0.4}),
                table.Measured("litert-cpu", 2.0, None, "whole model only")]  # fmt: skip
    profile = table.build_profile("toy", lay, measured, [roofline.load_device("adreno-750")], ["fp16", "fp32"])
    ref = torch.zeros(1, 3, 64, 48).numpy()
    noisy = ref + torch.linspace(0, 0.1, 48).numpy()  # error grows to the right
    profile["error_maps"] = {"output": "image", "reference": "toy_fp32.tflite",
                             "fp16": {"artifact": "toy_fp16.tflite", **heatmap.error_grid(ref, noisy)}}  # fmt: skip
    table.write(folder / "profile.json", folder / "profile.csv", [profile], {})


def test_localization_is_drawn_when_validate_found_it(tmp_path):
    _build(tmp_path)
    layer = {"module": "heads.0", "op": "conv2d", "snr_db": 21.5, "added_db": 30.1}
    found = {"first_divergent": layer, "worst_layers": [layer, {**layer, "module": "enc.0", "snr_db": 44.0}]}
    localize = {"litert-cpu": found, "litert-gpu": {"unavailable": "no"}}
    validate = {"artifacts": [{"graph": "toy", "path": "toy_fp16.tflite", "precision": "fp16", "localize": localize}]}
    (tmp_path / "validate.json").write_text(json.dumps(validate))
    page = html.write_report(tmp_path).read_text()
    assert 'data-plot="localize-toy_fp16.tflite-litert-cpu"' in page and "<td>heads.0</td>" in page
    assert "litert-gpu: lowest" not in page


def test_page_is_self_contained(tmp_path):
    _build(tmp_path)
    page = html.write_report(tmp_path).read_text()
    assert not re.search(r"https?://|<script|<link|<img|<iframe|url\(", page, re.I)
    for plot in [*PLOTS, "heatmap-toy-fp16"]:
        assert f'data-plot="{plot}"' in page
    assert 'class="fail"' in page  # the failing GPU parity is marked


def test_stale_profile_is_left_out(tmp_path):
    _build(tmp_path)
    profile = tmp_path / "profile.json"
    report = tmp_path / "report.json"
    stamp = report.stat().st_mtime_ns
    os.utime(profile, ns=(stamp - 10**9, stamp - 10**9))
    assert 'data-plot="latency-toy"' not in html.write_report(tmp_path).read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium, see README)")
def test_chromium_renders_every_plot(tmp_path):
    import cv2

    _build(tmp_path)
    page = html.write_report(tmp_path)
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2600"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for plot in PLOTS:
        svg = re.search(rf'<svg data-plot="{plot}".*?</svg>', dom, re.S)
        assert svg, f"{plot} not in the rendered DOM"
        widths = [float(w) for w in re.findall(r'<rect[^>]* width="([0-9.]+)"', svg.group(0))]
        assert widths and max(widths) > 50, f"{plot} has no visible bar"
    cells = re.search(r'<svg data-plot="heatmap-toy-fp16".*?</svg>', dom, re.S).group(0)
    fills = re.findall(r'fill="rgb\((\d+),(\d+),(\d+)\)"', cells)
    assert len(fills) == 32 * 24 and int(fills[0][1]) > int(fills[-1][1])  # redder where the error is larger
    shot = tmp_path / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2600, 1200)
    colored = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60  # the bars, not black text on white
    assert colored.sum() > 5000
    # Every latency bar series drew: the estimate (blue) and the measured PyTorch time (orange).
    blue = (image[..., 0] > 150) & (image[..., 2] < 100)
    orange = (image[..., 2] > 200) & (image[..., 0] < 80)
    assert blue.sum() > 200 and orange.sum() > 200


def test_exact_and_non_finite_figures_are_drawn_not_crashed(tmp_path):
    """An exact match (PSNR inf) and an fp16 overflow (errors inf/nan, stored as strings)."""
    _build(tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    report["artifacts"][0]["parity"]["litert-cpu"].update(psnr_db="inf", max_abs=0.0)
    report["artifacts"][1]["parity"]["litert-cpu"].update(psnr_db="nan", max_abs="nan")
    (tmp_path / "report.json").write_text(json.dumps(report))
    profile = json.loads((tmp_path / "profile.json").read_text())
    fp16 = profile["graphs"][0]["error_maps"]["fp16"]
    fp16["grid"][0][0], fp16["grid"][0][1], fp16["max_abs"] = "inf", "nan", "inf"
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    page = html.write_report(tmp_path).read_text()
    assert 'data-plot="heatmap-toy-fp16"' in page and "<title>nan</title>" in page
    assert "max abs inf" in page
    assert 'data-plot="parity"' in page
