"""GPU-delegate coverage of the grid_sample model zoo: MIRROR vs stock litert-torch.

For each model of ``tests/zoo.py`` (or, with ``--module user_models``, of the user models
written with the idioms the LiteRT legalizations take: ``tests/user_models.py:IDIOMS``) it
runs ``mirror compile --model zoo:<name> --targets
tflite --precisions <p> --allow-cpu-fallback`` (the compile's baseline is the stock
litert-torch conversion of the same eager model) and prints, side by side, the ops the real
LiteRT GPU delegate (WebGPU on SwiftShader) runs, the GPU partitions, the ratio of ops on
the GPU, LiteRT CPU/GPU parity, and whether the static rules (``targets/gpu_delegate.py``,
classic profile) agree with the real delegate on each artifact.

Run: ``.venv/bin/python benchmarks/zoo_gpu_coverage.py [--module zoo|user_models] [--models a,b]
[--precisions fp32] [--json out.json]``. About a minute per model on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _gpu(result: dict[str, Any] | None) -> dict[str, Any]:
    """Ops on the GPU, partitions, and whether the static rules agree, of one delegate verdict."""
    if not result:
        return {"ops": "n/a"}
    static = result.get("static") or {}
    agree = static.get("fully_accelerated") == result["fully_accelerated"] and (
        not result["fully_accelerated"] or static.get("ops_on_gpu") == result["ops_on_gpu"]
    )
    return {
        "ops": f"{result['ops_on_gpu']}/{result['ops_total']}",
        "ratio": result["ops_on_gpu"] / max(1, result["ops_total"]),
        "partitions": result["partitions"],
        "full": bool(result["fully_accelerated"]),
        "static_agrees": agree,
        "static": {k: static.get(k) for k in ("fully_accelerated", "ops_on_gpu", "partitions")},
        "refused": sorted({u["op"] for u in result.get("unsupported", [])}),
    }


def measure(name: str, precisions: str, out: Path, module: str = "zoo") -> dict[str, Any]:
    from mirror.compiler import cli

    args = ["compile", "--model", f"{module}:{name}", "--out", str(out), "--targets", "tflite",
            "--precisions", precisions, "--gpu-parity", "all", "--allow-cpu-fallback"]  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(args)
    report = json.loads((out / "report.json").read_text())
    row: dict[str, Any] = {"model": name, "exit": code}
    for a in report["artifacts"]:
        parity = {k: v.get("max_abs") for k, v in a.get("parity", {}).items()}
        row[a["precision"]] = {**_gpu(a.get("gpu_delegate")), "parity": parity}
    stock = next((b for b in report.get("baseline", []) if b.get("gpu_delegate")), None)
    row["stock"] = _gpu(stock["gpu_delegate"]) if stock else {"ops": "failed"}
    return row


def _line(row: dict[str, Any], precisions: list[str]) -> str:
    st = row["stock"]
    cells = [f"{row['model']:<20}", f"{st['ops']:>9} {st.get('partitions', '-'):>3}p"]
    for p in precisions:
        r = row.get(p, {"ops": "n/a"})
        gap = r.get("ratio", 0) / st["ratio"] if st.get("ratio") else float("nan")
        par = max((v for v in r.get("parity", {}).values() if v is not None), default=float("nan"))
        cells.append(f"{r['ops']:>9} {r.get('partitions', '-'):>3}p x{gap:4.2f} {par:8.1e}")
    # A stock conversion that failed has no artifact for the rules to be judged on.
    judged = [row.get(p, {}) for p in precisions] + ([st] if st["ops"] != "failed" else [])
    agree = all(r.get("static_agrees", False) for r in judged)
    return " | ".join(cells) + f" | {'yes' if agree else 'NO'}"


def main(argv: list[str] | None = None) -> int:
    import importlib

    sys.path.insert(0, str(TESTS))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", choices=("zoo", "user_models"), default="zoo")
    parser.add_argument("--models", help="comma list (default: the module's ZOO or IDIOMS)")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    source = importlib.import_module(args.module)
    models = args.models or ",".join(getattr(source, "ZOO", None) or source.IDIOMS)
    precisions = args.precisions.split(",")
    print(f"{'model':<20} | {'stock':>14} | " + " | ".join(f"{'ours ' + p:>31}" for p in precisions)
          + " | static rules agree")  # fmt: skip
    print(f"{'':<20} | {'ops  parts':>14} | " + " | ".join(f"{'ops  parts  ratio  max|cpu,gpu|':>31}"
                                                            for _ in precisions))  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models.split(","):
            rows.append(measure(name, args.precisions, Path(tmp) / name, args.module))
            print(_line(rows[-1], precisions), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
