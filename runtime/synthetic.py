"""Synthetic try-on clips with known, non-rigid motion (tests, benchmarks, self-checks).

A body-like ellipse carrying a band-limited texture (a sum of random 2-D cosines,
sampled once on a lattice and read bilinearly) sits on a plain background.
Texture coordinates u move to frame coordinates by

    W_t(u) = u + a_t + A_t * (sin(2 pi (u_y - c_y) / L + p), sin(2 pi (u_x - c_x) / L + q))

a translation a_t plus a smooth sinusoidal deformation. While A_t * 2 pi / L < 1 the
map is invertible and W_t^-1 is found by fixed-point iteration (a contraction), so the
ground-truth flow between any two frames, and the keyframe coordinates of every pixel,
are known to ~1e-6 px. A scene cut switches to a different texture, background and position.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .remap import Source, remap


@dataclass(frozen=True)
class Motion:
    """Parameters of the clip's motion; amplitudes in pixels, periods in frames."""

    trans_amp: tuple[float, float] = (30.0, 15.0)
    trans_period: float = 90.0
    drift: tuple[float, float] = (0.0, 0.0)  # px per frame
    deform_amp: float = 4.0
    deform_ramp: float = 0.0  # added to deform_amp per frame
    deform_period: float = 60.0  # frames for one cycle of the deformation phase
    wavelength: float = 480.0
    cut_at: int | None = None  # first frame of a different scene


class SyntheticClip:
    """Render frames of the synthetic clip and answer ground-truth questions about them."""

    def __init__(self, height: int = 960, width: int = 540, motion: Motion | None = None,
                 seed: int = 0, body: tuple[float, float, float, float] | None = None) -> None:
        self.h, self.w = height, width
        self.m = motion or Motion()
        # Ellipse centre and radii in texture coordinates.
        self.body = body or (width * 0.5, height * 0.45, width * 0.28, height * 0.25)
        self._tex = [self._texture(seed), self._texture(seed + 1000)]
        self._images: dict[int, Source] = {}
        self._pad = 160

    @staticmethod
    def _texture(seed: int) -> dict:
        rng = np.random.default_rng(seed)
        k = 14
        freq = rng.uniform(0.015, 0.11, k)
        ang = rng.uniform(0, np.pi, k)
        return {
            "f": np.stack([freq * np.cos(ang), freq * np.sin(ang)], axis=1) * 2 * np.pi,
            "phase": rng.uniform(0, 2 * np.pi, k),
            "amp": rng.uniform(0.5, 1.0, k) / np.sqrt(k) * 70.0,
            "colour": rng.uniform(0.6, 1.0, (k, 3)),
            "base": rng.uniform(100, 160, 3),
            "shift": rng.uniform(40, 80, 2) * rng.choice([-1.0, 1.0], 2),
            "background": rng.uniform(20, 235, 3),
        }

    def _texture_image(self, scene: int) -> Source:
        """The scene's texture sampled on the integer lattice of texture coordinates.

        Frames sample it bilinearly: the bilinear interpolant is itself a fixed continuous
        function of u, so the ground-truth motion stays exact.
        """
        if scene not in self._images:
            tex = self._tex[scene]
            pad = self._pad
            ys, xs = np.mgrid[-pad : self.h + pad, -pad : self.w + pad].astype(np.float32)
            rgb = np.broadcast_to(tex["base"].astype(np.float32), (*xs.shape, 3)).copy()
            for k in range(len(tex["phase"])):  # one pass per cosine of the texture
                wave = np.cos(xs * tex["f"][k, 0] + ys * tex["f"][k, 1] + tex["phase"][k])
                rgb += (wave * tex["amp"][k])[..., None] * tex["colour"][k].astype(np.float32)
            self._images[scene] = Source(rgb)
        return self._images[scene]

    def _scene(self, t: int) -> int:
        return int(self.m.cut_at is not None and t >= self.m.cut_at)

    def params(self, t: int) -> tuple[np.ndarray, float, float]:
        """(translation a_t [2], amplitude A_t, phase) of frame t."""
        m = self.m
        ph = 2 * np.pi * t / m.trans_period
        a = np.array([m.trans_amp[0] * np.sin(ph), m.trans_amp[1] * np.sin(2 * ph)])
        a += np.array(m.drift) * t
        if self._scene(t):
            a += self._tex[1]["shift"]
        amp = m.deform_amp + m.deform_ramp * t
        return a, amp, 2 * np.pi * t / m.deform_period

    def forward(self, t: int, u: np.ndarray) -> np.ndarray:
        """W_t: texture coordinates [...,2] (x, y) -> frame t coordinates."""
        a, amp, ph = self.params(t)
        f = np.float32 if u.dtype == np.float32 else np.float64  # keep float32 input in float32
        a = a.astype(f)
        amp, ph, k = f(amp), f(ph), f(2 * np.pi / self.m.wavelength)
        cx, cy = f(self.body[0]), f(self.body[1])
        dx = amp * np.sin(k * (u[..., 1] - cy) + ph)
        dy = amp * np.sin(k * (u[..., 0] - cx) + f(0.7) * ph)
        return np.stack([u[..., 0] + a[0] + dx, u[..., 1] + a[1] + dy], axis=-1)

    def inverse(self, t: int, x: np.ndarray, tol: float = 1e-6, max_iter: int = 60) -> np.ndarray:
        """W_t^-1 by fixed-point iteration u <- x - a_t - d_t(u), to `tol` px."""
        x = np.asarray(x)
        x = x if x.dtype == np.float32 else x.astype(np.float64)
        u = x.copy()
        for _ in range(max_iter):  # iterations of a contraction, not a loop over pixels
            r = self.forward(t, u) - x
            u = u - r
            if np.abs(r).max() < tol:
                break
        return u

    def flow(self, t0: int, t1: int, pts: np.ndarray) -> np.ndarray:
        """Where the surface points at `pts` in frame t0 are in frame t1."""
        return self.forward(t1, self.inverse(t0, pts))

    def body_mask(self, t: int, erode: float = 0.0) -> np.ndarray:
        """[H,W] bool: pixels of frame t on the body (ellipse shrunk by `erode` px)."""
        ys, xs = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)
        u = self.inverse(t, np.stack([xs, ys], axis=-1))
        return self._ellipse(u, erode) > 0.5

    def _ellipse(self, u: np.ndarray, erode: float = 0.0) -> np.ndarray:
        f = np.float32 if u.dtype == np.float32 else np.float64
        cx, cy, rx, ry = (f(v) for v in self.body)
        d = np.sqrt(((u[..., 0] - cx) / rx) ** 2 + ((u[..., 1] - cy) / ry) ** 2)
        # Signed distance to the rim, approximately in pixels.
        sd = (f(1.0) - d) * min(rx, ry) - f(erode)
        return f(1.0) / (f(1.0) + np.exp(np.minimum(-sd / f(0.8), f(60.0))))

    def roi(self, t: int = 0, pad: float = 0.0) -> tuple[int, int, int, int]:
        """Bounding box (x, y, w, h) of the body in frame t (before deformation), padded."""
        a, amp, _ = self.params(t)
        cx, cy, rx, ry = self.body
        x0 = cx - rx + a[0] - amp - pad
        y0 = cy - ry + a[1] - amp - pad
        return (int(x0), int(y0), int(2 * (rx + amp + pad)), int(2 * (ry + amp + pad)))

    def frame(self, t: int) -> np.ndarray:
        """Render frame t as RGB uint8 [H,W,3] (only the body's bounding box is shaded)."""
        bg = np.array([200.0, 205.0, 210.0]) if not self._scene(t) else self._tex[1]["background"]
        out = np.empty((self.h, self.w, 3), np.uint8)
        out[:] = bg.astype(np.uint8)
        x0, y0, bw, bh = self.roi(t, pad=4.0)
        xa, xb = max(0, x0), min(self.w, x0 + bw + 1)
        ya, yb = max(0, y0), min(self.h, y0 + bh + 1)
        if xa >= xb or ya >= yb:
            return out
        # Rendering works in float32 (positions to 1e-4 px); ground-truth queries use float64.
        ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        u = self.inverse(t, np.stack([xs, ys], axis=-1), tol=1e-4)
        img = self._texture_image(self._scene(t))
        pad = self._pad
        rgb = remap(img, u[..., 0] + pad, u[..., 1] + pad, "bilinear")
        m = self._ellipse(u)[..., None]
        bg32 = bg.astype(np.float32)
        out[ya:yb, xa:xb] = np.clip(np.rint(m * (rgb - bg32) + bg32), 0, 255).astype(np.uint8)
        return out

    def frames(self, n: int) -> np.ndarray:
        return np.stack([self.frame(t) for t in range(n)])


@functools.lru_cache(maxsize=8)
def cached_clip(motion: Motion, n: int, seed: int = 0) -> tuple[SyntheticClip, np.ndarray]:
    """(clip, its first n frames) memoized, so several checks can share one rendering."""
    clip = SyntheticClip(motion=motion, seed=seed)
    frames = clip.frames(n)
    frames.setflags(write=False)
    return clip, frames
