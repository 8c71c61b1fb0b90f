"""``mirror profile [BUILD]`` / ``mirror profile --artifact FILE --graph NAME``: where the time goes.

Prints the top layers with every source beside them, writes ``profile.json`` and
``profile.csv`` (one row per layer, keyed by torch module path) and ``report.html``
(see compiler/profile.py and profiling/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "per-layer latency keyed by module path: measured here, estimated for phone GPUs, measured on a phone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mirror.compiler.cmd_validate import add_subject_arguments

    add_subject_arguments(parser, artifact_help="profile this .tflite or .onnx instead of a build",
                          model_help="your model as package.module:factory (with or without --artifact)")  # fmt: skip
    parser.add_argument("--graphs", help="comma list: profile only these graphs of the build")
    parser.add_argument("--devices", default="all",
                        help="comma list of device ids or device JSON files (default: all shipped)")  # fmt: skip
    parser.add_argument("--precisions", default="fp16,fp32", help="estimate precisions (default: fp16,fp32)")
    parser.add_argument("--sort", help="DEVICE/PRECISION or measured source ordering the table "
                        "(default: adreno-750/fp16, or the first estimate)")  # fmt: skip
    parser.add_argument("--depth", type=int, help="group layers by the first N components of the module path")
    parser.add_argument("--top", type=int, default=15, help="layers printed per graph (default: 15)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measured source (default: 3)")
    parser.add_argument("--threads", type=int,
                        help="intra-op threads for the measurements here (default: each library's own)")  # fmt: skip
    parser.add_argument("--no-measure", action="store_true", help="estimates only: time nothing on this machine")
    parser.add_argument("--adb", nargs="?", const="adb", metavar="ADB",
                        help="also run benchmark_model on the attached phone (CPU and --use_gpu)")  # fmt: skip
    parser.add_argument("--serial", help="with --adb: the phone's serial")
    parser.add_argument("--benchmark-binary", type=Path, help="with --adb: push this benchmark_model first")
    parser.add_argument("--phone-output", action="append", metavar="cpu|gpu=FILE",
                        help="a recorded benchmark_model output (proto or text) of the one profiled graph")  # fmt: skip
    parser.add_argument("--calibrate", type=Path, metavar="DEVICE.json",
                        help="set this device file's calibration from the phone GPU's measured time")  # fmt: skip
    parser.add_argument("--calibrate-precision", default="fp16", choices=("fp16", "fp32"))
    parser.add_argument("--out", type=Path, help="output folder (default: BUILD, or the artifact's folder)")


def run(args: argparse.Namespace) -> int:
    from mirror.compiler import profile as prof
    from mirror.compiler.cmd_compile import quiet_converters
    from mirror.compiler.progress import Progress, stop_after_writing
    from mirror.profiling import html, phone, table

    quiet_converters()
    progress = Progress()
    subjects, out = _subjects(args, prof)
    devices, precisions = _devices(args), _precisions(args.precisions)
    args.sort = _check_sort(args.sort, devices, precisions)
    opts = prof.Options(devices, precisions, args.depth, runs=args.runs, threads=args.threads,
                        torch=not args.no_measure, onnxruntime=not args.no_measure, litert=not args.no_measure,
                        adb=phone.Adb(args.adb, args.serial) if args.adb else None,
                        benchmark_binary=args.benchmark_binary)  # fmt: skip
    profiles, all_layers = [], []
    for s in subjects:
        p, lay = prof.profile(s, opts, progress)
        profiles.append(p)
        all_layers.append(lay)
    stem = f"{args.artifact.name}." if args.artifact else ""
    with stop_after_writing():
        table.write(out / f"{stem}profile.json", out / f"{stem}profile.csv", profiles, {"sort": args.sort})
        page = html.write_report(out, out / f"{stem}report.html", args.sort) if not args.artifact else None
    for p in profiles:
        print(table.format_table(p, args.sort, args.top) + "\n")
    if args.calibrate:
        spec = prof.calibrate(args.calibrate, args.calibrate_precision, profiles, all_layers)
        factor = spec["calibration"][args.calibrate_precision]
        print(f"calibrated {args.calibrate}: {args.calibrate_precision} factor {factor}")
    _summary(profiles, out, stem, page)
    return 0


def _subjects(args: argparse.Namespace, prof) -> tuple[list, Path]:
    from mirror import MirrorError

    if args.artifact is not None or (args.model and not (args.build / "report.json").is_file()):
        if args.artifact is None:
            subject = prof.Subject(prof.user_unit(args.model))
            out = args.out or Path(".")
        else:
            subject = prof.file_subject(args.artifact, args.graph, args.model)
            out = args.out or args.artifact.parent
        subjects = [subject]
    else:
        graphs = _list(args.graphs) if args.graphs else None
        subjects, out = prof.build_subjects(args.build, graphs), args.out or args.build
    recorded = _phone_outputs(args.phone_output)
    if recorded and len(subjects) != 1:
        raise MirrorError("--phone-output belongs to one graph: add --graphs NAME or use --artifact")
    for s in subjects:
        s.phone_outputs = recorded
    return subjects, out


def _phone_outputs(values: list[str] | None) -> dict[str, Path]:
    from mirror import MirrorError

    out = {}
    for v in values or []:
        accel, _, path = v.partition("=")
        if accel not in ("cpu", "gpu") or not path:
            raise MirrorError(f"--phone-output takes cpu=FILE or gpu=FILE; got {v!r}")
        if not Path(path).is_file():
            raise MirrorError(f"--phone-output: no such file {path}")
        out[accel] = Path(path)
    return out


def _devices(args: argparse.Namespace) -> list:
    from mirror.profiling import roofline

    if args.calibrate and (args.calibrate.suffix != ".json" or not args.calibrate.is_file()):
        from mirror import MirrorError

        raise MirrorError(f"--calibrate takes a device JSON file to update; {args.calibrate} is not one "
                          f"(copy one of {roofline.DEVICES_DIR}/*.json)")  # fmt: skip
    names = roofline.builtin_devices() if args.devices == "all" else _list(args.devices)
    devices = [roofline.load_device(n) for n in names]
    if args.calibrate and args.calibrate.resolve() not in {d.path.resolve() for d in devices}:
        devices.append(roofline.load_device(args.calibrate))
    return devices


def _precisions(text: str) -> list[str]:
    from mirror import MirrorError
    from mirror.profiling.roofline import DTYPE_BYTES

    wanted = _list(text)
    bad = [p for p in wanted if p not in DTYPE_BYTES]
    if bad or not wanted:
        raise MirrorError(f"--precisions takes {', '.join(DTYPE_BYTES)} (the estimator's); got {text!r}")
    return wanted


def _check_sort(key: str | None, devices: list, precisions: list[str]) -> str:
    """--sort names an estimate (DEVICE/PRECISION) or a per-layer measured source."""
    from mirror import MirrorError

    estimates = [f"{d.id}/{p}" for d in devices for p in precisions]
    if key is None:
        return "adreno-750/fp16" if "adreno-750/fp16" in estimates else estimates[0]
    if key not in estimates and key not in ("pytorch", "onnxruntime", "phone-cpu", "phone-gpu"):
        raise MirrorError(f"--sort takes one of {', '.join(estimates)}, pytorch, onnxruntime, phone-cpu, phone-gpu; "
                          f"got {key!r}")  # fmt: skip
    return key


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _summary(profiles: list, out: Path, stem: str, page: Path | None) -> None:
    for p in profiles:
        est = ", ".join(f"{k} {e['frame_ms']:.3g} ms" for k, e in p["estimated"].items())
        print(f"{p['graph']}: estimated frame {est}")
    wrote = [str(out / f"{stem}profile.json"), str(out / f"{stem}profile.csv")] + ([str(page)] if page else [])
    print(f"{len(profiles)} graph(s) profiled; wrote {', '.join(wrote)}")
