"""DIVTON on compiled artifacts: the try-on callable that ``replay`` calls on keyframes.

``DivtonRunner`` finds the warp and gen artifacts of one target and precision in a build's
``manifest.json`` (written by ``mirror compile``), checks each file's SHA-256 against it,
and runs them with the LiteRT or onnxruntime runner (``mirror.runners``; the LiteRT GPU
runner keeps one child process for all keyframes). No torch and no compiler: this is
what ships on the device.

Per keyframe: person crop (uint8, background white) -> [-1, 1]; parsing crop -> one-hot
(7 classes; in ROI mode, where Preview had no parser, the region is given as torso);
warp(person, parsing, cloth, edge) -> gen_input; gen(gen_input) -> tryon, gen_mask; the
try-on goes back as uint8 RGB and the paste mask is ``gen_mask > 0.5``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError

from .garment import Garment
from .replay import KeyframeRequest

NUM_CLASSES = 7
TORSO = 2
RUNTIMES = {"tflite": ("litert-cpu", "litert-gpu"), "onnx": ("onnxruntime",)}


def find_artifact(build: Path, graph: str, target: str, precision: str) -> Path:
    """The verified path of one artifact listed in ``build/manifest.json``."""
    from mirror.files import sha256_of

    manifest_path = build / "manifest.json"
    if not manifest_path.is_file():
        raise MirrorError(f"{build} has no manifest.json; run `mirror compile --out {build}` first")
    try:
        entries = json.loads(manifest_path.read_text())["artifacts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MirrorError(f"{manifest_path} is not a MIRROR build manifest ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MirrorError(f"{manifest_path} is damaged (artifacts is not a list of entries); rerun `mirror compile`")
    match = [e for e in entries if (e.get("graph"), e.get("target"), e.get("precision")) == (graph, target, precision)]
    if not match:
        have = sorted({f"{e.get('target')}/{e.get('precision')}" for e in entries if e.get("graph") == graph})
        raise MirrorError(
            f"{build} has no {graph} artifact for {target}/{precision}; it has {', '.join(have) or 'none'}"
        )
    path = build / str(match[0].get("path"))
    if not path.resolve().is_relative_to(build.resolve()):
        where = match[0].get("path")
        raise MirrorError(f"{manifest_path} points {graph} outside the build ({where}); rerun `mirror compile`")
    if not path.exists():
        raise MirrorError(f"{path} is listed in the manifest but missing; rerun `mirror compile`")
    if sha256_of(path) != match[0]["sha256"]:
        raise MirrorError(f"{path} does not match its manifest digest (changed after compile); rerun `mirror compile`")
    return path


def _runner(path: Path, target: str, accelerator: str) -> Any:
    if target == "tflite":
        from mirror.runners.litert import litert_runner

        return litert_runner(path, accelerator)
    from mirror.runners.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path)


class DivtonRunner:
    """Callable ``(KeyframeRequest) -> (try-on uint8 [256,192,3], paste mask bool [256,192])``."""

    def __init__(
        self,
        build: str | Path,
        garment: Garment,
        target: str = "tflite",
        precision: str = "fp32",
        accelerator: str = "cpu",
        roi_mode: bool = False,
    ) -> None:
        if target not in RUNTIMES:
            raise MirrorError(f"try-on runs on tflite or onnx artifacts, not {target!r}")
        if accelerator == "gpu" and target != "tflite":
            raise MirrorError("the GPU accelerator is LiteRT's: use --target tflite")
        build = Path(build)
        self.warp = _runner(find_artifact(build, "warp", target, precision), target, accelerator)
        self.gen = _runner(find_artifact(build, "gen", target, precision), target, accelerator)
        self.garment = garment
        self.roi_mode = roi_mode
        self.calls = 0
        self.seconds = 0.0
        self.latencies_ms: list[float] = []  # per keyframe: warp + gen, inputs and outputs included

    def inputs(self, request: KeyframeRequest) -> dict[str, np.ndarray]:
        """The warp graph's inputs for one keyframe."""
        person = request.person.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
        labels = np.asarray(request.parsing, np.int64)
        if self.roi_mode:
            labels = np.where(labels > 0, TORSO, 0)
        if labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise MirrorError(f"parsing labels must be 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
        parsing = (labels[None] == np.arange(NUM_CLASSES)[:, None, None]).astype(np.float32)[None]
        return {
            "person": np.ascontiguousarray(person),
            "parsing": parsing,
            "cloth": self.garment.cloth,
            "edge": self.garment.edge,
        }

    def close(self) -> None:
        """Release both runners (the GPU runner's child process)."""
        self.warp.close()
        self.gen.close()

    def __call__(self, request: KeyframeRequest) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        warped = self.warp.run(self.inputs(request))
        out = self.gen.run({"gen_input": warped["gen_input"]})
        self.calls += 1
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.latencies_ms.append(1e3 * dt)
        rgb = np.clip(np.rint((out["tryon"][0].transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        return rgb, out["gen_mask"][0, 0] > 0.5
