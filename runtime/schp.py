"""SCHP's coarse parser on a compiled artifact, as Preview's parser: frame -> 7-class labels.

``mirror preview --parser-checkpoint`` compiles SCHP's Pascal-Person-Part parser
(``graphs/parser.py``) with the user's checkpoint; this module only loads and runs the
artifact (onnxruntime or the LiteRT CPU interpreter), so it needs neither torch nor the
compiler and ships with the rest of runtime/.

The compiled graph is built for SCHP's own resolution: its input is ``net`` x ``net``
(512x512 by default) and its logits come out at the network's 1/4 (128x128), before any
resize back. What SCHP does around the network happens here, in numpy:

1. Pre-processing: the RGB frame goes to [-1, 1] (the graph's input convention; the graph
   itself swaps to BGR and applies SCHP's ImageNet normalization) and is resized
   bilinearly to the input size with ``align_corners=True``, as SCHP does. The
   normalization is affine per channel and bilinear weights sum to one, so scaling before
   or after the resize gives the same numbers.
2. Post-processing: the logits are resized bilinearly (``align_corners=True``) straight
   to the frame's size, then argmax (first maximum on ties). Resizing once, from the
   network's own 1/4 resolution, is SCHP's path; a graph whose output is already at the
   input size would resize twice.

The graph's ``labels`` output is not used: it is the argmax at the graph's output size,
not the frame's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .imgproc import resize_align_corners

NUM_CLASSES = 7


def first_argmax(logits: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [H, W] uint8 class index, first maximum on ties (as torch.argmax)."""
    return np.argmax(logits, axis=0).astype(np.uint8)


class CompiledParser:
    """Callable frame (HxWx3 uint8 RGB) -> HxW uint8 labels (0 background .. 6 lower legs).

    ``artifact`` is the compiled parser (``.onnx``/``.ort`` for onnxruntime, ``.tflite`` for
    the LiteRT CPU interpreter); ``input_hw`` its input size. ``last_mask`` is the person
    mask of the last call (labels > 0), as the body model gives one.
    """

    def __init__(self, artifact: str | Path, input_hw: tuple[int, int], threads: int | None = None) -> None:
        path = Path(artifact)
        if path.suffix == ".tflite":
            from mirror.runners.litert import litert_runner

            self.runner = litert_runner(path, "cpu", **({"num_threads": threads} if threads else {}))
        else:
            from mirror.runners.onnxruntime import OnnxRuntimeRunner

            self.runner = OnnxRuntimeRunner(path, threads=threads)
        if list(self.runner.input_names) != ["image"] or "logits" not in self.runner.output_names:
            raise MirrorError(f"{path} is not a compiled parser: it takes {', '.join(self.runner.input_names)} "
                              f"and gives {', '.join(self.runner.output_names)}, not image -> logits")  # fmt: skip
        self.path = path
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.last_mask: np.ndarray | None = None
        self.calls = 0

    @classmethod
    def from_build(cls, build: str | Path, target: str = "onnx", precision: str = "fp32",
                   threads: int | None = None) -> CompiledParser:  # fmt: skip
        """The parser artifact of ``build`` (a ``mirror compile`` folder), verified against its manifest."""
        from .divton import find_artifact

        build = Path(build)
        path = find_artifact(build, "parser", target, precision)
        entries = json.loads((build / "manifest.json").read_text())["artifacts"]
        entry = next(e for e in entries if (e.get("graph"), e.get("target"), e.get("precision"))
                     == ("parser", target, precision))  # fmt: skip
        try:
            shape = entry["tensors"]["inputs"]["image"]
            hw = (int(shape[2]), int(shape[3]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise MirrorError(f"{build}/manifest.json does not give the parser's input shape; "
                              "rebuild the parser") from None  # fmt: skip
        return cls(path, hw, threads=threads)

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> the graph's input [1, 3, h, w], [-1, 1], at its input size."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise MirrorError(f"the parser takes an RGB frame [H, W, 3], got shape {frame.shape}")
        chw = np.ascontiguousarray(frame.transpose(2, 0, 1))
        x = resize_align_corners(chw, *self.input_hw)
        return (x * np.float32(1 / 127.5) - np.float32(1.0))[None]

    def logits(self, frame: np.ndarray) -> np.ndarray:
        """[7, H, W] float32 class logits at the frame's size."""
        out = self.runner.run({"image": self.preprocess(frame)})["logits"]
        if out.ndim != 4 or out.shape[:2] != (1, NUM_CLASSES):
            raise MirrorError(f"{self.path.name} gave logits of shape {out.shape}, expected [1, 7, h, w]")
        return resize_align_corners(out[0], frame.shape[0], frame.shape[1])

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        labels = first_argmax(self.logits(frame))
        self.last_mask = labels > 0
        self.calls += 1
        return labels

    def close(self) -> None:
        self.runner.close()
