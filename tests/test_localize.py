"""``mirror validate --localize``: the first layer that diverges, named by module path, op
and source line, on each runner; and the layers a quantization hurts most.

Three ways an artifact goes wrong, each caught at its layer:
- a converter bug (litert-torch's nearest resize to a size that is not a whole multiple),
- weights changed inside the emitted file (one conv, per target: LiteRT, ONNX, Core ML),
- NaN weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from mirror.compiler import cli
from mirror.runners.tflite_file import read_tflite

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
INTERPOLATE_LINE = next(i for i, line in enumerate((TESTS / "user_models.py").read_text().splitlines(), 1)
                        if "F.interpolate(features" in line)  # fmt: skip


def _compile(out: Path, model: str, precisions: str, targets: str = "tflite,onnx") -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        return cli.main(["compile", "--model", model, "--out", str(out), "--no-baseline", "--targets", targets,
                         "--precisions", precisions, "--gpu-parity", "none"])  # fmt: skip


def _localize(build: Path) -> tuple[int, dict]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        code = cli.main(["validate", str(build), "--localize", "--gpu-parity", "none"])
    return code, json.loads((build / "validate.json").read_text())


def _found(data: dict, target: str, precision: str, runner: str) -> dict:
    a = next(a for a in data["artifacts"] if (a["target"], a["precision"]) == (target, precision))
    return a["localize"][runner]


@pytest.fixture(scope="module")
def flow_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow")
    assert _compile(out, "user_models:flow_warp", "fp32,int8", "tflite,onnx,coreml") == 0
    return out


def test_a_converter_bug_is_named_with_its_source_line(tmp_path):
    build = tmp_path / "resize"
    assert _compile(build, "user_models:resize_decoder", "fp32") == 1  # LiteRT's output is wrong
    code, data = _localize(build)
    assert code == 1
    first = _found(data, "tflite", "fp32", "litert-cpu")["first_divergent"]
    assert first["op"].startswith("upsample_nearest2d") and first["artifact_op"] == "RESIZE_NEAREST_NEIGHBOR"
    assert first["source"].endswith(f"user_models.py:{INTERPOLATE_LINE}") and first["module"] == "(root)"
    assert first["snr_db"] < 10
    # Its inputs were right: the encoder before it is within the bound on LiteRT too.
    assert first["inputs_snr_db"] == "inf" or first["inputs_snr_db"] >= 50
    onnx_found = _found(data, "onnx", "fp32", "onnxruntime")
    assert onnx_found["first_divergent"] is None and onnx_found["layers_compared"] >= 5
    gpu = _found(data, "tflite", "fp32", "litert-gpu")
    assert "no intermediate tensors" in gpu["unavailable"]


def _scale_weights(path: Path, weight: np.ndarray) -> None:
    """Multiply one conv's weights inside a file by 3 (found by their bytes: .tflite keeps
    them OHWI, a Core ML weight blob OIHW)."""
    blob = bytearray(path.read_bytes())
    for layout in (weight.transpose(0, 2, 3, 1), weight):
        raw = np.ascontiguousarray(layout, np.float32).tobytes()
        at = blob.find(raw)
        if at >= 0:
            blob[at : at + len(raw)] = (np.frombuffer(raw, np.float32) * 3).astype(np.float32).tobytes()
            path.write_bytes(bytes(blob))
            return
    raise AssertionError("the conv's weights are not in the flatbuffer")


def _set_onnx_weights(path: Path, name: str, scale: float) -> None:
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(scale), name))
    onnx.save(model, str(path))


def _drop_digests(build: Path) -> None:
    """Accept the edited files (the manifest would reject them as changed after compile)."""
    manifest = json.loads((build / "manifest.json").read_text())
    for e in manifest["artifacts"]:
        e.pop("sha256", None)
    (build / "manifest.json").write_text(json.dumps(manifest))


def test_a_perturbed_conv_is_named_on_each_target(flow_build, tmp_path, monkeypatch):
    build = tmp_path / "perturbed"
    shutil.copytree(flow_build, build)
    monkeypatch.syspath_prepend(str(TESTS))
    import user_models

    weight = user_models.flow_warp()[0].features[2].weight.detach().numpy()
    _scale_weights(build / "flowwarp_fp32.tflite", weight)
    _scale_weights(build / "flowwarp_fp32.mlpackage/Data/com.apple.CoreML/weights/weight.bin", weight)
    _set_onnx_weights(build / "flowwarp_fp32.onnx", "features.2.weight", 3.0)
    _drop_digests(build)
    _, data = _localize(build)
    for target, runner in (("tflite", "litert-cpu"), ("onnx", "onnxruntime"), ("coreml", "coreml-mil")):
        first = _found(data, target, "fp32", runner)["first_divergent"]
        assert first is not None and first["module"] == "features.2" and first["op"] == "conv2d", (target, first)


def test_nan_weights_are_named_where_they_start(flow_build, tmp_path):
    build = tmp_path / "nan"
    shutil.copytree(flow_build, build)
    _set_onnx_weights(build / "flowwarp_fp32.onnx", "features.0.weight", np.nan)
    _drop_digests(build)
    code, data = _localize(build)
    assert code == 1
    first = _found(data, "onnx", "fp32", "onnxruntime")["first_divergent"]
    assert first["non_finite"] and first["module"] == "features.0"


def test_quantization_error_is_ranked_by_layer(flow_build):
    code, data = _localize(flow_build)
    assert code == 0  # within the int8 bound as a whole
    for target, runner in (("tflite", "litert-cpu"), ("onnx", "onnxruntime"), ("coreml", "coreml-mil")):
        found = _found(data, target, "int8", runner)
        top = found["top_error_added"]
        assert top and all(isinstance(e["added_db"], float) for e in top)
        assert [e["added_db"] for e in top] == sorted(e["added_db"] for e in top)
        assert all(e["source"].endswith(".py:" + e["source"].rsplit(":", 1)[1]) for e in top)
        # int8 weights make the convs noisy: a conv is among the ranked layers, with the
        # quantization's noise (an fp32 conv matches to > 100 dB).
        convs = [e for e in found["worst_layers"] + top if e["op"] == "conv2d"]
        assert convs and all(e["snr_db"] < 90 for e in convs)
        assert found["layers_compared"] >= 5  # convs, activations and the sampler (judged by its output)
        # The fp32 artifact passes parity, and no layer of it may be named as divergent:
        # that needs the reference's node names to be the artifact's (the ONNX exporter
        # re-traces and renames, see targets/onnx.py exporter_program).
        clean = _found(data, target, "fp32", runner)
        assert clean["first_divergent"] is None and clean["layers_compared"] >= 5, (target, clean)


def test_built_artifacts_carry_the_names_localize_matches(flow_build):
    fb = read_tflite(flow_build / "flowwarp_fp32.tflite")
    assert any(t.name.startswith("flowwarp/features/2/conv2d") for t in fb.tensors)


def test_an_artifact_from_other_passes_is_not_localized(flow_build, tmp_path):
    build = tmp_path / "stale"
    shutil.copytree(flow_build, build)
    report = json.loads((build / "report.json").read_text())
    for a in report["artifacts"]:
        a["passes"] = ["drop_aliases", "a_pass_this_mirror_does_not_run"]
    (build / "report.json").write_text(json.dumps(report))
    _, data = _localize(build)
    loc = _found(data, "onnx", "fp32", "onnxruntime")
    assert "a_pass_this_mirror_does_not_run" in loc["unavailable"] and "recompile" in loc["unavailable"]


def test_a_correct_artifact_has_no_divergent_layer_when_the_exporter_renames(tmp_path):
    """ONNX export re-traces the program (it decomposes ops ONNX has no function for) and
    renames nodes after them; matched against the un-renamed program, a correct model showed
    a 'divergent' sub at -3 dB. The reference is the exporter's own program."""
    build = tmp_path / "twolevel"
    assert _compile(build, "user_models:two_level_warp", "fp32", "onnx") == 0
    code, data = _localize(build)
    found = _found(data, "onnx", "fp32", "onnxruntime")
    assert code == 0 and found["first_divergent"] is None, found["first_divergent"]
    assert found["layers_compared"] >= 20


def test_nhwc_tensors_shaped_like_nchw_ones_are_compared_in_the_right_layout(tmp_path):
    """LiteRT keeps a [1, 16, 16, 16] pool output NHWC, the same shape as the reference's
    NCHW one; read as is, a right layer came out at -0.5 dB (the coarse parser's max pool,
    [1, 128, 128, 128] at 512x512)."""
    build = tmp_path / "cube"
    assert _compile(build, "user_models:cube_stem", "fp32", "tflite") == 0
    code, data = _localize(build)
    found = _found(data, "tflite", "fp32", "litert-cpu")
    assert code == 0 and found["first_divergent"] is None, found
    assert found["layers_compared"] >= 3
