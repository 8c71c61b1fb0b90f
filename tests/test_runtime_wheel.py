"""The runtime wheel installs into a fresh venv without torch and runs a try-on there.

The venv gets pip (ensurepip, offline) and, as its only third-party packages, links to
numpy, onnxruntime, av and Pillow from this environment (there is no network to install
them from); the wheel itself is installed by pip with --no-deps --no-index.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from media_clips import write_clip
from PIL import Image
from standin_build import make_standin_build

from mirror.compiler.runtime_wheel import write_runtime_wheel
from mirror.runtime.synthetic import Motion, SyntheticClip

DEPS = ("numpy", "numpy.libs", "onnxruntime", "av", "av.libs", "PIL", "pillow.libs")


def test_wheel_holds_the_runtime_and_no_compile_side(tmp_path: Path) -> None:
    wheel = write_runtime_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mirror/runtime/pipeline.py", "mirror/runners/onnxruntime.py", "mirror/runners/litert_worker.py",
            "mirror/compiler/cmd_tryon.py", "mirror/runtime/encode.py"} <= names
    assert "mirror/compiler/parser_build.py" in names  # whose function body imports the compile driver
    assert not any(n.startswith(("mirror/graphs/", "mirror/passes/", "mirror/targets/", "mirror/validation/",
                                 "mirror/profiling/"))
                   or n in ("mirror/compiler/driver.py", "mirror/compiler/config.py", "mirror/compiler/cmd_compile.py")
                   for n in names)  # fmt: skip
    meta = zipfile.ZipFile(wheel).read("mirror_runtime-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: av==" in meta and "torch" not in meta
    assert (tmp_path / "RUNTIME.md").read_text().count("mirror tryon") == 1
    again = write_runtime_wheel(tmp_path / "again")
    assert again.read_bytes() == wheel.read_bytes()  # the same sources, the same bytes


@pytest.mark.slow
def test_wheel_runs_a_tryon_in_a_venv_without_torch(tmp_path: Path) -> None:
    wheel = write_runtime_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    for name in DEPS:
        (site / name).symlink_to(here / name)
    pip = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    assert subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0
    clip = SyntheticClip(height=192, width=108, motion=Motion(trans_amp=(2.0, 1.0), deform_amp=0.3))
    video = write_clip(tmp_path / "clip.mp4", clip.frames(5))
    Image.new("RGB", (60, 80), "white").save(tmp_path / "g.png")
    shirt = Image.open(tmp_path / "g.png")
    shirt.paste((200, 30, 40), (15, 20, 45, 75))
    shirt.save(tmp_path / "g.png")
    build = make_standin_build(tmp_path / "build")
    r = subprocess.run([venv / "bin" / "mirror", "tryon", str(video), str(tmp_path / "g.png"), "--build", str(build),
                        "--target", "onnx", "--roi", ",".join(map(str, clip.roi(0))), "--context",
                        str(tmp_path / "ctx"), "--out", str(tmp_path / "o.mp4"), "--stats", str(tmp_path / "s.json")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 5 and (tmp_path / "o.mp4").stat().st_size
    where = subprocess.run([py, "-c", "import mirror; print(mirror.__file__)"], capture_output=True, text=True)
    assert str(venv) in where.stdout  # the wheel's copy ran, not this checkout
    r = subprocess.run([venv / "bin" / "mirror", "compile"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not available in this build" in r.stderr
