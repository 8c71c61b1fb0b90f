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
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mirror.runners.child import run_once

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
    def check(group: list[str]) -> dict[str, dict[str, Any]]:
        outcome = run_once("mirror.compiler.import_check", "import", {"modules": group}, timeout=timeout,
                           label="import check")  # fmt: skip
        if outcome.ok:
            return outcome.result
        return {n: {"ok": False, "error": f"import check failed: {outcome.error}"} for n in group}

    with ThreadPoolExecutor(len(_GROUPS)) as pool:
        results: dict[str, dict[str, Any]] = {}
        for part in pool.map(check, _GROUPS):
            results.update(part)
    return results


def run(args: argparse.Namespace) -> int:
    from mirror import __version__
    from mirror.runners.gpu_probe import probe_gpu

    t0 = time.perf_counter()
    versions = _versions()
    with ThreadPoolExecutor(2) as pool:
        imports_f = None if args.quick else pool.submit(_check_imports)
        gpu_f = None if args.no_gpu else pool.submit(probe_gpu)
        imports = imports_f.result() if imports_f else {}
        gpu = gpu_f.result() if gpu_f else None

    py = platform.python_version()
    lines = [f"mirror {__version__} doctor ({platform.system()} {platform.machine()})"]
    py_note = "" if py.startswith("3.11.") else "  (MIRROR is built for Python 3.11)"
    lines.append(f"  {'python':<18} {py}{py_note}")
    report: dict[str, Any] = {"python": py}
    failed = _packages(versions, imports, lines, report)
    lines.append(f"LiteRT GPU accelerator: {_gpu(gpu, report)}")
    lines.append(f"Core ML: {_coreml(versions, report)}")
    if failed:
        verdict = f"NOT READY: required package(s) missing or broken: {', '.join(failed)}"
    else:
        verdict = "ready: every required package " + ("is installed" if args.quick else "imports")
    lines.append(f"doctor: {verdict} ({time.perf_counter() - t0:.1f} s)")
    report["ready"] = not failed
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines))
    return 1 if failed else 0


def _packages(versions: dict[str, str | None], imports: dict[str, Any], lines: list[str], report: dict) -> list[str]:
    """One line per required package (version, pin, import time); returns the broken ones."""
    pins = _pins()
    failed: list[str] = []
    report["packages"] = {}
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
    return failed


def _gpu(gpu: Any, report: dict[str, Any]) -> str:
    from mirror.runners.vulkan import INSTALL_HINT

    if gpu is None:
        return "skipped (--no-gpu)"
    line = gpu.describe()
    if not gpu.driver.found:
        line += "; GPU verification will fall back to static rules"
    elif not gpu.ok:
        line += f" (is the driver complete? {INSTALL_HINT})"
    report["gpu"] = {
        "ok": gpu.ok,
        "driver": str(gpu.driver.icd) if gpu.driver.icd else None,
        "checked": gpu.driver.checked,
        "adapter": gpu.adapter,
        "error": gpu.error,
    }
    return line


def _coreml(versions: dict[str, str | None], report: dict[str, Any]) -> str:
    coreml_ver = versions.get("coremltools")
    if platform.system() == "Darwin":
        coreml = f"conversion and prediction available (coremltools {coreml_ver})"
    else:
        coreml = (
            f"conversion available (coremltools {coreml_ver}); prediction is macOS-only, "
            f"not available on {platform.system()}; parity runs on the saved packages in numpy (coreml-mil)"
        )
    report["coreml"] = coreml
    return coreml
