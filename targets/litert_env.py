"""Finding a Vulkan driver for LiteRT's GPU accelerator and running LiteRT in a child process.

LiteRT's GPU accelerator (WebGPU through Dawn) needs a Vulkan loader (``libvulkan.so.1``)
and a Vulkan driver (an ICD JSON file). On a machine without a GPU, Google's SwiftShader
driver, shipped by Debian's ``chromium`` package, serves: its ICD is
``/usr/lib/chromium/vk_swiftshader_icd.json`` and chromium carries its own loader next to it.

The accelerator can crash the process (a segmentation fault on some models), so every GPU
load or run happens in a child Python process. This module is both the parent-side helper
and, run as a script, the child itself. The child part imports only the standard library,
numpy and ai_edge_litert, never ``mirror``, so it runs from any working directory.

Environment overrides: ``MIRROR_VK_ICD`` (the only ICD JSON file to try),
``MIRROR_LITERT_GPU_TIMEOUT`` (seconds a child may take, default 600).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SWIFTSHADER_ICD = Path("/usr/lib/chromium/vk_swiftshader_icd.json")
INSTALL_HINT = "apt-get install chromium (it ships Google's SwiftShader Vulkan driver)"
_ICD_CANDIDATES = (
    SWIFTSHADER_ICD,
    Path("/usr/lib64/chromium/vk_swiftshader_icd.json"),
    Path("/usr/lib/chromium-browser/vk_swiftshader_icd.json"),
)
_DEFAULT_TIMEOUT_S = 600.0


@dataclass
class VulkanDriver:
    """Where the Vulkan driver (ICD) and loader are, or why none was found."""

    icd: Path | None  # the ICD JSON file
    loader: Path | None  # libvulkan.so.1 to put on LD_LIBRARY_PATH, None if the system has one
    checked: list[str] = field(default_factory=list)  # the paths looked at, in order
    reason: str = ""  # why the driver is unusable ("" when usable)

    @property
    def found(self) -> bool:
        return self.icd is not None and not self.reason

    @property
    def name(self) -> str:
        if self.icd is None:
            return "none"
        return "SwiftShader Vulkan" if "swiftshader" in self.icd.name.lower() else "Vulkan"

    def describe(self) -> str:
        if self.found:
            where = f"loader {self.loader}" if self.loader else "system loader"
            return f"{self.name} driver {self.icd} ({where})"
        return self.reason


def find_vulkan_driver() -> VulkanDriver:
    """Locate a Vulkan ICD usable by LiteRT's WebGPU accelerator (SwiftShader first)."""
    checked: list[str] = []
    candidates: list[Path] = []
    override = os.environ.get("MIRROR_VK_ICD")
    if override:
        candidates.append(Path(override))  # exclusive: the defaults are not tried
    else:
        candidates.extend(_ICD_CANDIDATES)
    icd = None
    for cand in candidates:
        checked.append(str(cand))
        if cand.is_file():
            icd = cand
            break
    if icd is None:
        return VulkanDriver(
            None,
            None,
            checked,
            f"no Vulkan driver: {checked[0]} not found; install it with {INSTALL_HINT}",
        )
    try:
        lib = json.loads(icd.read_text())["ICD"]["library_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return VulkanDriver(icd, None, checked, f"unreadable Vulkan ICD file {icd}: {exc}")
    lib_path = (icd.parent / lib) if not os.path.isabs(lib) else Path(lib)
    checked.append(str(lib_path))
    if "/" in lib and not lib_path.is_file():
        return VulkanDriver(
            icd, None, checked, f"Vulkan ICD {icd} names a missing driver library {lib_path}"
        )
    # The loader: the system's, else the one chromium ships next to its ICD.
    if ctypes.util.find_library("vulkan"):
        return VulkanDriver(icd, None, checked)
    bundled = icd.parent / "libvulkan.so.1"
    checked.append(str(bundled))
    if bundled.is_file():
        return VulkanDriver(icd, bundled, checked)
    return VulkanDriver(
        icd,
        None,
        checked,
        f"no Vulkan loader: libvulkan.so.1 is neither installed nor next to {icd}; "
        "install libvulkan1 or chromium",
    )


def gpu_child_env(driver: VulkanDriver, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that loads LiteRT's GPU accelerator on ``driver``."""
    env = dict(os.environ if base is None else base)
    if driver.icd is None:
        return env
    env["VK_ICD_FILENAMES"] = str(driver.icd)
    env["VK_DRIVER_FILES"] = str(driver.icd)
    runtime_dir = Path(tempfile.gettempdir()) / f"mirror-xdg-{os.getuid()}"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    if not os.access(env["XDG_RUNTIME_DIR"], os.W_OK):
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    if driver.loader is not None:
        # A folder holding only the loader, so chromium's other libraries stay out of the way.
        shim = Path(tempfile.gettempdir()) / f"mirror-vulkan-loader-{os.getuid()}"
        shim.mkdir(exist_ok=True)
        link = shim / "libvulkan.so.1"
        if not link.exists() or link.resolve() != driver.loader.resolve():
            tmp = shim / f".libvulkan.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(driver.loader)
            os.replace(tmp, link)
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = str(shim) + (os.pathsep + old if old else "")
    return env


@dataclass
class ChildResult:
    """What a LiteRT child process did: its result (if it finished), log and fate."""

    ok: bool
    returncode: int
    result: dict[str, Any]
    log: str  # the child's stderr and stdout: LiteRT's and the delegate's messages
    error: str = ""  # one line: why it failed ("" when ok)
    outputs: dict[str, Any] = field(default_factory=dict)  # numpy arrays, when it ran


def run_litert_child(
    model: Path,
    *,
    accelerator: str = "gpu",
    inputs: dict[str, Any] | None = None,
    signature: str | None = None,
    run: bool = True,
    enforce_f32: bool = False,
    driver: VulkanDriver | None = None,
    timeout: float | None = None,
) -> ChildResult:
    """Load ``model`` in a child process on ``accelerator`` ("gpu" = GPU with CPU fallback,
    "gpu-only", or "cpu") and optionally run it.

    ``inputs`` maps signature input names to numpy arrays in the model's own dtypes; without
    them the child runs zeros. A crash or a hang becomes ``ok=False`` with ``error`` set.
    """
    import numpy as np

    if driver is None and accelerator.startswith("gpu"):
        driver = find_vulkan_driver()
    env = gpu_child_env(driver) if driver is not None and driver.found else dict(os.environ)
    if timeout is None:
        timeout = float(os.environ.get("MIRROR_LITERT_GPU_TIMEOUT", _DEFAULT_TIMEOUT_S))
    with tempfile.TemporaryDirectory(prefix="mirror-litert-") as tmp:
        tmpd = Path(tmp)
        request = {
            "model": str(Path(model).resolve()),
            "accelerator": accelerator,
            "signature": signature,
            "run": run,
            "enforce_f32": enforce_f32,
            "inputs": None,
            "outputs": str(tmpd / "outputs.npz"),
            "result": str(tmpd / "result.json"),
        }
        if inputs is not None:
            np.savez(tmpd / "inputs.npz", **{k: np.asarray(v) for k, v in inputs.items()})
            request["inputs"] = str(tmpd / "inputs.npz")
        (tmpd / "request.json").write_text(json.dumps(request))
        cmd = [sys.executable, str(Path(__file__).resolve()), str(tmpd / "request.json")]
        try:
            proc = subprocess.run(
                cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode("utf-8", "replace") if exc.stdout else ""
            return ChildResult(False, -1, {}, out, f"LiteRT child timed out after {timeout:.0f} s")
        log = proc.stdout.decode("utf-8", "replace")
        result: dict[str, Any] = {}
        rpath = tmpd / "result.json"
        if rpath.is_file():
            result = json.loads(rpath.read_text())
        if proc.returncode < 0:
            sig = -proc.returncode
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            stage = result.get("stage", "start")
            return ChildResult(
                False,
                proc.returncode,
                result,
                log,
                f"LiteRT {accelerator} child crashed with {name} during {stage}",
            )
        if proc.returncode != 0 or result.get("error"):
            msg = result.get("error") or _last_error_line(log) or f"exit status {proc.returncode}"
            return ChildResult(False, proc.returncode, result, log, msg)
        outputs: dict[str, Any] = {}
        opath = tmpd / "outputs.npz"
        if run and opath.is_file():
            with np.load(opath) as data:
                outputs = {k: data[k] for k in data.files}
        return ChildResult(True, 0, result, log, "", outputs)


def _last_error_line(log: str) -> str:
    for line in reversed(log.splitlines()):
        s = line.strip()
        if s and ("Error" in s or "ERROR" in s):
            return s[:300]
    return ""


def tiny_probe_model() -> bytes:
    """A two-op .tflite (``y = tanh(a + b)`` on 1x8x8x4 float32), built without a converter.

    Used to check in a second or two that the GPU accelerator initializes and computes.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    def tensor(name: str) -> Any:
        t = fb.TensorT()
        t.name = name
        t.shape = [1, 8, 8, 4]
        t.type = fb.TensorType.FLOAT32
        t.buffer = 0
        return t

    def opcode(code: int) -> Any:
        oc = fb.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = code
        oc.version = 1
        return oc

    add = fb.OperatorT()
    add.opcodeIndex, add.inputs, add.outputs = 0, [0, 1], [2]
    add.builtinOptionsType = fb.BuiltinOptions.AddOptions
    add.builtinOptions = fb.AddOptionsT()
    tanh = fb.OperatorT()
    tanh.opcodeIndex, tanh.inputs, tanh.outputs = 1, [2], [3]
    sub = fb.SubGraphT()
    sub.tensors = [tensor("a"), tensor("b"), tensor("sum"), tensor("y")]
    sub.inputs, sub.outputs, sub.operators = [0, 1], [3], [add, tanh]
    sub.name = "main"

    def tmap(name: str, index: int) -> Any:
        m = fb.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    sig = fb.SignatureDefT()
    sig.signatureKey = "probe"
    sig.subgraphIndex = 0
    sig.inputs = [tmap("a", 0), tmap("b", 1)]
    sig.outputs = [tmap("y", 3)]
    model = fb.ModelT()
    model.version = 3
    model.description = "mirror GPU probe"
    model.operatorCodes = [opcode(fb.BuiltinOperator.ADD), opcode(fb.BuiltinOperator.TANH)]
    model.subgraphs = [sub]
    model.buffers = [fb.BufferT()]
    model.signatureDefs = [sig]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@dataclass
class GpuProbe:
    """Whether LiteRT's GPU accelerator works here, and the evidence."""

    ok: bool
    driver: VulkanDriver
    adapter: str | None = None
    fully_accelerated: bool | None = None
    max_abs_error: float | None = None
    error: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        if not self.driver.found:
            return f"unavailable: {self.driver.reason} (checked {', '.join(self.driver.checked)})"
        if not self.ok:
            return f"FAILED on {self.driver.describe()}: {self.error}"
        return (
            f"OK: WebGPU on {self.adapter or self.driver.name} via {self.driver.icd}; probe model "
            f"fully accelerated={self.fully_accelerated}, max |gpu - numpy| = "
            f"{self.max_abs_error:.1e} ({self.seconds:.1f} s)"
        )


def probe_gpu(timeout: float = 60.0) -> GpuProbe:
    """Run ``tiny_probe_model`` on LiteRT's GPU accelerator (GPU only, no CPU fallback)."""
    import re
    import time

    import numpy as np

    driver = find_vulkan_driver()
    if not driver.found:
        return GpuProbe(False, driver, error=driver.reason)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    b = rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="mirror-probe-") as tmp:
        path = Path(tmp) / "probe.tflite"
        path.write_bytes(tiny_probe_model())
        child = run_litert_child(
            path, accelerator="gpu-only", inputs={"a": a, "b": b}, driver=driver, timeout=timeout
        )
    m = re.search(r"Selected adapter: ([^,]+)", child.log)
    adapter = m.group(1).strip() if m else None
    probe = GpuProbe(
        child.ok, driver, adapter, child.result.get("fully_accelerated"), None, child.error
    )
    probe.seconds = time.perf_counter() - t0
    if child.ok:
        probe.max_abs_error = float(np.abs(child.outputs["y"] - np.tanh(a + b)).max())
        if probe.max_abs_error > 1e-3:
            probe.ok = False
            probe.error = f"wrong results (max error {probe.max_abs_error:.2e})"
    return probe


# ---------------------------------------------------------------------------------------
# The child process. Keep it free of `mirror` imports.


def _child_main(request_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    result: dict[str, Any] = {"stage": "import"}
    rpath = Path(req["result"])

    def save() -> None:
        rpath.write_text(json.dumps(result))

    save()
    try:
        import numpy as np
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import GpuOptions, Options

        accel = {
            "gpu": HardwareAccelerator.GPU | HardwareAccelerator.CPU,
            "gpu-only": HardwareAccelerator.GPU,
            "cpu": HardwareAccelerator.CPU,
        }[req["accelerator"]]
        result["stage"] = "load"
        save()
        options = Options(hardware_accelerators=accel)
        if req.get("enforce_f32"):
            options = Options(hardware_accelerators=accel, gpu_options=GpuOptions(enforce_f32=True))
        model = CompiledModel.from_file(req["model"], options=options)
        result["fully_accelerated"] = bool(model.is_fully_accelerated())
        sigs = model.get_signature_list()
        key = req.get("signature") or next(iter(sigs))
        result["signature"] = key
        in_details = model.get_input_tensor_details(key)
        out_details = model.get_output_tensor_details(key)
        result["inputs"] = {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in in_details.items()}
        result["outputs"] = {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in out_details.items()}
        save()
        if req.get("run"):
            result["stage"] = "run"
            save()
            sig_index = model.get_signature_index(key)
            feeds: dict[str, Any] = {}
            if req.get("inputs"):
                with np.load(req["inputs"]) as data:
                    feeds = {k: data[k] for k in data.files}
            in_bufs = model.create_input_buffers(sig_index)
            out_bufs = model.create_output_buffers(sig_index)
            for name, buf in zip(sigs[key]["inputs"], in_bufs, strict=True):
                d = in_details[name]
                arr = feeds.get(name)
                if arr is None:
                    arr = np.zeros(d["shape"], dtype=d["dtype"])
                buf.write(np.ascontiguousarray(arr, dtype=d["dtype"]))
            model.run_by_index(sig_index, in_bufs, out_bufs)
            outs = {}
            for name, buf in zip(sigs[key]["outputs"], out_bufs, strict=True):
                d = out_details[name]
                n = int(np.prod(d["shape"])) if len(d["shape"]) else 1
                outs[name] = buf.read(n, d["dtype"]).reshape(d["shape"])
            np.savez(req["outputs"], **outs)
        result["stage"] = "done"
        save()
        return 0
    except Exception as exc:  # reported to the parent as one line
        result["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        save()
        return 1


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
