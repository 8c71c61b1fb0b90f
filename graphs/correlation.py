"""Local correlation (cost volume) in pure PyTorch.

PF-AFN ships this as a cupy kernel; here it is 49 shifted products, which exports with
``torch.export`` and converts to every target (only pad, slice, mul, mean, cat).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def correlation(first: torch.Tensor, second: torch.Tensor, max_displacement: int = 3) -> torch.Tensor:
    """Correlate ``first`` against ``second`` shifted by every displacement up to ``d``.

    Output channel ``(dy + d) * (2d + 1) + (dx + d)`` at (y, x) is
    ``mean_c first[c, y, x] * second[c, y + dy, x + dx]``, with zeros outside the map.
    Shapes: [B, C, H, W] x [B, C, H, W] -> [B, (2d + 1)^2, H, W].
    """
    if first.shape != second.shape:
        raise ValueError(f"correlation inputs differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
    d = max_displacement
    _, _, height, width = first.shape
    padded = F.pad(second, (d, d, d, d))
    maps = []
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            shifted = padded[:, :, d + dy : d + dy + height, d + dx : d + dx + width]
            maps.append((first * shifted).mean(dim=1, keepdim=True))
    return torch.cat(maps, dim=1)
