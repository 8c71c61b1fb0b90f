"""``legalize_rank``: no tensor of rank >= 5 is left; its ops run on merged dimensions.

Attention and deformable-convolution code views its tensors in 5-D and 6-D
(``(N, Lq, heads, levels, points, 2)``, ``(N, C, H, taps, W)``). LiteRT's GPU delegate
refuses every op that reads or writes a tensor of rank >= 5 (RESHAPE, TRANSPOSE, SLICE,
CONCATENATION, elementwise ops alike), so such a model splits into CPU and GPU partitions;
Core ML stops above rank 5. None of these ops needs all the dimensions separately:

- a permute only moves groups of dimensions that stay adjacent; after merging those (and
  dropping size-1 ones) it is at most 4-D, or it is split into moves of one dimension,
  each of which is;
- an elementwise op only needs the dimensions where its operands broadcast differently
  kept apart; a constant operand that still blocks merging is materialized at full size;
- slice, narrow, select, cat, stack and (log-)softmax along one dimension need only
  (before, that one, after);
- a reduction only needs runs of reduced and of kept dimensions;
- consecutive reshapes compose, so the rank >= 5 reshapes between them disappear.

Each such op is rewritten as: reshape its inputs to the merged shape, run it there,
reshape back; then chains of reshapes are composed into one. Values are moved, never
recomputed, so the rewrite is exact. Ops of other kinds touching rank >= 5 are left as
they are and listed in ``details["left"]``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from mirror.passes.base import PassResult, register
from mirror.passes.constant_folding import add_constant, fake_mode, lifted_value
from mirror.passes.graph_utils import prune_unused_state

aten = torch.ops.aten
MAX_RANK = 4
_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
          aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints}  # fmt: skip
_CLONE = aten.clone.default
_ALIASES = {_CLONE, aten.alias.default}  # no-op copies: their users read the input instead


def shape_of(node: Any) -> list[int]:
    """A node's static shape, from its fake value."""
    return list(node.meta["val"].shape)


def _high(node: Node) -> bool:
    vals = [node.meta.get("val"), *(a.meta.get("val") for a in node.all_input_nodes)]
    return any(isinstance(v, torch.Tensor) and v.dim() > MAX_RANK for v in vals)


class Builder:
    """Inserts nodes before ``at``, with fake values and the source location of ``at``."""

    def __init__(self, program: ExportedProgram, at: Node) -> None:
        self.program, self.graph, self.at = program, program.graph, at
        self.mode = fake_mode(program)

    def call(self, target: Any, *args: Any, **kwargs: Any) -> Node:
        with self.graph.inserting_before(self.at):
            node = self.graph.call_function(target, args, kwargs)
        vals, kw = torch.fx.node.map_arg((args, kwargs), lambda a: a.meta["val"])
        with self.mode:
            node.meta["val"] = target(*vals, **kw)
        node.meta.update({k: self.at.meta[k] for k in ("stack_trace", "nn_module_stack") if k in self.at.meta})
        return node

    def reshape(self, x: Node, shape: list[int]) -> Node:
        if shape_of(x) == list(shape):
            return x
        value = lifted_value(self.program, x)
        if value is not None:  # a constant is stored in the shape it is read in
            return add_constant(self.program, f"{x.name}_r{len(shape)}", value.reshape(shape).contiguous())
        # reshape, not view: a later lowering may make the input non-contiguous, and
        # retracing then decomposes reshape into whatever the new strides need.
        return self.call(aten.reshape.default, x, list(shape))


def _permute(b: Builder, x: Node, perm: list[int]) -> Node:
    """``x.permute(perm)`` through tensors of rank <= 4."""
    shape = shape_of(x)
    pos = {d: i for i, d in enumerate(d for d in range(len(shape)) if shape[d] != 1)}
    groups: list[list[int]] = []
    for d in (d for d in perm if shape[d] != 1):  # size-1 dimensions go anywhere
        if groups and pos[d] == pos[groups[-1][-1]] + 1:
            groups[-1].append(d)
        else:
            groups.append([d])
    out_shape = [shape[d] for d in perm]
    if len(groups) <= MAX_RANK:
        order = sorted(range(len(groups)), key=lambda g: groups[g][0])
        merged = [math.prod(shape[d] for d in groups[g]) for g in order]
        inner = b.call(aten.permute.default, b.reshape(x, merged), [order.index(g) for g in range(len(groups))])
        return b.reshape(inner, out_shape)
    # Too many groups: move one dimension at a time into place (each move has <= 4 groups).
    current = list(range(len(shape)))
    for k, d in enumerate(perm):
        j = current.index(d)
        if j != k:
            move = current[:k] + [current[j]] + current[k:j] + current[j + 1 :]
            x = _permute(b, x, [current.index(m) for m in move])
            current = move
    return x


def _coalesce(shapes: list[list[int]], out: list[int]) -> list[list[int]] | None:
    """Groups of output dimensions that every operand (aligned to ``out``) reads alike."""
    groups: list[list[int]] = []
    for d in (d for d in range(len(out)) if out[d] != 1):
        full = tuple(s[d] != 1 for s in shapes)
        if groups and tuple(s[groups[-1][-1]] != 1 for s in shapes) == full:
            groups[-1].append(d)
        else:
            groups.append([d])
    return groups if len(groups) <= MAX_RANK else None


def _elementwise(b: Builder, node: Node) -> Node | None:
    """A pointwise op with broadcasting, run on the merged dimensions."""
    out = shape_of(node)
    args = list(node.args)
    operands = [i for i, a in enumerate(args) if isinstance(a, Node)]

    def aligned(a: Node) -> list[int]:
        return [1] * (len(out) - len(shape_of(a))) + shape_of(a)

    groups = _coalesce([aligned(args[i]) for i in operands], out)
    if groups is None:  # a constant operand that broadcasts differently is stored at full size
        for i in operands:
            value = lifted_value(b.program, args[i])
            if value is not None and aligned(args[i]) != out:
                full = value.reshape(aligned(args[i])).expand(out).contiguous()
                args[i] = add_constant(b.program, f"_full_{args[i].name}", full)
        groups = _coalesce([aligned(args[i]) for i in operands], out)
    if groups is None:
        return None
    for i in operands:
        s = aligned(args[i])
        args[i] = b.reshape(args[i], [math.prod(s[d] for d in g) for g in groups] or [1])
    return b.reshape(b.call(node.target, *args, **node.kwargs), out)


def _split3(shape: list[int], dim: int) -> list[int]:
    """(before, at, after): the shape an op along ``dim`` needs."""
    return [math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])]


def _along(b: Builder, node: Node) -> Node | None:
    """slice, select, cat, stack and (log-)softmax along one dimension, on 3-D views."""
    t, out = node.target, shape_of(node)
    if t in (aten.cat.default, aten.stack.default):
        xs, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
        rank = len(out)
        dim %= rank
        parts = [b.reshape(x, _split3(shape_of(x), dim) if t is aten.cat.default
                           else [math.prod(out[:dim]), 1, math.prod(out[dim + 1 :])]) for x in xs]  # fmt: skip
        return b.reshape(b.call(aten.cat.default, parts, 1), out)
    x, dim = node.args[0], node.args[1] % len(shape_of(node.args[0]))
    flat = b.reshape(x, _split3(shape_of(x), dim))
    if t is aten.select.int:
        index = node.args[2] % shape_of(x)[dim]
        return b.reshape(b.call(aten.slice.Tensor, flat, 1, index, index + 1, 1), out)
    if t is aten.slice.Tensor:
        return b.reshape(b.call(aten.slice.Tensor, flat, 1, *node.args[2:]), out)
    if t is aten.narrow.default:
        start = node.args[2] % shape_of(x)[dim]
        return b.reshape(b.call(aten.slice.Tensor, flat, 1, start, start + node.args[3], 1), out)
    return b.reshape(b.call(t, flat, 1, *node.args[2:]), out)


_ALONG = {aten.cat.default, aten.stack.default, aten.select.int, aten.slice.Tensor, aten.narrow.default,
          aten._softmax.default, aten._log_softmax.default, aten.softmax.int, aten.log_softmax.int}  # fmt: skip


_REDUCE = {aten.sum.dim_IntList, aten.mean.dim, aten.amax.default, aten.amin.default}


def _reduction(b: Builder, node: Node) -> Node | None:
    """sum/mean/amax/amin over some dimensions, on merged runs of reduced and kept ones."""
    x, out = node.args[0], shape_of(node)
    shape = shape_of(x)
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    reduced = {d % len(shape) for d in dims} if dims else set(range(len(shape)))
    groups: list[list[int]] = []
    for d in (d for d in range(len(shape)) if shape[d] != 1):
        if groups and (groups[-1][-1] in reduced) == (d in reduced):
            groups[-1].append(d)
        else:
            groups.append([d])
    axes = [i for i, g in enumerate(groups) if g[0] in reduced]
    if len(groups) > MAX_RANK or not axes:
        return None if axes else b.reshape(x, out)  # only size-1 dimensions reduced: a reshape
    merged = b.reshape(x, [math.prod(shape[d] for d in g) for g in groups])
    kwargs = {k: v for k, v in node.kwargs.items() if k == "dtype"}
    return b.reshape(b.call(node.target, merged, axes, True, **kwargs), out)


def _rewrite(b: Builder, node: Node) -> Node | None:
    t = node.target
    if t in _VIEWS:
        return node  # composed with its neighbours afterwards
    if t in _ALIASES:
        return node.args[0]
    if t is aten.permute.default:
        return _permute(b, node.args[0], [d % len(node.args[1]) for d in node.args[1]])
    if t is aten.transpose.int:
        perm = list(range(len(shape_of(node.args[0]))))
        i, j = (d % len(perm) for d in node.args[1:3])
        perm[i], perm[j] = perm[j], perm[i]
        return _permute(b, node.args[0], perm)
    if t is aten.expand.default:
        return _elementwise_expand(b, node)
    if t in _ALONG:
        return _along(b, node)
    if t in _REDUCE:
        return _reduction(b, node)
    if torch.Tag.pointwise in getattr(t, "tags", ()):
        return _elementwise(b, node)
    return None


def _elementwise_expand(b: Builder, node: Node) -> Node | None:
    x, out = node.args[0], shape_of(node)
    s = [1] * (len(out) - len(shape_of(x))) + shape_of(x)
    groups = _coalesce([s], out)
    if groups is None:
        return None
    merged_in = [math.prod(s[d] for d in g) for g in groups] or [1]
    merged_out = [math.prod(out[d] for d in g) for g in groups] or [1]
    return b.reshape(b.call(aten.expand.default, b.reshape(x, merged_in), merged_out), out)


def _compose_views(program: ExportedProgram) -> int:
    """Each reshape reading a reshape (or a copy of one) reads the first one's input instead."""
    count = 0
    for node in list(program.graph.nodes):
        if node.op != "call_function" or node.target not in _VIEWS:
            continue
        src, chain_high = node.args[0], False
        while isinstance(src, Node) and src.op == "call_function" and (src.target in _VIEWS or src.target in _ALIASES):
            chain_high = chain_high or len(shape_of(src)) > MAX_RANK
            src = src.args[0]
        if chain_high:
            b = Builder(program, node)
            node.replace_all_uses_with(b.reshape(src, shape_of(node)))
            count += 1
    return count


def _high_nodes(program: ExportedProgram) -> list[Node]:
    return [n for n in program.graph.nodes if n.op == "call_function" and _high(n)]


@register("legalize_rank")
def legalize_rank(program: ExportedProgram) -> PassResult:
    """Rewrite ops on rank >= 5 tensors onto rank <= 4 (see the module docstring)."""
    todo = _high_nodes(program)
    details: dict[str, Any] = {"rewritten": 0, "left": []}
    if not todo:
        return PassResult(program, changed=False, details=details)
    original, program = program, copy.deepcopy(program)
    for node in _high_nodes(program):
        new = _rewrite(Builder(program, node), node)
        if new is not None and new is not node:
            node.replace_all_uses_with(new)
            details["rewritten"] += 1
    composed = _compose_views(program)
    if not details["rewritten"] and not composed:  # only ops it cannot rewrite: the input as it was
        details["left"] = sorted({str(n.target) for n in todo})
        return PassResult(original, changed=False, details=details)
    prune_unused_state(program)
    details["left"] = sorted({str(n.target) for n in _high_nodes(program)})
    return PassResult(program, changed=True, details=details)
