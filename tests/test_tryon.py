"""`mirror tryon` end to end: Preview's store + a build's warp/gen artifacts -> a video.

The build here holds small stand-in ONNX graphs with DIVTON's exact input and output
names and shapes (warp: identity flow, so warped_cloth = cloth * edge; gen: try-on =
warped cloth where the edge is set, person elsewhere), so the test checks the Runtime
wiring (manifest lookup and digests, tensor layout, parsing one-hot, paste-back) in
seconds. The real graphs' artifacts are proven by the compile tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_clips import write_clip
from PIL import Image
from standin_build import make_standin_build

from mirror.compiler import cli
from mirror.runtime.divton import DivtonRunner, find_artifact
from mirror.runtime.garment import Garment, edge_mask, otsu_threshold
from mirror.runtime.image import load_image
from mirror.runtime.synthetic import Motion, SyntheticClip
from mirror.runtime.video import open_video

H, W = 256, 192
GARMENT_RGB = (20, 200, 40)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return make_standin_build(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def garment_png(tmp_path_factory) -> Path:
    img = np.full((120, 90, 3), 255, np.uint8)
    img[20:100, 15:75] = GARMENT_RGB
    path = tmp_path_factory.mktemp("garment") / "shirt.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def previewed(tmp_path_factory) -> tuple[Path, Path, tuple[int, int, int, int]]:
    clip = SyntheticClip(height=480, width=270, motion=Motion(trans_amp=(5.0, 3.0), deform_amp=0.8))
    root = tmp_path_factory.mktemp("clip")
    video = root / "clip.mp4"
    write_clip(video, clip.frames(12))
    roi = clip.roi(0)
    assert (
        cli.main(["preview", str(video), "--out", str(root / "ctx"), "--roi", ",".join(map(str, roi)), "--quiet"]) == 0
    )
    return video, root / "ctx", roi


def test_garment_loading_and_edge_mask(garment_png):
    rgb, alpha = load_image(garment_png)
    assert alpha is None and rgb.shape == (120, 90, 3) and tuple(rgb[50, 40]) == GARMENT_RGB
    g = Garment.load(garment_png)
    assert g.cloth.shape == (1, 3, H, W) and g.edge.shape == (1, 1, H, W)
    assert -1.0 <= g.cloth.min() and g.cloth.max() <= 1.0
    # 80x60 of 120x90 is 44% of the letterboxed content; the edge must cover about that.
    assert abs(g.edge.mean() - (80 * 60) / (120 * 90)) < 0.03
    assert g.edge[0, 0, H // 2, W // 2] == 1 and g.edge[0, 0, 2, 2] == 0


def test_otsu_and_hole_filling():
    gray = np.concatenate([np.full(500, 40), np.full(500, 220)]).astype(np.uint8)
    assert 40 <= otsu_threshold(gray) < 220
    img = np.full((64, 64, 3), 250, np.uint8)
    img[10:54, 10:54] = 30
    img[25:35, 25:35] = 250  # a light print inside the garment is not background
    mask = edge_mask(img)
    assert mask[30, 30] and mask[12, 12] and not mask[2, 2]


def test_bad_garment_files(tmp_path):
    from mirror import MirrorError

    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(MirrorError, match="cannot read image .*a.jpg.* give a .jpg, .png") as exc:
        load_image(tmp_path / "a.jpg")
    assert "\n" not in str(exc.value)
    Image.new("RGB", (5, 40)).save(tmp_path / "thin.png")
    with pytest.raises(MirrorError, match="at least 8x8"):
        load_image(tmp_path / "thin.png")


def _shirt(h: int = 80, w: int = 60) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    img[h // 4 : h - 5, w // 4 : 3 * w // 4] = GARMENT_RGB
    return img


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_image_formats(tmp_path, ext):
    Image.fromarray(_shirt()).save(tmp_path / f"s{ext}")
    rgb, alpha = load_image(tmp_path / f"s{ext}")
    assert rgb.shape == (80, 60, 3) and alpha is None
    assert np.abs(rgb[40, 30].astype(int) - GARMENT_RGB).max() < 12 and rgb[2, 2].min() > 240


def test_exif_orientation_grey_palette_and_alpha(tmp_path):
    img = Image.fromarray(_shirt())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the viewer turns it 90 degrees clockwise
    img.rotate(90, expand=True).save(tmp_path / "side.jpg", exif=exif.tobytes(), quality=95)
    rgb, _ = load_image(tmp_path / "side.jpg")
    assert rgb.shape == (80, 60, 3) and np.abs(rgb.astype(int) - _shirt()).mean() < 4
    img.convert("L").save(tmp_path / "grey.png")
    img.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "pal.png")
    for name in ("grey.png", "pal.png"):
        rgb, alpha = load_image(tmp_path / name)
        assert rgb.shape == (80, 60, 3) and alpha is None
    cut = np.zeros((80, 60, 4), np.uint8)
    cut[..., :3] = 255  # white garment on a white (transparent) background: only alpha tells them apart
    cut[20:70, 15:45, 3] = 255
    Image.fromarray(cut).save(tmp_path / "cut.png")
    g = Garment.load(tmp_path / "cut.png")
    assert g.edge[0, 0, H // 2, W // 2] == 1 and g.edge[0, 0, 10, W // 2] == 0


@pytest.mark.parametrize("fill,why", [("white", "is empty"), ("black", "is empty"),
                                      ("noise", "is fragmented")])
def test_a_photo_without_a_separable_garment_is_refused(tmp_path, fill, why):
    from mirror import MirrorError

    rng = np.random.default_rng(0)
    img = {"white": np.full((80, 60, 3), 255, np.uint8), "black": np.zeros((80, 60, 3), np.uint8),
           "noise": rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)}[fill]
    Image.fromarray(img).save(tmp_path / "p.png")
    with pytest.raises(MirrorError, match=why) as exc:
        Garment.load(tmp_path / "p.png")
    assert "--edge" in str(exc.value) and "\n" not in str(exc.value)


def test_manifest_digest_is_checked(build, tmp_path):
    copy = tmp_path / "build"
    copy.mkdir()
    for f in build.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert find_artifact(copy, "gen", "onnx", "fp32") == copy / "gen_fp32.onnx"
    data = bytearray((copy / "gen_fp32.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "gen_fp32.onnx").write_bytes(bytes(data))
    from mirror import MirrorError

    with pytest.raises(MirrorError, match="does not match its manifest digest"):
        find_artifact(copy, "gen", "onnx", "fp32")
    with pytest.raises(MirrorError, match="no warp artifact for tflite/fp16"):
        find_artifact(copy, "warp", "tflite", "fp16")


def test_a_damaged_manifest_is_refused(build, tmp_path):
    import json

    from mirror import MirrorError

    copy = tmp_path / "build"
    copy.mkdir()
    manifest = json.loads((build / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "artifacts": "gen_fp32.onnx"}))
    with pytest.raises(MirrorError, match="artifacts is not a list"):
        find_artifact(copy, "gen", "onnx", "fp32")
    entry = next(a for a in manifest["artifacts"] if (a["graph"], a["target"]) == ("gen", "onnx"))
    (copy / "manifest.json").write_text(json.dumps({"artifacts": [{**entry, "path": "../../etc/passwd"}]}))
    with pytest.raises(MirrorError, match="outside the build"):
        find_artifact(copy, "gen", "onnx", entry["precision"])


def test_edge_mask_files(garment_png, tmp_path):
    from mirror import MirrorError

    with pytest.raises(MirrorError, match="edge mask .* does not exist"):
        Garment.load(garment_png, tmp_path / "missing.npy")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MirrorError, match="not a numpy array file"):
        Garment.load(garment_png, tmp_path / "pickled.npy")
    mask = np.zeros((120, 90), np.uint8)
    mask[20:100, 15:75] = 1
    np.save(tmp_path / "mask.npy", mask)
    g = Garment.load(garment_png, tmp_path / "mask.npy")
    assert g.edge.shape == (1, 1, H, W) and 0 < g.edge.mean() < 1


def _decode(path: Path) -> np.ndarray:
    return np.stack([f.rgb() for f in open_video(path)])


def test_tryon_end_to_end(build, garment_png, previewed, tmp_path):
    video, ctx, roi = previewed
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    # A child process: the Runtime must not pull in torch or the compiler.
    probe = (
        "import sys; from mirror.compiler import cli; code = cli.main(sys.argv[1:]); "
        "heavy = ('torch', 'litert_torch', 'coremltools', 'mirror.graphs', 'mirror.passes'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print('HEAVY', bad); sys.exit(code)"
    )
    argv = ["tryon", str(video), str(garment_png), "--context", str(ctx), "--build", str(build),
            "--target", "onnx", "--out", str(out), "--stats", str(stats)]
    r = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout and "DIVTON on" in r.stdout and "reusing the context store" in r.stderr
    doc = json.loads(stats.read_text())
    assert doc["frames"] == 12 and 1 <= doc["dnn_frames"] <= 12 and not doc["preview_ran"]
    assert doc["dnn_fraction"] == pytest.approx(doc["dnn_frames"] / 12, abs=1e-6)
    assert set(doc["ms"]) == {"decode", "preview", "dnn", "vitoff", "encode", "total"}
    assert doc["ms"]["dnn"] > 0 and doc["ms"]["encode"] > 0 and doc["speedup_vs_every_frame"] > 0
    result, frames = _decode(out), _decode(video)
    # The output has the source's size (270x480), not the 540x960 processing canvas.
    assert result.shape == (12, 480, 270, 3)
    x, y, w, h = roi
    inside = result[0, y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].reshape(-1, 3).astype(int)
    assert (np.abs(inside - np.array(GARMENT_RGB)).max(axis=1) < 40).mean() > 0.5
    # Outside the body box the output is the source frame (up to the encoder's loss).
    left = max(x - 10, 1)
    assert np.abs(result[0, :, :left].astype(int) - frames[0, :, :left]).mean() < 3
    # Frames after the keyframe carry the garment by tracking (no DIVTON run needed).
    later = result[5, y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].reshape(-1, 3).astype(int)
    assert (np.abs(later - np.array(GARMENT_RGB)).max(axis=1) < 40).mean() > 0.4


def _tryon(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["tryon", *argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def landscape(tmp_path_factory) -> tuple[Path, tuple[int, int, int, int]]:
    """A landscape 192x108 clip at 10 fps with a sound track."""
    clip = SyntheticClip(height=108, width=192, motion=Motion(trans_amp=(2.0, 1.0), deform_amp=0.3))
    path = write_clip(tmp_path_factory.mktemp("land") / "land.mov", clip.frames(10), fps=10, audio=True)
    return path, clip.roi(0)


def test_landscape_10fps_with_sound_keeps_its_form_and_reuses_preview(build, garment_png, landscape, tmp_path,
                                                                       capsys):
    import av

    video, roi = landscape
    ctx, out = tmp_path / "ctx", tmp_path / "out.mp4"
    common = ["--context", str(ctx), "--build", str(build), "--target", "onnx", "--quiet"]
    code, stdout, err = _tryon([str(video), str(garment_png), *common, "--out", str(out),
                                "--roi", ",".join(map(str, roi))], capsys)
    assert code == 0, err
    with av.open(str(out)) as box:
        vs = box.streams.video[0]
        assert (vs.width, vs.height, vs.average_rate) == (192, 108, 10)
        times = [round(float(f.time), 3) for f in box.decode(vs)]
        assert box.streams.audio
    assert times == [k / 10 for k in range(10)]  # 1 s, as the source: not played 3x fast
    # Tracked on a landscape canvas (960 wide, 540 high: 5x the source), and pasted back onto the
    # source where the region is.
    from mirror.runtime.store import open_store

    assert open_store(ctx).frame_size == (540, 960)
    x, y, w, h = roi
    inside = _decode(out)[0, y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].reshape(-1, 3).astype(int)
    assert (np.abs(inside - np.array(GARMENT_RGB)).max(axis=1) < 40).mean() > 0.5
    # A second garment on the same video: Preview does not run again.
    stamp = (ctx / "manifest.json").stat().st_mtime_ns
    Image.fromarray(_shirt()).save(tmp_path / "other.png")
    code, _, err = _tryon([str(video), str(tmp_path / "other.png"), *common[:-1], "--out", str(tmp_path / "b.mp4")],
                          capsys)
    assert code == 0, err
    assert "reusing the context store" in err and (ctx / "manifest.json").stat().st_mtime_ns == stamp


def test_a_store_from_another_video_is_refused(build, garment_png, previewed, landscape, tmp_path, capsys):
    _, ctx, _ = previewed
    video, _ = landscape
    code, _, err = _tryon([str(video), str(garment_png), "--context", str(ctx), "--build", str(build),
                           "--target", "onnx", "--out", str(tmp_path / "o.mp4")], capsys)
    assert code == 1 and "made from another video" in err and err.count("\n") == 1
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("flag,value,msg", [
    ("--out", "missing/o.mp4", "does not exist; create it first"),
    ("--out", "/proc/o.mp4", "is not writable"),
    ("--out", "o.avi", "must end in .mp4"),
    ("--stats", "/proc/s.json", "is not writable"),
    ("--stats", "s.txt", "must end in .json"),
])
def test_output_paths_are_checked_before_any_work(build, garment_png, landscape, tmp_path, capsys, flag, value,
                                                  msg):
    video, roi = landscape
    # /proc refuses new files even to root, unlike a folder with its write permission removed.
    args = {"--out": str(tmp_path / "o.mp4"), "--stats": str(tmp_path / "s.json")} | {flag: str(tmp_path / value)}
    code, _, err = _tryon([str(video), str(garment_png), "--context", str(tmp_path / "ctx"), "--build", str(build),
                           "--target", "onnx", "--roi", ",".join(map(str, roi)), *sum(args.items(), ())], capsys)
    assert code == 1 and msg in err and err.count("\n") == 1
    assert not (tmp_path / "ctx").exists() and not (tmp_path / "o.mp4").exists()  # no work was done


def test_roi_mode_maps_the_region_to_torso(build, garment_png):
    from mirror.runtime.replay import KeyframeRequest

    runner = DivtonRunner(build, Garment.load(garment_png), target="onnx", roi_mode=True)
    parsing = np.zeros((H, W), np.uint8)
    parsing[50:200, 40:150] = 1
    req = KeyframeRequest(0, np.full((H, W, 3), 255, np.uint8), parsing, np.zeros(4), np.zeros(4, np.int32))
    inputs = runner.inputs(req)
    assert inputs["parsing"].shape == (1, 7, H, W)
    assert inputs["parsing"][0, 2, 100, 100] == 1 and inputs["parsing"][0, 1].sum() == 0
    assert np.all(inputs["parsing"].sum(axis=1) == 1)
    rgb, mask = runner(req)
    assert rgb.shape == (H, W, 3) and mask.dtype == bool
    assert tuple(rgb[H // 2, W // 2]) == pytest.approx(GARMENT_RGB, abs=2)


SITECUSTOMIZE = '''
import socket, _socket

def _refuse(*args, **kwargs):
    raise PermissionError("socket creation refused: the try-on must stay offline")

socket.socket.__init__ = _refuse  # every Python socket, whoever imported the class
socket.create_connection = _refuse
_socket.socket = type("socket", (), {"__init__": _refuse})
'''

OFFLINE_RUN = '''
import socket, sys
from mirror.compiler import cli
try:
    socket.socket()
except PermissionError:
    print("SOCKETS REFUSED")
preview, tryon = sys.argv[1].split(" "), sys.argv[2].split(" ")
sys.exit(cli.main(preview) or cli.main(tryon))
'''


def _snapshot(*roots: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for root in roots for p in root.rglob("*") if p.is_file()}


def test_offline_and_writes_only_where_told(build, garment_png, tmp_path):
    """Preview then tryon in a child whose every socket creation is refused: it works, and the
    only files made or changed are the context store, the video and the stats."""
    site, box = tmp_path / "site", tmp_path / "box"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    for sub in ("home", "tmp", "in"):
        (box / sub).mkdir(parents=True)
    clip = SyntheticClip(height=192, width=108, motion=Motion(trans_amp=(2.0, 1.0), deform_amp=0.3))
    video = write_clip(box / "in" / "clip.mp4", clip.frames(6), audio=True)
    garment = box / "in" / "shirt.png"
    garment.write_bytes(garment_png.read_bytes())
    before = _snapshot(box, build)
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(box / "home"), "TMPDIR": str(box / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    preview = f"preview {video} --out {box / 'ctx'} --roi {','.join(map(str, clip.roi(0)))} --quiet"
    tryon = (f"tryon {video} {garment} --context {box / 'ctx'} --build {build} --target onnx "
             f"--out {box / 'out.mp4'} --stats {box / 'stats.json'} --quiet")
    r = subprocess.run([sys.executable, "-c", OFFLINE_RUN, preview, tryon], capture_output=True, text=True,
                       timeout=300, cwd=box, env=env)
    assert r.returncode == 0, r.stderr
    assert "SOCKETS REFUSED" in r.stdout and "DIVTON on" in r.stdout
    after = _snapshot(box, build)
    changed = {p for p, t in after.items() if before.get(p) != t}
    allowed = {box / "out.mp4", box / "stats.json"}
    assert changed and all(p in allowed or p.parent == box / "ctx" for p in changed), sorted(map(str, changed))
    assert {p.name for p in (box / "ctx").iterdir()} == {"manifest.json", "context.npz", "parsing.npz",
                                                          "preview.json"}
    assert not any((box / "home").iterdir()) and not any((box / "tmp").iterdir())


def test_built_in_sample_is_a_clip_and_a_usable_garment(tmp_path):
    from mirror.runtime.sample import ensure_sample, sample_roi

    video, garment = ensure_sample(tmp_path / "s", frames=20)
    clip = open_video(video)
    assert (clip.info.width, clip.info.height, clip.info.fps, clip.info.frames) == (540, 960, 30, 20)
    # Made again elsewhere, byte for byte the same: figures measured on the sample are reproducible.
    assert ensure_sample(tmp_path / "t", frames=20)[0].read_bytes() == video.read_bytes()
    x, y, w, h = sample_roi()
    assert 0 <= x and 0 <= y and x + w <= 540 and y + h <= 960
    g = Garment.load(garment)  # a mask the checks accept
    assert 0.2 < g.edge.mean() < 0.7
    stamp = video.stat().st_mtime_ns
    assert ensure_sample(tmp_path / "s", frames=20) == (video, garment) and video.stat().st_mtime_ns == stamp


def test_a_missing_build_is_compiled_first(build, tmp_path, monkeypatch):
    import argparse
    import shutil

    from mirror.compiler import cmd_tryon

    calls = []

    def fake_main(argv):
        calls.append(argv)
        shutil.copytree(build, argv[argv.index("--out") + 1], dirs_exist_ok=True)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    args = argparse.Namespace(build=str(tmp_path / "b"), target="onnx", precision="fp16", quiet=True)
    cmd_tryon._ensure_build(args)
    cmd_tryon._ensure_build(args)  # now there is a build: no second compile
    assert calls == [["compile", "--graphs", "warp,gen", "--targets", "onnx", "--precisions", "fp16",
                      "--no-baseline", "--out", str(tmp_path / "b")]]
    monkeypatch.setattr(cli, "main", lambda argv: 1)
    with pytest.raises(Exception, match="compiling .* failed"):
        cmd_tryon._ensure_build(argparse.Namespace(build=str(tmp_path / "c"), target="onnx", precision="fp32",
                                                   quiet=True))


def test_a_build_without_the_artifacts_fails_before_preview(build, garment_png, landscape, tmp_path, capsys):
    video, roi = landscape
    code, _, err = _tryon([str(video), str(garment_png), "--build", str(build), "--target", "tflite",
                           "--roi", ",".join(map(str, roi)), "--context", str(tmp_path / "ctx"),
                           "--out", str(tmp_path / "o.mp4")], capsys)
    assert code == 1 and "no warp artifact for tflite/fp32" in err and err.count("\n") == 1
    assert not (tmp_path / "ctx").exists()
