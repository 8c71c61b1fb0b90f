"""``litert::log_softmax``: ``log_softmax`` written as max, subtract, exp, mean and log.

A classifier head ending in ``F.log_softmax`` (the spatial transformer tutorial's) lowers
to LOG_SOFTMAX, which LiteRT's GPU delegate does not run, so the last op of the graph
falls back to the CPU. ``log_softmax(x) = (x - max x) - log(sum(exp(x - max x)))`` along
the same dimension, with the max taken for stability exactly as the CPU kernel does.
Written with that sum the converter recognizes the pattern and emits LOG_SOFTMAX again,
so the sum is a MEAN times n (``log(mean) + log(n)``); REDUCE_MAX, SUB, EXP, MEAN, LOG and
ADD all run on the delegate. The result matches to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.export import ExportedProgram

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import decompose_each

_LOG_SOFTMAX = (torch.ops.aten._log_softmax.default, torch.ops.aten.log_softmax.int)


@register("litert::log_softmax")
def log_softmax(program: ExportedProgram) -> PassResult:
    def decompose(x: torch.Tensor, dim: int, *_: Any) -> torch.Tensor:
        shifted = x - torch.amax(x, dim=dim, keepdim=True)
        # log(mean) + log(n), not log(sum): the converter folds the plain form back into LOG_SOFTMAX.
        log_n = math.log(x.shape[dim])
        return shifted - (torch.log(torch.mean(torch.exp(shifted), dim=dim, keepdim=True)) + log_n)

    return decompose_each(program, _LOG_SOFTMAX, decompose)
