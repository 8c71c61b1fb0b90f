"""Core ML target: packages, deployment target, sampler lowering, fp32 index ops, compression,
byte reproducibility, and an honest runner (no Core ML runtime off macOS)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("coremltools")

from index_sampler import decomposed_grid_sample  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from mirror import MirrorError  # noqa: E402
from mirror.passes.base import get_pass, run_pipeline  # noqa: E402
from mirror.passes.contiguous_inputs import contiguous_user_inputs  # noqa: E402
from mirror.passes.registry import PIPELINES  # noqa: E402
from mirror.runners.coreml import NOT_RUN_REASON, CoreMLRunner  # noqa: E402
from mirror.targets.coreml import (  # noqa: E402
    CoreMLEmitter,
    coreml_op_dtypes,
    coreml_op_summary,
    coreml_package_info,
)

IN, OUT = ["person", "cloth"], ["warped"]
H, W = 64, 48  # linear gather indices reach 3071 > 2048: not exact in fp16


def prepare(program, graph: str, lowering: str = "native"):
    """The shared pipeline, then the Core ML backend's own: what the emitter expects.

    Returns the program and each pass's record by name."""
    spec = [*PIPELINES["default"], *CoreMLEmitter().pipeline(lowering)]
    program, records = run_pipeline(program, spec, graph)
    return program, {r.name: r for r in records}


class Warp(nn.Module):
    """Convs (one big enough to be compressed) predict a flow; a sampler warps the cloth."""

    def __init__(self, decomposed: bool) -> None:
        super().__init__()
        self.decomposed = decomposed
        self.c1 = nn.Conv2d(3, 64, 3, padding=1)
        self.c2 = nn.Conv2d(64, 64, 3, padding=1)
        self.c3 = nn.Conv2d(64, 2, 3, padding=1)

    def forward(self, person, cloth):
        h = torch.relu(self.c1(person)).detach()  # exports as aten.alias: must be dropped
        flow = torch.tanh(self.c3(torch.relu(self.c2(h)))).permute(0, 2, 3, 1)
        if self.decomposed:
            return decomposed_grid_sample(cloth, flow)
        return F.grid_sample(cloth, flow, padding_mode="border", align_corners=False)


@pytest.fixture(scope="module")
def example():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, H, W, generator=g) * 2 - 1, torch.rand(1, 3, H, W, generator=g) * 2 - 1)


@pytest.fixture(scope="module")
def programs(example):
    torch.manual_seed(0)
    native = Warp(decomposed=False).eval()
    decomposed = Warp(decomposed=True).eval()
    decomposed.load_state_dict(native.state_dict())
    with torch.no_grad():
        assert (native(*example) - decomposed(*example)).abs().max() < 1e-4
    # "native": keep F.grid_sample (MIL resample) and the hand-written sampler as they are.
    return {
        "resample": prepare(torch.export.export(native, example), "native")[0],
        "decomposed": prepare(torch.export.export(decomposed, example), "warp")[0],
    }


def test_pipeline_prepares_what_coremltools_needs(programs):
    """drop_aliases (shared) removes the .detach() alias coremltools 9 rejects; the "native"
    lowering leaves grid_sample alone."""
    for program in programs.values():
        ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert not [op for op in ops if "alias" in op]
    resample = {str(n.target) for n in programs["resample"].graph.nodes if n.op == "call_function"}
    assert [op for op in resample if "grid_sampler" in op]  # "native" keeps it for MIL resample


@pytest.fixture(scope="module")
def packages(programs, example, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    em = CoreMLEmitter()
    arts = {}
    arts["resample", "fp16"] = em.emit(programs["resample"], "native", "fp16", out,
                                       example_inputs=example, input_names=IN, output_names=OUT,
                                       sampler="resample")
    for precision in ("fp16", "fp32", "int8", "palettize6"):
        arts["decomposed", precision] = em.emit(programs["decomposed"], "warp", precision, out,
                                                example_inputs=example, input_names=IN,
                                                output_names=OUT, sampler="decomposed")
    return arts


# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_package_saved_with_ios16_target_and_float32_io(packages):
    art = packages["decomposed", "fp16"]
    assert art.path.name == "warp_fp16.mlpackage" and art.path.is_dir()
    assert (art.path / "Manifest.json").exists()
    info = coreml_package_info(art.path)
    assert info["specification_version"] >= 7  # 7 = iOS16
    assert info["minimum_deployment_target"] in ("iOS16", "iOS17", "iOS18", "iOS26")
    assert [i["name"] for i in info["inputs"]] == IN
    assert [o["name"] for o in info["outputs"]] == OUT
    assert {f["dtype"] for f in info["inputs"] + info["outputs"]} == {"FLOAT32"}
    assert art.info["spec_version"] == info["specification_version"]
    # No leftover temporary folders next to the package.
    assert not [p for p in art.path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_sampler_lowering_shows_in_op_summary(packages):
    native = coreml_op_summary(packages["resample", "fp16"].path)
    decomposed = coreml_op_summary(packages["decomposed", "fp16"].path)
    assert native.get("resample") == 1
    assert "resample" not in decomposed
    assert decomposed.get("gather_along_axis") == 4 and decomposed.get("floor") == 2
    assert packages["resample", "fp16"].info["sampler"] == "resample"
    assert packages["decomposed", "fp16"].info["sampler"] == "decomposed"


@pytest.mark.slow
def test_fp16_package_keeps_index_math_in_fp32(packages):
    dtypes = coreml_op_dtypes(packages["decomposed", "fp16"].path)
    assert dtypes["floor"] == {"float32": 2}
    assert dtypes["conv"] == {"float16": 3}
    assert set(dtypes["gather_along_axis"]) == {"float16"}  # the data path stays fp16
    assert dtypes["clip"] == {"float32": 4}
    kept = packages["decomposed", "fp16"].info["fp32_ops"]
    assert any(k.startswith("floor") for k in kept)


@pytest.mark.slow
def test_fp32_ops_none_computes_indices_in_fp16(programs, example, tmp_path):
    art = CoreMLEmitter(fp32_ops="none").emit(programs["decomposed"], "warp", "fp16", tmp_path,
                                              example_inputs=example, input_names=IN,
                                              output_names=OUT)
    assert coreml_op_dtypes(art.path)["floor"] == {"float16": 2}


@pytest.mark.slow
def test_decomposed_request_rejects_grid_sample(programs, example, tmp_path):
    with pytest.raises(MirrorError, match="gpu_grid_sample") as err:
        CoreMLEmitter().emit(programs["resample"], "native", "fp16", tmp_path, example_inputs=example,
                             input_names=IN, output_names=OUT, sampler="decomposed")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_compressed_packages_are_smaller(packages):
    size = {p: packages["decomposed", p].info["size_bytes"] for p in ("fp32", "fp16", "int8", "palettize6")}
    assert size["fp16"] < size["fp32"]
    assert size["int8"] < size["fp16"]
    assert size["palettize6"] < size["int8"]
    assert "constexpr_affine_dequantize" in coreml_op_summary(packages["decomposed", "int8"].path)
    assert "constexpr_lut_to_dense" in coreml_op_summary(packages["decomposed", "palettize6"].path)
    assert coreml_op_dtypes(packages["decomposed", "fp32"].path)["conv"] == {"float32": 3}


@pytest.mark.slow
def test_packages_are_byte_identical_across_processes(packages, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_coreml_target import Warp, IN, OUT, H, W, prepare
        from mirror.targets.coreml import CoreMLEmitter
        g = torch.Generator().manual_seed(0)
        ex = (torch.rand(1, 3, H, W, generator=g) * 2 - 1, torch.rand(1, 3, H, W, generator=g) * 2 - 1)
        torch.manual_seed(0)
        m = Warp(decomposed=False).eval()
        d = Warp(decomposed=True).eval()
        d.load_state_dict(m.state_dict())
        program, _ = prepare(torch.export.export(d, ex), "warp")
        a = CoreMLEmitter().emit(program, "warp", "int8", {str(tmp_path)!r},
                                 example_inputs=ex, input_names=IN, output_names=OUT)
        print(a.info["sha256"])
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="4242")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == packages["decomposed", "int8"].info["sha256"]
    assert packages["decomposed", "int8"].info["deterministic"] is True


@pytest.mark.slow
def test_not_reproducible_when_asked(programs, example, tmp_path):
    """coremltools' own bytes differ per save (random manifest UUIDs)."""
    # Two emitters: one emitter reuses its conversion, and the point is two conversions.
    a = CoreMLEmitter(reproducible=False).emit(programs["resample"], "a", "fp32", tmp_path, example_inputs=example,
                                               input_names=IN, output_names=OUT)
    b = CoreMLEmitter(reproducible=False).emit(programs["resample"], "a", "fp32", tmp_path / "again",
                                               example_inputs=example, input_names=IN, output_names=OUT)
    assert a.info["sha256"] != b.info["sha256"]
    assert a.info["deterministic"] is False


# ------------------------------------------------------------------------------------------
# Layouts and scalar operands that coremltools 9 rejects on its own


class PermutedSampler(nn.Module):
    """A one-hot map predicts a flow; an NHWC image is warped between permutes:
    permute -> grid_sample -> permute, as mobile models written channels-last do."""

    def __init__(self) -> None:
        super().__init__()
        self.flow = nn.Conv2d(7, 2, 3, padding=1)

    def forward(self, parsing, cloth_nhwc):
        cloth = cloth_nhwc.permute(0, 3, 1, 2)
        grid = torch.tanh(self.flow(parsing)).permute(0, 2, 3, 1)
        return F.grid_sample(cloth, grid, align_corners=False).permute(0, 2, 3, 1)


def _onehot_channels_last(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """A one-hot map built the usual way: strides of a channels-last tensor."""
    labels = torch.randint(0, c, (n, h, w), generator=torch.Generator().manual_seed(0))
    x = F.one_hot(labels, c).permute(0, 3, 1, 2).float()
    assert not x.is_contiguous()
    return x


@pytest.fixture(scope="module")
def permuted_example():
    g = torch.Generator().manual_seed(1)
    return (_onehot_channels_last(1, 7, 32, 24), torch.rand(1, 32, 24, 3, generator=g) * 2 - 1)


def test_non_contiguous_user_inputs_are_redeclared_contiguous(permuted_example):
    """torch.export records the example's strides on the placeholder; the Core ML pipeline's
    coreml::contiguous_inputs gives it the row-major layout a Core ML input has."""
    torch.manual_seed(0)
    model = PermutedSampler().eval()
    ep = torch.export.export(model, permuted_example).run_decompositions({})

    def parsing_order(program):
        ph = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        return ph["parsing"].meta["val"].dim_order()

    # The registered pass: a relaid copy, the input program untouched.
    result = get_pass("coreml::contiguous_inputs")(ep)
    assert result.changed and result.details == {"inputs_made_contiguous": ["parsing"]}
    assert parsing_order(result.program) == (0, 1, 2, 3)
    assert parsing_order(ep) == (0, 2, 3, 1)
    again = get_pass("coreml::contiguous_inputs")(result.program)
    assert not again.changed and again.details == {"inputs_made_contiguous": []}

    # The in-place helper underneath.
    ph = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    assert contiguous_user_inputs(ep) == ["parsing"]
    assert ph["parsing"].meta["val"].dim_order() == (0, 1, 2, 3)
    assert tuple(ph["parsing"].meta["val"].shape) == (1, 7, 32, 24)
    assert contiguous_user_inputs(ep) == []  # idempotent
    # only the recorded layout changed: dense inputs give the model's result
    dense = tuple(t.contiguous() for t in permuted_example)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(*dense), model(*permuted_example))


@pytest.mark.slow
def test_channels_last_input_and_permuted_sampler_convert(permuted_example, tmp_path):
    """Regression: a channels-last example input ("non-contiguous dim order") and the
    gpu_grid_sample decomposition (where(c, x, <scalar>), clamp_max(x, <int>)) used to stop
    coremltools 9; both samplers now convert in fp16 after the Core ML pipeline."""
    torch.manual_seed(0)
    model = PermutedSampler().eval()
    ep = torch.export.export(model, permuted_example)
    names, out = ["parsing", "cloth"], ["warped"]

    prog, records = prepare(ep, "native", "native")
    assert records["coreml::contiguous_inputs"].details["inputs_made_contiguous"] == ["parsing"]
    native = CoreMLEmitter().emit(prog, "native", "fp16", tmp_path, example_inputs=permuted_example,
                                  input_names=names, output_names=out, sampler="resample")
    assert native.info["sampler"] == "resample"

    prog, records = prepare(ep, "permuted", "fp16_exact")
    assert records["gpu_grid_sample"].changed
    assert records["coreml::contiguous_inputs"].details["inputs_made_contiguous"] == ["parsing"]
    assert records["coreml::float_clamp_bounds"].details["bounds_made_float"] > 0
    targets = {str(n.target) for n in prog.graph.nodes if n.op == "call_function"}
    assert "aten.grid_sampler_2d.default" not in targets
    art = CoreMLEmitter().emit(prog, "permuted", "fp16", tmp_path, example_inputs=permuted_example,
                               input_names=names, output_names=out, sampler="decomposed")
    assert art.info["sampler"] == "decomposed" and art.info["fp32_ops"]
    info = coreml_package_info(art.path)
    assert [(i["name"], i["shape"]) for i in info["inputs"]] == [
        ("parsing", [1, 7, 32, 24]), ("cloth", [1, 32, 24, 3])]
    assert [(o["name"], o["shape"]) for o in info["outputs"]] == [("warped", [1, 32, 24, 3])]


class ScalarOperands(nn.Module):
    def forward(self, x):
        return torch.clamp_min(torch.clamp_max(torch.where(x > 0.25, x, 0), 3), -1) * 2


@pytest.mark.slow
def test_scalar_where_and_integer_clamp_bounds_convert(tmp_path):
    """aten.where.ScalarOther is unknown to coremltools 9 and its clamp_min/clamp_max assert
    equal dtypes; the emitter routes the first, coreml::float_clamp_bounds fixes the second."""
    x = (torch.randn(1, 4, 8, 8),)
    ep = torch.export.export(ScalarOperands(), x)
    prog, records = prepare(ep, "scalars")
    targets = {str(n.target) for n in prog.graph.nodes if n.op == "call_function"}
    assert "aten.where.ScalarOther" in targets
    assert records["coreml::float_clamp_bounds"].details == {"bounds_made_float": 2}
    clamps = [n for n in prog.graph.nodes if n.op == "call_function" and "clamp" in str(n.target)]
    assert len(clamps) == 2 and all(isinstance(n.args[1], float) for n in clamps)
    with torch.no_grad():
        torch.testing.assert_close(prog.module()(*x), ScalarOperands()(*x))
    art = CoreMLEmitter().emit(prog, "scalars", "fp32", tmp_path, example_inputs=x,
                               input_names=["x"], output_names=["y"])
    ops = art.info["ops"]
    assert ops.get("select") and (ops.get("minimum") or ops.get("clip"))


def test_a_model_whose_input_is_called_input_converts(tmp_path):
    """``nn.Sequential.forward(input)``: ``input`` is a Python builtin, so a copy of the
    exported graph (every pass makes one) renamed the placeholder and left the signature
    saying ``input``; coremltools stopped with ``KeyError: 'input'``. The pipeline keeps the
    two in line, and the package computes what the model does (coreml-mil)."""
    from mirror.runners.coreml_mil import CoreMLMilRunner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    x = (torch.rand(1, 3, 8, 8),)
    prog, _ = prepare(torch.export.export(model, x), "seq")
    sig = [s.arg.name for s in prog.graph_signature.input_specs]
    assert sig == [n.name for n in prog.graph.nodes if n.op == "placeholder"] and "input" not in sig
    art = CoreMLEmitter().emit(prog, "seq", "fp32", tmp_path, example_inputs=x, input_names=["image"],
                               output_names=["y"])  # fmt: skip
    got = CoreMLMilRunner(art.path).run({"image": x[0].numpy()})["y"]
    with torch.no_grad():
        assert float(np.abs(got - model(*x).numpy()).max()) <= 1e-5


def test_runner_is_honest_about_macos_only(tmp_path):
    runner = CoreMLRunner(tmp_path / "x.mlpackage")
    assert runner.name == "coreml"
    if platform.system() == "Darwin":
        pytest.skip("Core ML prediction may be available here")
    ok, why = runner.availability()
    assert ok is False and why.startswith(NOT_RUN_REASON)
    with pytest.raises(MirrorError, match="macOS-only"):
        runner.run({"person": np.zeros((1, 3, 4, 4), np.float32)})


def test_bad_options_are_mirror_errors(tmp_path):
    with pytest.raises(MirrorError, match="sampler"):
        CoreMLEmitter(sampler="bicubic")
    with pytest.raises(MirrorError, match="deployment target"):
        CoreMLEmitter(minimum_deployment_target="iOS15")
    # An unknown name is refused by mirror.precisions itself; a known recipe Core ML does not
    # realize by the target, with the names it accepts.
    with pytest.raises(MirrorError, match="unknown precision 'int4'"):
        CoreMLEmitter().emit(None, "g", "int4", tmp_path, example_inputs=(), input_names=[],
                             output_names=[])
    with pytest.raises(MirrorError, match="^the coreml target has no 'int8-full' recipe; use one of .*palettize6"):
        CoreMLEmitter().emit(None, "g", "int8-full", tmp_path, example_inputs=(), input_names=[],
                             output_names=[])


class _Unsupported(nn.Module):
    """Ops coremltools 9 had no translation for: var_mean, logsigmoid, cosine_similarity,
    bicubic upsampling."""

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=1, keepdim=True)
        up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        return F.logsigmoid(x) * var + mean + F.cosine_similarity(x, x.flip(3), dim=1).unsqueeze(1), up


@pytest.mark.slow
def test_ops_coremltools_lacks_are_decomposed_and_convert(tmp_path):
    """Each stopped conversion with "Unsupported fx node"; coreml::core_aten rewrites them
    into ops coremltools converts, and the fp32 package matches PyTorch (coreml-mil)."""
    from mirror.runners.coreml_mil import CoreMLMilRunner

    x = (torch.randn(1, 4, 8, 6),)
    prog, records = prepare(torch.export.export(_Unsupported(), x), "lacks")
    assert records["coreml::core_aten"].changed
    targets = {str(n.target) for n in prog.graph.nodes if n.op == "call_function"}
    assert not {t for t in targets if any(op in t for op in ("var_mean", "log_sigmoid", "bicubic", "cosine"))}, targets
    art = CoreMLEmitter().emit(prog, "lacks", "fp32", tmp_path, example_inputs=x, input_names=["x"],
                               output_names=["y", "up"])  # fmt: skip
    got = CoreMLMilRunner(art.path).run({"x": x[0].numpy()})
    with torch.no_grad():
        want = _Unsupported()(*x)
    for name, w in zip(("y", "up"), want, strict=True):
        assert float(np.abs(got[name] - w.numpy()).max()) <= 1e-5, name
