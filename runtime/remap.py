"""Image remapping (nearest, bilinear, bicubic) and compositing, in numpy.

VITOFF carries the last DNN try-on output to the current frame by sampling it through
the TPS grid: bicubic for colour, nearest for the paste mask. The semantics are
cv2.remap's: map_x/map_y give, for every output pixel, the source position with pixel
centres at integer coordinates; taps outside the source read `border_value`
(BORDER_CONSTANT); bicubic uses OpenCV's kernel (a = -0.75); nearest rounds half to
even. Nearest and bilinear use coordinates at full float precision; bicubic resolves
them to 1/4096 px (cv2 quantizes them to 1/32 px for every filter).

Sources are padded with the border value (see Source), so no tap needs a bounds check.
Nearest and bilinear gather one flat tap at a time for all output pixels. Bicubic reads
each output pixel's whole 4x4 neighbourhood with a single gather of one 64-byte row per
channel, from a neighbourhood table the Source builds once; its 16 weights come from two
row gathers of per-axis weight tables indexed by the coordinate's fraction in steps of
1/4096 px (cv2 uses 1/32 px), and one multiply plus one matrix-vector product with a
vector of ones sums the taps. That is a fraction of the numpy calls and memory traffic
of one gather per tap, and it runs in chunks of pixels that stay in cache, split over
the worker threads (runtime.perf.set_workers).
"""

from __future__ import annotations

import numpy as np

from .perf import run_split

_A = -0.75  # OpenCV's bicubic coefficient


_FRAC_BITS = 12  # bicubic coordinate resolution: 1/4096 px
# Bicubic taps per pass ([C, chunk, 16] float32, 1 MiB): they stay in cache, and the tap sum
# (a BLAS matrix-vector product) stays under OpenBLAS's threading threshold (~460k
# elements), where handing a small product to a thread pool costs milliseconds on a busy
# machine.
_CHUNK_TAPS = 1 << 18


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Weights of taps -1, 0, 1, 2 for fractional offset t (Keys kernel, a = -0.75)."""
    a = _A
    t1 = t + 1.0
    w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    u = 1.0 - t
    w2 = ((a + 2.0) * u - (a + 3.0)) * u * u + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return [w0, w1, w2, w3]


_PAD = 4  # zero (border) margin: every tap of a clipped coordinate lands inside it


class Source:
    """An image prepared for repeated remapping: planar float32, padded with the border value.

    Coordinates are clipped to [-2, size + 1] before sampling: there every tap of the
    bicubic kernel reads the border margin only (weight 1 on a border pixel at integer
    -2 or size+1), which is exactly BORDER_CONSTANT, and no tap needs a bounds check.
    Preparing costs one copy of the image; replay prepares each keyframe output once.
    """

    def __init__(self, src: np.ndarray, border_value: float = 0.0) -> None:
        if src.ndim not in (2, 3):
            raise ValueError(f"expected an [H,W] or [H,W,C] image, got shape {src.shape}")
        self.h, self.w = src.shape[:2]
        self.channels = None if src.ndim == 2 else src.shape[2]
        c = 1 if self.channels is None else self.channels
        p = _PAD
        planes = np.full((c, self.h + 2 * p, self.w + 2 * p), border_value, np.float32)
        planes[:, p : p + self.h, p : p + self.w] = (
            src[None] if self.channels is None else np.moveaxis(src, 2, 0))
        self.stride = self.w + 2 * p
        self.planes = planes.reshape(c, -1)
        self.border_value = float(border_value)
        self._nbhd: np.ndarray | None = None

    @property
    def neighbourhoods(self) -> np.ndarray:
        """[C, P, 16] float32: row i holds the 4x4 block whose top-left is flat padded pixel i.

        Built on first use (bicubic only) and kept: 16x the padded image, one pass of 16
        strided copies, so each bicubic output pixel reads one 64-byte row per channel.
        """
        if self._nbhd is None:
            c, n = self.planes.shape
            s = self.stride
            flat = np.full((c, n + 3 * s + 3), self.border_value, np.float32)
            flat[:, :n] = self.planes
            nb = np.empty((c, n, 16), np.float32)
            for j in range(4):
                for k in range(4):
                    nb[:, :, 4 * j + k] = flat[:, j * s + k : j * s + k + n]
            self._nbhd = nb
        return self._nbhd


def _cubic_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per-fraction weights tiled for a row-major 4x4 block: x [F,16] (w_k at 4j+k), y (w_j)."""
    t = np.arange(1 << _FRAC_BITS, dtype=np.float64) / (1 << _FRAC_BITS)
    w = np.stack(_cubic_weights(t), axis=1)  # [F,4], float64
    return (np.tile(w, (1, 4)).astype(np.float32), np.repeat(w, 4, axis=1).astype(np.float32))


_TABLES: tuple[np.ndarray, np.ndarray] | None = None
_ONES16 = np.ones(16, np.float32)


def _bicubic(src: Source, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Bicubic samples at clipped flat coordinates [M]: float32 [C, M] (see the module notes)."""
    global _TABLES
    if _TABLES is None:
        _TABLES = _cubic_tables()
    tab_x, tab_y = _TABLES
    nb = src.neighbourhoods
    c, m = nb.shape[0], mx.size
    bits, s = _FRAC_BITS, src.stride
    scale = np.float32(1 << bits)
    corner = (_PAD - 1) * s + (_PAD - 1)  # flat offset of tap (-1, -1) of padded pixel (0, 0)
    chunk = max(1024, _CHUNK_TAPS // (16 * c))
    out = np.empty((c, m), np.float32)

    def block(start: int, stop: int) -> None:
        fx = np.empty(min(stop - start, chunk), np.float32)
        fy = np.empty_like(fx)
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            k = b - a
            qx = np.rint(np.multiply(mx[a:b], scale, out=fx[:k]), out=fx[:k]).astype(np.intp)
            qy = np.rint(np.multiply(my[a:b], scale, out=fy[:k]), out=fy[:k]).astype(np.intp)
            base = qy >> bits
            base *= s
            base += qx >> bits
            base += corner
            qx &= (1 << bits) - 1
            qy &= (1 << bits) - 1
            w = np.take(tab_x, qx, axis=0)
            w *= np.take(tab_y, qy, axis=0)  # [k,16] weights of the 4x4 taps
            taps = np.take(nb, base, axis=1, mode="clip")  # [C,k,16]; in range by construction
            taps *= w
            out[:, a:b] = (taps.reshape(c * k, 16) @ _ONES16).reshape(c, k)

    run_split(block, m, chunk)
    return out


def _clipped(coord: np.ndarray, size: int) -> np.ndarray:
    """Flat float32 coordinates clipped to [-2, size + 1], NaN sent to -2 (see Source).

    fmax/fmin return the non-NaN operand, so one pass per bound both clips and replaces
    NaN; -2 and size + 1 read the border only, as BORDER_CONSTANT does for any
    coordinate outside the image.
    """
    out = np.fmax(np.asarray(coord, np.float32).reshape(-1), np.float32(-2.0))
    return np.fmin(out, np.float32(size + 1.0), out=out)


def _nearest_index(mx: np.ndarray, my: np.ndarray, src: Source) -> np.ndarray:
    """Flat padded-plane indices of the nearest pixels of clipped coordinates (half to even, as cv2).

    Computed in float32, which holds every index of a padded plane under 2^24 pixels
    exactly: one conversion to integers instead of two plus integer arithmetic.
    """
    stride = src.stride
    if src.planes.shape[1] >= 1 << 24:
        return (np.rint(my).astype(np.intp) + _PAD) * stride + np.rint(mx).astype(np.intp) + _PAD
    iy = np.rint(my)
    iy += _PAD
    iy *= stride
    ix = np.rint(mx)
    ix += _PAD
    iy += ix
    return iy.astype(np.intp)


def remap_planar(src: Source, map_x: np.ndarray, map_y: np.ndarray,
                 interpolation: str = "bilinear") -> np.ndarray:
    """Sample a prepared Source at flat coordinates [M]: float32 [C, M] (channel planes).

    The taps reuse three [C, M] buffers (gather, row sum, total) instead of allocating
    one array per tap.
    """
    p, stride = _PAD, src.stride
    mx = _clipped(map_x, src.w)
    my = _clipped(map_y, src.h)
    if interpolation == "nearest":
        return np.take(src.planes, _nearest_index(mx, my, src), axis=1, mode="clip")
    if interpolation == "bicubic":
        return _bicubic(src, mx, my)
    if interpolation == "bilinear":
        offsets: tuple[int, ...] = (0, 1)
    else:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    fx = np.floor(mx)
    fy = np.floor(my)
    tx = mx - fx
    ty = my - fy
    base = (fy.astype(np.intp) + p) * stride + (fx.astype(np.intp) + p)
    wxs, wys = [1.0 - tx, tx], [1.0 - ty, ty]
    c, m = src.planes.shape[0], mx.size
    term = np.empty((c, m), np.float32)
    row_sum = np.empty((c, m), np.float32)
    out = np.zeros((c, m), np.float32)
    idx = np.empty(m, np.intp)
    for j, oy in enumerate(offsets):  # 2 taps per axis, each a gather of all pixels
        row = base + oy * stride
        for k, ox in enumerate(offsets):
            np.add(row, ox, out=idx)
            np.take(src.planes, idx, axis=1, out=term, mode="clip")  # in range by construction
            if k == 0:
                np.multiply(term, wxs[k], out=row_sum)
            else:
                term *= wxs[k]
                row_sum += term
        row_sum *= wys[j]
        out += row_sum
    return out


def remap(src: np.ndarray | Source, map_x: np.ndarray, map_y: np.ndarray,
          interpolation: str = "bilinear", border_value: float = 0.0) -> np.ndarray:
    """Sample `src` at (map_x, map_y). Returns float32 of shape map.shape (+ (C,) for colour).

    interpolation: "nearest", "bilinear" or "bicubic". `src` may be a prepared Source
    (its own border value then applies).
    """
    if map_x.shape != map_y.shape:
        raise ValueError(f"map_x {map_x.shape} and map_y {map_y.shape} differ in shape")
    s = src if isinstance(src, Source) else Source(src, border_value)
    out = remap_planar(s, map_x, map_y, interpolation)
    shape = map_x.shape
    if s.channels is None:
        return out.reshape(shape)
    return np.moveaxis(out, 0, -1).reshape(*shape, s.channels)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and saturate to uint8, as OpenCV does when writing 8-bit output."""
    out = np.rint(img)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)  # one temporary, not two


def composite(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Paste `patch` [h,w,3] into a copy of `frame` at (x0, y0) wherever `mask` [h,w] is set.

    The patch may hang over the frame's edges; those parts are dropped.
    """
    out = frame.copy()
    fh, fw = frame.shape[:2]
    ph, pw = mask.shape
    ys, ye = max(0, y0), min(fh, y0 + ph)
    xs, xe = max(0, x0), min(fw, x0 + pw)
    if ys >= ye or xs >= xe:
        return out
    m = np.ascontiguousarray(mask[ys - y0 : ye - y0, xs - x0 : xe - x0], dtype=bool)
    src = patch[ys - y0 : ye - y0, xs - x0 : xe - x0]
    if src.dtype != out.dtype:
        src = to_uint8(src) if out.dtype == np.uint8 else src.astype(out.dtype)
    region = out[ys:ye, xs:xe]
    if out.dtype == np.uint8:
        # Branch-free select on bytes: region ^= (region ^ src) & (0xFF where masked).
        # Several times faster than a masked copy or boolean indexing in numpy.
        sel = m.view(np.uint8) * np.uint8(255)
        diff = np.bitwise_xor(region, src)
        diff &= sel[..., None] if region.ndim == 3 else sel
        region ^= diff
    else:
        np.copyto(region, src, where=m[..., None] if region.ndim == 3 else m)
    return out
