"""Per-op rows of TFLite's ``benchmark_model --enable_op_profiling=true``, mapped to module paths.

Two formats are read:

- the text tables (``--op_profiling_output_mode=stdout``): the "Run Order" table of the
  "Operator-wise Profiling Info for Regular Benchmark Runs" section, read by its header
  row (``[node type] [first] [avg ms] ... [Name]``) because its columns vary by version;
- the proto (``--op_profiling_output_mode=proto``): ``BenchmarkProfilingData``, parsed
  with the ``profiling_info_pb2`` that ai-edge-litert ships.

A row's name is ``[output tensor names]:node index``; litert-torch names tensors after
the module stack, so the first output's name gives the module path. With ``--use_gpu`` a
delegate shows as one row for the whole delegated graph (older builds) or one row per GPU
kernel (fused, not TFLite ops); such rows map to ``(delegate)``. The CPU run is made with
XNNPACK off so that its rows are TFLite ops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror import MirrorError
from mirror.profiling.layers import ROOT
from mirror.runners.tflite_file import module_path

DELEGATE = "(delegate)"
_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_AVG = re.compile(r"Inference \(avg\):\s*([0-9.e+]+)")


@dataclass
class OpRow:
    node_type: str
    name: str  # the output tensor names, without brackets and node index
    avg_ms: float
    times_called: int = 1
    kernel: bool = False  # one kernel inside a delegate (its time is within the delegate's row)

    @property
    def layer(self) -> str:
        """The torch module path this op belongs to (``(delegate)`` for a delegate's row)."""
        if self.kernel or "delegate" in self.node_type.lower():
            return DELEGATE
        first = self.name.split(",")[0].strip()
        # A fused activation names its output "act;;conv": the op is the conv's.
        return module_path(first.split(";;")[-1]) or ROOT


def _strip_name(raw: str) -> str:
    raw = raw.strip()
    raw = re.sub(r":\d+$", "", raw)
    return raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw


def parse_text(text: str) -> list[OpRow]:
    """The Run Order rows of the regular-runs section of benchmark_model's stdout."""
    at = text.find(_SECTION)
    if at < 0:
        raise MirrorError("benchmark_model output has no per-op section; was --enable_op_profiling=true given?")
    lines = text[at:].splitlines()
    start = next((i for i, line in enumerate(lines) if "Run Order" in line), None)
    if start is None or start + 1 >= len(lines):
        raise MirrorError("benchmark_model output has no 'Run Order' table")
    header = [h.strip().lower() for h in re.findall(r"\[([^\]]+)\]", lines[start + 1])]
    need = {"node type", "avg ms", "name"}
    if not need <= set(header):
        raise MirrorError(f"benchmark_model table header lacks {sorted(need - set(header))}: {lines[start + 1]!r}")
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("="):
            break
        cells = [c for c in line.split("\t") if c.strip()]
        if len(cells) < len(header):
            break
        # The name (last column) may itself hold tabs-free commas; everything after the
        # fixed columns is the name.
        cell = dict(zip(header[:-1], cells[: len(header) - 1], strict=True))
        name = " ".join(cells[len(header) - 1 :])
        called = int(float(cell.get("times called", 1)))
        rows.append(OpRow(cell["node type"].strip(), _strip_name(name), float(cell["avg ms"]), called))
    return rows


def parse_proto(data: bytes) -> list[OpRow]:
    """The runtime per-op rows of a ``BenchmarkProfilingData`` proto (delegate rows included)."""
    from ai_edge_litert import profiling_info_pb2

    msg = profiling_info_pb2.BenchmarkProfilingData()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError has no public home
        raise MirrorError(f"not a benchmark_model profiling proto: {exc}") from None
    profile = msg.runtime_profile
    ops = sorted((op for sg in profile.subgraph_profiles for op in sg.per_op_profiles), key=lambda op: op.run_order)
    kernels = [op for d in profile.delegate_profiles for op in d.per_op_profiles]
    if not ops and not kernels:
        raise MirrorError("the benchmark_model proto holds no runtime per-op rows")
    return [_row(op, False) for op in ops] + [_row(op, True) for op in kernels]


def _row(op: Any, kernel: bool) -> OpRow:
    avg_ms = op.inference_microseconds.avg / 1e3
    return OpRow(op.node_type, _strip_name(op.name), avg_ms, op.times_called or 1, kernel)


def whole_ms(stdout: str) -> float | None:
    """The average inference time benchmark_model prints (``Inference (avg): N`` in µs)."""
    match = _AVG.search(stdout)
    return float(match.group(1)) / 1e3 if match else None


def _counted(rows: list[OpRow]) -> list[OpRow]:
    """The rows whose times add up: a delegate's kernels only when its own row is absent."""
    top = [r for r in rows if not r.kernel]
    return top or rows


def total_ms(rows: list[OpRow]) -> float:
    return sum(r.avg_ms for r in _counted(rows))


def layer_ms(rows: list[OpRow]) -> dict[str, float]:
    """Milliseconds per module path."""
    out: dict[str, float] = {}
    for row in _counted(rows):
        out[row.layer] = out.get(row.layer, 0.0) + row.avg_ms
    return out


def read_rows(path: Path) -> list[OpRow]:
    """Rows of a recorded benchmark_model output: a proto file, or a text log."""
    data = Path(path).read_bytes()
    try:
        return parse_text(data.decode("utf-8"))
    except (UnicodeDecodeError, MirrorError):
        return parse_proto(data)
