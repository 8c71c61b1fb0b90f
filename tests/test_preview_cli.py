"""`mirror preview` end to end on a tiny .y4m and .mp4, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_clips import write_clip

from mirror.compiler import cli
from mirror.runtime.store import open_store
from mirror.runtime.synthetic import Motion, SyntheticClip


@pytest.fixture(scope="module")
def tiny_y4m(tmp_path_factory) -> tuple[Path, tuple[int, int, int, int]]:
    """8 frames at 270x480 (half the canvas): Preview upsamples them to 540x960."""
    clip = SyntheticClip(height=480, width=270, motion=Motion(trans_amp=(6.0, 3.0), deform_amp=1.0))
    frames = clip.frames(8)
    path = tmp_path_factory.mktemp("video") / "tiny.y4m"
    write_clip(path, frames)
    return path, clip.roi(0)


def test_end_to_end_subprocess(tiny_y4m, tmp_path: Path) -> None:
    video, roi = tiny_y4m
    out = tmp_path / "ctx"
    r = subprocess.run(
        [sys.executable, "-m", "mirror.compiler.cli", "preview", str(video), "--out", str(out),
         "--roi", ",".join(map(str, roi))],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert "8 frames" in r.stdout and "DNN-free" in r.stdout
    st = open_store(out)
    assert st.frames == 8 and st.frame_size == (960, 540)
    doc = json.loads((out / "preview.json").read_text())
    assert doc["dnn_frames"][0] == 0
    assert 0.0 < doc["dnn_fraction"] <= 1.0
    assert doc["placement"]["scale"] == 2.0
    assert doc["roi"]["canvas"] == [2.0 * v for v in roi]
    assert doc["stage_ms"]["mean_per_frame"]["total"] > 0
    # The ROI was mapped to the canvas: the first keyframe box is the scaled ROI.
    assert np.allclose(st["boxes"][0], [2 * v for v in roi])


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_no_person_without_roi_says_why(tmp_path: Path, capsys) -> None:
    """Without --roi the body model looks for a person; a grey clip has none: one line naming --roi."""
    video = write_clip(tmp_path / "grey.mp4", np.full((3, 96, 64, 3), 128, np.uint8))
    code, _, err = _run(["preview", str(video), "--out", str(tmp_path / "c")], capsys)
    assert code == 1
    assert "no person" in err and "--roi" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("roi,msg", [("1,2,3", "four integers"), ("a,b,c,d", "four integers"),
                                     ("10,10,0,5", "positive"), ("900,10,20,20", "outside"),
                                     ("0,0,100000,100000", "reaches past the"), ("0,0,1e20,1e20", "four integers")])
def test_bad_roi(tiny_y4m, tmp_path: Path, capsys, roi: str, msg: str) -> None:
    video, _ = tiny_y4m
    code, _, err = _run(["preview", str(video), "--out", str(tmp_path / "c"), "--roi", roi], capsys)
    assert code == 1 and msg in err and err.count("\n") == 1


def test_bad_video_and_existing_folder(tmp_path: Path, tiny_y4m, capsys) -> None:
    mp4 = tmp_path / "x.mp4"
    mp4.write_bytes(b"\x00\x00")
    code, _, err = _run(["preview", str(mp4), "--out", str(tmp_path / "c"), "--roi", "1,1,5,5"], capsys)
    assert code == 1 and "cannot read video" in err and "give an .mp4" in err
    broken = tmp_path / "broken.y4m"
    broken.write_bytes(b"YUV4MPEG2 W8 H8 C420jpeg\nFRAME\n" + bytes(10))
    code, _, err = _run(["preview", str(broken), "--out", str(tmp_path / "c"), "--roi", "1,1,5,5"],
                        capsys)
    assert code == 1 and "broken.y4m" in err and err.count("\n") == 1
    video, roi = tiny_y4m
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    code, _, err = _run(["preview", str(video), "--out", str(keep), "--roi", ",".join(map(str, roi))],
                        capsys)
    assert code == 1 and "refusing to overwrite" in err
    assert (keep / "notes.txt").read_text() == "x"


def test_progress_lines_on_stderr(capsys) -> None:
    from mirror.compiler.cmd_preview import Progress

    prog = Progress(quiet=False)
    for k in range(1, 201):
        prog("preview", k, 200)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1] == "preview: 200/200 frames"
    assert len(lines) <= 11
    quiet = Progress(quiet=True)
    quiet("preview", 200, 200)
    assert capsys.readouterr().err == ""
