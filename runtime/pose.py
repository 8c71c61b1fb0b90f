"""MediaPipe's pose models on the LiteRT CPU interpreter: person detector and landmark model.

Two trained models from the `mediapipe` 0.10.18 wheel (Apache-2.0; `mirror fetch` puts
them in the cache, see assets.py) run here with ai-edge-litert's `Interpreter`:
- `pose_detection.tflite` (BlazePose detector): a 224x224 letterboxed frame in [-1, 1]
  -> 2254 SSD anchors, each with a face box and 4 keypoints (0: hips centre, 1: a point
  whose distance to the hips centre is the radius of the circle holding the whole body,
  2: shoulders centre, 3: the same for the upper body) and a score logit. The anchors
  are MediaPipe's: strides 8, 16, 32, 32, 32 on 224x224 with two anchors a layer, all of
  unit size (fixed_anchor_size), so only their centres matter;
- `pose_landmark_full.tflite`: a 256x256 crop in [0, 1], rotated so the body stands
  upright -> 39 landmarks (33 body points + 6 auxiliary, two of which, 33 and 34, give
  the next frame's crop like detector keypoints 0 and 1), x/y/z in crop pixels plus
  visibility and presence logits; a presence score (already a probability); a 256x256
  person segmentation logit map; a heatmap and world landmarks (unused).

A crop is a rotated square (`Roi`): centre, side and angle, the body's "up" along the
crop's -y. The crop and the mask's way back to the frame are affine resamplings done by
Pillow (C), so a frame costs the landmark model plus a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .crop import box_iou

DET_SIZE = 224
LM_SIZE = 256
_DET_STRIDES = (8, 16, 32, 32, 32)
ROI_SCALE = 1.25  # MediaPipe's margin around the body circle (pose_detection_to_roi)
N_LANDMARKS = 33


def _load(path: Path, threads: int) -> Any:
    """A CPU interpreter for `path` (ai-edge-litert, imported here: cheap, but only when needed)."""
    from ai_edge_litert.interpreter import Interpreter

    from mirror.runners.litert import quiet_native_info

    with quiet_native_info():  # XNNPACK's INFO line is printed when tensors are allocated
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    return interp


def _outputs(interp: Any) -> list[np.ndarray]:
    """The outputs in the model's declared order, copied out of the interpreter."""
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def ssd_anchors() -> np.ndarray:
    """[2254, 2] anchor centres (x, y) in [0, 1], in the detector's output order."""
    out = []
    k = 0
    while k < len(_DET_STRIDES):
        stride, same = _DET_STRIDES[k], 0
        while k < len(_DET_STRIDES) and _DET_STRIDES[k] == stride:
            same, k = same + 1, k + 1
        n = math.ceil(DET_SIZE / stride)
        ys, xs = np.mgrid[0:n, 0:n]
        centres = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 1, 2)
        # Two anchors per layer per cell (the layer's scale and the interpolated one).
        out.append(np.repeat(centres, 2 * same, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class Roi:
    """A rotated square crop on the frame: centre (x, y), side, angle (radians, clockwise)."""

    x: float
    y: float
    size: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the crop's +x and +y (down the body) on the frame."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([c, s]), np.array([-s, c])

    def crop_to_frame(self, n: int = LM_SIZE) -> np.ndarray:
        """2x3 matrix taking crop pixel coordinates (0..n, pixel edges) to frame coordinates."""
        ax, ay = self.axes()
        k = self.size / n
        origin = np.array([self.x, self.y]) - 0.5 * self.size * (ax + ay)
        return np.column_stack([ax * k, ay * k, origin])

    def box(self) -> tuple[float, float, float, float]:
        """The axis-aligned bounds (x0, y0, x1, y1) of the rotated square."""
        ax, ay = self.axes()
        half = 0.5 * self.size * (np.abs(ax) + np.abs(ay))
        return self.x - half[0], self.y - half[1], self.x + half[0], self.y + half[1]

    @staticmethod
    def from_points(centre: np.ndarray, top: np.ndarray, scale: float = ROI_SCALE) -> Roi:
        """MediaPipe's alignment: the body circle around `centre` through `top`, upright."""
        d = np.asarray(top, np.float64) - np.asarray(centre, np.float64)
        radius = float(np.hypot(*d))
        # Angle that turns the crop's up (-y) onto centre->top.
        angle = math.atan2(d[0], -d[1])
        return Roi(float(centre[0]), float(centre[1]), 2.0 * radius * scale, angle)


def warp_affine(img: np.ndarray, out_to_in: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sample `img` (HxWxC uint8, or HxW float32) bilinearly at out_to_in @ (u, v, 1), pixel edges.

    Pillow's AFFINE transform maps each output pixel centre through the matrix and samples
    there (outside reads zero), so pixel-edge coordinates pass straight through.
    """
    from PIL import Image

    mode = "F" if img.dtype == np.float32 else None
    src = Image.fromarray(img, mode) if mode else Image.fromarray(img)
    out = src.transform(size, Image.Transform.AFFINE, tuple(out_to_in.reshape(-1)), Image.Resampling.BILINEAR)
    return np.asarray(out)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


@dataclass
class Detection:
    score: float
    box: np.ndarray  # face box (x0, y0, x1, y1), frame pixels
    keypoints: np.ndarray  # [4, 2] frame pixels

    def roi(self) -> Roi:
        return Roi.from_points(self.keypoints[0], self.keypoints[1])


class PoseDetector:
    """BlazePose's person detector on a square region of the frame."""

    def __init__(self, path: Path, threads: int = 2, min_score: float = 0.5) -> None:
        self.interp = _load(path, threads)
        self.anchors = ssd_anchors()
        self.min_score = min_score
        self._in = self.interp.get_input_details()[0]["index"]

    def __call__(self, frame: np.ndarray, region: tuple[float, float, float] | None = None) -> list[Detection]:
        """Detections in the square (x0, y0, side) of `frame` (default: the frame, letterboxed)."""
        h, w = frame.shape[:2]
        if region is None:
            side = float(max(h, w))
            region = ((w - side) / 2, (h - side) / 2, side)
        x0, y0, side = region
        k = side / DET_SIZE
        m = np.array([[k, 0.0, x0], [0.0, k, y0]])
        crop = warp_affine(frame, m, (DET_SIZE, DET_SIZE))
        self.interp.set_tensor(self._in, (crop.astype(np.float32) / 127.5 - 1.0)[None])
        self.interp.invoke()
        raw, logits = _outputs(self.interp)
        return self._decode(raw[0], logits[0, :, 0], m)

    def _decode(self, raw: np.ndarray, logits: np.ndarray, m: np.ndarray) -> list[Detection]:
        keep = np.flatnonzero(logits > math.log(self.min_score / (1 - self.min_score)))
        if not len(keep):
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100, 100)))
        r = raw[keep] / DET_SIZE
        anc = self.anchors[keep]
        cx, cy = r[:, 0] + anc[:, 0], r[:, 1] + anc[:, 1]
        boxes = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], -1)
        kps = r[:, 4:12].reshape(-1, 4, 2) + anc[:, None, :]
        # To frame pixels: detector-input pixels are [0, 1] * 224.
        s, off = m[0, 0] * DET_SIZE, m[:, 2]
        boxes = boxes * s + np.tile(off, 2)
        kps = kps * s + off
        return [Detection(float(scores[i]), boxes[i], kps[i]) for i in _weighted_nms(boxes, scores)]


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3) -> list[int]:
    """Indices of the best box of each overlapping cluster, best first (MediaPipe's NMS picks
    the same winners; its weighted averaging of the cluster is left out)."""
    order = list(np.argsort(-scores))
    kept = []
    while order:
        i = order.pop(0)
        kept.append(int(i))
        if order:
            rest = np.array(order)
            order = [int(j) for j in rest[box_iou(boxes[i], boxes[rest]) < iou]]
    return kept


@dataclass
class Landmarks:
    """One landmark-model run mapped back to the frame."""

    points: np.ndarray  # [39, 2] frame pixels
    visibility: np.ndarray  # [39] probability
    presence: float  # pose presence probability
    mask_logits: np.ndarray  # [256, 256] segmentation logits in the crop
    roi: Roi

    def next_roi(self) -> Roi:
        """The crop for the next frame, from auxiliary landmarks 33 (hips centre) and 34."""
        return Roi.from_points(self.points[33], self.points[34])


class PoseLandmarker:
    """BlazePose's full landmark model on a rotated crop of the frame."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.interp = _load(path, threads)
        self._in = self.interp.get_input_details()[0]["index"]

    def __call__(self, frame: np.ndarray, roi: Roi) -> Landmarks:
        m = roi.crop_to_frame()
        crop = warp_affine(frame, m, (LM_SIZE, LM_SIZE))
        self.interp.set_tensor(self._in, (crop.astype(np.float32) * (1.0 / 255.0))[None])
        self.interp.invoke()
        lm, flag, seg = _outputs(self.interp)[:3]
        lm = lm.reshape(-1, 5)
        uv = lm[:, :2]
        pts = uv @ m[:, :2].T + m[:, 2]
        vis = 1.0 / (1.0 + np.exp(-np.clip(lm[:, 3], -50, 50)))
        return Landmarks(pts, vis, float(flag.reshape(-1)[0]), seg[0, :, :, 0], roi)
