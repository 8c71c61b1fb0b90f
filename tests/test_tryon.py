"""`mirror tryon` end to end: Preview's store + a build's warp/gen artifacts -> a video.

The build here holds small stand-in ONNX graphs with DIVTON's exact input and output
names and shapes (warp: identity flow, so warped_cloth = cloth * edge; gen: try-on =
warped cloth where the edge is set, person elsewhere), so the test checks the Runtime
wiring (manifest lookup and digests, tensor layout, parsing one-hot, paste-back) in
seconds. The real graphs' artifacts are proven by the compile tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mirror.compiler import cli
from mirror.files import sha256_of
from mirror.runtime.divton import DivtonRunner, find_artifact
from mirror.runtime.garment import Garment, edge_mask, load_image, otsu_threshold
from mirror.runtime.synthetic import Motion, SyntheticClip
from mirror.runtime.video import load_frames, write_y4m

H, W = 256, 192
GARMENT_RGB = (20, 200, 40)


def _vi(name: str, c: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c, H, W])


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def stand_in_warp(path: Path) -> None:
    nodes = [
        helper.make_node("Mul", ["cloth", "edge"], ["warped_cloth"]),
        helper.make_node("Identity", ["edge"], ["warped_edge"]),
        helper.make_node("Concat", ["person", "warped_cloth", "warped_edge"], ["gen_input"], axis=1),
        helper.make_node("Sub", ["edge", "edge"], ["zero"]),
        helper.make_node("Concat", ["zero", "zero"], ["flow"], axis=1),
    ]
    _save(
        helper.make_graph(
            nodes,
            "warp",
            [_vi("person", 3), _vi("parsing", 7), _vi("cloth", 3), _vi("edge", 1)],
            [_vi("flow", 2), _vi("warped_cloth", 3), _vi("warped_edge", 1), _vi("gen_input", 7)],
        ),
        path,
    )


def stand_in_gen(path: Path) -> None:
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Split", ["gen_input"], ["rendered", "cloth", "mask"], axis=1, num_outputs=3),
        helper.make_node("Mul", ["cloth", "mask"], ["a"]),
        helper.make_node("Sub", ["one", "mask"], ["inv"]),
        helper.make_node("Mul", ["rendered", "inv"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["tryon"]),
        helper.make_node("Identity", ["mask"], ["gen_mask"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gen",
        [_vi("gen_input", 7)],
        [_vi("rendered", 3), _vi("mask", 1), _vi("tryon", 3), _vi("gen_mask", 1)],
        [one],
    )
    _save(graph, path)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    stand_in_warp(root / "warp_fp32.onnx")
    stand_in_gen(root / "gen_fp32.onnx")
    entries = [
        {
            "graph": g,
            "target": "onnx",
            "precision": "fp32",
            "path": f"{g}_fp32.onnx",
            "sha256": sha256_of(root / f"{g}_fp32.onnx"),
        }
        for g in ("warp", "gen")
    ]
    (root / "manifest.json").write_text(json.dumps({"version": 1, "artifacts": entries}))
    return root


@pytest.fixture(scope="module")
def garment_ppm(tmp_path_factory) -> Path:
    img = np.full((120, 90, 3), 255, np.uint8)
    img[20:100, 15:75] = GARMENT_RGB
    path = tmp_path_factory.mktemp("garment") / "shirt.ppm"
    path.write_bytes(b"P6\n# a comment\n90 120\n255\n" + img.tobytes())
    return path


@pytest.fixture(scope="module")
def previewed(tmp_path_factory) -> tuple[Path, Path, tuple[int, int, int, int]]:
    clip = SyntheticClip(height=480, width=270, motion=Motion(trans_amp=(5.0, 3.0), deform_amp=0.8))
    root = tmp_path_factory.mktemp("clip")
    video = root / "clip.y4m"
    write_y4m(video, clip.frames(12))
    roi = clip.roi(0)
    assert (
        cli.main(["preview", str(video), "--out", str(root / "ctx"), "--roi", ",".join(map(str, roi)), "--quiet"]) == 0
    )
    return video, root / "ctx", roi


def test_garment_loading_and_edge_mask(garment_ppm):
    rgb = load_image(garment_ppm)
    assert rgb.shape == (120, 90, 3) and tuple(rgb[50, 40]) == GARMENT_RGB
    g = Garment.load(garment_ppm)
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
    with pytest.raises(MirrorError, match="ffmpeg -i a.jpg a.ppm"):
        load_image(tmp_path / "a.jpg")
    (tmp_path / "b.ppm").write_bytes(b"P6\n10 10\n255\n" + bytes(10))
    with pytest.raises(MirrorError, match="shorter than 10x10"):
        load_image(tmp_path / "b.ppm")


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


def test_edge_mask_files(garment_ppm, tmp_path):
    from mirror import MirrorError

    with pytest.raises(MirrorError, match="edge mask .* does not exist"):
        Garment.load(garment_ppm, tmp_path / "missing.npy")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MirrorError, match="not a numpy array file"):
        Garment.load(garment_ppm, tmp_path / "pickled.npy")
    mask = np.zeros((120, 90), np.uint8)
    mask[20:100, 15:75] = 1
    np.save(tmp_path / "mask.npy", mask)
    g = Garment.load(garment_ppm, tmp_path / "mask.npy")
    assert g.edge.shape == (1, 1, H, W) and 0 < g.edge.mean() < 1


def test_tryon_end_to_end(build, garment_ppm, previewed, tmp_path):
    video, ctx, roi = previewed
    out = tmp_path / "out.npy"
    # A child process: the Runtime must not pull in torch or the compiler.
    probe = (
        "import sys; from mirror.compiler import cli; code = cli.main(sys.argv[1:]); "
        "heavy = ('torch', 'litert_torch', 'coremltools', 'mirror.graphs', 'mirror.passes'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print('HEAVY', bad); sys.exit(code)"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "tryon",
            str(video),
            "--context",
            str(ctx),
            "--garment",
            str(garment_ppm),
            "--build",
            str(build),
            "--target",
            "onnx",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    assert "DIVTON on" in r.stdout
    result = np.load(out)
    frames, _ = load_frames(video)
    assert result.shape == (12, 960, 540, 3) and result.dtype == np.uint8
    # Inside the first keyframe's body box the garment colour was pasted; outside, the frame is untouched.
    x, y, w, h = (2 * v for v in roi)  # the clip is 270x480: Preview scaled it by 2
    inside = result[0, y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].reshape(-1, 3).astype(int)
    close = np.abs(inside - np.array(GARMENT_RGB)).max(axis=1) < 40
    assert close.mean() > 0.5
    # Outside the body box the output is the frame Preview saw, untouched.
    assert np.array_equal(result[0, :, : max(x - 20, 1)], frames[0, :, : max(x - 20, 1)])
    # Frames after the keyframe carry the garment by tracking (no DIVTON run needed).
    later = result[5, y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].reshape(-1, 3).astype(int)
    assert (np.abs(later - np.array(GARMENT_RGB)).max(axis=1) < 40).mean() > 0.4


def test_roi_mode_maps_the_region_to_torso(build, garment_ppm):
    from mirror.runtime.replay import KeyframeRequest

    runner = DivtonRunner(build, Garment.load(garment_ppm), target="onnx", roi_mode=True)
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
