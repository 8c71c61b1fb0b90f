"""A bilinear grid_sample written with plain flat-index gathers, as users write samplers.

The ONNX and Core ML target tests use it to check that index arithmetic in such hand-written
samplers stays exact (fp32) in fp16 artifacts: at 64x48 its linear indices reach 3071,
beyond fp16's exact integers (2048).
"""

from __future__ import annotations

import torch


def decomposed_grid_sample(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear, border padding, align_corners=False, with torch.gather on a flat index."""
    n, c, h, w = img.shape
    x = (((grid[..., 0] + 1) * w - 1) / 2).clamp(0, w - 1)
    y = (((grid[..., 1] + 1) * h - 1) / 2).clamp(0, h - 1)
    x0, y0 = torch.floor(x), torch.floor(y)
    x1, y1 = torch.clamp(x0 + 1, max=w - 1), torch.clamp(y0 + 1, max=h - 1)
    fx, fy = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    flat = img.reshape(n, c, h * w)

    def tap(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).to(torch.int64).reshape(n, 1, -1).expand(n, c, -1)
        return torch.gather(flat, 2, idx).reshape(n, c, *x.shape[1:])

    return (
        tap(y0, x0) * (1 - fx) * (1 - fy)
        + tap(y0, x1) * fx * (1 - fy)
        + tap(y1, x0) * (1 - fx) * fy
        + tap(y1, x1) * fx * fy
    )
