"""Time DIVTON warp+gen on LiteRT CPU (XNNPACK) against PyTorch eager CPU, same run.

    .venv/bin/python benchmarks/litert_vs_torch.py [--build build] [--precision fp32] [--runs 5] [--threads 2]

Uses the .tflite files ``mirror compile`` wrote into ``--build`` (run it first). Both
sides use the same number of threads and the same random inputs; the first run of each
is a warm-up. Prints per-graph medians and the ratio PyTorch / LiteRT (> 1: LiteRT faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mirror import graphs
from mirror.runners.litert import litert_runner


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up (allocations, XNNPACK packing, torch dispatch caches)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=Path("build"))
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    totals = {"pytorch": 0.0, "litert": 0.0}
    for name in ("warp", "gen"):
        path = args.build / f"{name}_{args.precision}.tflite"
        if not path.is_file():
            print(f"missing {path}: run `mirror compile` first", file=sys.stderr)
            return 2
        module = graphs.load(name)
        inputs = graphs.example_inputs(name, seed=7)
        feeds = {n: t.numpy() for n, t in zip(graphs.spec(name).input_names, inputs, strict=True)}
        runner = litert_runner(path, "cpu", num_threads=args.threads)

        def run_torch(module=module, inputs=inputs):
            with torch.no_grad():
                module(*inputs)

        t_torch = median_seconds(run_torch, args.runs)
        t_litert = median_seconds(lambda runner=runner, feeds=feeds: runner.run(feeds), args.runs)
        # Same answer, or the timing compares different work.
        with torch.no_grad():
            want = module(*inputs)
        got = runner.run(feeds)
        runner.close()
        names = graphs.spec(name).output_names
        max_abs = max(float(np.abs(got[n] - w.numpy()).max()) for n, w in zip(names, want, strict=True))
        totals["pytorch"] += t_torch
        totals["litert"] += t_litert
        rows.append((name, t_torch, t_litert, max_abs))

    print(f"{'graph':8s} {'pytorch s':>10s} {'litert s':>10s} {'ratio':>7s} {'max abs':>9s}")
    for name, t_torch, t_litert, max_abs in rows:
        print(f"{name:8s} {t_torch:10.3f} {t_litert:10.3f} {t_torch / t_litert:6.2f}x {max_abs:9.2e}")
    ratio = totals["pytorch"] / totals["litert"]
    print(f"{'warp+gen':8s} {totals['pytorch']:10.3f} {totals['litert']:10.3f} {ratio:6.2f}x")
    print(f"LiteRT CPU ({args.precision}, XNNPACK, {args.threads} threads) is {ratio:.2f}x PyTorch eager (goal: >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
