"""Calibration inputs for the recipes that need them (``int8-full``; see ``mirror/precisions.py``).

``calibration_set`` makes the representative inputs ``int8-full`` needs: random inputs in each
input's stated value range (images in [-1, 1], one-hot parsings, masks in [0, 1]), or the
user's own samples from a folder of ``.npz`` files. This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
