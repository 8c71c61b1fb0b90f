"""Bad input on every command and the Python API: each case gets a one-line error that
names the problem (and what to do), a non-zero exit, no traceback, and leaves no new file
that looks like a valid output.

Each case: the command line (``{tmp}`` is the case's folder), what to put in the folder
first, and words the error must contain. Cases that need a build or a clip share small
ones made once per module.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mirror import MirrorError
from mirror.compiler import cli

TESTS = Path(__file__).resolve().parent
VALID_LOOKING = {".tflite", ".onnx", ".ort", ".mlpackage", ".mp4", ".npz", ".json", ".html", ".csv"}
Setup = Callable[[Path], None]


class _RunsCode:
    """A pickle whose loading would run a command (it must never run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _write(name: str, data: bytes | str) -> Setup:
    def setup(tmp: Path) -> None:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _malicious(tmp: Path) -> None:
    with open(tmp / "evil.pth", "wb") as fh:
        pickle.dump({"w": _RunsCode(tmp / "PWNED")}, fh, protocol=2)


def _truncated_checkpoint(tmp: Path) -> None:
    torch.save({"w": torch.zeros(64, 64)}, tmp / "t.pth")
    data = (tmp / "t.pth").read_bytes()
    (tmp / "t.pth").write_bytes(data[: len(data) // 2])


def _wrong_graph_checkpoint(tmp: Path) -> None:
    torch.save({"model.model.0.weight": torch.zeros(3, 3)}, tmp / "other.pth")


def _folder(name: str) -> Setup:
    return lambda tmp: (tmp / name).mkdir()


def _build(mutate: Callable[[dict], None]) -> Setup:
    """A build folder whose manifest ``mutate`` damages."""

    def setup(tmp: Path) -> None:
        b = tmp / "b"
        b.mkdir()
        manifest = {"version": 1, "artifacts": [{"graph": "gen", "target": "onnx", "precision": "fp32",
                                                 "path": "gen_fp32.onnx", "sha256": "0" * 64}]}  # fmt: skip
        mutate(manifest)
        (b / "manifest.json").write_text(json.dumps(manifest))
        (b / "report.json").write_text(json.dumps({"config": {"seed": 0}, "artifacts": []}))

    return setup


def _clip(name: str, frames: np.ndarray, fps: int = 10) -> Setup:
    def setup(tmp: Path) -> None:
        import sys

        sys.path.insert(0, str(TESTS))
        try:
            from media_clips import write_clip
        finally:
            sys.path.remove(str(TESTS))
        write_clip(tmp / name, frames, fps=fps)

    return setup


def _image(name: str, array: np.ndarray, mode: str | None = None) -> Setup:
    def setup(tmp: Path) -> None:
        from PIL import Image

        Image.fromarray(array, mode).save(tmp / name)

    return setup


def _both(*setups: Setup) -> Setup:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)

    return setup


RGB = np.random.default_rng(0).integers(0, 255, (6, 64, 48, 3), dtype=np.uint8)
FLAT = np.full((64, 48, 3), 200, np.uint8)
GARMENT = np.full((64, 48, 3), 255, np.uint8)
GARMENT[12:52, 10:38] = (40, 60, 150)  # a plain shirt on white
TOML = "out = '{tmp}/o'\n"

# (id, argv, setup, words the error must contain)
CASES: list[tuple[str, list[str], Setup | None, str]] = [
    # compile: names and lists
    ("graphs-empty", ["compile", "--graphs", "", "--out", "{tmp}/o"], None, "no graph"),
    ("graphs-unknown", ["compile", "--graphs", "gen,foo", "--out", "{tmp}/o"], None, "foo"),
    ("target-unknown", ["compile", "--targets", "tflit", "--out", "{tmp}/o"], None, "tflit"),
    ("precision-unknown", ["compile", "--precisions", "int9", "--out", "{tmp}/o"], None, "int9"),
    ("checkpoint-graph-typo", ["compile", "--checkpoint", "foo={tmp}/x.pth", "--out", "{tmp}/o"], None, "foo"),
    ("checkpoint-for-absent-graph", ["compile", "--graphs", "gen", "--checkpoint", "warp={tmp}/x.pth",
                                     "--out", "{tmp}/o"], _write("x.pth", b"\x80\x02}q\x00."), "warp"),  # fmt: skip
    # compile: checkpoints
    ("checkpoint-missing", ["compile", "--graphs", "gen", "--checkpoint", "gen={tmp}/none.pth", "--out", "{tmp}/o"],
     None, "does not exist"),
    ("checkpoint-empty", ["compile", "--graphs", "gen", "--checkpoint", "gen={tmp}/e.pth", "--out", "{tmp}/o"],
     _write("e.pth", b""), "not a PyTorch checkpoint"),
    ("checkpoint-text", ["compile", "--graphs", "gen", "--checkpoint", "gen={tmp}/e.pth", "--out", "{tmp}/o"],
     _write("e.pth", "hello"), "not a PyTorch checkpoint"),
    ("checkpoint-truncated", ["compile", "--graphs", "gen", "--checkpoint", "gen={tmp}/t.pth", "--out", "{tmp}/o"],
     _truncated_checkpoint, "checkpoint"),
    ("checkpoint-malicious", ["compile", "--graphs", "gen", "--checkpoint", "gen={tmp}/evil.pth",
                              "--out", "{tmp}/o"], _malicious, "will not run their code"),  # fmt: skip
    ("checkpoint-wrong-graph", ["compile", "--graphs", "gen", "--checkpoint", "gen={tmp}/other.pth",
                                "--out", "{tmp}/o"], _wrong_graph_checkpoint, "missing"),  # fmt: skip
    # compile: config files
    ("config-missing", ["compile", "--config", "{tmp}/none.toml"], None, "none.toml"),
    ("config-folder", ["compile", "--config", "{tmp}/cfg"], _folder("cfg"), "cfg"),
    ("config-binary", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", b"\x00\xff\xfe" * 10), "c.toml"),
    ("config-malformed", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", "graphs = [warp"), "c.toml"),
    ("config-graph-typo", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", "[graph.wrap]\nsize = [64, 64]\n"),
     "wrap"),
    ("config-bool-as-string", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", 'baseline = "false"\n'),
     "baseline"),
    ("config-seed-string", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", 'seed = "zero"\n'), "seed"),
    ("config-graphs-string", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", 'graphs = "gen"\n'),
     "graphs"),
    ("config-unknown-key", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", "speed = 3\n"), "speed"),
    ("config-size-odd", ["compile", "--config", "{tmp}/c.toml"], _write("c.toml", "[graph.gen]\nsize = [17, 9]\n"),
     "size"),
    # compile: output paths and models
    ("out-is-a-file", ["compile", "--graphs", "gen", "--out", "{tmp}/f"], _write("f", "x"), "f"),
    ("out-under-a-file", ["compile", "--graphs", "gen", "--out", "{tmp}/f/sub"], _write("f", "x"), "f"),
    ("model-module-missing", ["compile", "--model", "no_such_module:factory", "--out", "{tmp}/o"], None,
     "no_such_module"),
    ("model-factory-missing", ["compile", "--model", "user_models:no_such_factory", "--out", "{tmp}/o"], None,
     "no_such_factory"),
    ("model-not-a-factory-result", ["compile", "--model", "user_models:FlowWarp", "--out", "{tmp}/o"], None,
     "FlowWarp"),
    ("model-does-not-export", ["compile", "--model", "user_models:unexportable", "--targets", "onnx",
                               "--precisions", "fp32", "--no-baseline", "--out", "{tmp}/o"],
     None, "export"),  # fmt: skip
    # validate
    ("validate-no-build", ["validate", "{tmp}/nothing"], None, "no manifest.json"),
    ("validate-artifacts-not-a-list", ["validate", "{tmp}/b"], _build(lambda m: m.update(artifacts={"a": 1})),
     "damaged"),
    ("validate-path-escapes", ["validate", "{tmp}/b"], _build(lambda m: m["artifacts"][0].update(path="../../x")),
     "outside"),
    ("validate-artifact-missing", ["validate", "--artifact", "{tmp}/none.tflite", "--graph", "gen"], None,
     "no such artifact"),
    ("validate-artifact-suffix", ["validate", "--artifact", "{tmp}/m.xyz", "--graph", "gen"], _write("m.xyz", "x"),
     "m.xyz"),
    ("validate-artifact-no-reference", ["validate", "--artifact", "{tmp}/m.onnx"], _write("m.onnx", "x"),
     "--graph"),
    ("validate-artifact-precision", ["validate", "--artifact", "{tmp}/m.onnx", "--graph", "gen", "--precision",
                                     "int9"], _write("m.onnx", "x"), "int9"),  # fmt: skip
    ("validate-artifact-graph-unknown", ["validate", "--artifact", "{tmp}/m.onnx", "--graph", "foo"],
     _write("m.onnx", "x"), "foo"),
    # profile
    ("profile-no-build", ["profile", "{tmp}/nothing"], None, "nothing"),
    ("profile-artifact-missing", ["profile", "--artifact", "{tmp}/none.tflite", "--graph", "gen"], None, "none.tflite"),
    ("profile-model-does-not-export", ["profile", "--model", "user_models:unexportable"], None, "torch.export"),
    # preview
    ("preview-missing", ["preview", "{tmp}/none.mp4", "--out", "{tmp}/ctx", "--roi", "0,0,10,10"], None, "none.mp4"),
    ("preview-text-as-mp4", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/ctx", "--roi", "0,0,10,10"],
     _write("v.mp4", "this is not a video\n" * 50), "v.mp4"),
    ("preview-empty-mp4", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/ctx", "--roi", "0,0,10,10"],
     _write("v.mp4", b""), "v.mp4"),
    ("preview-truncated-mp4", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/ctx", "--roi", "0,0,10,10"],
     lambda tmp: (_clip("w.mp4", RGB)(tmp), (tmp / "v.mp4").write_bytes((tmp / "w.mp4").read_bytes()[:300])),
     "v.mp4"),
    ("preview-all-black", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/ctx", "--roi", "4,4,30,40"],
     _clip("v.mp4", np.zeros_like(RGB)), "no corner to track"),
    ("preview-roi-huge", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/ctx", "--roi", "0,0,1e20,1e20"],
     _clip("v.mp4", RGB), "roi"),
    ("preview-roi-format", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/ctx", "--roi", "1,2,3"], _clip("v.mp4", RGB),
     "roi"),
    ("preview-npy-shape", ["preview", "{tmp}/v.npy", "--out", "{tmp}/ctx", "--roi", "0,0,10,10"],
     lambda tmp: np.save(tmp / "v.npy", np.zeros((4, 8), np.uint8)), "v.npy"),
    ("preview-out-is-a-file", ["preview", "{tmp}/v.mp4", "--out", "{tmp}/f", "--roi", "0,0,20,20"],
     _both(_clip("v.mp4", RGB), _write("f", "x")), "f"),
    # tryon
    ("tryon-garment-missing", ["tryon", "{tmp}/v.mp4", "{tmp}/none.jpg", "--roi", "0,0,20,20", "--out", "{tmp}/o.mp4"],
     _clip("v.mp4", RGB), "none.jpg"),
    ("tryon-garment-one-colour", ["tryon", "{tmp}/v.mp4", "{tmp}/g.png", "--roi", "0,0,20,20",
                                  "--out", "{tmp}/o.mp4", "--build", "{tmp}/nobuild"],
     _both(_clip("v.mp4", RGB), _image("g.png", FLAT)), "--edge"),  # fmt: skip
    ("tryon-garment-not-an-image", ["tryon", "{tmp}/v.mp4", "{tmp}/g.jpg", "--roi", "0,0,20,20",
                                    "--out", "{tmp}/o.mp4"], _both(_clip("v.mp4", RGB), _write("g.jpg", "text")),
     "g.jpg"),  # fmt: skip
    ("tryon-precision-unknown", ["tryon", "{tmp}/v.mp4", "{tmp}/g.png", "--precision", "int9", "--out", "{tmp}/o.mp4"],
     _both(_clip("v.mp4", RGB), _image("g.png", GARMENT)), "int9"),
    ("tryon-out-under-a-file", ["tryon", "{tmp}/v.mp4", "{tmp}/g.png", "--roi", "0,0,20,20",
                                "--out", "{tmp}/f/o.mp4"], _both(_clip("v.mp4", RGB), _image("g.png", GARMENT),
                                                                 _write("f", "x")), "f"),  # fmt: skip
    # doctor
    ("doctor-unknown-option", ["doctor", "--frobnicate"], None, "frobnicate"),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.suffix == ".mlpackage"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_on_the_command_line(case, tmp_path, monkeypatch, capsys):
    name, argv, setup, words = case
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup(tmp_path)
    before = _files(tmp_path)
    try:
        code = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # argparse: usage, then one error line
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), f"{name}: exit 0\n{err}"
    last = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err and "internal error" not in err, err
    assert "error" in last and words.lower() in last.lower(), f"{name}: {last!r}"
    new = {p for p in _files(tmp_path) - before if p.suffix in VALID_LOOKING}
    assert not new, f"{name} left {sorted(map(str, new))}"
    assert not (tmp_path / "PWNED").exists()  # the pickle's command never ran
    _log_case(name, code, last.replace(str(tmp_path), "{tmp}"))


def _log_case(name: str, code: int, line: str) -> None:
    """With MIRROR_BAD_INPUT_LOG=file, append what the case got (to list every case's answer)."""
    import os

    if log := os.environ.get("MIRROR_BAD_INPUT_LOG"):
        with open(log, "a") as fh:
            fh.write(json.dumps({"case": name, "exit": code, "error": line}) + "\n")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda tmp: __import__("mirror.graphs", fromlist=["load"]).load("nope"), "nope"),
        (lambda tmp: __import__("mirror.graphs", fromlist=["load"]).load("gen", checkpoint=tmp / "none.pth"),
         "does not exist"),
        (lambda tmp: __import__("mirror.graphs", fromlist=["load"]).example_inputs("gen", size=(17, 9)), "32"),
        (lambda tmp: __import__("mirror.graphs", fromlist=["load"]).load("gen", no_such_option=1), "no_such_option"),
    ],
    ids=["unknown-graph", "missing-checkpoint", "odd-size", "unknown-option"],
)
def test_bad_input_on_the_python_api(call, words, tmp_path):
    with pytest.raises(MirrorError) as info:
        call(tmp_path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_suite_covers_every_command():
    commands = {argv[0] for _, argv, _, _ in CASES}
    assert commands == {"compile", "validate", "profile", "preview", "tryon", "doctor"}
    assert len(CASES) + 4 >= 45


def _disk_full_on(monkeypatch, suffixes: tuple[str, ...]) -> None:
    """Writes of files with these suffixes fail as on a full disk."""
    import errno

    real_write = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.suffix in suffixes:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_library_failing_on_a_full_disk_is_blamed_on_the_disk(tmp_path, monkeypatch):
    """Converters stage whole models in the temp folder and fail there with their own
    messages; the toolkit's line says the disk is full (an ENOSPC anywhere in the chain, or
    too little room where the library writes) and what to do, and leaves no package."""
    import errno
    import shutil
    import tempfile

    from mirror.files import LOW_SPACE, space_problem
    from mirror.targets.coreml import CoreMLEmitter

    try:
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/x.bin")
    except OSError as inner:
        try:
            raise RuntimeError("Error in saving the MIL program") from inner
        except RuntimeError as outer:
            assert space_problem(outer) == ("no space left on the device writing /tmp/x.bin; "
                                            "free some space or choose another output folder")
    assert space_problem(RuntimeError("unsupported op")) == ""  # a real converter error stays its own

    class Package:
        def save(self, path: str) -> None:
            Path(path).mkdir()
            (Path(path) / "weight.bin").write_bytes(b"half")
            raise RuntimeError("protobuf serialization failed")

    real = shutil.disk_usage
    temp = tempfile.gettempdir()

    def disk_usage(path):
        usage = real(path)
        return usage._replace(free=LOW_SPACE // 8) if str(path) == temp else usage

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    final = tmp_path / "warp.mlpackage"
    with pytest.raises(MirrorError) as err:
        CoreMLEmitter()._save(Package(), final, {})
    assert str(err.value) == (f"Core ML target: saving warp.mlpackage failed: only 8 MiB free in {temp}; "
                              "free some space (set TMPDIR to a folder on a disk with room)")
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


@pytest.mark.slow
def test_a_full_disk_during_compile_is_one_line_and_leaves_the_build_as_it_was(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "build"
    args = ["compile", "--model", "user_models:flow_warp", "--targets", "onnx,tflite", "--precisions", "fp32",
            "--no-baseline", "--gpu-parity", "none", "--out", str(out)]  # fmt: skip
    _disk_full_on(monkeypatch, (".tflite",))
    assert cli.main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mirror: error: no space left on the device writing") and ".tflite" in last
    assert not any(p.suffix in VALID_LOOKING for p in _files(out)), sorted(_files(out))
