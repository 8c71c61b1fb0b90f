"""``litert::one_hot_as_compare``: one-hot encodings and integer compares become float compares.

Models that take class ids (a label map, a part index) one-hot them inside the graph,
``F.one_hot(labels, K)`` or ``labels.unsqueeze(-1) == torch.arange(K)``. Neither reaches
LiteRT's GPU delegate intact:

- ``aten.one_hot`` does not convert at all: litert-torch decomposes it with a bounds check
  (``aten._assert_async``) that it has no lowering for;
- an int32 compare with an ``arange`` is pattern-matched into ONE_HOT, which the delegate
  accepts and computes wrong (a 4-D ONE_HOT output whose second dimension is over 1 reads
  index 0 in every row after the first: max abs 0.97 after one conv, LiteRT CPU exact);
- any other compare of a runtime int32 tensor (``labels == 3``) is refused: the delegate
  takes runtime int32 tensors only into CAST, GATHER and ONE_HOT.

So ``one_hot(idx, K)`` becomes ``float(idx)[..., None] == arange(K)`` cast back to the
one-hot's integer dtype (CAST, RESHAPE, EQUAL, CAST), and a compare (``eq ne lt le gt ge``)
of a runtime integer tensor with integer constants becomes the same compare in float32
(CAST and the compare on floats). ``litert::float_cast_first`` then moves the model's own
``.float()`` of the one-hot in front of its permute, so no integer tensor is left between.

Exact: integers are exact in float32 up to 2**24 and in float16 (the delegate's usual
precision) up to 2048, and rounding is monotone, so comparing an integer with a constant
``c``, ``|c| < 2048`` (``FP16_EXACT_LIMIT``), gives the same answer in float16 for every
integer value. A one-hot over more than 2048 classes, a compare with a larger constant, an
output above rank 4 or a compare of two runtime tensors is left as it is and named in
``details["left"]``. An index outside [0, K), where ``one_hot`` raises, gives a zero row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant, lifted_value
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import MAX_RANK, Builder, shape_of
from mirror.passes.sampling import FP16_EXACT_LIMIT

aten = torch.ops.aten
INT_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
_COMPARES = frozenset(getattr(getattr(aten, op), kind) for op in ("eq", "ne", "lt", "le", "gt", "ge")
                      for kind in ("Tensor", "Scalar"))  # fmt: skip


def _is_int(a: Any) -> bool:
    return isinstance(a, Node) and isinstance(a.meta.get("val"), torch.Tensor) and a.meta["val"].dtype in INT_DTYPES


def _picked(node: Node) -> bool:
    if node.op != "call_function":
        return False
    if node.target is aten.one_hot.default:
        return True
    return node.target in _COMPARES and any(_is_int(a) for a in node.args[:2])


def _small_int_constant(program: ExportedProgram, a: Any) -> torch.Tensor | None:
    """``a`` as a tensor when it is an integer constant of magnitude < 2048, else None."""
    value = lifted_value(program, a) if isinstance(a, Node) else a
    if isinstance(value, bool) or not isinstance(value, int | torch.Tensor):
        return None
    value = torch.as_tensor(value)
    if value.dtype not in INT_DTYPES or (value.numel() and int(value.abs().max()) >= FP16_EXACT_LIMIT):
        return None
    return value


def _one_hot(program: ExportedProgram, node: Node) -> bool:
    idx = node.args[0]
    k = node.args[1] if len(node.args) > 1 else node.kwargs.get("num_classes", -1)
    if not 0 < k <= FP16_EXACT_LIMIT or len(shape_of(idx)) >= MAX_RANK:
        return False  # k = -1 (count the classes at run time) has no static form
    b = Builder(program, node)
    # Cast first: any op but CAST on a runtime int32 tensor falls off the GPU.
    at = b.call(aten.unsqueeze.default, b.call(aten._to_copy.default, idx, dtype=torch.float32), -1)
    classes = add_constant(program, f"{node.name}_classes", torch.arange(k, dtype=torch.float32))
    hit = b.call(aten.eq.Tensor, at, classes)
    node.replace_all_uses_with(b.call(aten._to_copy.default, hit, dtype=node.meta["val"].dtype))
    return True


def _compare(program: ExportedProgram, node: Node) -> bool:
    operands = node.args[:2]
    runtime = [a for a in operands if _is_int(a) and lifted_value(program, a) is None]
    constants = [a for a in operands if a not in runtime]
    if len(runtime) != 1 or any(_small_int_constant(program, c) is None for c in constants):
        return False
    b = Builder(program, node)

    def as_float(a: Any) -> Any:
        if a in runtime:
            return b.call(aten._to_copy.default, a, dtype=torch.float32)
        value = _small_int_constant(program, a).float()
        return add_constant(program, f"{node.name}_operand", value) if isinstance(a, Node) else float(value)

    node.replace_all_uses_with(b.call(node.target, *(as_float(a) for a in operands)))
    return True


def _as_compare(program: ExportedProgram, node: Node) -> bool:
    return (_one_hot if node.target is aten.one_hot.default else _compare)(program, node)


@register("litert::one_hot_as_compare")
def one_hot_as_compare(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _picked, _as_compare)
