"""``litert::bicubic_as_phases``: bicubic upsampling by an integer factor becomes fixed-weight taps.

``F.interpolate(x, scale_factor=s, mode="bicubic")`` (super-resolution and GAN decoders)
lowers through litert-torch to index arithmetic and 16 GATHER_NDs, which LiteRT's GPU
delegate refuses (51 of 70 ops of a conv + 2x bicubic ran on the GPU, in 2 partitions).

With an integer factor s and ``align_corners=False``, output ``o = s*i + p`` samples the
input at ``i + (p + 0.5)/s - 0.5``: the fractional offset depends on the phase p only. So
each phase is a fixed 4-tap filter (Keys' cubic convolution, a = -0.75: PyTorch's own
weights, read off its resize of a probe) over the input replicate-padded by 2 (PyTorch clamps the taps at the border):
four slices, multiplied by constants and added. The s phases are interleaved by a stack
and a reshape, first along W, then along H, on the batch and channels merged into one
dimension, so every tensor stays at rank <= 4 (SLICE, MUL, ADD, PACK, RESHAPE,
CONCATENATION). Equal to PyTorch's to float rounding. Other bicubic resizes (a size that
is not an integer multiple, ``align_corners=True``, rank != 4) are left and named in
``details["left"]``.
"""

from __future__ import annotations

import math

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder, shape_of
from mirror.passes.replicate_pad import copy_edges
from mirror.passes.resize_as_matmul import resampling_matrix

aten = torch.ops.aten
_INTERIOR = 8  # inputs of the probe whose middle output shows a phase's 4 weights away from the border


def phase_taps(s: int) -> list[tuple[int, list[float]]]:
    """For each output phase p of an s-times bicubic upsampling (``align_corners=False``):
    its first tap relative to the input index, and its 4 weights. The weights are read off
    PyTorch's own resampling matrix (``resize_as_matmul.resampling_matrix``), so they are
    PyTorch's (Keys' cubic, a = -0.75), not a copy of its formula."""
    matrix = resampling_matrix(_INTERIOR, _INTERIOR * s, {"mode": "bicubic", "align_corners": False},
                               torch.float64, float(s))  # fmt: skip
    taps = []
    for p in range(s):
        first = -1 if (p + 0.5) / s >= 0.5 else -2  # the sample lies at or past its input index
        row, at = matrix[(_INTERIOR // 2) * s + p], _INTERIOR // 2 + first
        taps.append((first, [float(w) for w in row[at : at + 4]]))
    return taps


def _bicubic(node: Node) -> bool:
    return node.op == "call_function" and node.target in (aten.upsample_bicubic2d.vec, aten.upsample_bicubic2d.default)


def _factors(node: Node) -> tuple[int, int] | None:
    """The integer factors (H, W) of an ``align_corners=False`` 4-D bicubic upsample, else None."""
    x = node.args[0]
    shape, out = shape_of(x), shape_of(node)
    if node.args[2] or len(shape) != 4:  # align_corners, in both overloads
        return None
    ratios = (out[2] / shape[2], out[3] / shape[3])
    if any(r < 1 or r != math.floor(r) for r in ratios):
        return None
    return int(ratios[0]), int(ratios[1])


def _upsample_axis(b: Builder, x: Node, axis: int, s: int) -> Node:
    """``x`` [M, H, W] upsampled by ``s`` along ``axis`` (1 or 2)."""
    if s == 1:
        return x
    shape = shape_of(x)
    padded = b.call(aten.cat.default, copy_edges(b, x, axis, 2, 2), axis)
    phases = []
    for first, weights in phase_taps(s):
        acc = None
        for k, w in enumerate(weights):
            start = first + k + 2
            term = b.call(aten.mul.Tensor, b.call(aten.slice.Tensor, padded, axis, start, start + shape[axis], 1), w)
            acc = term if acc is None else b.call(aten.add.Tensor, acc, term)
        phases.append(acc)
    out = list(shape)
    out[axis] *= s
    return b.reshape(b.call(aten.stack.default, phases, axis + 1), out)


def _as_phases(program: ExportedProgram, node: Node) -> bool:
    factors = _factors(node)
    if factors is None:
        return False
    b = Builder(program, node)
    x = node.args[0]
    n, c, h, w = shape_of(x)
    y = _upsample_axis(b, b.reshape(x, [n * c, h, w]), 2, factors[1])
    y = _upsample_axis(b, y, 1, factors[0])
    node.replace_all_uses_with(b.reshape(y, [n, c, h * factors[0], w * factors[1]]))
    return True


@register("litert::bicubic_as_phases")
def bicubic_as_phases(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _bicubic, _as_phases)
