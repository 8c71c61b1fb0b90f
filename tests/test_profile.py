"""mirror profile: per-layer FLOPs/bytes keyed by module path, the roofline estimates, the
measured-here sources, recorded phone outputs, the adb driver and the CLI."""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mirror import MirrorError, graphs
from mirror.compiler import cli
from mirror.passes import analysis
from mirror.passes.base import run_pipeline
from mirror.passes.registry import PIPELINES
from mirror.profiling import benchmark_output, layers, measure_ort, measure_torch, phone, roofline
from mirror.profiling import table as profile_table

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data" / "benchmark_model"
sys.path.insert(0, str(TESTS))


class _Net(nn.Module):
    """Conv blocks in a Sequential, a ModuleList head and a grid_sample in the top-level forward."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.heads = nn.ModuleList([nn.Conv2d(8, 2, 3, padding=1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flow = torch.tanh(self.heads[0](self.enc(x))).permute(0, 2, 3, 1)
        return F.grid_sample(x, flow, align_corners=False)


def _net_program():
    x = torch.rand(1, 3, 32, 24)
    model = _Net().eval()
    return model, (x,), torch.export.export(model, (x,))


@pytest.mark.parametrize("name, total", [("warp", 89.4e9), ("gen", 44.0e9)])
def test_layer_flops_add_up_to_the_graph_total(name, total):
    """Full size: the layers partition the program, so their FLOPs are its FLOPs (89.4 G, 44.0 G)."""
    form = {"form": "full"} if name == "warp" else {}
    program = torch.export.export(graphs.load(name, **form), graphs.example_inputs(name, seed=0))
    program, _ = run_pipeline(program, PIPELINES["divton-warp" if name == "warp" else "default"], name)
    table = layers.layers_of(program)
    assert sum(x.flops for x in table) == analysis.count_flops(program)
    assert abs(sum(x.flops for x in table) - total) / total < 0.01
    assert sum(x.parameters for x in table) == analysis.count_params(program)
    paths = {x.path for x in table}
    if name == "warp":
        assert {"aflow_net.netRefine.3.0", "cond_FPN.smooth.4", "image_features.encoders.0.0.block.2"} <= paths
    else:
        assert "model.model.4.model.7" in paths


def test_layers_are_deepest_modules_and_group_by_depth():
    _, _, program = _net_program()
    table = {x.path: x for x in layers.layers_of(program)}
    assert {"enc.0", "enc.1", "enc.2", "heads.0", layers.ROOT} <= set(table)
    assert table["enc.0"].ops == {"conv2d": 1} and table["enc.0"].parameters == 8 * 3 * 9 + 8
    # The ReLU reads the BatchNorm's single-use output in its epilogue: no traffic of its own but its output.
    assert table["enc.2"].kernels == 0
    assert table[layers.ROOT].nodes[-1].gathered == 4 * 3 * 32 * 24  # grid_sample: four taps per output value
    grouped = {x.path: x for x in layers.group(list(table.values()), 1)}
    assert set(grouped) == {"enc", "heads", layers.ROOT}
    assert grouped["enc"].flops == sum(table[p].flops for p in ("enc.0", "enc.1", "enc.2"))


def test_error_grid_finds_where_the_error_is():
    from mirror.profiling.heatmap import error_grid

    ref = np.zeros((1, 3, 256, 192), np.float32)
    other = ref.copy()
    other[0, :, 200:208, 16:24] = 0.3  # one 8x8 cell, every channel
    found = error_grid(ref, other)
    grid = np.array(found["grid"])
    assert grid.shape == (32, 24) and np.unravel_index(grid.argmax(), grid.shape) == (25, 2)
    assert grid.max() == pytest.approx(0.3, rel=1e-6) and found["max_abs"] == pytest.approx(0.3, rel=1e-6)
    assert found["mean_abs"] == pytest.approx(0.3 * 64 / (256 * 192), rel=1e-5)


def test_device_files_cite_sources_and_mark_derived_figures():
    ids = roofline.builtin_devices()
    assert {"adreno-750", "adreno-740", "immortalis-g720", "apple-a17-pro"} <= set(ids)
    for name in ids:
        spec = roofline.load_device(name).spec
        assert spec["sources"] and {"fp32_gflops", "fp16_gflops"} <= set(spec["derived"])
        assert spec["bandwidth_gbps"] > 40 and spec["calibration"] == {"fp32": 1.0, "fp16": 1.0}
    with pytest.raises(MirrorError, match="unknown device"):
        roofline.load_device("adreno-999")


def test_roofline_prices_compute_memory_and_gathers():
    device = roofline.load_device("adreno-750")
    s = device.spec
    conv = layers.NodeCost(flops=10**10, elements=1000, params=0)
    expected = 1e10 / (s["fp16_gflops"] * 1e9 * s["compute_efficiency"]) + s["kernel_overhead_us"] * 1e-6
    assert roofline.node_seconds(conv, device, "fp16") == pytest.approx(expected)
    gather = layers.NodeCost(flops=0, elements=0, params=0, gathered=10**7)
    want = 2e7 / (s["bandwidth_gbps"] * 1e9 * s["gather_efficiency"]) + s["kernel_overhead_us"] * 1e-6
    assert roofline.node_seconds(gather, device, "fp16") == pytest.approx(want)
    _, _, program = _net_program()
    table = layers.layers_of(program)
    fp16, fp32 = roofline.frame_ms(table, device, "fp16"), roofline.frame_ms(table, device, "fp32")
    assert 0 < fp16 < fp32
    root = next(x for x in table if x.path == layers.ROOT)
    assert 0 < roofline.gather_ms(root, device, "fp16") < roofline.layer_ms(root, device, "fp16")


def test_calibration_makes_the_estimate_meet_the_measurement(tmp_path):
    _, _, program = _net_program()
    table = layers.layers_of(program)
    device = roofline.load_device("adreno-740")
    spec = roofline.calibrate(device, "fp16", 5.0, table, "test")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    assert roofline.frame_ms(table, roofline.load_device(path), "fp16") == pytest.approx(5.0, rel=1e-3)
    assert spec["calibration"]["fp32"] == 1.0 and spec["calibrated_from"]["measured_ms"] == 5.0


def test_torch_and_onnxruntime_times_are_keyed_like_the_layer_table():
    from mirror.targets.onnx import export_onnx

    model, inputs, program = _net_program()
    paths = {x.path for x in layers.layers_of(program)}
    per, whole = measure_torch.torch_layer_ms(model, inputs, runs=2)
    assert {"enc.0", "heads.0"} <= set(per) and per["enc.0"] > 0
    assert whole > 0 and sum(per.values()) > 0
    # The Sequential's own time (its Python overhead) folds into the root: no op is its own.
    assert set(profile_table.fold(per, paths)) <= paths
    onnx_model = export_onnx(program, inputs, ["x"], ["y"], optimize=False)
    per, whole = measure_ort.ort_layer_ms(onnx_model, {"x": inputs[0].numpy()}, runs=2)
    assert {"enc.0", "enc.1", "heads.0", layers.ROOT} <= set(per) and per["enc.0"] > 0
    assert measure_ort.UNMAPPED not in per and sum(per.values()) <= whole


def test_text_and_proto_outputs_give_the_same_rows():
    text = (DATA / "gen_cpu_stdout.txt").read_text()
    rows = benchmark_output.parse_text(text)
    proto = benchmark_output.parse_proto((DATA / "gen_cpu_profile.pb").read_bytes())
    assert len(rows) == len(proto) == 117
    assert [r.layer for r in rows] == [r.layer for r in proto]
    assert rows[1].node_type == "CONV_2D" and rows[1].layer == "model.model.0"
    # A fused activation names its output "act;;conv": the row is the conv's.
    fused = next(r for r in rows if ";;" in r.name)
    assert fused.layer.endswith(".0") or fused.layer.endswith(".3")
    per = benchmark_output.layer_ms(rows)
    assert per["model.model.4.model.7"] > 10 and sum(per.values()) == pytest.approx(1540.2, rel=1e-3)
    assert benchmark_output.whole_ms(text) == pytest.approx(1543.3, rel=1e-3)


def test_gpu_delegate_rows_map_to_the_delegate():
    rows = benchmark_output.parse_proto((DATA / "gen_gpu_profile.pb").read_bytes())
    assert rows[0].node_type == "TfLiteGpuDelegateV2" and rows[0].layer == benchmark_output.DELEGATE
    assert all(r.layer == benchmark_output.DELEGATE for r in rows) and sum(r.kernel for r in rows) == 5
    # The kernels run inside the delegate's row: counted once.
    assert benchmark_output.layer_ms(rows) == {benchmark_output.DELEGATE: pytest.approx(61.84)}


def test_bad_benchmark_output_is_one_line_error():
    with pytest.raises(MirrorError, match="no per-op section"):
        benchmark_output.parse_text("INFO: Inference (avg): 1000\n")
    with pytest.raises(MirrorError, match="profiling proto|no runtime per-op rows"):
        benchmark_output.parse_proto(b"\x0a\x03abc\xff\xff")


def _fake_adb(tmp_path: Path) -> Path:
    """An `adb` that logs its arguments, answers `devices`, prints the recorded stdout for
    `shell benchmark_model` and `pull`s the recorded proto of the accelerator asked for."""
    script = tmp_path / "bin" / "adb"
    script.parent.mkdir()
    script.write_text(f"""#!{sys.executable}
import shutil, sys
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
with open({str(tmp_path / "adb.log")!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
data = {str(DATA)!r}
if args[0] == "devices":
    print("List of devices attached\\nR5CW30ABCDE\\tdevice\\n")
elif args[0] == "shell" and "benchmark_model" in args[1]:
    gpu = "--use_gpu=true" in args[1]
    print(open(data + ("/gen_gpu_stdout.txt" if gpu else "/gen_cpu_stdout.txt")).read())
elif args[0] == "pull":
    shutil.copy(data + ("/gen_gpu_profile.pb" if "gpu" in args[1] else "/gen_cpu_profile.pb"), args[2])
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_phone_driver_pushes_runs_both_accelerators_and_pulls(tmp_path):
    adb = phone.Adb(str(_fake_adb(tmp_path)))
    model = tmp_path / "gen_fp32.tflite"
    model.write_bytes(b"TFL3")
    cpu, gpu = phone.profile_on_phone(model, adb=adb, runs=20)
    log = (tmp_path / "adb.log").read_text().splitlines()
    assert log[0] == "devices" and log[1] == f"push {model} /data/local/tmp/gen_fp32.tflite"
    shells = [line for line in log if line.startswith("shell")]
    assert "--enable_op_profiling=true" in shells[0] and "--use_xnnpack=false" in shells[0]
    assert "--use_gpu=true" in shells[1] and "--op_profiling_output_mode=proto" in shells[1]
    assert cpu.device == "R5CW30ABCDE" and len(cpu.rows) == 117 and cpu.whole_ms == pytest.approx(1543.3, rel=1e-3)
    assert gpu.rows[0].layer == benchmark_output.DELEGATE and gpu.whole_ms == pytest.approx(62.46, rel=1e-3)


def test_phone_driver_says_when_no_phone_is_attached(tmp_path):
    script = tmp_path / "adb"
    script.write_text("#!/bin/sh\necho 'List of devices attached'\n")
    script.chmod(0o755)
    with pytest.raises(MirrorError, match="no phone attached"):
        phone.profile_on_phone(tmp_path / "m.tflite", adb=phone.Adb(str(script)))
    with pytest.raises(MirrorError, match="no 'adb-missing' on PATH"):
        phone.Adb("adb-missing").device()


def test_cli_profiles_a_user_model_and_calibrates_a_device(tmp_path, capsys, monkeypatch):
    device = tmp_path / "phone.json"
    device.write_text((roofline.DEVICES_DIR / "adreno-750.json").read_text())
    monkeypatch.setenv("PATH", f"{_fake_adb(tmp_path).parent}{os.pathsep}{os.environ['PATH']}")
    code = cli.main(["profile", "--model", "user_models:flow_warp", "--out", str(tmp_path), "--runs", "1",
                     "--phone-output", f"gpu={DATA / 'gen_gpu_profile.pb'}", "--calibrate", str(device)])  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / "profile.json").read_text())
    (g,) = data["graphs"]
    assert g["graph"] == "flowwarp" and g["measured"]["pytorch"]["per_layer"]
    assert g["measured"]["phone-gpu"]["whole_ms"] == pytest.approx(61.84)
    rows = {r["layer"]: r for r in g["layers"]}
    assert rows["features.0"]["flops"] > 0 and rows["features.0"]["measured_ms"]["onnxruntime"] > 0
    assert set(rows["features.0"]["estimated_ms"]) >= {"adreno-750/fp16", "apple-a17-pro/fp32"}
    assert sum(r["flops"] for r in g["layers"]) == g["flops"]
    table = list(csv.DictReader((tmp_path / "profile.csv").open()))
    assert {"features.0", "(delegate)", "(whole model)"} <= {r["layer"] for r in table}
    spec = json.loads(device.read_text())
    assert spec["calibration"]["fp16"] > 1 and spec["calibrated_from"]["measured_ms"] == pytest.approx(61.84)
    out = capsys.readouterr().out
    assert "features.0" in out and "calibrated" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precisions", "int8"], "--precisions takes fp32, fp16"),
        (["--sort", "adreno-9000/fp16"], "--sort takes one of"),
        (["--devices", "adreno-999"], "unknown device 'adreno-999'"),
        (["--phone-output", "npu=x.pb"], "--phone-output takes cpu=FILE or gpu=FILE"),
        (["--artifact", "nothing.tflite", "--graph", "gen"], "no such artifact"),
        (["--calibrate", "adreno-750"], "--calibrate takes a device JSON file"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    (tmp_path / "report.json").write_text(json.dumps({"config": {"graphs": ["gen"]}, "artifacts": []}))
    assert cli.main(["profile", str(tmp_path), "--no-measure", *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_rejects_a_recorded_output_for_many_graphs(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"config": {"graphs": ["warp", "gen"]}, "artifacts": []}))
    code = cli.main(["profile", str(tmp_path), "--phone-output", f"cpu={DATA / 'gen_cpu_stdout.txt'}"])
    assert code == 1 and "--phone-output belongs to one graph" in capsys.readouterr().err


@pytest.fixture(scope="module")
def flowwarp_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    code = cli.main(["compile", "--model", "user_models:flow_warp", "--out", str(out), "--no-baseline",
                     "--targets", "tflite,onnx", "--precisions", "fp32,fp16", "--gpu-check", "static"])  # fmt: skip
    assert code == 0
    return out


def test_compile_and_validate_write_the_report(flowwarp_build):
    page = flowwarp_build / "report.html"
    assert 'data-plot="coverage"' in page.read_text()  # written by the compile
    page.unlink()
    assert cli.main(["validate", str(flowwarp_build), "--gpu-parity", "none"]) == 0
    assert "onnxruntime" in page.read_text() and 'data-plot="parity"' in page.read_text()


def test_cli_profiles_a_build_here_and_on_a_phone(flowwarp_build, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_adb(tmp_path).parent}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["profile", str(flowwarp_build), "--runs", "1", "--adb"]) == 0
    (g,) = json.loads((flowwarp_build / "profile.json").read_text())["graphs"]
    measured = g["measured"]
    assert measured["litert-cpu"]["whole_ms"] > 0 and not measured["litert-cpu"]["per_layer"]
    assert "no per-op profiler" in measured["litert-cpu"]["note"]
    assert measured["onnxruntime"]["per_layer"] and measured["phone-gpu"]["whole_ms"] == pytest.approx(62.46, rel=1e-3)
    log = (tmp_path / "adb.log").read_text()
    assert f"push {flowwarp_build / 'flowwarp_fp32.tflite'} /data/local/tmp/flowwarp_fp32.tflite" in log
    maps = g["error_maps"]  # the fp16 .tflite against the fp32 one, on the first output
    assert maps["output"] == "warped" and maps["reference"] == "flowwarp_fp32.tflite"
    assert len(maps["fp16"]["grid"]) == 32 and 0 < maps["fp16"]["max_abs"] < 0.05
    page = (flowwarp_build / "report.html").read_text()
    assert 'data-plot="latency-flowwarp"' in page and 'data-plot="heatmap-flowwarp-fp16"' in page
    out = capsys.readouterr().out
    assert "whole model only" in out and "estimated frame" in out
