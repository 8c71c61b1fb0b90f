"""VITOFF's pieces and the media readers on the inputs real footage throws at them: point
sets that are empty, single, on the border or outside the frame, degenerate TPS fits, and
damaged videos and images. Nothing crashes or hangs; what cannot be done is said."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import MirrorError
from mirror.runtime.keypoints import detect_keypoints
from mirror.runtime.lk import track
from mirror.runtime.tps import TPSDegenerate, fit_tps

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
H, W = 60, 80
coords = st.floats(-200, 300, allow_nan=False)
points = st.lists(st.tuples(coords, coords), max_size=12)


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 255, (H, W)).astype(np.float32)
    return a, np.roll(a, (1, 2), axis=(0, 1))


@FUZZ
@given(pts=points, seed=st.integers(0, 3))
def test_lk_on_any_points(pts, seed):
    prev, nxt = _scene(seed)
    p = np.asarray(pts, np.float32).reshape(-1, 2)
    new, ok = track(prev, nxt, p)
    assert new.shape == p.shape and ok.shape == (len(p),) and ok.dtype == bool
    inside = (p[:, 0] >= 0) & (p[:, 0] <= W - 1) & (p[:, 1] >= 0) & (p[:, 1] <= H - 1)
    assert not ok[~inside].any()  # a point outside the frame never tracks
    assert np.isfinite(new[ok]).all()


@FUZZ
@given(box=st.tuples(st.integers(-20, 90), st.integers(-20, 70), st.integers(0, 90), st.integers(0, 70)),
       flat=st.booleans(), spacing=st.floats(0.5, 60), seed=st.integers(0, 3))
def test_corner_detection_on_any_mask(box, flat, spacing, seed):
    gray = np.full((H, W), 128, np.float32) if flat else _scene(seed)[0]
    mask = np.zeros((H, W), bool)
    x, y, w, h = box
    mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
    pts = detect_keypoints(gray, mask, max_points=30, min_distance=spacing)
    assert pts.ndim == 2 and pts.shape[1] == 2 and len(pts) <= 30
    if len(pts):
        assert mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()  # only inside the mask
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e9
        assert d.min() >= spacing - 1e-3
    if flat:
        assert len(pts) == 0


@FUZZ
@given(src=st.lists(st.tuples(coords, coords), max_size=8), jitter=st.floats(0, 5))
def test_tps_fit_is_refused_or_exact(src, jitter):
    s = np.asarray(src, np.float64).reshape(-1, 2)
    d = s + jitter
    try:
        tps = fit_tps(s, d)
    except TPSDegenerate as exc:
        assert str(exc)
        return
    assert np.allclose(tps(s), d, atol=1e-3 * (1 + np.abs(d).max()))


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".webm", ".y4m", ".npy"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_video_reader_on_random_bytes(tmp_path, suffix, data):
    from mirror.runtime.video import open_video

    path = tmp_path / f"v{suffix}"
    path.write_bytes(data)
    try:
        clip = open_video(path)
        for _ in clip:
            pass
    except MirrorError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 0.99))
def test_image_reader_on_truncated_files(tmp_path, suffix, cut):
    from PIL import Image

    from mirror.runtime.image import load_image

    path = tmp_path / f"g{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    try:
        load_image(path)
    except MirrorError as exc:
        assert "\n" not in str(exc)
