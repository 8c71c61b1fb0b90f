"""``litert::unfold_as_conv``: ``F.unfold`` (im2col) becomes a depthwise convolution with one-hot kernels.

``F.unfold(x, k, dilation, padding, stride)`` gathers every k x k patch into channels:
correlation layers of flow networks, local attention and content-aware upsampling
(CARAFE) are written with it. It exports as ``aten.im2col``, which litert-torch lowers to
GATHER_ND and rank-6 tensors, refused by LiteRT's GPU delegate (4 of 7 ops of a conv +
3x3 unfold ran on the GPU).

Patch entry ``p = i * kw + j`` of channel ``c`` (output channel ``c * kh * kw + p``) is
a convolution of channel ``c`` with a kernel that is 1 at (i, j) and 0 elsewhere. So the
whole unfold is one convolution with ``groups = C`` and ``kh * kw`` such kernels per
channel, with the unfold's own stride, padding (zeros) and dilation (DEPTHWISE_CONV_2D),
reshaped from [N, C*kh*kw, Ho, Wo] to unfold's [N, C*kh*kw, Ho*Wo]. Each output is one
input times 1 plus zeros, so the rewrite is exact in float32 and float16. Non-float
inputs and inputs that are not 4-D are left and named in ``details["left"]``.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder, shape_of

aten = torch.ops.aten


def _unfold(node: Node) -> bool:
    return node.op == "call_function" and node.target is aten.im2col.default


def one_hot_kernels(channels: int, kh: int, kw: int, dtype: torch.dtype) -> torch.Tensor:
    """[channels * kh * kw, 1, kh, kw]: for each channel, one kernel per patch position."""
    eye = torch.eye(kh * kw, dtype=dtype).view(kh * kw, 1, kh, kw)
    return eye.repeat(channels, 1, 1, 1)


def _as_conv(program: ExportedProgram, node: Node) -> bool:
    x, kernel, dilation, padding, stride = node.args[:5]
    val = x.meta["val"]
    if not val.is_floating_point() or val.dim() != 4:
        return False
    n, c = shape_of(x)[:2]
    kh, kw = kernel
    weight = add_constant(program, f"{node.name}_kernels", one_hot_kernels(c, kh, kw, val.dtype))
    b = Builder(program, node)
    patches = b.call(aten.conv2d.default, x, weight, None, list(stride), list(padding), list(dilation), c)
    node.replace_all_uses_with(b.reshape(patches, shape_of(node)))
    return True


@register("litert::unfold_as_conv")
def unfold_as_conv(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _unfold, _as_conv)
