"""Readers of files users bring or keep (.tflite, checkpoints, context stores, build
manifests) on random corruption: each either reads the file or refuses it with a
one-line MirrorError; never another exception, never a hang."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import MirrorError
from mirror.graphs.checkpoints import read_state_dict
from mirror.runners.tflite_file import read_tflite

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# A damage: truncate to a fraction of the file, or overwrite some bytes at fractional positions.
damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), min_size=1, max_size=24)),
    st.tuples(st.just("head"), st.binary(min_size=1, max_size=64)),
)


def _damaged(data: bytes, how: tuple) -> bytes:
    kind, arg = how
    if kind == "truncate":
        return data[: int(len(data) * arg)]
    b = bytearray(data)
    if kind == "head":
        b[: len(arg)] = arg
        return bytes(b)
    for where, value in arg:
        b[int(len(b) * where)] = value
    return bytes(b)


@pytest.fixture(scope="module")
def tflite_bytes(tmp_path_factory) -> bytes:
    from mirror.targets.tflite import convert_to_bytes

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    return convert_to_bytes(torch.export.export(model, (x,)), (x,), ["x"], ["y"], "m")


def _read_damaged(read, data: bytes, path: Path, how: tuple):
    """``read(path)`` of a damaged copy: its result, or None when it refused with one line."""
    path.write_bytes(_damaged(data, how))
    try:
        return read(path)
    except MirrorError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)
        return None


@FUZZ
@given(how=damage)
def test_tflite_reader(tflite_bytes, tmp_path, how):
    _read_damaged(read_tflite, tflite_bytes, tmp_path / "m.tflite", how)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "w.pth"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4)}, path)
    return path.read_bytes()


@FUZZ
@given(how=damage)
def test_checkpoint_reader(checkpoint_bytes, tmp_path, how):
    state = _read_damaged(read_state_dict, checkpoint_bytes, tmp_path / "w.pth", how)
    assert state is None or all(isinstance(v, torch.Tensor) for v in state.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from mirror.runtime.preview import run_preview
    from mirror.runtime.store import write_store
    from mirror.runtime.synthetic import Motion, cached_clip

    clip, frames = cached_clip(Motion(), 100)
    return write_store(tmp_path_factory.mktemp("store") / "ctx", run_preview(frames[:8], roi=clip.roi(0)))


@FUZZ
@given(field=st.sampled_from(["format", "version", "frames", "max_points", "frame_size", "files", "source"]),
       value=json_values, payload=st.sampled_from(["context.npz", "parsing.npz", "preview.json"]), how=damage)
def test_context_store_reader(store, tmp_path, field, value, payload, how):
    from mirror.runtime.store import open_store

    copy = tmp_path / "ctx"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest[field] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for target, mutate in ((copy / "manifest.json", False), (copy / payload, True)):
        if mutate:
            target.write_bytes(_damaged(target.read_bytes(), how))
        try:
            open_store(copy)
        except MirrorError as exc:
            assert "\n" not in str(exc)


@FUZZ
@given(manifest=json_values, report=json_values)
def test_build_manifest_reader(tmp_path, manifest, report):
    from mirror.compiler.validate import build_subjects

    build = tmp_path / "build"
    build.mkdir(exist_ok=True)
    (build / "manifest.json").write_text(json.dumps({"artifacts": manifest}))
    (build / "report.json").write_text(json.dumps(report if not isinstance(report, dict) else {"config": report}))
    try:
        build_subjects(build)
    except MirrorError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("data", [b"PK\x03\x04", b"PK\x03\x04" + bytes(40)], ids=["zip-magic", "zip-header"])
def test_an_npy_that_looks_like_a_zip_is_one_clear_error(tmp_path, data):
    """np.load takes a file starting like a zip for an .npz archive (hypothesis found it)."""
    from mirror.runtime.video import open_video

    path = tmp_path / "v.npy"
    path.write_bytes(data)
    with pytest.raises(MirrorError, match="not a numpy array file"):
        open_video(path)
