"""`mirror doctor`: can the toolkit work here, and can it run the real LiteRT GPU delegate?

Prints the versions of the packages MIRROR is built on, imports each one (in two child
processes running side by side, since torch, litert-torch and coremltools take seconds),
runs a two-op model on LiteRT's GPU accelerator in a child process to see whether it
initializes on a Vulkan driver, and says what Core ML can do on this OS.

Exit status 0 when every required package imports (a missing GPU driver is a warning:
GPU verification then falls back to static rules); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HELP = "report package versions and whether the LiteRT GPU accelerator works here"

# (distribution, import name); split over two child processes of similar import cost.
REQUIRED: list[tuple[str, str]] = [
    ("torch", "torch"),
    ("litert-torch", "litert_torch"),
    ("ai-edge-litert", "ai_edge_litert"),
    ("ai-edge-quantizer", "ai_edge_quantizer"),
    ("coremltools", "coremltools"),
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("onnxscript", "onnxscript"),
    ("onnxsim", "onnxsim"),
    ("numpy", "numpy"),
]
_GROUPS = (
    ["numpy", "torch", "litert_torch", "ai_edge_litert", "ai_edge_quantizer"],
    ["onnx", "onnxruntime", "coremltools", "onnxscript", "onnxsim"],
)

_IMPORT_CHILD = r"""
import importlib, json, sys, time, warnings
warnings.simplefilter("ignore")
out = {}
for name in sys.argv[1:]:
    t = time.perf_counter()
    try:
        importlib.import_module(name)
        out[name] = {"ok": True, "s": time.perf_counter() - t}
    except BaseException as e:
        msg = (str(e).strip().splitlines() or [""])[-1]
        out[name] = {"ok": False, "s": time.perf_counter() - t, "error": f"{type(e).__name__}: {msg}"}
print("MIRROR-IMPORTS " + json.dumps(out), flush=True)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip the import checks (versions come from package metadata only)",
    )
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU accelerator probe")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist, _ in REQUIRED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _pins() -> dict[str, str]:
    """The versions pyproject pins (from the installed mirror-toolkit metadata, if any)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("mirror-toolkit") or []
    except PackageNotFoundError:
        return {}
    pins = {}
    for r in reqs:
        if "extra ==" in r:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)", r)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _pin_ok(installed: str, pin: str) -> bool:
    installed = installed.split("+", 1)[0]  # local labels such as torch's "+cpu"
    if pin.endswith(".*"):
        return installed.startswith(pin[:-1])
    return installed == pin


def _check_imports(timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    def run(group: list[str]) -> dict[str, dict[str, Any]]:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _IMPORT_CHILD, *group],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {n: {"ok": False, "error": f"import timed out after {timeout:.0f} s"} for n in group}
        for line in proc.stdout.splitlines():
            if line.startswith("MIRROR-IMPORTS "):
                return json.loads(line[len("MIRROR-IMPORTS ") :])
        err = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {n: {"ok": False, "error": f"import check crashed: {err}"} for n in group}

    with ThreadPoolExecutor(len(_GROUPS)) as pool:
        results: dict[str, dict[str, Any]] = {}
        for part in pool.map(run, _GROUPS):
            results.update(part)
    return results


def run(args: argparse.Namespace) -> int:
    from mirror import __version__
    from mirror.targets.litert_env import INSTALL_HINT, probe_gpu

    t0 = time.perf_counter()
    versions = _versions()
    pins = _pins()
    with ThreadPoolExecutor(2) as pool:
        imports_f = None if args.quick else pool.submit(_check_imports)
        gpu_f = None if args.no_gpu else pool.submit(probe_gpu)
        imports = imports_f.result() if imports_f else {}
        gpu = gpu_f.result() if gpu_f else None

    py = platform.python_version()
    lines = [f"mirror {__version__} doctor ({platform.system()} {platform.machine()})"]
    py_note = "" if py.startswith("3.11.") else "  (MIRROR is built for Python 3.11)"
    lines.append(f"  {'python':<18} {py}{py_note}")
    failed: list[str] = []
    report: dict[str, Any] = {"python": py, "packages": {}}
    for dist, mod in REQUIRED:
        ver = versions[dist]
        notes = []
        if ver is None:
            notes.append("NOT INSTALLED")
            failed.append(dist)
        else:
            pin = pins.get(dist)
            if pin and not _pin_ok(ver, pin):
                notes.append(f"(pinned {pin})")
            if mod in imports:
                res = imports[mod]
                if res.get("ok"):
                    notes.append(f"imports ({res['s']:.1f} s)")
                else:
                    notes.append(f"IMPORT FAILED: {res.get('error', '?')}")
                    failed.append(dist)
        lines.append(f"  {dist:<18} {ver or '-':<10} {' '.join(notes)}".rstrip())
        report["packages"][dist] = {"version": ver, **imports.get(mod, {})}

    if gpu is None:
        gpu_line = "skipped (--no-gpu)"
    else:
        gpu_line = gpu.describe()
        if not gpu.driver.found:
            gpu_line += "; GPU verification will fall back to static rules"
        elif not gpu.ok:
            gpu_line += f" (is the driver complete? {INSTALL_HINT})"
        report["gpu"] = {
            "ok": gpu.ok,
            "driver": str(gpu.driver.icd) if gpu.driver.icd else None,
            "checked": gpu.driver.checked,
            "adapter": gpu.adapter,
            "error": gpu.error,
        }
    lines.append(f"LiteRT GPU accelerator: {gpu_line}")

    coreml_ver = versions.get("coremltools")
    if platform.system() == "Darwin":
        coreml = f"conversion and prediction available (coremltools {coreml_ver})"
    else:
        coreml = (
            f"conversion available (coremltools {coreml_ver}); prediction is macOS-only, "
            f"not available on {platform.system()}"
        )
    lines.append(f"Core ML: {coreml}")
    report["coreml"] = coreml

    if failed:
        verdict = f"NOT READY: required package(s) missing or broken: {', '.join(failed)}"
    else:
        verdict = "ready: every required package " + ("is installed" if args.quick else "imports")
    lines.append(f"doctor: {verdict} ({time.perf_counter() - t0:.1f} s)")
    report["ready"] = not failed

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(lines))
    return 1 if failed else 0
