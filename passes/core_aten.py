"""``coreml::core_aten``: decompose the program to core ATen (``run_decompositions({})``).

coremltools 9 translates core-ATen ops; composite ops that ``torch.export`` keeps (e.g.
``upsample_nearest2d.vec``, ``linear``) are decomposed first, as the Core ML export path
documents. Done as a recorded pass so the report shows what the decomposition changed.
"""

from __future__ import annotations

import copy

from torch.export import ExportedProgram

from mirror.passes import analysis
from mirror.passes.base import PassResult, register


@register("coreml::core_aten")
def core_aten(program: ExportedProgram) -> PassResult:
    before = analysis.op_counts(program)
    new = copy.deepcopy(program).run_decompositions({})
    return PassResult(new, changed=analysis.op_counts(new) != before)
