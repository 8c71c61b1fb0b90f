"""SCHP's parser compiled from ``--parser-checkpoint`` and run by runtime/schp.py as Preview's parser.

The compile runs once for the module, at a 128x128 parser size (SCHP's own is 512; the graph
takes any size, and 128 keeps ResNet-101's export and runs to seconds), from a checkpoint in
SCHP's layout (``{"state_dict": {"module.<key>": ...}}``) written from seeded weights. The
labels of random weights mean nothing, so the end-to-end test checks that Preview runs, that
a second call reuses the build, and the errors; the numbers are checked against the PyTorch
reference graph, which does SCHP's resizes itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from media_clips import write_clip

from mirror import graphs
from mirror.compiler import cli
from mirror.runtime.imgproc import resize_align_corners
from mirror.runtime.schp import CompiledParser
from mirror.runtime.store import open_store
from mirror.runtime.synthetic import Motion, SyntheticClip

SIZE = 128


def _clip() -> SyntheticClip:
    return SyntheticClip(height=480, width=270, motion=Motion(trans_amp=(6.0, 3.0), deform_amp=1.0))


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A seeded SCHP-layout checkpoint and a 6-frame clip."""
    root = tmp_path_factory.mktemp("schp")
    state = graphs.load("parser", seed=0).state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, root / "schp.pth")
    write_clip(root / "clip.y4m", _clip().frames(6))
    return root


@pytest.fixture(scope="module")
def first_run(work: Path) -> tuple[int, str, str]:
    """`mirror preview --parser-checkpoint` on a folder with no parser build: it compiles one."""
    return _main(["preview", str(work / "clip.y4m"), "--out", str(work / "ctx"), "--parser-checkpoint",
                  str(work / "schp.pth"), "--parser-size", str(SIZE), "--parser-build", str(work / "parser")])


def _argv(work: Path, out: str, *extra: str) -> list[str]:
    return ["preview", str(work / "clip.y4m"), "--out", str(work / out), "--parser-size", str(SIZE),
            "--parser-build", str(work / "parser"), *extra]  # fmt: skip


@pytest.mark.slow
def test_preview_compiles_the_parser_then_reuses_it(work: Path, first_run) -> None:
    code, out, err = first_run
    assert code == 0, err
    assert "compiling the parser (schp.pth, onnx fp32, 128x128)" in err and "parser: onnx fp32: validate" in err
    assert "6 frames" in out
    doc = json.loads((work / "ctx" / "preview.json").read_text())
    assert doc["body"]["model"] == "CompiledParser" and open_store(work / "ctx").frames == 6
    manifest = json.loads((work / "parser" / "manifest.json").read_text())
    assert manifest["artifacts"][0]["tensors"]["inputs"]["image"] == [1, 3, SIZE, SIZE]
    onnx = work / "parser" / manifest["artifacts"][0]["path"]
    before = onnx.stat().st_mtime_ns
    # Again, in a fresh process: the build is reused without importing torch (nothing compiles).
    argv = _argv(work, "ctx2", "--parser-checkpoint", str(work / "schp.pth"))
    code = (f"import sys; from mirror.compiler import cli; rc = cli.main({argv!r}); "
            "print('torch', 'torch' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(work))
    assert r.returncode == 0, r.stderr
    assert "reusing the parser build" in r.stderr and "torch.export" not in r.stderr
    assert "torch False" in r.stdout
    assert onnx.stat().st_mtime_ns == before


@pytest.mark.slow
def test_compiled_parser_matches_the_reference_graph(work: Path, first_run) -> None:
    """numpy resize to the net size and back (align_corners=True) + argmax == the PyTorch graph's own."""
    assert first_run[0] == 0, first_run[2]
    parser = CompiledParser.from_build(work / "parser")
    assert parser.input_hw == (SIZE, SIZE)
    reference = graphs.load("parser", checkpoint=work / "schp.pth", net_size=(SIZE, SIZE), out_size=None)
    for frame in (_clip().frames(1)[0], np.ascontiguousarray(_clip().frames(1)[0][:301, :203])):
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            want_logits, want_labels = reference(x)
        want = want_labels[0, 0].numpy().astype(np.uint8)
        assert len(np.unique(want)) > 1  # not a uniform map: the comparison says something
        got = parser(frame)
        assert got.shape == frame.shape[:2] and got.dtype == np.uint8
        assert np.mean(got == want) >= 0.99
        np.testing.assert_array_equal(parser.last_mask, got > 0)
        logits = parser.logits(frame)
        assert np.abs(logits - want_logits[0].numpy()).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["not a checkpoint", "wrong graph"])
def test_a_wrong_checkpoint_is_one_line(work: Path, kind: str) -> None:
    bad = work / f"{kind.replace(' ', '_')}.pth"
    if kind == "not a checkpoint":
        bad.write_text("hello")
    else:
        torch.save({"state_dict": {"module.model.0.weight": torch.zeros(3)}}, bad)
    code, _, err = _main(["preview", str(work / "clip.y4m"), "--out", str(work / "c"), "--parser-checkpoint",
                          str(bad), "--parser-build", str(work / "badbuild")])  # fmt: skip
    assert code == 1 and err.count("\n") == 1 and err.startswith("mirror: error:"), err
    assert ("not a PyTorch checkpoint" if kind == "not a checkpoint" else "does not fit graph 'parser'") in err
    assert not (work / "badbuild").exists() and not (work / "c").exists()


@pytest.mark.parametrize("extra,msg", [
    (["--roi", "1,1,20,20"], "--roi and --parser-checkpoint"),
    (["--parser-size", "100"], "multiple of 32"),
    (["--parser-target", "coreml"], "invalid choice"),
])  # fmt: skip
def test_bad_options_stop_before_any_work(tmp_path: Path, extra: list[str], msg: str) -> None:
    ckpt = tmp_path / "schp.pth"
    ckpt.write_bytes(b"x")
    video = write_clip(tmp_path / "v.y4m", np.full((2, 64, 64, 3), 128, np.uint8))
    code, _, err = _main(["preview", str(video), "--out", str(tmp_path / "c"), "--parser-checkpoint", str(ckpt),
                          *extra])  # fmt: skip
    assert code != 0 and msg in err and not (tmp_path / "c").exists()


def test_missing_checkpoint_and_tryon_roi(tmp_path: Path) -> None:
    video = write_clip(tmp_path / "v.y4m", np.full((2, 64, 64, 3), 128, np.uint8))
    code, _, err = _main(["preview", str(video), "--out", str(tmp_path / "c"), "--parser-checkpoint",
                          str(tmp_path / "nope.pth")])  # fmt: skip
    assert code == 1 and err.count("\n") == 1 and "nope.pth does not exist" in err
    code, _, err = _main(["tryon", str(video), str(tmp_path / "g.png"), "--out", str(tmp_path / "t.mp4"),
                          "--roi", "1,1,8,8", "--parser-checkpoint", str(tmp_path / "nope.pth")])  # fmt: skip
    assert code == 1 and err.count("\n") == 1 and "--roi and --parser-checkpoint" in err


@pytest.mark.parametrize("shape,size", [((3, 128, 128), (512, 512)), ((7, 32, 32), (301, 203)),
                                        ((3, 540, 960), (128, 128)), ((2, 5, 1), (9, 4))])
def test_resize_align_corners_is_torch_bilinear(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = F.interpolate(torch.from_numpy(a)[None], size=size, mode="bilinear", align_corners=True)[0].numpy()
    np.testing.assert_allclose(resize_align_corners(a, *size), want, atol=2e-5)
