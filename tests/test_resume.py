"""A rerun of ``mirror compile`` reuses every unchanged artifact (compiler/reuse.py), and an
interrupted compile leaves the previous build intact with no temporary files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.compiler import cli

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
ARGS = ["--model", "user_models:flow_warp", "--no-baseline", "--gpu-parity", "none", "--gpu-check", "static"]


def _compile(out: Path, *extra: str) -> tuple[int, float]:
    t = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        code = cli.main(["compile", *ARGS, "--out", str(out), *extra])
    return code, time.perf_counter() - t


def _digests(out: Path) -> dict[str, str]:
    return {e["path"]: e["sha256"] for e in json.loads((out / "manifest.json").read_text())["artifacts"]}


def test_a_rerun_reuses_unchanged_artifacts_and_rebuilds_the_rest(tmp_path, capfd):
    out = tmp_path / "build"
    code, first = _compile(out, "--targets", "tflite,onnx", "--precisions", "fp32")
    assert code == 0
    before = _digests(out)
    report = json.loads((out / "report.json").read_text())
    capfd.readouterr()
    code, again = _compile(out, "--targets", "tflite,onnx", "--precisions", "fp32")
    err = capfd.readouterr().err
    assert code == 0 and err.count("reused (unchanged") == 2 and "torch.export" not in err
    assert again < first / 3, (first, again)
    assert _digests(out) == before and (out / "flowwarp_fp32.ort").is_file()
    rerun = json.loads((out / "report.json").read_text())
    assert [a["parity"] for a in rerun["artifacts"]] == [a["parity"] for a in report["artifacts"]]
    assert rerun["passes"] == report["passes"] and not (out / ".staging").exists()
    # A file changed since: only that one is rebuilt (and comes back as compiled).
    (out / "flowwarp_fp32.onnx").write_bytes(b"tampered")
    code, _ = _compile(out, "--targets", "tflite,onnx", "--precisions", "fp32")
    err = capfd.readouterr().err
    assert code == 0 and err.count("reused (unchanged") == 1 and "onnx fp32: emit" in err
    assert _digests(out) == before
    # Another seed changes the inputs and the reference: everything is rebuilt.
    code, _ = _compile(out, "--targets", "tflite,onnx", "--precisions", "fp32", "--seed", "1")
    assert code == 0 and "reused" not in capfd.readouterr().err
    code, _ = _compile(out, "--targets", "tflite,onnx", "--precisions", "fp32", "--seed", "1", "--rebuild")
    assert code == 0 and "reused" not in capfd.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_compile_keeps_the_previous_build_and_the_rerun_resumes(tmp_path, sig):
    out = tmp_path / "build"
    assert _compile(out, "--targets", "onnx", "--precisions", "fp32")[0] == 0
    before = _digests(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mirror.compiler.cli", "compile", *ARGS, "--out", str(out),
           "--targets", "onnx,tflite", "--precisions", "fp32"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:  # interrupt while the LiteRT artifact is being built
        lines.append(line)
        if "tflite fp32: emit ..." in line:
            proc.send_signal(sig)
            break
    else:
        pytest.fail("the compile never reached the LiteRT emit:\n" + "".join(lines))
    t = time.perf_counter()
    rest = proc.communicate(timeout=120)[1]
    assert time.perf_counter() - t < 60, "the interrupt did not stop the compile promptly"
    assert proc.returncode == (130 if sig == signal.SIGINT else 143)
    last = rest.strip().splitlines()[-1]
    assert last.startswith("mirror: ") and ("interrupted" in last or "terminated" in last), rest
    assert "Traceback" not in rest
    assert _digests(out) == before and not (out / ".staging").exists()
    assert not list(out.glob("*.tmp*")) and not (out / "flowwarp_fp32.tflite").exists()
    code, _ = _compile(out, "--targets", "onnx,tflite", "--precisions", "fp32")
    assert code == 0 and _digests(out)["flowwarp_fp32.onnx"] == before["flowwarp_fp32.onnx"]
    assert "flowwarp_fp32.tflite" in _digests(out)


def test_two_compiles_are_byte_identical_on_every_deterministic_target(tmp_path):
    """Every target but the ORT format (onnxruntime orders its tables per run; README)."""
    manifests = []
    for name in ("one", "two"):
        code, _ = _compile(tmp_path / name, "--targets", "tflite,onnx,coreml", "--precisions", "fp32,int8")
        assert code == 0
        manifests.append((tmp_path / name / "manifest.json").read_bytes())
    assert manifests[0] == manifests[1]
    digests = _digests(tmp_path / "one")
    assert {Path(p).suffix for p in digests} == {".tflite", ".onnx", ".mlpackage"} and len(digests) == 6
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["summary"]["peak_rss_mb"]["compile"] > 100  # measured, in MB
