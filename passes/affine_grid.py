"""``affine_grid``: ``F.affine_grid`` becomes a constant base grid times ``theta``.

``aten.affine_grid_generator`` builds its base grid (``linspace`` in x and y, and ones)
at run time and multiplies it by ``theta``: litert-torch lowers that to PADs of
constants, which LiteRT's GPU delegate refuses ("node has 0 runtime input(s)"), and
coremltools 9 stops on the op. Per output point the 2-D grid is
``x' = t00*x + t01*y + t02`` and ``y' = t10*x + t11*y + t12``, so it is written as MULs and
ADDs of a [1, H, W, 1] base (which ``fold_constants`` then stores as constants) with the
six entries of ``theta`` as [N, 1, 1, 1] tensors, all 4-D. The base values are PyTorch's;
only the order of one sum differs from its matmul (float32 rounding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import decompose_each

_AFFINE_GRID = torch.ops.aten.affine_grid_generator.default


def _base(steps: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
    """PyTorch's normalized pixel centres along one axis."""
    if steps <= 1:
        return torch.zeros(steps, dtype=like.dtype)
    v = torch.linspace(-1.0, 1.0, steps, dtype=like.dtype)
    return v if align_corners else v * ((steps - 1) / steps)


@register("affine_grid")
def affine_grid(program: ExportedProgram) -> PassResult:
    def decompose(theta: torch.Tensor, size: list[int], align_corners: bool) -> Any:
        if len(size) != 4:
            return NotImplemented  # volumetric grids keep the stock lowering
        n, _, h, w = size
        bx = _base(w, align_corners, theta).view(1, 1, w, 1).expand(1, h, w, 1)
        by = _base(h, align_corners, theta).view(1, h, 1, 1).expand(1, h, w, 1)
        t = theta.reshape(n, 1, 1, 6)
        gx = bx * t[..., 0:1] + by * t[..., 1:2] + t[..., 2:3]
        gy = bx * t[..., 3:4] + by * t[..., 4:5] + t[..., 5:6]
        return torch.cat([gx, gy], dim=-1)

    return decompose_each(program, (_AFFINE_GRID,), decompose)
