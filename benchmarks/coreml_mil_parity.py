"""Core ML parity on Linux: ``coreml-mil`` figures per graph, sampler and precision, and its time.

For each grid_sample sampler of the Core ML target (``fp16_exact``: the decomposed sampler,
gathers and index arithmetic; ``native``: MIL ``resample``), this compiles the built-in
graphs to Core ML (``mirror compile --targets coreml --no-baseline``, seeded weights,
256x192 unless ``--size``), then prints, per package, the ``coreml-mil`` parity that
``report.json`` recorded against the PyTorch reference (max abs, mean abs, PSNR, pass) and
the runner's own time: loading the package (spec and weights from disk) and one run
(median of ``--runs``), wall clock and CPU time of this process.

Run: ``.venv/bin/python benchmarks/coreml_mil_parity.py --out /tmp/coreml-mil [--graphs warp,gen]
[--precisions fp32,fp16] [--reuse] [--json figures.json]``. The two compiles take about
three minutes each on a 2-core machine; ``--reuse`` reads builds already in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SAMPLERS = ("fp16_exact", "native")


def compile_build(out: Path, sampler: str, graphs: str, precisions: str, size: str | None) -> float:
    from mirror.compiler import cli

    config = out.with_suffix(".toml")
    lines = ["[sampling]", f'coreml = "{sampler}"']
    if size:
        h, w = (int(v) for v in size.split("x"))
        lines += [f"[graph.{g}]\nsize = [{h}, {w}]" for g in graphs.split(",")]
    config.write_text("\n".join(lines) + "\n")
    t = time.perf_counter()
    cli.main(["compile", "--config", str(config), "--out", str(out), "--graphs", graphs, "--targets", "coreml",
              "--precisions", precisions, "--no-baseline"])  # fmt: skip
    return time.perf_counter() - t


def time_runner(path: Path, runs: int) -> dict[str, float]:
    from mirror.runners.coreml_mil import CoreMLMilRunner

    runner = CoreMLMilRunner(path)
    c0, t0 = time.process_time(), time.perf_counter()
    program = runner.program()
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    rng = np.random.default_rng(0)
    feeds = {n: rng.uniform(-1, 1, s).astype(np.float32) for n, _, s in program.inputs}
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        runner.run(feeds)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"load_s": load_s, "load_cpu_s": load_cpu, "run_s": statistics.median(walls),
            "run_cpu_s": statistics.median(cpus), "ops": len(program.ops), "fp16_ops": program.fp16_ops()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the two builds")
    ap.add_argument("--graphs", default="warp,gen")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--size", help="HxW for every graph (multiples of 32), e.g. 64x64; default: the graphs' own")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="use the builds already in --out")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, compiles = [], {}
    for sampler in SAMPLERS:
        build = args.out / sampler
        if not (args.reuse and (build / "report.json").exists()):
            compiles[sampler] = compile_build(build, sampler, args.graphs, args.precisions, args.size)
        report = json.loads((build / "report.json").read_text())
        for a in report["artifacts"]:
            if a["target"] != "coreml" or "path" not in a:
                continue
            mil = a["parity"].get("coreml-mil", {})
            rows.append({"graph": a["graph"], "sampler": sampler, "mil_sampler": a["info"].get("sampler"),
                         "precision": a["precision"], **{k: mil.get(k) for k in ("max_abs", "mean_abs", "psnr_db",
                                                                                  "passed", "error")},
                         **time_runner(build / a["path"], args.runs)})  # fmt: skip
    print(f"{'graph':6} {'sampler':11} {'MIL':10} {'prec':5} {'max abs':>9} {'mean abs':>9} {'PSNR dB':>8} "
          f"{'ok':4} {'ops':>5} {'fp16':>5} {'load s':>7} {'run s':>6} {'run cpu s':>9}")  # fmt: skip
    for r in rows:
        figs = (f"{r['max_abs']:9.2g} {r['mean_abs']:9.2g} {r['psnr_db']:8.1f}" if r["max_abs"] is not None
                else f"{'error: ' + str(r['error'])[:40]:>28}")  # fmt: skip
        print(f"{r['graph']:6} {r['sampler']:11} {r['mil_sampler']:10} {r['precision']:5} {figs} "
              f"{'yes' if r['passed'] else 'NO':4} {r['ops']:5d} {r['fp16_ops']:5d} {r['load_s']:7.2f} "
              f"{r['run_s']:6.2f} {r['run_cpu_s']:9.2f}")  # fmt: skip
    for sampler, seconds in compiles.items():
        print(f"compile ({sampler}): {seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "compile_s": compiles}, indent=2))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
