"""``litert::split_wide_conv``: split convolutions over many input channels into summed slices.

LiteRT's GPU delegate (WebGPU, verified on SwiftShader) loads a 3x3 convolution over
1024 input channels at 32x24, reports it fully accelerated, and returns garbage; the same
convolution over 768 channels, or over 1024 at 16x12, is right, and so are 1x1
convolutions over 2048 channels at 64x64 (a 3x3 one there is wrong). DIVTON's generator has
two such convolutions (its skip connections concatenate 512 + 512 channels). The rewrite
is exact algebra: ``conv(x, W) + b == sum_k conv(x[:, k], W[:, k]) + b`` over chunks of at
most ``max_in_channels`` input channels; the cost is one extra add per extra chunk, so only
the LiteRT backend pipeline runs it (ONNX and Core ML keep the single convolution).
1x1 convolutions (ResNet bottlenecks) are left alone.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register

_CONV2D = torch.ops.aten.conv2d.default


def _wide(node: torch.fx.Node, max_in: int) -> bool:
    """A spatial (k > 1) convolution over more than ``max_in`` input channels."""
    weight = node.args[1].meta.get("val")
    groups = node.args[6] if len(node.args) > 6 else 1
    return weight is not None and groups == 1 and weight.shape[1] > max_in and weight.shape[2:].numel() > 1


@register("litert::split_wide_conv")
def split_wide_conv(program: ExportedProgram, max_in_channels: int = 512) -> PassResult:
    wide = [
        n for n in program.graph.nodes if n.op == "call_function" and n.target == _CONV2D and _wide(n, max_in_channels)
    ]
    details: dict[str, Any] = {
        "max_in_channels": max_in_channels,
        "split": [{"node": n.name, "in_channels": int(n.args[1].meta["val"].shape[1])} for n in wide],
    }
    if not wide:
        return PassResult(program, changed=False, details=details)

    def decompose(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        cin = weight.shape[1]
        if groups != 1 or cin <= max_in_channels or weight.shape[2:].numel() == 1:
            return NotImplemented
        out = None
        for start in range(0, cin, max_in_channels):
            end = min(start + max_in_channels, cin)
            part = F.conv2d(x[:, start:end], weight[:, start:end], None, stride, padding, dilation)
            out = part if out is None else out + part
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    # run_decompositions retraces into a new program; the input stays untouched.
    new = copy.deepcopy(program).run_decompositions({_CONV2D: decompose})
    return PassResult(new, changed=True, details=details)
