"""Quantization recipes and calibration inputs (numpy only, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from mirror import MirrorError
from mirror.precisions import (
    ALIASES,
    RECIPES,
    Recipe,
    get_recipe,
    supported,
    target_names,
    tolerance_for,
)
from mirror.targets.calibration import calibration_set, guess_value_range

SHAPES = {"person": (1, 3, 16, 12), "parsing": (1, 7, 16, 12), "edge": (1, 1, 16, 12)}


def examples():
    return [np.zeros(s, np.float32) for s in SHAPES.values()]


def test_recipes_are_stated_once():
    assert set(RECIPES) == {"fp32", "fp16", "int8-weight", "int8-full", "palettize6"}
    assert all(isinstance(r, Recipe) and r.name == n for n, r in RECIPES.items())
    assert ALIASES == {"int8": "int8-weight", "int8-static": "int8-full", "float16": "fp16", "float32": "fp32"}
    for alias, name in ALIASES.items():
        assert get_recipe(alias) is get_recipe(name)
    assert get_recipe("fp16").weights == "float16" and not get_recipe("fp16").needs_calibration
    w = get_recipe("int8-weight")
    assert (w.weights, w.activations, w.granularity, w.symmetric_weights) == (
        "int8", "float32", "per-channel", True)
    full = get_recipe("int8-full")
    assert full.needs_calibration and full.quantizes_activations
    assert not w.needs_calibration and not w.quantizes_activations
    assert not get_recipe("fp32").quantizes_weights
    p6 = get_recipe("palettize6")
    assert p6.weights == "6-bit palette" and p6.quantizes_weights and not p6.needs_calibration
    with pytest.raises(MirrorError, match="unknown precision 'int3'"):
        get_recipe("int3")


def test_targets_realize_their_recipes():
    assert supported("tflite", "int8") and supported("tflite", "int8-static")
    assert supported("onnx", "int8-full") and not supported("onnx", "palettize6")
    assert supported("coreml", "palettize6") and not supported("coreml", "int8-full")
    assert not supported("tflite", "palettize6")
    assert "int8" in target_names("coreml") and "int8-static" not in target_names("coreml")
    assert set(target_names("onnx")) == {"fp32", "fp16", "int8-weight", "int8-full",
                                         "int8", "int8-static", "float16", "float32"}
    with pytest.raises(MirrorError, match="unknown precision"):
        supported("onnx", "int4")


def test_tolerances_are_the_recipes_own():
    fp32 = tolerance_for("fp32")
    assert (fp32.max_abs, fp32.mean_abs, fp32.min_psnr_db) == (1e-3, 1e-5, None)
    assert tolerance_for("float32") is fp32
    assert tolerance_for("fp16").min_psnr_db == 40.0 and tolerance_for("fp16").max_abs is None
    for name in ("int8", "int8-weight", "int8-full", "int8-static", "palettize6"):
        assert tolerance_for(name).min_psnr_db == 30.0, name
        assert tolerance_for(name) is get_recipe(name).tolerance


def test_value_ranges_from_names():
    assert guess_value_range("person") == "image"
    assert guess_value_range("cloth") == "image"
    assert guess_value_range("parsing") == "onehot"
    assert guess_value_range("edge") == "mask"
    assert guess_value_range("flow") == "like-example"


def test_synthetic_calibration_set_respects_ranges():
    samples = calibration_set(examples(), n=5, seed=1, input_names=list(SHAPES))
    assert len(samples) == 5
    for person, parsing, edge in samples:
        assert person.shape == SHAPES["person"] and person.dtype == np.float32
        assert -1 <= person.min() and person.max() <= 1 and person.min() < -0.5
        assert set(np.unique(parsing)) <= {0.0, 1.0}
        np.testing.assert_array_equal(parsing.sum(axis=1), 1.0)  # exactly one class per pixel
        assert 0 <= edge.min() and edge.max() <= 1
    again = calibration_set(examples(), n=5, seed=1, input_names=list(SHAPES))
    np.testing.assert_array_equal(samples[2][0], again[2][0])  # seeded
    other = calibration_set(examples(), n=5, seed=2, input_names=list(SHAPES))
    assert not np.array_equal(samples[0][0], other[0][0])


def test_explicit_value_ranges_and_torch_inputs():
    torch = pytest.importorskip("torch")
    ex = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4)]
    s = calibration_set(ex, n=2, value_ranges={"a": (2.0, 3.0)}, input_names=["a", "b"])
    assert 2 <= s[0][0].min() and s[0][0].max() <= 3
    s = calibration_set(ex, n=1, value_ranges=["mask", "onehot"])
    assert set(np.unique(s[0][1])) <= {0.0, 1.0}
    with pytest.raises(MirrorError, match="unknown inputs"):
        calibration_set(ex, n=1, value_ranges={"zzz": "mask"}, input_names=["a", "b"])


def test_user_calibration_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(
            tmp_path / f"s{i}.npz",
            person=rng.uniform(-1, 1, SHAPES["person"][1:]).astype(np.float32),  # no batch
            parsing=np.zeros(SHAPES["parsing"], np.float32),
            edge=np.ones(SHAPES["edge"], np.float32),
        )
    s = calibration_set(examples(), n=2, input_names=list(SHAPES), folder=tmp_path)
    assert len(s) == 2 and s[0][0].shape == SHAPES["person"]
    assert len(calibration_set(examples(), n=0, input_names=list(SHAPES), folder=tmp_path)) == 3
    np.savez(tmp_path / "s9.npz", person=np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(MirrorError, match="lacks input 'parsing'|has shape"):
        calibration_set(examples(), n=0, input_names=list(SHAPES), folder=tmp_path)
    with pytest.raises(MirrorError, match="does not exist"):
        calibration_set(examples(), input_names=list(SHAPES), folder=tmp_path / "nope")


def test_for_target_gives_the_recipe_or_one_line_naming_what_the_target_has():
    from mirror.precisions import for_target

    assert for_target("tflite", "int8").name == "int8-weight"
    assert for_target("onnx", "int8-static").name == "int8-full"
    with pytest.raises(MirrorError, match="^the tflite target has no 'palettize6' recipe; use one of fp32, fp16, "):
        for_target("tflite", "palettize6")
    with pytest.raises(MirrorError, match="unknown precision 'int3'"):
        for_target("coreml", "int3")
