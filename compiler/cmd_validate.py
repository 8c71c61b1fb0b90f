"""``mirror validate [BUILD]`` / ``mirror validate --artifact FILE --graph NAME``: parity of
existing artifacts, on fresh or given inputs (see compiler/validate.py).

Prints one row per artifact and runner, writes ``BUILD/validate.json`` (or
``FILE.validate.json`` beside a lone artifact), and exits 1 when any check fails or an
artifact changed since it was compiled.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

HELP = "rerun parity for a build's artifacts, or for one model file, on fresh or given inputs"


def add_subject_arguments(parser: argparse.ArgumentParser, *, artifact_help: str, model_help: str) -> None:
    """What a command reads: a build folder, or one artifact with its graph or model
    (``mirror validate`` and ``mirror profile``)."""
    parser.add_argument("build", nargs="?", type=Path, default=Path("build"),
                        help="folder written by `mirror compile` (default: build)")  # fmt: skip
    parser.add_argument("--artifact", type=Path, help=artifact_help)
    parser.add_argument("--graph", help="with --artifact: the built-in graph it was made from (warp, gen, parser)")
    parser.add_argument("--model", help=model_help)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_subject_arguments(parser, artifact_help="check this one file (.tflite, .onnx, .ort, .mlpackage) instead",
                          model_help="with --artifact: your model as package.module:factory")  # fmt: skip
    parser.add_argument("--precision", help="with --artifact: its precision, for the bounds (default: from a "
                        "name MIRROR gives, <graph>_<precision>.<ext>, else fp32)")
    parser.add_argument("--checkpoint", action="append", metavar="[GRAPH=]PATH",
                        help="real weights of the reference (default: the compile's, or seeded)")  # fmt: skip
    parser.add_argument("--inputs", type=Path, help=".npz with one array per input name (default: random)")
    parser.add_argument("--seed", type=int, help="seed of the random inputs (default: the compile's + 3000)")
    parser.add_argument("--gpu-parity", choices=("fp32", "all", "none"), default="fp32",
                        help="artifacts that also run on the LiteRT GPU runner (default: fp32)")  # fmt: skip
    parser.add_argument("--localize", action="store_true",
                        help="also find each runner's first layer that diverges from PyTorch, by module path, "
                             "and for fp16/int8 the layers that add most error")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="the JSON report (default: BUILD/validate.json; FILE.validate.json for --artifact)"
    )


def run(args: argparse.Namespace) -> int:
    from mirror.compiler.cmd_compile import quiet_converters
    from mirror.compiler.localize import ReferenceCache
    from mirror.compiler.progress import Progress, stop_after_writing
    from mirror.compiler.validate import VALIDATE_SEED_OFFSET, build_subjects, file_subject, validate
    from mirror.validation.report import write_json

    quiet_converters()
    progress = Progress()
    if args.artifact is not None:
        # Seeded weights are the compile's default (seed 0) unless --checkpoint gives real ones.
        subjects = [file_subject(args.artifact, graph=args.graph, model=args.model, precision=args.precision,
                                 checkpoint=_one_checkpoint(args.checkpoint), seed=0,
                                 exact_export=args.localize)]  # fmt: skip
        seed = VALIDATE_SEED_OFFSET if args.seed is None else args.seed
        out = args.out or args.artifact.with_name(f"{args.artifact.name}.validate.json")
    else:
        subjects, compile_seed = build_subjects(args.build, _graph_checkpoints(args.checkpoint),
                                                exact_export=args.localize)  # fmt: skip
        seed = compile_seed + VALIDATE_SEED_OFFSET if args.seed is None else args.seed
        out = args.out or args.build / "validate.json"
    localizer = ReferenceCache() if args.localize else None
    report = validate(subjects, seed=seed, inputs=args.inputs, gpu_parity=args.gpu_parity, progress=progress,
                      localizer=localizer)  # fmt: skip
    data = report.to_json()
    with stop_after_writing():  # validate.json and the page that shows it, or neither
        write_json(out, data)
        if args.artifact is None and out.parent == args.build:
            from mirror.profiling.html import write_report

            write_report(args.build)
    print(_table(data))
    if args.localize:
        print(_localize_table(data))
    summary = data["summary"]
    verdict = "all parity checks passed" if summary["passed"] else "some checks FAILED"
    print(f"{summary['artifacts']} artifacts, {summary['parity_checks']} parity checks on {report.inputs}: "
          f"{verdict} (wrote {out})")  # fmt: skip
    return 0 if summary["passed"] else 1


def _table(data: dict[str, Any]) -> str:
    rows = [f"{'graph':<10} {'target':<7} {'precision':<11} {'runner':<16} {'max abs':>9} {'mean abs':>9} "
            f"{'PSNR dB':>8}  result"]  # fmt: skip
    for a in data["artifacts"]:
        head = f"{a['graph']:<10} {a['target']:<7} {a['precision']:<11}"
        if "error" in a:
            rows.append(f"{head} {'-':<16} {'':>9} {'':>9} {'':>8}  ERROR: {a['error']}")
        for runner, p in a["parity"].items():
            if "skipped" in p:
                rows.append(f"{head} {runner:<16} {'':>9} {'':>9} {'':>8}  skipped: {p['skipped']}")
            elif "error" in p:
                rows.append(f"{head} {runner:<16} {'':>9} {'':>9} {'':>8}  FAILED: {p['error']}")
            else:
                status = "ok" if p["passed"] else "FAILED: " + "; ".join(p["failures"])
                rows.append(f"{head} {runner:<16} {p['max_abs']:9.2g} {p['mean_abs']:9.2g} "
                            f"{_db(p['psnr_db']):>8}  {status}")  # fmt: skip
    return "\n".join(rows)


def _db(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.1f}"


def _graph_checkpoints(values: list[str] | None) -> dict[str, str]:
    from mirror.compiler.cmd_compile import parse_checkpoints

    return parse_checkpoints(values) or {}


def _one_checkpoint(values: list[str] | None) -> str | None:
    from mirror import MirrorError

    if not values:
        return None
    if len(values) > 1:
        raise MirrorError("--artifact checks one graph: give --checkpoint once")
    return values[0].partition("=")[2] if "=" in values[0] else values[0]


def _localize_table(data: dict[str, Any]) -> str:
    """Per artifact and runner: the first divergent layer, and the layers that add most error."""
    rows = ["first divergent layer per runner (module path, op, source line, error):"]
    for a in data["artifacts"]:
        for runner, loc in (a.get("localize") or {}).items():
            head = f"  {a['graph']} {a['target']} {a['precision']} {runner}:"
            if "unavailable" in loc:
                rows.append(f"{head} not available: {loc['unavailable']}")
                continue
            first = loc["first_divergent"]
            rows.append(f"{head} " + (_layer(first) if first else
                                      f"none ({loc['layers_compared']} layers within {loc['bound']})"))  # fmt: skip
            if a["precision"] != "fp32":
                rows += [f"      adds noise at {e['added_db']} dB SNR: {_layer(e)}" for e in loc["top_error_added"]]
    return "\n".join(rows)


def _layer(e: dict[str, Any]) -> str:
    where = f" at {e['source']}" if e["source"] else ""
    return f"{e['module']} [{e['op']} -> {e['artifact_op']}]{where}: SNR {e['snr_db']} dB, max abs {e['max_abs']}"

