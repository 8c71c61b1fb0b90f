"""Ctrl-C or SIGTERM in the middle of `mirror preview`, `tryon`, `validate` and `profile`: the
command stops promptly with one line, the previous good outputs stay as they were, and no
temporary file is left behind. (The compile's case is in test_resume.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from media_clips import write_clip
from PIL import Image
from standin_build import make_standin_build

from mirror.compiler import cli
from mirror.runtime.synthetic import Motion, SyntheticClip

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("scene")
    clip = SyntheticClip(height=480, width=270, motion=Motion(trans_amp=(5.0, 3.0), deform_amp=0.8))
    write_clip(root / "clip.mp4", clip.frames(240))
    shirt = np.full((120, 90, 3), 255, np.uint8)
    shirt[20:100, 15:75] = (20, 200, 40)
    Image.fromarray(shirt).save(root / "shirt.png")
    roi = ",".join(map(str, clip.roi(0)))
    build = make_standin_build(root / "build")
    assert cli.main(["preview", str(root / "clip.mp4"), "--out", str(root / "ctx"), "--roi", roi, "--quiet"]) == 0
    return {"root": root, "roi": roi, "build": build}


def _interrupt(argv: list[str], sig: int, after: str, **env_extra: str) -> tuple[int, str, float]:
    """Run ``mirror argv``, send ``sig`` once a progress line contains ``after``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "mirror.compiler.cli", *argv], stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if after in line:
            time.sleep(0.5)
            proc.send_signal(sig)
            break
    else:
        pytest.fail(f"no progress line with {after!r}:\n" + "".join(seen))
    t = time.perf_counter()
    err = proc.communicate(timeout=120)[1]
    return proc.returncode, err, time.perf_counter() - t


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _check_stopped(code: int, err: str, waited: float, sig: int) -> None:
    assert code == (130 if sig == signal.SIGINT else 143), err
    assert waited < 30, "the command did not stop promptly"
    last = err.strip().splitlines()[-1]
    assert last.startswith("mirror: ") and ("interrupted" in last or "terminated" in last), err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_preview_interrupted_keeps_the_previous_store(scene, sig):
    root = scene["root"]
    before = _tree(root)
    argv = ["preview", str(root / "clip.mp4"), "--out", str(root / "ctx"), "--roi", scene["roi"]]
    code, err, waited = _interrupt(argv, sig, after="preview")
    _check_stopped(code, err, waited, sig)
    assert _tree(root) == before  # the store is the previous one, and nothing was added


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_tryon_interrupted_writes_no_partial_video(scene, sig):
    root = scene["root"]
    before = _tree(root)
    argv = ["tryon", str(root / "clip.mp4"), str(root / "shirt.png"), "--context", str(root / "ctx"),
            "--build", str(scene["build"]), "--target", "onnx", "--out", str(root / "out.mp4")]  # fmt: skip
    code, err, waited = _interrupt(argv, sig, after="tryon")
    _check_stopped(code, err, waited, sig)
    assert _tree(root) == before and not (root / "out.mp4").exists()


# A reference that takes a minute on every run after the first (the one ``user_unit`` makes to
# count the outputs): validate is stopped while it computes the reference's outputs.
SLOW_MODEL = """
import sys, time
import torch
from user_models import flow_warp


class Slow(torch.nn.Module):
    mirror_name = "flowwarp"

    def __init__(self, inner):
        super().__init__()
        self.inner, self.runs = inner, 0

    def forward(self, source, target):
        if not torch.compiler.is_exporting():
            self.runs += 1
            if self.runs > 1:
                print("slow reference: running", file=sys.stderr, flush=True)
                time.sleep(60)
        return self.inner(source, target)


def slow_flow_warp():
    model, example, inputs, outputs = flow_warp()
    return Slow(model), example, inputs, outputs
"""


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict:
    """A small compiled build with its validate.json, profile.json/.csv and report.html; and a
    copy of it whose reference (report.json's model) is slow."""
    root = tmp_path_factory.mktemp("builds")
    build = root / "build"
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        assert cli.main(["compile", "--model", "user_models:flow_warp", "--out", str(build), "--no-baseline",
                         "--targets", "onnx", "--precisions", "fp32", "--gpu-parity", "none"]) == 0
        assert cli.main(["validate", str(build), "--gpu-parity", "none"]) == 0
        assert cli.main(["profile", str(build), "--devices", "adreno-750", "--runs", "1"]) == 0
    assert {"validate.json", "profile.json", "profile.csv", "report.html"} <= {p.name for p in build.iterdir()}
    slow = root / "slow"
    shutil.copytree(build, slow)
    (root / "models").mkdir()
    (root / "models" / "slow_models.py").write_text(SLOW_MODEL)
    report = json.loads((slow / "report.json").read_text())
    report["config"]["model"] = "slow_models:slow_flow_warp"
    (slow / "report.json").write_text(json.dumps(report))
    return {"build": build, "slow": slow, "models": root / "models", "tmp": root}


def _stopped_cleanly(build: Path, argv: list[str], sig: int, after: str, tmp: Path, models: Path) -> float:
    """Interrupt ``mirror argv`` on ``build``: one line, exit 130/143, nothing changed or left
    in the build, and nothing left in the temporary folder. Returns how long it took to stop."""
    scratch = tmp / f"scratch-{sig}-{argv[0]}"
    scratch.mkdir()
    before = _tree(build)
    path = os.pathsep.join([str(models), str(TESTS), os.environ.get("PYTHONPATH", "")])
    code, err, waited = _interrupt(argv, sig, after, TMPDIR=str(scratch), PYTHONPATH=path)
    _check_stopped(code, err, waited, sig)
    assert _tree(build) == before, "the previous outputs changed or a file was left in the build"
    assert list(scratch.iterdir()) == [], "temporary files were left behind"
    return waited


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_validate_interrupted_keeps_the_previous_report(builds, sig):
    slow = builds["slow"]
    previous = (slow / "validate.json").read_bytes()
    waited = _stopped_cleanly(slow, ["validate", str(slow), "--gpu-parity", "none"], sig, "slow reference: running",
                              builds["tmp"], builds["models"])  # fmt: skip
    assert (slow / "validate.json").read_bytes() == previous
    assert waited < 5, f"validate took {waited:.1f}s to stop"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_profile_interrupted_keeps_the_previous_profile(builds, sig):
    build = builds["build"]
    previous = {n: (build / n).read_bytes() for n in ("profile.json", "profile.csv", "report.html")}
    # During the onnxruntime step: an ONNX export of the program, then onnxruntime's profiler.
    waited = _stopped_cleanly(build, ["profile", str(build), "--devices", "adreno-750", "--runs", "1"], sig,
                              "onnxruntime profiler ...", builds["tmp"], builds["models"])  # fmt: skip
    assert {n: (build / n).read_bytes() for n in previous} == previous
    assert waited < 10, f"profile took {waited:.1f}s to stop"


def test_a_stop_during_a_set_of_writes_takes_effect_after_the_last(tmp_path):
    """profile.json, profile.csv and report.html (validate.json and report.html) are written
    together: a signal between two of them must not leave a new file beside an old one."""
    from mirror.compiler.progress import Stopped, clear_stop, request_stop, stop_after_writing

    clear_stop()
    written = []
    with pytest.raises(Stopped), stop_after_writing():
        written.append("profile.json")
        request_stop("SIGTERM")  # what the signal handler runs
        written.append("profile.csv")
        written.append("report.html")
    clear_stop()
    assert written == ["profile.json", "profile.csv", "report.html"]
