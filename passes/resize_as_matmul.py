"""``resize_as_matmul``: antialiased and nearest-exact resizes become two constant resampling matrices.

``F.interpolate(x, ..., mode="bilinear", antialias=True)`` (downscaling an image without
aliasing, as PIL does) exports as ``aten._upsample_bilinear2d_aa``. No backend took it:
litert-torch has no lowering for it ("Lowering not found"), and coremltools converts it
as a plain bilinear resize, ignoring the antialias: the package was 0.25 off PyTorch on a
2x downscale, caught only by the parity check. ``mode="nearest-exact"`` stopped
coremltools ("Unsupported fx node") and left GATHER_NDs on LiteRT's CPU.

The resize is linear and separable, so it is ``y = A_h @ x @ A_w^T``, and each matrix is
PyTorch's own resize of an identity: row i of ``A_w^T`` is the resized basis vector e_i
(``A_w`` [W_out, W], ``A_h`` [H_out, H]). The same weights as PyTorch, so the same values
to float rounding, as two matmuls with constants (FULLY_CONNECTED after
``litert::matmul_constant_lhs`` on LiteRT; ``matmul`` on Core ML). A matmul costs
``H * H_out`` (``W * W_out``) multiply-adds per column where the filter needs a few taps,
so a resize whose matrices would hold more than ``MAX_ELEMENTS`` entries, or of a tensor
that is not 4-D, is left and named in ``details["left"]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant
from mirror.passes.graph_utils import rewrite_each
from mirror.passes.rank_legalization import Builder, shape_of

aten = torch.ops.aten
# Each resize, with how F.interpolate spells it and where its align_corners argument is.
_RESIZES = {
    aten._upsample_bilinear2d_aa.vec: ({"mode": "bilinear", "antialias": True}, 2),
    aten._upsample_bilinear2d_aa.default: ({"mode": "bilinear", "antialias": True}, 2),
    aten._upsample_nearest_exact2d.vec: ({"mode": "nearest-exact"}, None),
    aten._upsample_nearest_exact2d.default: ({"mode": "nearest-exact"}, None),
}
MAX_ELEMENTS = 1 << 20  # entries of each resampling matrix (4 MiB in float32)


def resampling_matrix(n_in: int, n_out: int, how: dict, dtype: torch.dtype, scale: float | None = None) -> torch.Tensor:
    """[n_out, n_in]: PyTorch's resize (``how``: F.interpolate's mode and options) of each
    basis vector of size n_in, at the model's own ``scale`` factor when it gave one
    (PyTorch then weights by it, not by n_out / n_in)."""
    basis = torch.eye(n_in, dtype=torch.float64).view(1, n_in, 1, n_in)
    size = {"size": (1, n_out)} if scale is None else {"scale_factor": (1.0, scale), "recompute_scale_factor": False}
    rows = F.interpolate(basis, **how, **size)
    return rows.view(n_in, n_out).t().contiguous().to(dtype)


def _scales(node: Node) -> tuple[float | None, float | None]:
    """The (H, W) scale factors the model gave, if any, from either overload."""
    if node.target._overloadname == "vec":
        factors = node.args[-1] if len(node.args) > 2 else None
        return (None, None) if factors is None else (float(factors[0]), float(factors[1]))
    rest = [a for a in node.args[2:] if not isinstance(a, bool)] + [None, None]
    return tuple(None if f is None else float(f) for f in rest[:2])  # type: ignore[return-value]


def _resize(node: Node) -> bool:
    return node.op == "call_function" and node.target in _RESIZES


def _as_matmul(program: ExportedProgram, node: Node) -> bool:
    x = node.args[0]
    how, align_at = _RESIZES[node.target]
    how = how | ({"align_corners": bool(node.args[align_at])} if align_at is not None else {})
    shape, out = shape_of(x), shape_of(node)
    if len(shape) != 4 or max(shape[2] * out[2], shape[3] * out[3]) > MAX_ELEMENTS:
        return False
    dtype, (s_h, s_w) = x.meta["val"].dtype, _scales(node)
    apply_separable(program, node, x, resampling_matrix(shape[2], out[2], how, dtype, s_h),
                    resampling_matrix(shape[3], out[3], how, dtype, s_w))  # fmt: skip
    return True


def apply_separable(program: ExportedProgram, node: Node, x: Node, a_h: torch.Tensor, a_w: torch.Tensor) -> None:
    """Replace ``node`` by ``a_h @ x @ a_w^T`` (a_h [H_out, H], a_w [W_out, W]), both stored
    as constants: a separable linear map of x's last two dimensions."""
    rows = add_constant(program, f"{node.name}_rows", a_h)
    cols = add_constant(program, f"{node.name}_cols", a_w.t().contiguous())
    b = Builder(program, node)
    node.replace_all_uses_with(b.call(aten.matmul.default, b.call(aten.matmul.default, rows, x), cols))


@register("resize_as_matmul")
def resize_as_matmul(program: ExportedProgram) -> PassResult:
    return rewrite_each(program, _resize, _as_matmul)
