"""``fold_batch_norm``: an inference batch norm right after a convolution goes into its weights.

``BN(conv(x, W, b))`` with constant statistics is ``conv(x, W * s, (b - mean) * s + beta)``,
``s = gamma / sqrt(var + eps)`` per output channel. LiteRT's converter does the same fusion,
but as MLIR constant folding that walks every weight element one by one: for the coarse
parser (SCHP on ResNet-101, 119 batch norms over 66.7 M parameters) that is about 4 of the
5 minutes its conversion took on two cores, and the reason the parser stayed out of the
default compile. In torch the same arithmetic takes well under a second, and the converter
has nothing left to fold. The new weights are computed in float64 and rounded once to the
weights' dtype, so the fused convolution is at least as close to the eager batch norm as the
converter's float32 folding was.

Only a convolution whose single user is the batch norm is folded (a convolution whose
output is also read elsewhere must keep its own value), and only when its weight, its bias
and the batch norm's weight, bias, mean and variance are all constants of the program
(parameters, buffers or folded constants). Transposed convolutions are left alone (their
weights hold the output channels on the second axis).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant, lifted_value
from mirror.passes.graph_utils import rewrite_each

aten = torch.ops.aten

# batch norm op -> (index of weight, bias, running_mean, running_var, eps; index of `training` or None)
_BATCH_NORMS = {
    aten.batch_norm.default: ((1, 2, 3, 4, 7), 5),
    aten._native_batch_norm_legit_no_training.default: ((1, 2, 3, 4, 6), None),
    aten.native_batch_norm.default: ((1, 2, 3, 4, 7), 5),
}
_TUPLE_RESULT = (aten._native_batch_norm_legit_no_training.default, aten.native_batch_norm.default)


def _value(program: ExportedProgram, arg: Any, depth: int = 3) -> torch.Tensor | None | bool:
    """The constant behind ``arg``: a tensor, None for an absent optional, False if not constant.

    A small expression of constants counts too, evaluated as the program would (InPlace-ABN's
    scale ``|weight| + eps`` is ``add(abs(weight), eps)`` of a parameter, which ``fold_constants``
    leaves alone since it keeps parameters as they are)."""
    if arg is None:
        return None
    if not isinstance(arg, Node):
        return False
    if arg.op == "placeholder":
        value = lifted_value(program, arg)
        return False if value is None else value
    if arg.op != "call_function" or depth == 0 or not isinstance(arg.target, torch._ops.OpOverload) \
            or arg.target._schema.is_mutable:  # fmt: skip
        return False
    args = []
    for a in arg.args:
        v = _value(program, a, depth - 1) if isinstance(a, Node) else a
        if v is False or (isinstance(a, Node) and v is None):
            return False
        args.append(v)
    if any(isinstance(v, Node) for v in arg.kwargs.values()):
        return False
    with torch.no_grad():
        out = arg.target(*args, **arg.kwargs)
    return out if isinstance(out, torch.Tensor) else False


def _conv_parts(conv: Node) -> tuple[Node, Node, Any] | None:
    """(input, weight, bias) of a foldable convolution, None for anything else."""
    if conv.op != "call_function":
        return None
    if conv.target is aten.conv2d.default or conv.target is aten.conv1d.default:
        args = list(conv.args) + [None] * (3 - len(conv.args))
        return args[0], args[1], conv.kwargs.get("bias", args[2])
    if conv.target is aten.convolution.default and not conv.args[6]:  # not transposed
        return conv.args[0], conv.args[1], conv.args[2]
    return None


def _single_output_user(bn: Node) -> Node | None:
    """The node whose value is the batch norm's output: itself, or its ``[0]`` of a tuple result."""
    if bn.target not in _TUPLE_RESULT:
        return bn
    users = list(bn.users)
    if len(users) != 1 or users[0].target is not operator.getitem or users[0].args[1] != 0:
        return None
    return users[0]


def _foldable(program: ExportedProgram, node: Node) -> bool:
    if node.op != "call_function" or node.target not in _BATCH_NORMS:
        return False
    (iw, ib, im, iv, _), itrain = _BATCH_NORMS[node.target]
    if itrain is not None and node.args[itrain]:
        return False
    conv = node.args[0]
    if not isinstance(conv, Node) or len(conv.users) != 1 or _single_output_user(node) is None:
        return False
    parts = _conv_parts(conv)
    if parts is None:
        return False
    values = [_value(program, a) for a in (parts[1], parts[2], node.args[iw], node.args[ib], node.args[im],
                                           node.args[iv])]  # fmt: skip
    return values[0] is not None and all(v is not False for v in values) and values[4] is not None \
        and values[5] is not None  # fmt: skip


def _fused(program: ExportedProgram, conv: Node, bn: Node) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded weight and bias, computed in float64, rounded once to the weight's dtype."""
    (iw, ib, im, iv, ieps), _ = _BATCH_NORMS[bn.target]
    _, w_node, b_node = _conv_parts(conv)  # type: ignore[misc]
    weight = lifted_value(program, w_node)
    assert weight is not None
    out_channels = weight.shape[0]
    zeros = torch.zeros(out_channels, dtype=torch.float64)

    def f64(arg: Any, default: torch.Tensor) -> torch.Tensor:
        value = _value(program, arg)
        return default if value is None else value.detach().to(torch.float64)  # type: ignore[union-attr]

    bias = f64(b_node, zeros)
    gamma, beta = f64(bn.args[iw], zeros + 1), f64(bn.args[ib], zeros)
    mean, var = f64(bn.args[im], zeros), f64(bn.args[iv], zeros)
    scale = gamma / torch.sqrt(var + float(bn.args[ieps]))
    new_weight = weight.detach().to(torch.float64) * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    new_bias = (bias - mean) * scale + beta
    return new_weight.to(weight.dtype).contiguous(), new_bias.to(weight.dtype).contiguous()


def _fold(program: ExportedProgram, bn: Node) -> None:
    """The convolution before ``bn`` takes the fused weight and bias; ``bn`` goes."""
    conv = bn.args[0]
    weight, bias = _fused(program, conv, bn)
    w_const = add_constant(program, f"{conv.name}_bn_weight", weight)
    b_const = add_constant(program, f"{conv.name}_bn_bias", bias)
    for const in (w_const, b_const):
        const.meta.update({k: v for k, v in conv.meta.items() if k in ("stack_trace", "nn_module_stack")})
    if conv.target is aten.convolution.default:
        conv.args = (conv.args[0], w_const, b_const, *conv.args[3:])
    else:
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[1], args[2] = w_const, b_const
        conv.args = tuple(args)
        conv.kwargs = {k: v for k, v in conv.kwargs.items() if k != "bias"}
    out = _single_output_user(bn)
    assert out is not None
    out.replace_all_uses_with(conv)
    if out is not bn:
        program.graph.erase_node(out)
    program.graph.erase_node(bn)


@register("fold_batch_norm")
def fold_batch_norm(program: ExportedProgram) -> PassResult:
    """Fold every inference batch norm that follows a convolution (see the module docstring)."""
    return rewrite_each(program, lambda n: _foldable(program, n), _fold)
