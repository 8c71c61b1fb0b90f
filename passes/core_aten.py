"""``coreml::core_aten``: decompose the program to core ATen (``run_decompositions``).

coremltools 9 translates core-ATen ops; composite ops that ``torch.export`` keeps (e.g.
``upsample_nearest2d.vec``, ``linear``) are decomposed first, as the Core ML export path
documents. A few ops stay that coremltools 9 has no translation for, and conversion
stopped at them ("Unsupported fx node ..."): ``torch.var_mean``, ``F.logsigmoid``,
``F.cosine_similarity`` and bicubic ``F.interpolate``. They become ops it converts
(``COREML_MISSING``): a variance and a mean; ``-softplus(-x)``; a dot product over the
norms; torch's own bicubic decomposition (index arithmetic and gathers). Done as a
recorded pass so the report shows what the decomposition changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch._decomp import decomposition_table
from torch.export import ExportedProgram

from mirror.passes import analysis
from mirror.passes.base import PassResult, register

aten = torch.ops.aten
def _var_mean(x: torch.Tensor, dim: Any = None, unbiased: bool = True, keepdim: bool = False, *,
              correction: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.var_mean`` as its two parts (torch's own decomposition goes through prims)."""
    c = (1 if unbiased else 0) if correction is None else correction
    return torch.var(x, dim, correction=c, keepdim=keepdim), torch.mean(x, dim, keepdim=keepdim)


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return -torch.nn.functional.softplus(-x)


def _cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``F.cosine_similarity`` as PyTorch computes it: the dot product over the product of
    the norms, each squared norm clamped at eps squared."""
    dot = (x1 * x2).sum(dim)
    return dot / torch.sqrt(torch.clamp_min((x1 * x1).sum(dim) * (x2 * x2).sum(dim), eps * eps))


# Ops torch.export keeps that coremltools 9 cannot convert ("Unsupported fx node"), and
# what they become: the same maths in ops it converts.
COREML_MISSING: dict[Any, Callable[..., Any]] = {
    aten.var_mean.dim: _var_mean,
    aten.var_mean.correction: _var_mean,
    aten.log_sigmoid.default: _log_sigmoid,
    aten.upsample_bicubic2d.vec: decomposition_table[aten.upsample_bicubic2d.vec],
    aten.cosine_similarity.default: _cosine_similarity,
}


@register("coreml::core_aten")
def core_aten(program: ExportedProgram) -> PassResult:
    before = analysis.op_counts(program)
    table = dict(COREML_MISSING)
    new = copy.deepcopy(program).run_decompositions(table)
    return PassResult(new, changed=analysis.op_counts(new) != before)
