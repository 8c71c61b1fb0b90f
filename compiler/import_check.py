"""A child process that imports packages and times each import (for ``mirror doctor``).

A fresh interpreter measures an import honestly (nothing is cached yet) and a broken
native extension cannot take ``mirror doctor`` down with it.
"""

from __future__ import annotations

import importlib
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from mirror.runners.child import Arrays, serve


def import_modules(payload: dict[str, Any], arrays: Arrays, stage: Callable[[str], None]) -> tuple[dict, Arrays]:
    warnings.simplefilter("ignore")
    out: dict[str, Any] = {}
    for name in payload["modules"]:
        stage(f"import {name}")
        t = time.perf_counter()
        try:
            importlib.import_module(name)
            out[name] = {"ok": True, "s": time.perf_counter() - t}
        except BaseException as e:  # noqa: BLE001 - a failed import is the finding
            msg = (str(e).strip().splitlines() or [""])[-1]
            out[name] = {"ok": False, "s": time.perf_counter() - t, "error": f"{type(e).__name__}: {msg}"}
    return out, {}


if __name__ == "__main__":
    sys.exit(serve({"import": import_modules}))
