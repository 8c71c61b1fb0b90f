"""The report's baseline: each graph converted by stock litert-torch, without MIRROR's passes.

It answers "what would I get without this toolkit?" with the real GPU delegate's figures.
The stock conversion of the warper alone takes about a minute, so the driver runs the
baseline in a child process (``runners/child.py``) from the start of a compile, on the
second core, while it works on the targets; ``BaselineJob.results()`` collects it at the end.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mirror import MirrorError
from mirror.compiler.config import CompileConfig, GraphConfig
from mirror.compiler.units import CompileUnit, units_for
from mirror.runners.child import Arrays, Child, serve
from mirror.validation.report import BaselineEntry, GpuDelegateResult


def baseline_for(unit: CompileUnit, staging: Path, gpu_check: str) -> BaselineEntry:
    """Convert ``unit``'s eager reference with stock litert-torch and verify it on the delegate."""
    from mirror.files import size_of
    from mirror.targets.gpu_delegate import verify_gpu_delegate
    from mirror.targets.tflite import convert_stock

    path = staging / "baseline" / f"{unit.name}_stock_fp32.tflite"
    try:
        convert_stock(unit.reference, unit.example_inputs, path)
        gpu = verify_gpu_delegate(path, mode=gpu_check)
    except MirrorError as exc:
        return BaselineEntry(unit.name, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - the stock converter's failure is a finding, not a crash
        return BaselineEntry(unit.name, error=f"stock litert-torch failed: {type(exc).__name__}: {exc}".splitlines()[0])
    return BaselineEntry(unit.name, str(path.relative_to(staging)), size_of(path), GpuDelegateResult(gpu))


class BaselineJob:
    """The baseline of every unit of ``config``, computed in a child process."""

    def __init__(self, config: CompileConfig, staging: Path) -> None:
        graphs = [
            {**dataclasses.asdict(g), "checkpoint": str(g.checkpoint) if g.checkpoint else None}
            for g in config.graphs
        ]
        request = {"staging": str(staging), "seed": config.seed, "model": config.model,
                   "gpu_check": config.gpu_check, "graphs": graphs}  # fmt: skip
        self.child = Child("mirror.compiler.baseline", label="baseline")
        self.child.send("baseline", request)

    def results(self) -> list[BaselineEntry]:
        outcome = self.child.receive()
        self.child.close()
        if not outcome.ok:
            return [BaselineEntry(None, error=f"the baseline process failed: {outcome.error}")]
        return [BaselineEntry.from_json(b) for b in outcome.result["baseline"]]

    def cancel(self) -> None:
        self.child.close()


def _serve_baseline(request: dict[str, Any], arrays: Arrays, stage: Callable[[str], None]) -> tuple[dict, Arrays]:
    import warnings

    warnings.filterwarnings("ignore")
    config = CompileConfig(
        graphs=[
            GraphConfig(**{**g, "checkpoint": Path(g["checkpoint"]) if g["checkpoint"] else None,
                           "size": tuple(g["size"]) if g["size"] else None})
            for g in request["graphs"]
        ],
        seed=request["seed"],
        model=request["model"],
        gpu_check=request["gpu_check"],
    )  # fmt: skip
    staging = Path(request["staging"])
    results = []
    for unit in units_for(config):
        stage(f"baseline of {unit.name}")
        results.append(baseline_for(unit, staging, config.gpu_check).to_json())
    return {"baseline": results}, {}


if __name__ == "__main__":
    sys.exit(serve({"baseline": _serve_baseline}))
