"""Cost of each grid_sample lowering for LiteRT, at DIVTON's sizes.

Lowerings compared, one grid_sample per model (bilinear, border, align_corners=False):

- ``stock``: litert-torch's own lowering of ``F.grid_sample`` (no pass);
- ``flat``: ``gpu_grid_sample(lowering="flat")``, 4 taps from a per-pixel table
  (exact in float32 only);
- ``fp16_exact``: ``gpu_grid_sample`` default, blocked gather exact in float16;
- ``resampler``: the GPU delegate's native ``Resampler`` custom op (emitted here through a
  benchmark-only custom op; the CPU interpreter has no kernel for it, so it has no CPU
  time and no CPU parity).

For each: TFLite op count, GATHER/GATHER_ND count, ops on the real GPU delegate (SwiftShader
Vulkan, through ``mirror.runners.litert.LiteRTGpuRunner``'s child process), LiteRT CPU latency
(XNNPACK on 2 threads in this process, ``LiteRTCpuRunner``, median), SwiftShader latency (a
CPU emulating a GPU: only the relative order means anything; it includes the round trip of
inputs and outputs to the runner's child, the same for every lowering of a case), the
largest intermediate tensor and the sum of all gather outputs (memory traffic per call), and
parity.

Run: ``.venv/bin/python benchmarks/grid_sample_lowerings.py [--cases cloth,feat,flow]
[--json out.json]``. Takes a few minutes (one litert-torch conversion per row).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mirror.passes.base import get_pass
from mirror.runners.base import RunnerError
from mirror.runners.litert import LiteRTCpuRunner, LiteRTGpuRunner
from mirror.runners.vulkan import find_vulkan_driver

# name: (channels, source H, W, output Ho, Wo) -- DIVTON's grid_sample calls.
CASES = {
    "cloth": (3, 256, 192, 256, 192),  # final cloth warp (edge: 1 channel, same shape)
    "feat": (256, 128, 96, 128, 96),  # finest-level feature warp in the flow net
    "flow": (2, 128, 96, 128, 96),  # flow composition at the finest level
    "feat64": (256, 64, 48, 64, 48),  # level 3 feature warp
}


class _Sample(torch.nn.Module):
    def forward(self, x, grid):
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------- Resampler


def _register_resampler():
    """A torch op that litert-torch lowers to the GPU delegate's ``Resampler`` custom op:
    src [B,H,W,C], warp [B,Ho,Wo,2] absolute pixel (x, y), zero outside."""
    if hasattr(torch.ops, "mirror_bench") and hasattr(torch.ops.mirror_bench, "resampler"):
        return torch.ops.mirror_bench.resampler.default
    from litert_converter.mlir import ir
    from litert_torch.backend import lowerings
    from litert_torch.backend.lowerings import utils as lowering_utils

    @torch.library.custom_op("mirror_bench::resampler", mutates_args=())
    def resampler(src: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = src.shape
        gx = (2 * warp[..., 0] + 1) / w - 1
        gy = (2 * warp[..., 1] + 1) / h - 1
        out = F.grid_sample(src.permute(0, 3, 1, 2), torch.stack([gx, gy], -1),
                            padding_mode="zeros", align_corners=False)
        return out.permute(0, 2, 3, 1).contiguous()

    @resampler.register_fake
    def _(src, warp):
        return src.new_empty((src.shape[0], warp.shape[1], warp.shape[2], src.shape[3]))

    @lowerings.lower(torch.ops.mirror_bench.resampler.default)
    def _lower(lctx, src, warp):
        op = ir.Operation.create(
            "tfl.custom",
            results=lowering_utils.node_meta_to_ir_types(lctx.node),
            operands=[src, warp],
            attributes={
                "custom_code": ir.StringAttr.get("Resampler"),
                "custom_option": ir.Attribute.parse('#tfl<const_bytes: "0x">'),
            },
        )
        return op.results[0]

    return torch.ops.mirror_bench.resampler.default


class _ResamplerSample(torch.nn.Module):
    """grid_sample(bilinear, border, align_corners=False) through Resampler."""

    def __init__(self):
        super().__init__()
        self.op = _register_resampler()

    def forward(self, x, grid):
        _, _, h, w = x.shape
        px = ((grid[..., 0] + 1) * (w / 2) - 0.5).clamp(0, w - 1)  # border: clamp first
        py = ((grid[..., 1] + 1) * (h / 2) - 0.5).clamp(0, h - 1)
        out = self.op(x.permute(0, 2, 3, 1), torch.stack([px, py], -1))
        return out.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- running


def time_runner(runner: Any, inputs: list[np.ndarray], reps: int) -> dict:
    """Median latency of ``runner.run`` over ``reps`` calls after a warm-up call (load,
    allocations, shader compilation), and the last output; or the runner's error."""
    feeds = dict(zip(runner.input_names, inputs, strict=True))
    try:
        out = runner.run(feeds)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            out = runner.run(feeds)
            times.append(time.perf_counter() - t)
    except RunnerError as exc:
        return {"error": str(exc)[:200]}
    return {"median_ms": 1e3 * statistics.median(times), "out": out[runner.output_names[0]]}


def run_cpu(path: Path, inputs: list[np.ndarray], reps: int) -> dict:
    """LiteRT's CPU interpreter (XNNPACK, 2 threads), in this process."""
    with LiteRTCpuRunner(path, num_threads=2) as runner:
        return time_runner(runner, inputs, reps)


def run_gpu(path: Path, inputs: list[np.ndarray], reps: int) -> dict:
    """LiteRT's GPU accelerator in the runner's child process: what the delegate accepted
    (from its load log) and the timed runs."""
    from mirror.targets.gpu_delegate import parse_delegate_log

    with LiteRTGpuRunner(path) as runner:
        loaded = runner.load()
        if not loaded.ok:
            return {"error": loaded.error[:200]}
        counts = parse_delegate_log(loaded.log)
        res = {"fully": bool(loaded.result.get("fully_accelerated")),
               "gpu_ops": counts["gpu_ops"], "cpu_ops": counts["cpu_ops"]}
        res.update(time_runner(runner, inputs, reps))
        return res


def _tensor_bytes(t) -> int:
    return int(math.prod(t.shape)) * (4 if t.dtype in ("FLOAT32", "INT32") else 1)


def measure(case: str, lowering: str, reps: int, work: Path) -> dict:
    from mirror.targets.tflite import quiet_litert_torch

    litert_torch = quiet_litert_torch()

    from mirror.passes.litert_gather import legalize_for_litert
    from mirror.runners.tflite_file import read_tflite

    c, h, w, ho, wo = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(1, c, h, w)
    grid = torch.rand(1, ho, wo, 2) * 2.4 - 1.2
    args = (x, grid)
    want = F.grid_sample(x, grid, padding_mode="border", align_corners=False).numpy()
    if lowering == "resampler":
        module = _ResamplerSample().eval()
    else:
        module = torch.export.export(_Sample().eval(), args)
        if lowering != "stock":
            module = get_pass("gpu_grid_sample")(module, lowering=lowering).program
            module = legalize_for_litert(module)
        module = module.module()
    path = work / f"{case}_{lowering}.tflite"
    t0 = time.perf_counter()
    litert_torch.convert(module, args).export(str(path))
    convert_s = time.perf_counter() - t0
    graph = read_tflite(path)
    ops = graph.ops

    def outputs(o):
        return [graph.tensors[i] for i in o.outputs]

    row = {
        "case": case, "lowering": lowering, "convert_s": round(convert_s, 1),
        "tflite_ops": len(ops),
        "gathers": sum(o.name == "GATHER" for o in ops),
        "gather_nd": sum(o.name == "GATHER_ND" for o in ops),
        "max_rank": max(len(graph.tensors[i].shape) for o in ops for i in o.inputs + o.outputs if i >= 0),
        "largest_tensor_mb": round(max(_tensor_bytes(t) for o in ops for t in outputs(o)) / 2**20, 1),
        "gather_out_mb": round(sum(_tensor_bytes(outputs(o)[0]) for o in ops
                                   if o.name in ("GATHER", "GATHER_ND")) / 2**20, 1),
    }
    inputs = [x.numpy(), grid.numpy()]
    if lowering != "resampler":
        cpu = run_cpu(path, inputs, reps)
        row["cpu_ms"] = round(cpu.get("median_ms", float("nan")), 2)
        if "out" in cpu:
            row["cpu_max_abs"] = float(np.abs(cpu["out"] - want).max())
        if "error" in cpu:
            row["cpu_error"] = cpu["error"]
    driver = find_vulkan_driver()
    if driver.found:
        gpu = run_gpu(path, inputs, max(3, reps // 3))
        gpu_ops, cpu_ops = gpu.get("gpu_ops"), gpu.get("cpu_ops")
        row["gpu_ops"] = (
            f"all {len(ops)}" if gpu.get("fully")
            else f"{gpu_ops if gpu_ops is not None else '?'}/{(gpu_ops or 0) + (cpu_ops or 0)}"
        )
        row["gpu_fully"] = gpu.get("fully")
        row["swiftshader_ms"] = round(gpu.get("median_ms", float("nan")), 1)
        if "out" in gpu:
            row["gpu_max_abs"] = float(np.abs(gpu["out"] - want).max())
        if "error" in gpu:
            row["gpu_error"] = gpu["error"]
    else:
        row["gpu_skipped"] = driver.reason
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="cloth,feat,flow")
    ap.add_argument("--lowerings", default="stock,flat,fp16_exact,resampler")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for case in args.cases.split(","):
            for lowering in args.lowerings.split(","):
                try:
                    row = measure(case, lowering, args.reps, Path(d))
                except Exception as e:  # noqa: BLE001 - a benchmark row, not a crash
                    row = {"case": case, "lowering": lowering, "error": f"{type(e).__name__}: {e}"[:300]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
