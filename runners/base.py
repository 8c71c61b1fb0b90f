"""The protocol every runner follows, and the error a failed run raises.

A runner takes named float32 numpy inputs and returns named numpy outputs in the
artifact's output order. Validation treats PyTorch, onnxruntime, LiteRT CPU, LiteRT GPU
and Core ML alike through it:

- ``name``: how reports name it ("pytorch", "onnxruntime", "onnxruntime-ort",
  "litert-cpu", "litert-gpu", "coreml");
- ``accelerator``: what computes, "cpu", "gpu" or "any" (the OS picks, as Core ML does);
- ``availability()``: ``(True, "")``, or ``(False, why)`` when it cannot run on this
  machine (no Vulkan driver, not macOS); an unavailable runner is reported as skipped;
- ``run(feeds)``: the outputs; raises ``RunnerError`` when the backend fails on the
  artifact (a crash of the GPU delegate included);
- ``diagnostics()``: what the backend said beyond outputs (the GPU delegate's log, whether
  it accelerated every op), as a JSON-safe dict;
- ``close()``: release the session or child process.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from mirror import MirrorError


class RunnerError(MirrorError):
    """Running an artifact failed; ``diagnostics`` says what the backend reported."""

    def __init__(self, message: str, diagnostics: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or {}


@runtime_checkable
class Runner(Protocol):
    name: str
    accelerator: str

    def availability(self) -> tuple[bool, str]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def diagnostics(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class RunnerBase:
    """Defaults for the optional parts of the protocol: always available, nothing to say."""

    name = "runner"
    accelerator = "cpu"

    def availability(self) -> tuple[bool, str]:
        return True, ""

    def diagnostics(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def missing_inputs(name: str, expected: list[str], feeds: dict[str, np.ndarray]) -> None:
    """Raise a one-line error if ``feeds`` lacks any of ``expected``."""
    missing = [n for n in expected if n not in feeds]
    if missing:
        raise MirrorError(f"{name}: missing input(s) {', '.join(missing)}; it takes {', '.join(expected)}")
