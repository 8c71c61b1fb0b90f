"""``grid_sample`` written with gather-and-weight ops that mobile GPU delegates accept.

Plain torch functions, no graph machinery: ``passes/gpu_grid_sample.py`` traces them into
an exported program in place of ``aten.grid_sampler_2d``, and the tests call them
directly (in float32 for parity with ``F.grid_sample``, in float16 to model a phone GPU).

Every function takes ``x`` [N, C, H, W] and ``grid`` [N, Ho, Wo, 2] (normalized (x, y)
in [-1, 1]) and returns [N, C, Ho, Wo], like ``F.grid_sample``. Supported: bilinear and
nearest, zeros and border padding, both ``align_corners``. All arithmetic runs in the
dtype of ``x``: index math is done in floating point and cast to int32 only as the
1-D index of ``index_select`` (LiteRT's GPU delegate accepts non-constant int32 only as
the input of CAST, GATHER and ONE_HOT).

Two lowerings:

``flat``
    The source, zero-padded by one pixel, is flattened to rows of C channels, and each of
    the 4 taps reads row ``(n*Hp + y)*Wp + x``. Fewest ops and least memory, but the row
    index reaches N*Hp*Wp (49 k at 256x192), so in float16, where integers are exact only
    up to 2048, it reads wrong pixels. Exact in float32 up to 2**24 rows.

``fp16_exact``
    Every integer the sampler computes stays <= 2048, so the same graph is exact in
    float16. The padded source is cut into blocks of B columns (B a power of two, so
    ``floor(x / B)`` is exact in any binary float), and one table row holds the
    footprint rows (2 for bilinear, 1 for nearest) times the B(+1) columns of one block.
    The gather index is ``(n*Hp + y)*ceil(Wp/B) + floor(x/B)``; B is the smallest power of
    two that keeps it <= 2048 (``choose_block``). Inside the gathered block the taps are
    picked by comparing the in-block column with a constant ``arange`` (EQUAL/SELECT) and
    the bilinear weights are folded into that one-hot row, so one multiply-and-sum over
    the R*(B+K-1) gathered pixels applies selection and interpolation together.
    It reads (B+1)/2 times as many values as ``flat`` (B = 32 at 256x192).
"""

from __future__ import annotations

import math

import torch

FP16_EXACT_LIMIT = 2048  # largest n such that every integer 0..n is exact in float16

MODES = {"bilinear": 0, "nearest": 1}
PADDINGS = {"zeros": 0, "border": 1}
LOWERINGS = ("fp16_exact", "flat")


class UnsupportedSampling(ValueError):
    """The call uses a mode, padding or shape this decomposition does not cover."""


# ----------------------------------------------------------------------------- geometry


def unnormalize(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Normalized [-1, 1] coordinate to pixel units, as PyTorch's CPU kernel computes it."""
    if align_corners:
        return (coord + 1) * ((size - 1) / 2)
    return (coord + 1) * (size / 2) - 0.5


def _round_half_even(v: torch.Tensor) -> torch.Tensor:
    """``torch.round`` from FLOOR/GREATER/EQUAL/SELECT (the GPU delegate has no ROUND).

    Exact in any binary float: ``v - floor(v)`` is exact, whereas ``floor(v + 0.5)``
    goes wrong in float16 once v >= 1024 (v + 0.5 itself rounds)."""
    r = torch.floor(v)
    d = v - r
    odd = r - 2 * torch.floor(r * 0.5)  # 1.0 for odd r, 0.0 for even
    up = torch.where(d == 0.5, odd, (d > 0.5).to(v.dtype))
    return r + up


def _clamp(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp that also maps NaN to ``lo``: a NaN must not become a gather index. (The
    lower bound is a GREATER/SELECT, not MAXIMUM, whose NaN handling varies by backend;
    ``v != v`` is refused by the GPU delegate, which rejects an op reading one tensor
    twice.)"""
    return torch.clamp_max(torch.where(v > lo, v, lo), hi)


def _source_coords(
    coord: torch.Tensor, size: int, mode: str, padding: str, align_corners: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per axis: the first tap in padded units (source pixel i is padded pixel i+1) and,
    for bilinear, the weight of the second tap. Coordinates are clamped before any floor
    or cast so that grids far outside the image stay finite and in range. Non-finite grid
    values read like the nearest edge (+-inf) or pixel -1 (NaN); PyTorch returns NaN for
    some of these cases."""
    v = unnormalize(coord, size, align_corners)
    if padding == "border":
        v = _clamp(v, 0, size - 1)
    if mode == "nearest":
        v = _round_half_even(v)
        if padding == "zeros":
            # Everything outside reads the zero border at -1 or `size`.
            v = _clamp(v, -1, size)
        return v + 1, None
    if padding == "zeros":
        # At -1 (or `size`) the first tap has weight 1 and reads the zero border; the
        # result is zero exactly when both true taps are outside the image.
        v = _clamp(v, -1, size)
    v0 = torch.floor(v)
    return v0 + 1, v - v0


def _footprint(mode: str) -> int:
    return 2 if mode == "bilinear" else 1


def _check(x: torch.Tensor, grid: torch.Tensor, mode: str, padding: str) -> None:
    if mode not in MODES:
        raise UnsupportedSampling(f"mode {mode!r} (supported: {', '.join(MODES)})")
    if padding not in PADDINGS:
        raise UnsupportedSampling(f"padding_mode {padding!r} (supported: {', '.join(PADDINGS)})")
    if x.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != x.shape[0]:
        raise UnsupportedSampling(
            f"expected input [N,C,H,W] and grid [N,Ho,Wo,2], got {tuple(x.shape)} and "
            f"{tuple(grid.shape)}"
        )


def _padded_nhwc(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, rows, cols, C] with one zero row/column before the image and
    zeros after it."""
    n, c, h, w = x.shape
    s = x.permute(0, 2, 3, 1)
    return torch.nn.functional.pad(s, (0, 0, 1, cols - w - 1, 1, rows - h - 1))


def _weighted_sum(weights: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """sum_k weights[p, 0, k] * taps[p, c, k] -> [P, C].

    MUL + SUM over the last axis. Not a batched matmul: LiteRT's GPU delegate accepts
    BATCH_MATMUL but returned wrong values for a batch of 49152 1xK @ KxC products
    (WebGPU backend on SwiftShader). Not a reduction over a middle axis either: on the
    delegate that ran 12x slower than over the last one."""
    return (weights * taps).sum(dim=-1)


def _to_output(vals: torch.Tensor, n: int, ho: int, wo: int) -> torch.Tensor:
    """[P, C] (P = n*ho*wo) -> [N, C, Ho, Wo]."""
    c = vals.shape[-1]
    return vals.reshape(n, ho, wo, c).permute(0, 3, 1, 2)


def _batch_offsets(n: int, per_image: int, ho: int, wo: int, like: torch.Tensor):
    """Row offset of each image's block of table rows, as a [N, 1, 1] float (or 0)."""
    if n == 1:
        return 0
    return (torch.arange(n, dtype=like.dtype, device=like.device) * per_image).reshape(n, 1, 1)


# ----------------------------------------------------------------------------- flat


def grid_sample_flat(
    x: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """One gather of every tap from the source flattened to [N*Hp*Wp, C]; exact in float32
    only (the row index exceeds 2048 for any but tiny images)."""
    _check(x, grid, mode, padding_mode)
    n, c, h, w = x.shape
    _, ho, wo, _ = grid.shape
    k = _footprint(mode)
    hp, wp = h + 1 + k, w + 1 + k
    table = _padded_nhwc(x, hp, wp).reshape(n * hp * wp, c)
    px, fx = _source_coords(grid[..., 0], w, mode, padding_mode, align_corners)
    py, fy = _source_coords(grid[..., 1], h, mode, padding_mode, align_corners)
    base = py * wp + px  # [N, Ho, Wo]
    if n > 1:
        base = base + _batch_offsets(n, hp * wp, ho, wo, x)
    p = n * ho * wo
    if k == 1:
        idx = base.reshape(p)
        vals = torch.index_select(table, 0, idx.to(torch.int32))
        return _to_output(vals, n, ho, wo)
    base = base.reshape(1, p)
    idx = torch.cat([base, base + 1, base + wp, base + (wp + 1)], dim=0).reshape(4 * p)
    taps = torch.index_select(table, 0, idx.to(torch.int32)).reshape(4, p, c)
    gx, gy = (1 - fx).reshape(p, 1), (1 - fy).reshape(p, 1)
    fx, fy = fx.reshape(p, 1), fy.reshape(p, 1)
    # Four elementwise multiply-adds on [P, C] slices (no reduction kernel).
    out = taps[0] * (gy * gx) + taps[1] * (gy * fx) + taps[2] * (fy * gx) + taps[3] * (fy * fx)
    return _to_output(out, n, ho, wo)


# ----------------------------------------------------------------------------- fp16_exact


def choose_block(n: int, h: int, w: int, mode: str = "bilinear") -> int:
    """Smallest power-of-two block width B that keeps every gather index <= 2048.

    Raises ``UnsupportedSampling`` when no B can (the padded height alone exceeds 2048
    rows per gathered batch); batches are split by the caller first."""
    k = _footprint(mode)
    hp = h + 1 + k
    wp = w + 1 + k  # padded columns a tap may read
    b = 1
    while True:
        blocks_per_row = math.ceil((wp - (k - 1)) / b)
        max_index = n * (hp - k + 1) * blocks_per_row - 1
        if max_index <= FP16_EXACT_LIMIT and w + 1 <= FP16_EXACT_LIMIT:
            return b
        if blocks_per_row == 1:
            raise UnsupportedSampling(
                f"a {h}x{w} source (batch {n}) cannot be indexed exactly in float16: "
                f"more than {FP16_EXACT_LIMIT} padded rows"
            )
        b *= 2


def _images_per_gather(n: int, h: int, w: int, mode: str) -> int:
    """How many images one gather may cover with all indices <= 2048."""
    for m in range(n, 0, -1):
        try:
            choose_block(m, h, w, mode)
            return m
        except UnsupportedSampling:
            continue
    choose_block(1, h, w, mode)  # raises with the reason
    return 1


def _last(s: torch.Tensor, start: int, stop: int, step: int) -> torch.Tensor:
    """``s[..., start:stop:step]``, skipping no-op slices (they export as aten.alias)."""
    if start == 0 and stop >= s.shape[-1] and step == 1:
        return s
    return s[..., start:stop:step]


def _blocked_table(x: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, int, int]:
    """Table with one row per (image, padded row y, block xb) holding, channel-major,
    the k rows y..y+k-1 times the b+k-1 columns xb*b .. xb*b+b+k-2. Returns the table,
    the table rows per image and the blocks per padded row.

    Channel-major rows let the sampler reduce over the last axis, which the GPU delegate
    does far faster than a reduction over a middle axis."""
    n, c, h, w = x.shape
    hp = h + 1 + k
    blocks = math.ceil((w + 2) / b)  # first taps lie in padded columns 0..w+1
    cols = blocks * b + k - 1
    s = torch.nn.functional.pad(x, (1, cols - w - 1, 1, hp - h - 1))  # [N, C, Hp, cols]
    s = s.reshape(n * c, hp, cols)
    main = _last(s, 0, blocks * b, 1).reshape(n * c, hp, blocks, b)
    parts = [main]
    for j in range(1, k):  # the k-1 columns past each block (the next block's first)
        extra = _last(s, b + j - 1, b + j - 1 + (blocks - 1) * b + 1, b)
        parts.append(extra.reshape(n * c, hp, blocks, 1))
    blk = torch.cat(parts, dim=-1) if k > 1 else main  # [N*C, Hp, blocks, b+k-1]
    ys = hp - k + 1  # first-tap rows per image
    if k > 1:
        blk = torch.cat([blk[:, j : ys + j] for j in range(k)], dim=-1)
    rows_per_image = ys * blocks
    width = k * (b + k - 1)
    table = blk.reshape(n, c, rows_per_image, width).permute(0, 2, 1, 3)
    return table.reshape(n * rows_per_image, c * width), rows_per_image, blocks


def _sample_blocked(x, grid, mode, padding_mode, align_corners, block):
    n, c, h, w = x.shape
    _, ho, wo, _ = grid.shape
    k = _footprint(mode)
    b = block if block is not None else choose_block(n, h, w, mode)
    if b & (b - 1):
        raise UnsupportedSampling(f"block width must be a power of two, got {b}")
    table, rows_per_image, blocks = _blocked_table(x, b, k)
    width = b + k - 1
    p = n * ho * wo

    px, fx = _source_coords(grid[..., 0], w, mode, padding_mode, align_corners)
    py, fy = _source_coords(grid[..., 1], h, mode, padding_mode, align_corners)
    if b == 1:
        xb, lx = px, torch.zeros_like(px)
    else:
        xb = torch.floor(px * (1.0 / b))  # exact: b is a power of two
        lx = px - xb * b  # column inside the block, 0..b-1
    # Each partial sum is an integer <= 2048 (choose_block), so exact in float16.
    idx = py * blocks + xb
    if n > 1:
        idx = idx + _batch_offsets(n, rows_per_image, ho, wo, x)
    rows = torch.index_select(table, 0, idx.reshape(p).to(torch.int32))
    rows = rows.reshape(p, c, k * width)

    cols = torch.arange(width, dtype=x.dtype, device=x.device)  # [width]
    lx = lx.reshape(p, 1)
    first = (lx == cols).to(x.dtype)  # one-hot of the first tap's column, [P, width]
    if k == 1:
        weights = first
    else:
        fx = fx.reshape(p, 1)
        fy = fy.reshape(p, 1)
        second = (lx + 1 == cols).to(x.dtype)
        wx = first * (1 - fx) + second * fx
        weights = torch.cat([wx * (1 - fy), wx * fy], dim=-1)
    return _to_output(_weighted_sum(weights.reshape(p, 1, k * width), rows), n, ho, wo)


def grid_sample_fp16_exact(
    x: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    block: int | None = None,
) -> torch.Tensor:
    """Blocked gather whose index arithmetic is exact in float16 (see module docstring).

    ``block`` forces the block width (a power of two); by default ``choose_block`` picks
    the smallest that keeps indices <= 2048. Batches too large for one gather are split."""
    _check(x, grid, mode, padding_mode)
    n, _, h, w = x.shape
    if block is not None:
        return _sample_blocked(x, grid, mode, padding_mode, align_corners, block)
    m = _images_per_gather(n, h, w, mode)
    if m >= n:
        return _sample_blocked(x, grid, mode, padding_mode, align_corners, None)
    outs = [
        _sample_blocked(x[i : i + m], grid[i : i + m], mode, padding_mode, align_corners, None)
        for i in range(0, n, m)
    ]
    return torch.cat(outs, dim=0)


def grid_sample_decomposed(
    x: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    lowering: str = "fp16_exact",
) -> torch.Tensor:
    """``F.grid_sample`` through the named lowering (``"fp16_exact"`` or ``"flat"``)."""
    if lowering == "fp16_exact":
        return grid_sample_fp16_exact(x, grid, mode, padding_mode, align_corners)
    if lowering == "flat":
        return grid_sample_flat(x, grid, mode, padding_mode, align_corners)
    raise UnsupportedSampling(f"lowering {lowering!r} (supported: {', '.join(LOWERINGS)})")
