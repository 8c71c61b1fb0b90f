"""Ctrl-C or SIGTERM in the middle of `mirror preview`, `tryon` and `validate`: the command
stops promptly with one line, the previous good outputs stay as they were, and no
temporary file is left behind. (The compile's case is in test_resume.py.)"""

from __future__ import annotations

import os
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


def _interrupt(argv: list[str], sig: int, after: str) -> tuple[int, str, float]:
    """Run ``mirror argv``, send ``sig`` once a progress line contains ``after``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
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
