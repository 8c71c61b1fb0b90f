"""Roofline latency estimates of a layer table for named mobile GPUs.

Each op costs the longer of its compute time and its memory time, plus a fixed launch
overhead when it is a kernel of its own:

    t = max(flops / (peak * compute_eff), streamed / (bw * memory_eff)
            + gathered / (bw * gather_eff)) + overhead

then times the device's calibration factor for the precision. ``streamed`` bytes are read
and written in order; ``gathered`` bytes (grid_sample taps, gathers) are scattered reads,
priced by memory traffic at a lower efficiency. Devices are JSON files (``devices/``) that
cite their sources and list which figures are derived or assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror import MirrorError
from mirror.profiling.layers import Layer, NodeCost

DEVICES_DIR = Path(__file__).parent / "devices"
DTYPE_BYTES = {"fp32": 4, "fp16": 2}
_REQUIRED = ("id", "name", "bandwidth_gbps", "fp32_gflops", "fp16_gflops", "compute_efficiency",
             "memory_efficiency", "gather_efficiency", "kernel_overhead_us", "calibration", "sources")  # fmt: skip


@dataclass
class Device:
    spec: dict[str, Any]
    path: Path

    @property
    def id(self) -> str:
        return self.spec["id"]

    def calibration(self, precision: str) -> float:
        return float(self.spec["calibration"].get(precision, 1.0))


def builtin_devices() -> list[str]:
    """The ids of the devices shipped with the toolkit."""
    return sorted(p.stem for p in DEVICES_DIR.glob("*.json"))


def load_device(name_or_path: str | Path) -> Device:
    """A shipped device by id (``adreno-750``) or a device JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DEVICES_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise MirrorError(f"unknown device {name_or_path!r}; known: {', '.join(builtin_devices())}")
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MirrorError(f"cannot read device file {path}: {exc}") from None
    missing = [k for k in _REQUIRED if k not in spec] if isinstance(spec, dict) else list(_REQUIRED)
    if missing:
        raise MirrorError(f"device file {path} lacks {', '.join(missing)}")
    return Device(spec, path)


def node_seconds(node: NodeCost, device: Device, precision: str) -> float:
    """Uncalibrated roofline time of one op."""
    s = device.spec
    width = DTYPE_BYTES[precision]
    compute = node.flops / (s[f"{precision}_gflops"] * 1e9 * s["compute_efficiency"])
    bandwidth = s["bandwidth_gbps"] * 1e9
    memory = width * (node.elements + node.params) / (bandwidth * s["memory_efficiency"])
    memory += width * node.gathered / (bandwidth * s["gather_efficiency"])
    overhead = s["kernel_overhead_us"] * 1e-6 if node.kernel else 0.0
    return max(compute, memory) + overhead


def layer_ms(layer: Layer, device: Device, precision: str) -> float:
    """Estimated milliseconds of one layer, calibrated."""
    raw = sum(node_seconds(n, device, precision) for n in layer.nodes)
    return 1e3 * raw * device.calibration(precision)


def gather_ms(layer: Layer, device: Device, precision: str) -> float:
    """The share of ``layer_ms`` spent on scattered reads (grid_sample taps, gathers)."""
    s = device.spec
    seconds = sum(DTYPE_BYTES[precision] * n.gathered for n in layer.nodes)
    seconds /= s["bandwidth_gbps"] * 1e9 * s["gather_efficiency"]
    return 1e3 * seconds * device.calibration(precision)


def frame_ms(layers: list[Layer], device: Device, precision: str) -> float:
    """Whole-frame estimate: the sum of the layers (grid_sample gathers included)."""
    return sum(layer_ms(layer, device, precision) for layer in layers)


def calibrate(device: Device, precision: str, measured_ms: float, layers: list[Layer], source: str) -> dict[str, Any]:
    """The device spec with its calibration for ``precision`` set so the frame estimate meets ``measured_ms``."""
    if measured_ms <= 0:
        raise MirrorError(f"a measured time must be positive to calibrate; got {measured_ms} ms")
    raw = frame_ms(layers, device, precision) / device.calibration(precision)
    spec = json.loads(json.dumps(device.spec))
    spec["calibration"][precision] = round(measured_ms / raw, 4)
    spec["calibrated_from"] = {"precision": precision, "measured_ms": measured_ms, "estimate_ms": round(raw, 3),
                               "source": source}  # fmt: skip
    return spec
