"""Quantization recipes, stated once for every target, and calibration inputs.

A recipe says *what* is quantized, never *how*: each target realizes it with its own
tooling (the LiteRT target with ai-edge-quantizer, Core ML with coremltools'
optimize/compression utilities). The recipes:

=============  =================  ===========  ============  =================  ===========
name           weights            activations  granularity   needs calibration  size vs fp32
=============  =================  ===========  ============  =================  ===========
fp32           float32            float32      -             no                 100%
fp16           float16            float32      per-tensor    no                 ~50%
int8-weight    int8, symmetric    float32      per-channel   no                 ~25%
int8-full      int8, symmetric    int8         per-channel   yes                ~25%
=============  =================  ===========  ============  =================  ===========

``int8`` is an alias of ``int8-weight`` (the default 8-bit recipe: weights are dequantized
before each op, so the GPU delegate still computes in float). ``int8-full`` quantizes
activations too (asymmetric int8, per-tensor ranges from calibration) and the model's inputs
and outputs become int8; runners quantize/dequantize at the boundary.

``calibration_set`` makes the representative inputs ``int8-full`` needs: random inputs in each
input's stated value range (images in [-1, 1], one-hot parsings, masks in [0, 1]), or the
user's own samples from a folder of ``.npz`` files. This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QuantRecipe:
    """One quantization recipe, independent of the target that realizes it."""

    name: str
    weights: str  # "float32", "float16" or "int8"
    activations: str  # "float32" or "int8"
    granularity: str  # "none", "per-tensor" or "per-channel" (for the weights)
    symmetric_weights: bool
    needs_calibration: bool
    description: str

    @property
    def quantizes_weights(self) -> bool:
        return self.weights != "float32"

    @property
    def quantizes_activations(self) -> bool:
        return self.activations != "float32"


FP32 = QuantRecipe(
    "fp32", "float32", "float32", "none", False, False, "no quantization (the reference)"
)
FP16 = QuantRecipe(
    "fp16",
    "float16",
    "float32",
    "per-tensor",
    False,
    False,
    "float16 weights, cast back to float32 at load (or run as fp16 by a GPU delegate)",
)
INT8_WEIGHT = QuantRecipe(
    "int8-weight",
    "int8",
    "float32",
    "per-channel",
    True,
    False,
    "weight-only int8: symmetric per-output-channel weights, dequantized before each op",
)
INT8_FULL = QuantRecipe(
    "int8-full",
    "int8",
    "int8",
    "per-channel",
    True,
    True,
    "full-integer int8: per-channel weights and per-tensor asymmetric activations "
    "from calibration; int8 inputs and outputs",
)

RECIPES: dict[str, QuantRecipe] = {r.name: r for r in (FP32, FP16, INT8_WEIGHT, INT8_FULL)}
ALIASES = {"int8": "int8-weight", "float16": "fp16", "float32": "fp32"}


def get_recipe(name: str) -> QuantRecipe:
    """The recipe called ``name`` (accepts ``int8`` for ``int8-weight``)."""
    from mirror import MirrorError

    key = ALIASES.get(name, name)
    try:
        return RECIPES[key]
    except KeyError:
        known = ", ".join([*RECIPES, *ALIASES])
        raise MirrorError(f"unknown precision {name!r}; known: {known}") from None


# ---------------------------------------------------------------------------------------
# Calibration inputs.

# A value range: "image" ([-1, 1]), "mask" ([0, 1]), "onehot" (one-hot over axis 1),
# "like-example" (uniform over the example input's own min..max) or a (low, high) pair.
ValueRange = str | tuple[float, float]

_NAME_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("parsing", "parse", "onehot", "one_hot", "label", "seg"), "onehot"),
    (("edge", "mask", "alpha"), "mask"),
    (("person", "cloth", "image", "img", "rgb", "frame", "garment"), "image"),
)


def guess_value_range(name: str) -> ValueRange:
    """A value range from an input's name (DIVTON's conventions), else ``like-example``."""
    low = name.lower()
    for keys, kind in _NAME_HINTS:
        if any(k in low for k in keys):
            return kind
    return "like-example"


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _sample(rng: np.random.Generator, kind: ValueRange, example: np.ndarray) -> np.ndarray:
    shape = example.shape
    if isinstance(kind, tuple):
        lo, hi = float(kind[0]), float(kind[1])
        return rng.uniform(lo, hi, shape).astype(np.float32)
    if kind == "image":
        return rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    if kind == "mask":
        return rng.uniform(0.0, 1.0, shape).astype(np.float32)
    if kind == "onehot":
        if len(shape) < 2:
            raise ValueError(f"a one-hot input needs a channel axis, got shape {shape}")
        # Piecewise-constant labels (blocks of 8x8 pixels) look more like a parsing than noise.
        classes = shape[1]
        spatial = shape[2:]
        coarse = tuple(max(1, -(-s // 8)) for s in spatial)
        labels = rng.integers(0, classes, (shape[0], *coarse))
        for axis, s in enumerate(spatial, start=1):
            labels = np.repeat(labels, 8, axis=axis).take(range(s), axis=axis)
        out = np.zeros(shape, np.float32)
        np.put_along_axis(out, labels[:, None], 1.0, axis=1)
        return out
    if kind == "like-example":
        lo, hi = float(example.min()), float(example.max())
        if lo == hi:
            return np.full(shape, lo, np.float32)
        return rng.uniform(lo, hi, shape).astype(np.float32)
    raise ValueError(f"unknown value range {kind!r}")


def calibration_set(
    example_inputs: Sequence[Any],
    n: int = 16,
    seed: int = 0,
    value_ranges: dict[str, ValueRange] | Sequence[ValueRange] | None = None,
    *,
    input_names: Sequence[str] | None = None,
    folder: Path | str | None = None,
) -> list[tuple[np.ndarray, ...]]:
    """Representative inputs for calibration, as tuples of float32 arrays in input order.

    With ``folder``, the samples are the user's: every ``*.npz`` file there (sorted by name)
    is one sample holding one array per input, keyed by input name (or ``arr_0``, ``arr_1``,
    ... in input order); ``n`` caps how many are used (0 or less: all). Otherwise ``n``
    random samples are drawn with ``seed``; each input's range comes from ``value_ranges``
    (by name or position), else from its name (``guess_value_range``), else from the
    example input's own min..max.
    """
    from mirror import MirrorError

    examples = [_to_numpy(x) for x in example_inputs]
    names = list(input_names) if input_names is not None else [f"input_{i}" for i in range(len(examples))]
    if len(names) != len(examples):
        raise ValueError(f"{len(names)} input names for {len(examples)} example inputs")
    if folder is not None:
        return load_calibration_folder(folder, names, examples, limit=n)
    if n <= 0:
        raise MirrorError("a calibration set needs at least one sample (n >= 1)")
    if value_ranges is None:
        ranges: list[ValueRange] = [guess_value_range(nm) for nm in names]
    elif isinstance(value_ranges, dict):
        unknown = set(value_ranges) - set(names)
        if unknown:
            raise MirrorError(f"value ranges given for unknown inputs: {', '.join(sorted(unknown))}")
        ranges = [value_ranges.get(nm, guess_value_range(nm)) for nm in names]
    else:
        ranges = list(value_ranges)
        if len(ranges) != len(examples):
            raise ValueError(f"{len(ranges)} value ranges for {len(examples)} inputs")
    rng = np.random.default_rng(seed)
    return [
        tuple(_sample(rng, kind, ex) for kind, ex in zip(ranges, examples, strict=True))
        for _ in range(n)
    ]


def load_calibration_folder(
    folder: Path | str,
    input_names: Sequence[str],
    examples: Sequence[np.ndarray] | None = None,
    limit: int = 0,
) -> list[tuple[np.ndarray, ...]]:
    """Read user calibration samples: one ``.npz`` per sample (see ``calibration_set``)."""
    from mirror import MirrorError

    folder = Path(folder)
    if not folder.is_dir():
        raise MirrorError(f"calibration folder {folder} does not exist")
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise MirrorError(f"calibration folder {folder} holds no .npz files")
    if limit > 0:
        files = files[:limit]
    samples = []
    for f in files:
        with np.load(f) as data:
            keys = set(data.files)
            row = []
            for i, name in enumerate(input_names):
                key = name if name in keys else f"arr_{i}"
                if key not in keys:
                    raise MirrorError(
                        f"{f} lacks input {name!r} (it holds {', '.join(sorted(keys)) or 'nothing'})"
                    )
                arr = np.asarray(data[key], dtype=np.float32)
                if examples is not None and arr.shape != examples[i].shape:
                    if arr.shape == examples[i].shape[1:]:
                        arr = arr[None]
                    else:
                        raise MirrorError(
                            f"{f}: input {name!r} has shape {arr.shape}, "
                            f"the model expects {examples[i].shape}"
                        )
                row.append(arr)
            samples.append(tuple(row))
    return samples
