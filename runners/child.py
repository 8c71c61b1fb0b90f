"""The one way the toolkit runs work in a child Python process.

Some work must not share the caller's process: LiteRT's GPU accelerator can crash it (a
segmentation fault on some models), the stock-converter baseline runs on the second core
while the compile goes on, and ``mirror doctor`` imports every heavy package in a fresh
interpreter to time it. ``Child`` covers all of them:

- The child is ``python -m <module>``, whose ``__main__`` calls ``serve(handlers)``.
  It stays alive across requests, so a video does not pay a process start per keyframe.
- A request is a kind, a JSON payload and optional numpy arrays; the reply is a JSON
  result and optional arrays. Arrays travel as ``.npz`` files in the child's own temporary
  folder, JSON on a private pipe pair (LiteRT's C++ code writes to fds 1 and 2, which go
  to a log file instead, so nothing it prints can corrupt the protocol).
- The child reports the stage it is in (``stage("load")``) before each risky step, so a
  crash is reported as "crashed with SIGSEGV during load", with the log it wrote.
- A request that takes longer than its timeout kills the child and says so.

``ChildOutcome`` is what every request returns: a crash, a timeout or an exception in the
handler is a result to report, never an exception in the parent.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mirror import one_line

Arrays = dict[str, np.ndarray]
Handler = Callable[[dict[str, Any], Arrays, Callable[[str], None]], tuple[dict[str, Any], Arrays]]


@dataclass
class ChildOutcome:
    """What one request to a child did."""

    ok: bool
    result: dict[str, Any] = field(default_factory=dict)  # the handler's JSON result
    outputs: Arrays = field(default_factory=dict)  # the handler's arrays
    log: str = ""  # what the child printed while serving this request
    error: str = ""  # one line: why it failed ("" when ok)
    stage: str = ""  # the last stage the child reported
    returncode: int | None = None  # set when the child process ended (crash, exit or timeout)
    timed_out: bool = False  # the parent killed it past its timeout

    @property
    def crashed(self) -> bool:
        """The child died of a signal on its own (not killed for a timeout)."""
        return self.returncode is not None and self.returncode < 0 and not self.timed_out


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment, with its import path, so the child imports the same ``mirror``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra or {})
    return env


class Child:
    """A child Python process serving requests (see the module docstring)."""

    def __init__(self, module: str, *, env: dict[str, str] | None = None, label: str | None = None) -> None:
        self.module = module
        self.env = env
        self.label = label or module.rsplit(".", 1)[-1]
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._to_child = -1
        self._from_child = -1
        self._buffer = b""
        self._log_offset = 0
        self._serial = 0
        self._pending: dict[str, Any] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (requests start it on demand)."""
        if self.alive:
            return
        self.close()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"mirror-{self.label}-"))
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        with open(self._tmp / "log.txt", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, str(req_r), str(rep_w)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env if self.env is not None else child_env(), pass_fds=(req_r, rep_w),
            )  # fmt: skip
        os.close(req_r)
        os.close(rep_w)
        self._to_child, self._from_child = req_w, rep_r
        self._buffer, self._log_offset = b"", 0

    def send(self, kind: str, payload: dict[str, Any] | None = None, arrays: Arrays | None = None) -> None:
        """Start one request without waiting for it (``receive`` collects it)."""
        if self._pending is not None:
            raise RuntimeError(f"{self.label}: a request is already in flight")
        self.start()
        assert self._tmp is not None
        self._serial += 1
        base = self._tmp / f"r{self._serial}"
        request = {"kind": kind, "payload": payload or {}, "inputs": None, "outputs": f"{base}-out.npz"}
        if arrays:
            np.savez(f"{base}-in.npz", **{k: np.asarray(v) for k, v in arrays.items()})
            request["inputs"] = f"{base}-in.npz"
        self._pending = request
        try:
            os.write(self._to_child, (json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            pass  # the child is gone; receive() reports how it ended

    def receive(self, timeout: float | None = None) -> ChildOutcome:
        """Wait for the request in flight; a crash or timeout becomes ``ok=False``."""
        request, self._pending = self._pending, None
        if request is None:
            raise RuntimeError(f"{self.label}: no request in flight")
        deadline = None if timeout is None else time.monotonic() + timeout
        stage = "start"
        while True:
            message = self._read_message(deadline)
            if message is None:
                return self._ended(stage, timed_out=deadline is not None and time.monotonic() >= deadline,
                                   timeout=timeout)  # fmt: skip
            if "stage" in message:
                stage = message["stage"]
                continue
            return self._reply(message, request, stage)

    def request(
        self, kind: str, payload: dict[str, Any] | None = None, arrays: Arrays | None = None,
        timeout: float | None = None,
    ) -> ChildOutcome:  # fmt: skip
        """Send one request and wait for its outcome."""
        self.send(kind, payload, arrays)
        return self.receive(timeout)

    def close(self) -> None:
        """Stop the process and remove its files."""
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                os.close(fd)
        self._to_child = self._from_child = -1
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._pending = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- internals

    def _read_message(self, deadline: float | None) -> dict[str, Any] | None:
        """The next JSON line from the child; None at EOF or when the deadline passed."""
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._from_child], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _new_log(self) -> str:
        assert self._tmp is not None
        with open(self._tmp / "log.txt", "rb") as fh:
            fh.seek(self._log_offset)
            data = fh.read()
        self._log_offset += len(data)
        return data.decode("utf-8", "replace")

    def _reply(self, message: dict[str, Any], request: dict[str, Any], stage: str) -> ChildOutcome:
        outputs: Arrays = {}
        out_path = Path(request["outputs"])
        if out_path.is_file():
            with np.load(out_path) as data:
                outputs = {k: data[k] for k in data.files}
            out_path.unlink()
        if request["inputs"]:
            Path(request["inputs"]).unlink(missing_ok=True)
        error = message.get("error", "")
        return ChildOutcome(not error, message.get("result", {}), outputs, self._new_log(), error, stage)

    def _ended(self, stage: str, *, timed_out: bool, timeout: float | None) -> ChildOutcome:
        """The child stopped answering: it crashed, exited or ran past the deadline."""
        assert self.process is not None
        if timed_out:
            self.process.kill()
        code = self.process.wait()
        log = self._new_log()
        if timed_out:
            error = f"{self.label} timed out after {timeout:.0f} s during {stage}"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            error = f"{self.label} crashed with {name} during {stage}"
        else:
            line = last_error_line(log)
            error = f"{self.label} exited with status {code} during {stage}" + (f": {line}" if line else "")
        self.close()
        return ChildOutcome(False, {}, {}, log, error, stage, code, timed_out)


def run_once(
    module: str, kind: str, payload: dict[str, Any] | None = None, arrays: Arrays | None = None, *,
    env: dict[str, str] | None = None, timeout: float | None = None, label: str | None = None,
) -> ChildOutcome:  # fmt: skip
    """One request in a fresh child that is closed afterwards."""
    with Child(module, env=env, label=label) as child:
        return child.request(kind, payload, arrays, timeout)


_FATAL = re.compile(r"F\d{4} |.*Check failed")  # glog's FATAL prefix (F0000 ...), a failed CHECK
_WARNING = re.compile(r"WARNING|W\d{4} ")  # warnings that merely mention an error (a vendor plugin not found)


def last_error_line(log: str) -> str:
    """The last line of ``log`` that looks like an error, shortened."""
    lines = [s for s in (line.strip() for line in log.splitlines()) if s and not _WARNING.match(s)]
    fatal = next((s for s in reversed(lines) if _FATAL.match(s)), "")
    if fatal:  # a native check that aborted the process: what it checked, without glog's prefix
        return fatal.split("] ", 1)[-1][:300]
    return next((s[:300] for s in reversed(lines) if "Error" in s or "ERROR" in s), "")


# ---------------------------------------------------------------------------------------
# The child side.


def serve(handlers: dict[str, Handler]) -> int:
    """Answer requests until the parent closes the pipe. Called from a child's ``__main__``.

    A handler takes ``(payload, arrays, stage)`` and returns ``(result, arrays)``; an
    exception in it is reported as one line and the child serves on.
    """
    requests = os.fdopen(int(sys.argv[1]), "rb")
    reply_fd = int(sys.argv[2])

    def send(message: dict[str, Any]) -> None:
        os.write(reply_fd, (json.dumps(message) + "\n").encode())

    def stage(name: str) -> None:
        send({"stage": name})

    for line in requests:
        request = json.loads(line)
        try:
            stage(request["kind"])
            handler = handlers[request["kind"]]
            arrays: Arrays = {}
            if request["inputs"]:
                with np.load(request["inputs"]) as data:
                    arrays = {k: data[k] for k in data.files}
            result, outputs = handler(request["payload"], arrays, stage)
            if outputs:
                np.savez(request["outputs"], **outputs)
            send({"result": result})
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            send({"error": one_line(exc)})
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
