"""Per-op latency on an attached phone: ``adb`` and TFLite's ``benchmark_model``.

    adb push model.tflite /data/local/tmp/
    adb shell benchmark_model --graph=... --enable_op_profiling=true \\
        --op_profiling_output_mode=proto --op_profiling_output_file=... [--use_gpu=true]
    adb pull the proto

The CPU run turns XNNPACK off so that its rows are TFLite ops (named by tensor, so by
module path); the GPU run shows what the delegate reports (one row, or one per kernel).
``benchmark_model`` must be on the phone already (``--benchmark-binary`` pushes one).
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mirror import MirrorError
from mirror.profiling import benchmark_output

REMOTE_DIR = "/data/local/tmp"
_TIMEOUT_S = 600.0


@dataclass
class PhoneRun:
    accelerator: str  # "cpu" or "gpu"
    rows: list[benchmark_output.OpRow]
    whole_ms: float | None
    device: str
    log: str = field(repr=False, default="")


class Adb:
    """The ``adb`` command line for one device."""

    def __init__(self, adb: str = "adb", serial: str | None = None) -> None:
        self.base = [adb, *(["-s", serial] if serial else [])]
        self.adb = adb

    def __call__(self, *args: str, timeout: float = _TIMEOUT_S) -> str:
        try:
            done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise MirrorError(f"no '{self.adb}' on PATH: install Android platform-tools or pass --adb") from None
        except subprocess.TimeoutExpired:
            raise MirrorError(f"adb {' '.join(args[:2])} took longer than {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise MirrorError(f"adb {' '.join(args[:2])} failed ({done.returncode}): {tail[0]}")
        return done.stdout

    def device(self) -> str:
        """The serial of the one attached device, or an error naming what to do."""
        lines = [line.split() for line in self("devices").splitlines()[1:] if line.strip()]
        ready = [cols[0] for cols in lines if len(cols) >= 2 and cols[1] == "device"]
        if not ready:
            raise MirrorError("no phone attached (adb devices lists none in 'device' state)")
        if len(ready) > 1 and "-s" not in self.base:
            raise MirrorError(f"{len(ready)} phones attached ({', '.join(ready)}); pick one with --serial")
        return ready[0]


def benchmark_command(binary: str, model: str, out: str, gpu: bool, runs: int) -> str:
    flags = [f"--graph={model}", "--enable_op_profiling=true", "--op_profiling_output_mode=proto",
             f"--op_profiling_output_file={out}", f"--num_runs={runs}"]  # fmt: skip
    flags += ["--use_gpu=true"] if gpu else ["--use_xnnpack=false"]
    return " ".join(shlex.quote(x) for x in [binary, *flags])


def profile_on_phone(
    model: Path, accelerators: tuple[str, ...] = ("cpu", "gpu"), adb: Adb | None = None,
    binary: Path | None = None, runs: int = 20,
) -> list[PhoneRun]:  # fmt: skip
    """Push ``model`` and run benchmark_model once per accelerator; one ``PhoneRun`` each."""
    adb = adb or Adb()
    device = adb.device()
    remote_model = f"{REMOTE_DIR}/{Path(model).name}"
    adb("push", str(model), remote_model)
    remote_bin = f"{REMOTE_DIR}/benchmark_model"
    if binary is not None:
        adb("push", str(binary), remote_bin)
        adb("shell", f"chmod 755 {remote_bin}")
    runs_out = []
    for accelerator in accelerators:
        remote_out = f"{REMOTE_DIR}/mirror_profile_{accelerator}.pb"
        log = adb("shell", benchmark_command(remote_bin, remote_model, remote_out, accelerator == "gpu", runs))
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "profile.pb"
            adb("pull", remote_out, str(local))
            rows = benchmark_output.parse_proto(local.read_bytes())
        runs_out.append(PhoneRun(accelerator, rows, benchmark_output.whole_ms(log), device, log))
    return runs_out
