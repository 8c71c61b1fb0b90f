"""The profile of one graph as rows keyed by module path; profile.json, profile.csv and the printed table.

A profile holds one row per layer (``layers.Layer``: op kinds, FLOPs, bytes at fp16 and
fp32, parameters), a column per measured source (milliseconds; a source that only times
the whole model has no per-layer column and says why) and a column per estimate
(``device/precision``), plus whole-frame figures per source and estimate.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.files import atomic_path
from mirror.profiling import roofline
from mirror.profiling.layers import ROOT, Layer


@dataclass
class Measured:
    """One measured source: per-layer milliseconds (``None`` when only the whole model is timed)."""

    source: str  # "pytorch", "onnxruntime", "litert-cpu", "phone-gpu", ...
    whole_ms: float | None
    per_layer: dict[str, float] | None
    note: str = ""


def build_profile(
    graph: str, layers: list[Layer], measured: list[Measured], devices: list[roofline.Device], precisions: list[str]
) -> dict[str, Any]:
    """The JSON-safe profile of one graph."""
    estimates = {f"{d.id}/{p}": (d, p) for d in devices for p in precisions}
    known = {layer.path for layer in layers}
    measured = [m if m.per_layer is None else Measured(m.source, m.whole_ms, fold(m.per_layer, known), m.note)
                for m in measured]  # fmt: skip
    rows = []
    for layer in layers:
        rows.append({
            "layer": layer.path, "ops": dict(sorted(layer.ops.items())), "flops": layer.flops,
            "bytes_fp16": layer.bytes_moved(2), "bytes_fp32": layer.bytes_moved(4), "parameters": layer.parameters,
            "kernels": layer.kernels,
            "measured_ms": {m.source: round(m.per_layer.get(layer.path, 0.0), 4) for m in measured if m.per_layer},
            "estimated_ms": {k: round(roofline.layer_ms(layer, d, p), 4) for k, (d, p) in estimates.items()},
        })  # fmt: skip
    for m in measured:  # time that maps to no layer of the program (delegate rows, unmapped nodes)
        for path, ms in (m.per_layer or {}).items():
            if path not in known:
                known.add(path)
                rows.append({"layer": path, "ops": {}, "flops": 0, "bytes_fp16": 0, "bytes_fp32": 0, "parameters": 0,
                             "kernels": 0, "measured_ms": {m.source: round(ms, 4)}, "estimated_ms": {}})  # fmt: skip
    return {
        "graph": graph,
        "flops": sum(layer.flops for layer in layers),
        "parameters": sum(layer.parameters for layer in layers),
        "measured": {
            m.source: {"whole_ms": m.whole_ms, "per_layer": m.per_layer is not None, "note": m.note} for m in measured
        },  # fmt: skip
        "estimated": {
            k: {
                "frame_ms": round(roofline.frame_ms(layers, d, p), 3),
                "gather_ms": round(sum(roofline.gather_ms(x, d, p) for x in layers), 3),
                "calibration": d.calibration(p),
                "device": d.spec["name"],
            }
            for k, (d, p) in estimates.items()
        },  # fmt: skip
        "layers": rows,
    }


def fold(per_layer: dict[str, float], known: set[str]) -> dict[str, float]:
    """Time of modules with no op of their own (containers: their Python overhead) goes to the
    nearest ancestor that is a layer, else to the root; ``(delegate)``-style keys stay."""
    out: dict[str, float] = {}
    for path, ms in per_layer.items():
        key = path
        while key not in known and not key.startswith("("):
            key = key.rpartition(".")[0] or ROOT
            if key == ROOT:
                break
        out[key] = out.get(key, 0.0) + ms
    return out


def write(out_json: Path, out_csv: Path, profiles: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """profile.json (everything) and profile.csv (one row per graph and layer), atomically."""
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps({"version": 1, **meta, "graphs": profiles}, indent=1) + "\n")
    with atomic_path(out_csv) as tmp:
        tmp.write_text(to_csv(profiles))


def to_csv(profiles: list[dict[str, Any]]) -> str:
    measured = sorted({s for p in profiles for r in p["layers"] for s in r["measured_ms"]})
    estimated = sorted({k for p in profiles for k in p["estimated"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["graph", "layer", "ops", "flops", "bytes_fp16", "bytes_fp32", "parameters",
                *(f"measured_ms:{s}" for s in measured), *(f"estimated_ms:{k}" for k in estimated)])  # fmt: skip
    for p in profiles:
        for r in p["layers"]:
            ops = " ".join(f"{k}x{n}" for k, n in r["ops"].items())
            w.writerow([p["graph"], r["layer"], ops, r["flops"], r["bytes_fp16"], r["bytes_fp32"], r["parameters"],
                        *(r["measured_ms"].get(s, "") for s in measured),
                        *(r["estimated_ms"].get(k, "") for k in estimated)])  # fmt: skip
        w.writerow([p["graph"], "(whole model)", "", p["flops"], "", "", p["parameters"],
                    *(_whole(p["measured"].get(s)) for s in measured),
                    *(p["estimated"][k]["frame_ms"] if k in p["estimated"] else "" for k in estimated)])  # fmt: skip
    return buf.getvalue()


def _whole(entry: dict[str, Any] | None) -> Any:
    return "" if not entry or entry["whole_ms"] is None else round(entry["whole_ms"], 3)


def top_layers(profile: dict[str, Any], key: str, n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` layers with the largest estimate ``key`` (``device/precision``) or measured source."""

    def ms(r: dict[str, Any]) -> float:
        return r["estimated_ms"].get(key, r["measured_ms"].get(key, 0.0))

    return sorted(profile["layers"], key=ms, reverse=True)[:n]


def format_table(profile: dict[str, Any], key: str, n: int = 15) -> str:
    """The top layers by ``key`` with every source beside them, then the whole-model figures."""
    sources = list(profile["measured"])
    head = f"{'layer':44} {'ops':22} {'GFLOP':>7} {'MB f16':>7} " + " ".join(f"{s[:12]:>12}" for s in sources)
    lines = [f"{profile['graph']}: {profile['flops'] / 1e9:.1f} GFLOPs, {profile['parameters'] / 1e6:.1f} M params; "
             f"top {n} layers by {key} (ms)", head + f" {key[:22]:>22}"]  # fmt: skip
    for r in top_layers(profile, key, n):
        ops = ",".join(r["ops"])[:22]
        cells = " ".join(f"{_ms(r['measured_ms'].get(s)):>12}" for s in sources)
        est = r["estimated_ms"].get(key, r["measured_ms"].get(key))
        lines.append(f"{r['layer'][:44]:44} {ops:22} {r['flops'] / 1e9:7.2f} {r['bytes_fp16'] / 1e6:7.1f} {cells}"
                     f" {_ms(est):>22}")  # fmt: skip
    lines.append("whole model: " + ("; ".join(
        f"{s} {_ms(m['whole_ms'])} ms" + ("" if m["per_layer"] else f" (whole model only: {m['note']})")
        for s, m in profile["measured"].items()) or "nothing measured"))  # fmt: skip
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
