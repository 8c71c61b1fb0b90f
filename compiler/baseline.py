"""The report's baseline: each graph converted by stock litert-torch, without MIRROR's passes.

It answers "what would I get without this toolkit?" with the real GPU delegate's figures.
The stock conversion of the warper alone takes about a minute, so the driver runs the
baseline in a child process from the start of a compile, on the second core, while it
works on the targets; ``BaselineJob.results()`` collects it at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mirror import MirrorError
from mirror.compiler.config import CompileConfig, GraphConfig
from mirror.compiler.models import CompileUnit, units_for

GPU_FIELDS = (
    "ops_total", "ops_on_gpu", "ops_on_cpu", "partitions", "unsupported", "fully_accelerated", "verified_on", "static",
)  # fmt: skip


def gpu_fields(gpu: dict[str, Any]) -> dict[str, Any]:
    """The GPU-delegate figures the report keeps."""
    return {k: gpu[k] for k in GPU_FIELDS if k in gpu}


def baseline_for(unit: CompileUnit, staging: Path, gpu_check: str) -> dict[str, Any]:
    """Convert ``unit``'s eager reference with stock litert-torch and verify it on the delegate."""
    from mirror.targets.base import size_of
    from mirror.targets.gpu_delegate import verify_gpu_delegate
    from mirror.targets.tflite import convert_stock

    path = staging / "baseline" / f"{unit.name}_stock_fp32.tflite"
    try:
        convert_stock(unit.reference, unit.example_inputs, path)
        gpu = verify_gpu_delegate(path, mode=gpu_check)
    except MirrorError as exc:
        return {"graph": unit.name, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the stock converter's failure is a finding, not a crash
        return {"graph": unit.name, "error": f"stock litert-torch failed: {type(exc).__name__}: {exc}".splitlines()[0]}
    return {
        "graph": unit.name,
        "path": str(path.relative_to(staging)),
        "bytes": size_of(path),
        "gpu_delegate": gpu_fields(gpu),
    }


class BaselineJob:
    """The baseline of every unit of ``config``, computed in a child process."""

    def __init__(self, config: CompileConfig, staging: Path) -> None:
        self.request = staging / "baseline" / "request.json"
        self.result = staging / "baseline" / "result.json"
        self.log = staging / "baseline" / "log.txt"
        self.request.parent.mkdir(parents=True, exist_ok=True)
        request = {
            "staging": str(staging),
            "seed": config.seed,
            "model": config.model,
            "gpu_check": config.gpu_check,
            "graphs": [
                {**dataclasses.asdict(g), "checkpoint": str(g.checkpoint) if g.checkpoint else None}
                for g in config.graphs
            ],
        }
        self.request.write_text(json.dumps(request))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mirror.compiler.baseline", str(self.request)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip

    def results(self) -> list[dict[str, Any]]:
        code = self.process.wait()
        for f in (self.request, self.log):
            f.unlink(missing_ok=True)
        if code != 0 or not self.result.is_file():
            return [{"error": f"the baseline process failed (exit {code})"}]
        data = json.loads(self.result.read_text())
        self.result.unlink()
        return data

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main(request_path: str) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    request = json.loads(Path(request_path).read_text())
    staging = Path(request["staging"])
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
    results = [baseline_for(unit, staging, config.gpu_check) for unit in units_for(config)]
    (staging / "baseline" / "result.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
