"""``mirror compile``: build, verify and report every artifact (see compiler/driver.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export, transform, emit and verify LiteRT / Core ML / ONNX artifacts"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_checkpoints(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    from mirror import MirrorError

    out = {}
    for v in values:
        graph, sep, path = v.partition("=")
        if not sep or not path:
            raise MirrorError(f"--checkpoint takes GRAPH=PATH (e.g. warp=PFAFN_warp.pth); got {v!r}")
        out[graph] = path
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config (see README); flags override it")
    parser.add_argument("--out", type=Path, help="output folder (default: build)")
    parser.add_argument("--graphs", type=_csv, help="comma list of warp,gen,parser (default: all three)")
    parser.add_argument("--targets", type=_csv, help="comma list of tflite,coreml,onnx (default: all)")
    parser.add_argument(
        "--precisions",
        type=_csv,
        help="comma list of precisions: fp32,fp16,int8 (default), int8-full, palettize6 (mirror/precisions.py)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        metavar="GRAPH=PATH",
        help="load real weights for a graph (repeatable); default: seeded weights",
    )
    parser.add_argument("--seed", type=int, help="seed for weights and validation inputs (default: 0)")
    parser.add_argument(
        "--model",
        metavar="PKG.MODULE:FACTORY",
        help="compile your own model: the factory returns (module, example_inputs)",
    )
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_const",
        const=False,
        help="skip the stock litert-torch conversion used for comparison",
    )
    parser.add_argument(
        "--gpu-check",
        choices=("auto", "static", "delegate"),
        help="GPU-delegate verification: real delegate when a Vulkan driver is found (auto)",
    )
    parser.add_argument(
        "--gpu-parity",
        choices=("fp32", "all", "none"),
        help="which LiteRT artifacts also run inference on the GPU delegate (default: fp32)",
    )
    parser.add_argument(
        "--allow-cpu-fallback",
        action="store_const",
        const=True,
        help="exit 0 even when a LiteRT artifact leaves ops on the CPU (default: that fails the compile)",
    )
    parser.add_argument(
        "--rebuild",
        action="store_const",
        const=True,
        help="rebuild every artifact (default: reuse those unchanged since the previous build in --out)",
    )


def quiet_converters() -> None:
    """Keep the terminal for MIRROR's progress: the converters' deprecation chatter and
    info logs say nothing the report does not (errors still surface)."""
    import logging
    import os
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*[Tt]orch version.*")
    # --localize keeps every LiteRT tensor on purpose; the interpreter warns about it each time.
    warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # LiteRT converter info lines
    os.environ.setdefault("GLOG_minloglevel", "2")
    for name in ("coremltools", "onnxscript", "torch.onnx", "absl", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    from mirror.compiler.config import load_config

    quiet_converters()
    from mirror.compiler.driver import compile_all
    from mirror.compiler.progress import Progress

    config = load_config(
        args.config,
        out=args.out,
        graphs=args.graphs,
        targets=args.targets,
        precisions=args.precisions,
        checkpoints=parse_checkpoints(args.checkpoint),
        seed=args.seed,
        model=args.model,
        baseline=args.baseline,
        gpu_check=args.gpu_check,
        gpu_parity=args.gpu_parity,
        allow_cpu_fallback=args.allow_cpu_fallback,
        rebuild=args.rebuild,
    )
    progress = Progress()
    data = compile_all(config, progress)
    summary = data["summary"]
    from mirror.profiling.html import write_report

    progress.log(f"wrote {config.out / 'report.json'}, {config.out / 'manifest.json'} and {write_report(config.out)}")
    from mirror.compiler.runtime_wheel import write_runtime_wheel

    progress.log(f"wrote {write_runtime_wheel(config.out)} (the torch-free runtime; see RUNTIME.md)")
    for line in summary["emit_failed"] + summary["parity_failed"]:
        progress.log(f"FAILED {line}")
    allowed = " (allowed by --allow-cpu-fallback)" if config.allow_cpu_fallback else ""
    for line in summary["not_fully_on_gpu"]:
        progress.log(f"NOT FULLY ON GPU{allowed} {line}")
    verdict = "all parity checks passed" if not summary["parity_failed"] and not summary["emit_failed"] else (
        "some checks FAILED")  # fmt: skip
    if summary["not_fully_on_gpu"]:
        verdict += f"; {len(summary['not_fully_on_gpu'])} LiteRT artifact(s) not fully on the GPU{allowed}"
    rss = summary.get("peak_rss_mb") or {}
    memory = f"; peak memory {rss['compile'] / 1024:.1f} GB" if rss.get("compile") else ""
    progress.log(f"{summary['artifacts']} artifacts, {summary['parity_checks']} parity checks: {verdict}{memory}")
    if summary["parity_failed"]:
        model = f" (with {config.model} importable)" if config.model else ""
        progress.log(f"to find the first layer that diverges: mirror validate {config.out} --localize{model}")
    return 0 if summary["passed"] else 1
