"""``litert::einsum_as_bmm``: ``torch.einsum`` becomes permutes, reshapes and ``bmm``.

litert-torch lowers ``aten.einsum`` itself, and a Gram matrix (``einsum("bchw,bdhw->bcd",
f, f)``: style statistics, non-local blocks, attention with shared keys) comes out as one
BATCH_MATMUL that reads the same tensor twice. LiteRT's GPU delegate accepts it and then
aborts the whole process while building its graph ("Check failed: !IsInput(consumer,
value) Node 4 is already a consumer of the value 5"). ``torch.bmm(f, f.transpose(1, 2))``
written out converts to RESHAPE and FULLY_CONNECTED instead and runs. So every einsum is
decomposed with PyTorch's own einsum decomposition (``torch.export.default_decompositions``:
the same contraction as permutes, views and one ``bmm``), before ``legalize_rank`` takes
the rank-5 views it makes. Values are the same products summed in the same order.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram, default_decompositions

from mirror.passes.base import PassResult, register
from mirror.passes.graph_utils import decompose_each

aten = torch.ops.aten


@register("litert::einsum_as_bmm")
def einsum_as_bmm(program: ExportedProgram) -> PassResult:
    return decompose_each(program, (aten.einsum.default,), default_decompositions()[aten.einsum.default])
