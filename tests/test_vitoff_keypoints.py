"""Keypoint detection: corner response and greedy NMS against OpenCV, and their invariants."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mirror.runtime.imgproc import dilate3x3
from mirror.runtime.keypoints import detect_keypoints, keypoint_mask_from_parsing, min_eigen_response, roi_mask


def _textured(seed: int, h: int = 220, w: int = 260) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32) * 255, (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_response_matches_cornerMinEigenVal(seed: int) -> None:
    g = _textured(seed)
    ref = cv2.cornerMinEigenVal(g, 3, 3)
    ours = min_eigen_response(g.astype(np.float32))
    # Same formula in float32; only the summation order differs: 1e-5 of the peak.
    assert np.abs(ours - ref).max() <= 1e-5 * ref.max()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_matches_goodFeaturesToTrack(seed: int) -> None:
    g = _textured(seed)
    mask = np.zeros(g.shape, bool)
    mask[25:200, 30:240] = True
    ref = cv2.goodFeaturesToTrack(g, 30, 0.01, 20, mask=mask.astype(np.uint8), blockSize=3)
    ref = ref.reshape(-1, 2)
    ours = detect_keypoints(g.astype(np.float32), mask)
    # Integer positions from the same ranking and the same greedy rule: identical lists,
    # except that a float tie could swap two neighbours, so compare as ordered lists
    # allowing at most 2 differing entries.
    assert len(ours) == len(ref) == 30
    same = (np.abs(ours - ref).max(axis=1) == 0).sum()
    assert same >= 28


def test_nms_spacing_mask_and_count() -> None:
    g = _textured(3, 300, 300).astype(np.float32)
    mask = np.zeros(g.shape, bool)
    mask[50:250, 40:200] = True
    pts = detect_keypoints(g, mask, max_points=30, min_distance=20.0)
    assert 0 < len(pts) <= 30
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.eye(len(pts)) * 1e9
    assert d.min() >= 20.0
    xi, yi = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[yi, xi].all()
    # Ranked by response, strongest first.
    resp = min_eigen_response(g)[yi, xi]
    assert np.all(np.diff(resp) <= 1e-12)
    # A larger spacing keeps fewer points, each pair still far enough apart.
    far = detect_keypoints(g, mask, max_points=30, min_distance=60.0)
    assert len(far) < len(pts)
    d = np.sqrt(((far[:, None] - far[None]) ** 2).sum(-1)) + np.eye(len(far)) * 1e9
    assert d.min() >= 60.0


def test_empty_or_flat_mask_gives_no_points() -> None:
    g = _textured(4).astype(np.float32)
    assert detect_keypoints(g, np.zeros(g.shape, bool)).shape == (0, 2)
    flat = np.full((100, 100), 77.0, np.float32)
    assert detect_keypoints(flat, np.ones((100, 100), bool)).shape == (0, 2)


def test_parsing_mask_is_three_3x3_dilations_of_torso_and_arms() -> None:
    rng = np.random.default_rng(5)
    labels = np.zeros((80, 90), np.uint8)
    labels[20:40, 30:50] = rng.integers(0, 7, (20, 20))
    m = keypoint_mask_from_parsing(labels)
    ref = cv2.dilate(np.isin(labels, (2, 3, 4)).astype(np.uint8), np.ones((3, 3), np.uint8),
                     iterations=3, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    assert np.array_equal(m, ref.astype(bool))
    assert np.array_equal(dilate3x3(np.zeros((5, 5), bool), 3), np.zeros((5, 5), bool))


def test_roi_mask_clips_to_the_image() -> None:
    m = roi_mask((50, 60), (-5, 10, 20, 100))
    assert m.sum() == 15 * 40
    assert m[10:50, 0:15].all()
