"""`mirror validate` on a compiled build and on lone files: fresh inputs, the user's inputs,
artifacts changed after compile, a wrong model, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mirror.compiler import cli

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
MODEL = "user_models:flow_warp"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        code = cli.main(["compile", "--model", MODEL, "--out", str(out), "--no-baseline",
                         "--targets", "tflite,onnx", "--precisions", "fp32,int8", "--gpu-parity", "none"])
    assert code == 0
    return out


def _validate(monkeypatch, *args: str) -> int:
    monkeypatch.syspath_prepend(str(TESTS))
    return cli.main(["validate", *args, "--gpu-parity", "none"])


def test_a_build_revalidates_on_fresh_inputs(build, monkeypatch, capsys):
    assert _validate(monkeypatch, str(build)) == 0
    data = json.loads((build / "validate.json").read_text())
    compiled = json.loads((build / "report.json").read_text())
    assert data["summary"]["passed"] and data["summary"]["artifacts"] == 4
    assert data["inputs"] == "random, image-like, seed 3000"  # the compile's seed 0 + 3000
    ran = {(a["target"], a["precision"], r) for a in data["artifacts"] for r, p in a["parity"].items()
           if "skipped" not in p}
    assert ran == {(t, p, r) for t, rs in (("tflite", ["litert-cpu"]), ("onnx", ["onnxruntime", "onnxruntime-ort"]))
                   for p in ("fp32", "int8") for r in rs}
    # Other inputs than the compile's: the figures differ, the verdict holds.
    before = {(a["target"], a["precision"]): a["parity"] for a in compiled["artifacts"]}
    after = {(a["target"], a["precision"]): a["parity"] for a in data["artifacts"]}
    assert after[("onnx", "fp32")]["onnxruntime"]["max_abs"] != before[("onnx", "fp32")]["onnxruntime"]["max_abs"]
    out = capsys.readouterr().out
    assert "tflite  fp32        litert-cpu" in out and "all parity checks passed" in out


def test_the_users_own_inputs(build, monkeypatch, tmp_path):
    rng = np.random.default_rng(7)
    npz = tmp_path / "inputs.npz"
    # Without the batch axis: one sample, as users save it.
    np.savez(npz, source=rng.uniform(-1, 1, (3, 32, 24)).astype(np.float32),
             target=rng.uniform(-1, 1, (1, 3, 32, 24)))
    assert _validate(monkeypatch, str(build), "--inputs", str(npz), "--out", str(tmp_path / "v.json")) == 0
    assert json.loads((tmp_path / "v.json").read_text())["inputs"] == str(npz)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"source": np.zeros((1, 3, 32, 24))}, "must hold exactly source, target"),
        ({"source": np.zeros((1, 3, 16, 24)), "target": np.zeros((1, 3, 32, 24))}, "source is float64 [1, 3, 16, 24]"),
    ],
)
def test_bad_inputs_stop_with_one_line(build, monkeypatch, tmp_path, capsys, arrays, message):
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    assert _validate(monkeypatch, str(build), "--inputs", str(npz)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mirror: error: --inputs") and message in err and "\n" not in err


def test_a_pickled_npz_is_refused(build, monkeypatch, tmp_path, capsys):
    npz = tmp_path / "pickled.npz"
    np.savez(npz, source=np.array([{"a": 1}], dtype=object), target=np.zeros((1, 3, 32, 24)))
    assert _validate(monkeypatch, str(build), "--inputs", str(npz)) == 1
    assert "not a readable .npz of plain arrays" in capsys.readouterr().err


def test_an_artifact_changed_after_compile_fails(build, monkeypatch, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    tfl = copy / "flowwarp_fp32.tflite"
    data = bytearray(tfl.read_bytes())
    data[-1] ^= 0xFF
    tfl.write_bytes(bytes(data))
    assert _validate(monkeypatch, str(copy)) == 1
    report = json.loads((copy / "validate.json").read_text())
    assert report["summary"]["errors"] == [
        "flowwarp/tflite/fp32: flowwarp_fp32.tflite does not match its manifest digest (changed after compile)"
    ]


def test_a_lone_file_against_the_users_model(build, monkeypatch):
    onnx = build / "flowwarp_fp32.onnx"
    assert _validate(monkeypatch, "--artifact", str(onnx), "--model", MODEL) == 0
    data = json.loads(onnx.with_name("flowwarp_fp32.onnx.validate.json").read_text())
    assert data["summary"]["passed"] and [a["target"] for a in data["artifacts"]] == ["onnx"]


def test_a_wrong_model_fails(build, monkeypatch, tmp_path):
    """One conv's weights changed inside the .onnx: parity fails, on fresh inputs too."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(build / "flowwarp_fp32.onnx")
    init = next(i for i in model.graph.initializer if len(i.dims) == 4)  # a conv weight
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, wrong)
    assert _validate(monkeypatch, "--artifact", str(wrong), "--model", MODEL) == 1
    data = json.loads((tmp_path / "wrong.onnx.validate.json").read_text())
    p = data["artifacts"][0]["parity"]["onnxruntime"]
    assert not p["passed"] and any("max abs" in f for f in p["failures"])


def test_artifact_needs_its_reference(monkeypatch, tmp_path, capsys):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"TFL3")
    assert _validate(monkeypatch, "--artifact", str(f)) == 1
    assert "--graph NAME" in capsys.readouterr().err
    assert _validate(monkeypatch, "--artifact", str(tmp_path / "m.pt"), "--graph", "gen") == 1
    assert "not a model file" in capsys.readouterr().err
    assert _validate(monkeypatch, str(tmp_path / "nothing")) == 1
    assert "has no manifest.json" in capsys.readouterr().err


def test_an_artifacts_precision_comes_from_the_name_the_compiler_gave_it():
    """``--artifact build/parser_int8.tflite`` is judged by int8's bounds without ``--precision``
    (with fp32's, a right int8 layer at 49 dB read as divergent)."""
    from pathlib import Path

    from mirror.compiler.validate import precision_of

    assert precision_of(Path("build/parser_int8.tflite")) == "int8"
    assert precision_of(Path("warp_fp16.mlpackage")) == "fp16"
    assert precision_of(Path("my_model.onnx")) == "fp32"
    assert precision_of(Path("net.tflite")) == "fp32"


def test_validation_inputs_keep_each_inputs_kind():
    """A model's validation inputs are drawn like its example: class ids (int64, or integral
    floats) over the example's own range, booleans as booleans, other floats in [-1, 1]; the
    runners get integer inputs in their own dtype (an int64 input fed as float32 is refused
    by onnxruntime and by the exported program)."""
    import torch

    from mirror.compiler.units import feed_array, random_like

    gen = torch.Generator().manual_seed(0)
    ids = random_like(torch.tensor([[0, 6], [3, 1]]), gen)
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) <= 6
    many = random_like(torch.arange(7.0).view(1, 1, 7).expand(1, 64, 7), gen)
    assert torch.equal(many, many.round()) and set(many.unique().tolist()) == set(range(7))
    assert random_like(torch.zeros(3, dtype=torch.bool), gen).dtype == torch.bool
    image = random_like(torch.rand(1, 3, 8, 8), gen)
    assert not torch.equal(image, image.round()) and -1 <= float(image.min()) and float(image.max()) <= 1
    assert feed_array(ids).dtype == np.int64 and feed_array(image.double()).dtype == np.float32


def test_an_integer_input_from_the_users_npz(monkeypatch, tmp_path):
    """A label-conditioned model (int64 class ids): compiled to ONNX, revalidated on the
    user's own .npz, whose ids are fed as int64 (saved as int32 here, as numpy users do)."""
    out = tmp_path / "build"
    monkeypatch.syspath_prepend(str(TESTS))
    assert cli.main(["compile", "--model", "user_models:label_cond", "--out", str(out), "--no-baseline",
                     "--targets", "onnx", "--precisions", "fp32"]) == 0  # fmt: skip
    rng = np.random.default_rng(3)
    npz = tmp_path / "inputs.npz"
    np.savez(npz, image=rng.uniform(-1, 1, (3, 16, 12)).astype(np.float32),
             labels=rng.integers(0, 7, (16, 12)).astype(np.int32))
    assert _validate(monkeypatch, str(out), "--inputs", str(npz), "--out", str(tmp_path / "v.json")) == 0
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["summary"]["passed"] and report["artifacts"][0]["parity"]["onnxruntime"]["max_abs"] <= 1e-5
