"""The Core ML runner: an ``.mlpackage`` through Core ML itself, which exists only on macOS.

Elsewhere ``availability()`` says why not, and ``run`` raises that reason, so validation
records "not run" instead of a number. The place for a Linux executor of the saved
package is beside this one.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from mirror.runners.base import RunnerBase, RunnerError

NOT_RUN_REASON = "not run: Core ML prediction is macOS-only"


class CoreMLRunner(RunnerBase):
    name = "coreml"
    accelerator = "any"

    def __init__(self, path: str | Path, *, compute_units: str = "ALL") -> None:
        self.path = Path(path)
        self.compute_units = compute_units
        self._model: Any = None

    def availability(self) -> tuple[bool, str]:
        if platform.system() != "Darwin":
            return False, f"{NOT_RUN_REASON} (this is {platform.system() or 'an unknown OS'})"
        try:
            import coremltools.libcoremlpython  # noqa: F401
        except ImportError:
            return False, f"{NOT_RUN_REASON}: coremltools has no native runtime in this install"
        return True, ""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok, why = self.availability()
        if not ok:
            raise RunnerError(why)
        if self._model is None:
            import coremltools as ct

            self._model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, self.compute_units))
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        out = self._model.predict(arrays)
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def close(self) -> None:
        self._model = None
