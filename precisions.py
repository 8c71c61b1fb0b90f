"""Precision recipes, stated once: their names, aliases, what they quantize and their tolerance.

A recipe says *what* is quantized, never *how*: each target realizes it with its own
tooling (LiteRT with ai-edge-quantizer, ONNX with onnxruntime.quantization, Core ML with
coremltools' optimize utilities). Every target, the manifest, the report and the error
messages use these names.

=============  =================  ===========  ============  ===========  ==================
name           weights            activations  granularity   calibration  parity bound
=============  =================  ===========  ============  ===========  ==================
fp32           float32            float32      -             no           max 1e-3, mean 1e-5
fp16           float16            float32      per-tensor    no           PSNR >= 40 dB
int8-weight    int8, symmetric    float32      per-channel   no           PSNR >= 30 dB
int8-full      int8, symmetric    int8         per-channel   yes          PSNR >= 30 dB
palettize6     6-bit palette      float16      per-tensor    no           PSNR >= 30 dB
=============  =================  ===========  ============  ===========  ==================

``int8`` is an alias of ``int8-weight`` (the default 8-bit recipe: weights are dequantized
before each op, so a GPU delegate still computes in float); ``int8-static`` (onnxruntime's
word) of ``int8-full``. An artifact keeps the name the user asked for (``warp_int8.tflite``)
and records the recipe it realizes.

Parity bounds: fp32 max abs 1e-3, because sampling through a computed flow magnifies float
reordering (torch vs onnxruntime differ by ~2e-4 on a random flow); the mean stays tiny.
Reduced precisions are judged by PSNR over the output's value range; 30 dB is Qualcomm AI
Hub's "good" bar for compressed models.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror import MirrorError


@dataclass(frozen=True)
class Tolerance:
    """Parity bounds against the fp32 PyTorch reference (None: not checked)."""

    max_abs: float | None = None
    mean_abs: float | None = None
    min_psnr_db: float | None = None


@dataclass(frozen=True)
class Recipe:
    """One precision recipe, independent of the target that realizes it."""

    name: str
    weights: str  # "float32", "float16", "int8" or "6-bit palette"
    activations: str  # "float32", "float16" or "int8"
    granularity: str  # "none", "per-tensor" or "per-channel" (for the weights)
    symmetric_weights: bool
    needs_calibration: bool
    tolerance: Tolerance
    description: str

    @property
    def quantizes_weights(self) -> bool:
        return self.weights != "float32"

    @property
    def quantizes_activations(self) -> bool:
        return self.activations not in ("float32", "float16")


_EXACT = Tolerance(max_abs=1e-3, mean_abs=1e-5)
_FP16 = Tolerance(min_psnr_db=40.0)
_COMPRESSED = Tolerance(min_psnr_db=30.0)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("fp32", "float32", "float32", "none", False, False, _EXACT, "no quantization (the reference)"),
        Recipe(
            "fp16", "float16", "float32", "per-tensor", False, False, _FP16,
            "float16 weights, cast back to float32 at load (or run as fp16 by a GPU delegate)",
        ),
        Recipe(
            "int8-weight", "int8", "float32", "per-channel", True, False, _COMPRESSED,
            "weight-only int8: symmetric per-output-channel weights, dequantized before each op",
        ),
        Recipe(
            "int8-full", "int8", "int8", "per-channel", True, True, _COMPRESSED,
            "full-integer int8: per-channel weights and per-tensor asymmetric activations from calibration",
        ),
        Recipe(
            "palettize6", "6-bit palette", "float16", "per-tensor", False, False, _COMPRESSED,
            "6-bit k-means palettized weights (Core ML), fp16 compute",
        ),
    )
}  # fmt: skip
ALIASES: dict[str, str] = {"int8": "int8-weight", "int8-static": "int8-full", "float16": "fp16", "float32": "fp32"}

# The recipes each target realizes.
TARGET_RECIPES: dict[str, tuple[str, ...]] = {
    "tflite": ("fp32", "fp16", "int8-weight", "int8-full"),
    "onnx": ("fp32", "fp16", "int8-weight", "int8-full"),
    "coreml": ("fp32", "fp16", "int8-weight", "palettize6"),
}
DEFAULT = ("fp32", "fp16", "int8")


def names() -> tuple[str, ...]:
    """Every accepted precision name: the recipes and their aliases."""
    return (*RECIPES, *ALIASES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` or one of its aliases (``int8`` -> ``int8-weight``)."""
    try:
        return RECIPES[ALIASES.get(name, name)]
    except KeyError:
        raise MirrorError(f"unknown precision {name!r}; known: {', '.join(names())}") from None


def supported(target: str, name: str) -> bool:
    """Whether ``target`` has a realization of precision ``name``."""
    return get_recipe(name).name in TARGET_RECIPES.get(target, ())


def for_target(target: str, name: str) -> Recipe:
    """The recipe ``name`` stands for, if ``target`` realizes it; a one-line error otherwise."""
    recipe = get_recipe(name)
    if recipe.name not in TARGET_RECIPES.get(target, ()):
        raise MirrorError(f"the {target} target has no {name!r} recipe; use one of {', '.join(target_names(target))}")
    return recipe


def target_names(target: str) -> tuple[str, ...]:
    """The precision names ``target`` accepts (recipes and aliases)."""
    recipes = TARGET_RECIPES[target]
    return tuple(n for n in names() if ALIASES.get(n, n) in recipes)


def tolerance_for(name: str) -> Tolerance:
    """The parity bound of precision ``name``."""
    return get_recipe(name).tolerance
