"""Fuzzing the legalization passes (hypothesis): small torch modules of random shapes and
ranks, exported with ``torch.export`` as the compile exports them, then one pass.

Each property checks the three things a pass promises:

1. the rewritten program computes what the original does, on fresh random inputs: bit-exact
   for passes that only move or copy values (``legalize_rank`` on moves and pointwise ops,
   ``scatter_as_cat``, ``index_as_select``, ``explicit_pool_stride``,
   ``litert::broadcast_as_gather``, ``litert::select_operands``,
   ``litert::constant_operands_4d``, ``fold_constants``); within float32 rounding
   (``rtol=1e-5, atol=1e-5``) where a sum is reordered (``affine_grid``,
   ``litert::matmul_constant_lhs``, ``litert::log_softmax``, reductions under
   ``legalize_rank``);
2. its postcondition: the ops it targets are gone (no tensor of rank >= 5 after
   ``legalize_rank``; no input-independent op after ``fold_constants``);
3. a second run changes nothing (every pass here is idempotent by contract).

Shapes are kept small and the example counts low: the whole file runs in well under a
minute on two CPU cores.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.export.graph_signature import InputKind

from mirror.passes.base import get_pass, run_pipeline
from mirror.passes.constant_folding import lifted_value

aten = torch.ops.aten

# MIRROR_FUZZ_EXAMPLES raises the example count for a longer hunt (the suite's default keeps CI fast).
FUZZ = settings(max_examples=int(os.environ.get("MIRROR_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip
FEW = settings(FUZZ, max_examples=max(FUZZ.max_examples // 3, 1))  # passes that retrace cost more per example
CLOSE = {"rtol": 1e-5, "atol": 1e-5}  # float32 rounding of a reordered sum


class _Dynamic(torch.nn.Module):
    """A module whose forward is a given function of itself and its inputs."""

    def __init__(self, fn: Any, buffers: dict[str, torch.Tensor] | None = None,
                 params: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.fn = fn
        for k, v in (buffers or {}).items():
            self.register_buffer(k, v)
        for k, v in (params or {}).items():
            self.register_parameter(k, torch.nn.Parameter(v, requires_grad=False))

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.fn(self, *xs)


def _flat(out: Any) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _calls(program, *targets) -> list[torch.fx.Node]:
    return [n for n in program.graph.nodes if n.op == "call_function" and n.target in targets]


def _run(name: str, module: torch.nn.Module, example: tuple, fresh: tuple, *, exact: bool, **options: Any):
    """Export, run the pass; check parity on ``fresh`` inputs and idempotence. Returns the result."""
    with torch.no_grad():
        program = torch.export.export(module.eval(), example)
        result = get_pass(name)(program, **options)
        want, got = _flat(module(*fresh)), _flat(result.program.module()(*fresh))
    assert len(want) == len(got)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if exact:
            assert torch.equal(g, w), f"{name}: max abs {(g - w).abs().max()}"
        else:
            torch.testing.assert_close(g, w, **CLOSE)
    again = get_pass(name)(result.program, **options)
    assert not again.changed and again.program is result.program, f"{name} is not idempotent: {again.details}"
    return result


def _rand(gen: torch.Generator, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=gen) * 4 - 2


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


# ----------------------------------------------------------------------------- legalize_rank


def _rank_above_4(program) -> list[str]:
    return [n.name for n in program.graph.nodes if isinstance(v := n.meta.get("val"), torch.Tensor) and v.dim() > 4]


def _draw_rank_ops(data, shape: list[int]) -> tuple[list[tuple], list[list[int]], dict[str, torch.Tensor], bool]:
    """Ops on a rank 5-6 tensor, drawn while tracking its shape: (ops, extra input shapes,
    constant buffers, whether every op only moves values or is pointwise)."""
    probe = torch.zeros(shape)
    ops: list[tuple] = []
    extras: list[list[int]] = []
    buffers: dict[str, torch.Tensor] = {}
    exact = True
    kinds = ["permute", "transpose", "const", "input", "select", "slice", "narrow", "cat", "stack", "softmax",
             "reduce", "expand", "unary", "clone"]  # fmt: skip
    for _ in range(data.draw(st.integers(1, 4), label="n_ops")):
        r, s = probe.dim(), list(probe.shape)
        if r < 5:
            break
        kind = data.draw(st.sampled_from(kinds), label="op")
        dim = data.draw(st.integers(-r, r - 1), label="dim")
        if kind == "permute":
            op = ("permute", data.draw(st.permutations(range(r)), label="perm"))
        elif kind == "transpose":
            op = ("transpose", dim, data.draw(st.integers(-r, r - 1), label="dim2"))
        elif kind in ("const", "input"):
            # The other operand broadcasts along some dimensions (and may have fewer): any set
            # for a constant (stored at full size where it blocks merging), one run for a
            # runtime operand (broadcast in more than 4 runs it is left, listed in details).
            if kind == "const":
                ones = data.draw(st.lists(st.booleans(), min_size=r, max_size=r), label="broadcast")
            else:
                i = data.draw(st.integers(0, r), label="run start")
                j = data.draw(st.integers(i, r), label="run end")
                ones = [i <= d < j for d in range(r)]
            other = [1 if o else n for o, n in zip(ones, s, strict=True)]
            lead = data.draw(st.integers(0, 2), label="dropped leading dims")
            other = other[lead:] if all(n == 1 for n in other[:lead]) else other
            fn = data.draw(st.sampled_from(["add", "mul", "sub", "maximum"]), label="fn")
            if kind == "const":
                name = f"c{len(buffers)}"
                buffers[name] = torch.rand(other) + 0.5
                op = ("const", fn, name)
            else:
                op = ("input", fn, len(extras))
                extras.append(other)
        elif kind == "select":
            op = ("select", dim, data.draw(st.integers(-s[dim], s[dim] - 1), label="index"))
        elif kind in ("slice", "narrow"):
            size = s[dim]
            start = data.draw(st.integers(0, size - 1), label="start")
            op = (kind, dim, start, data.draw(st.integers(start + 1, size), label="end"))
        elif kind == "cat":
            op = ("cat", dim)
        elif kind == "stack":
            op = ("stack", data.draw(st.integers(-r - 1, r), label="stack dim")) if r < 6 else ("clone",)
        elif kind == "softmax":
            op, exact = ("softmax", dim), False
        elif kind == "reduce":
            fn = data.draw(st.sampled_from(["sum", "mean", "amax", "amin"]), label="reduction")
            dims = data.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True), label="dims")
            # Alternating reduced and kept dimensions: a run of each, so the reduction merges to <= 4-D.
            dims = list(range(min(dims), max(dims) + 1))
            op = ("reduce", fn, dims, data.draw(st.booleans(), label="keepdim"))
            exact = exact and fn in ("amax", "amin")
        elif kind == "expand":
            unit = [d for d in range(r) if s[d] == 1]
            op = ("expand", unit[0], data.draw(st.integers(2, 3))) if unit else ("clone",)
        elif kind == "unary":
            op = ("unary", data.draw(st.sampled_from(["neg", "relu", "tanh", "abs"]), label="unary"))
        else:
            op = ("clone",)
        ops.append(op)
        probe = _apply(op, probe, lambda name: buffers[name], [torch.zeros(e) for e in extras])
    return ops, extras, buffers, exact


def _apply(op: tuple, t: torch.Tensor, buffer: Any, extras: list[torch.Tensor]) -> torch.Tensor:
    kind = op[0]
    if kind == "permute":
        return t.permute(*op[1])
    if kind == "transpose":
        return t.transpose(op[1], op[2])
    if kind in ("const", "input"):
        other = buffer(op[2]) if kind == "const" else extras[op[2]]
        return getattr(torch, op[1])(t, other)
    if kind == "select":
        return t.select(op[1], op[2])
    if kind == "slice":  # t[:, :, start:end]
        return t[(slice(None),) * (op[1] % t.dim()) + (slice(op[2], op[3]),)]
    if kind == "narrow":
        return t.narrow(op[1], op[2], op[3] - op[2])
    if kind == "cat":
        return torch.cat([t, t.select(op[1], 0).unsqueeze(op[1]) * 2], dim=op[1])
    if kind == "stack":
        return torch.stack([t, -t], dim=op[1])
    if kind == "softmax":
        return torch.softmax(t, dim=op[1])
    if kind == "reduce":
        return getattr(torch, op[1])(t, dim=op[2], keepdim=op[3])
    if kind == "expand":
        size = list(t.shape)
        size[op[1]] = op[2]
        return t.expand(*size)
    if kind == "unary":
        return getattr(torch, op[1])(t)
    return t.clone()


@FUZZ
@given(shape=st.lists(st.integers(1, 4), min_size=5, max_size=6), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_legalize_rank_leaves_no_rank_5_tensor_and_keeps_the_values(shape, seed, data):
    ops, extras, buffers, exact = _draw_rank_ops(data, shape)

    def forward(m, x, *ys):
        t = x.reshape(shape)
        ys = [y.reshape(e) for y, e in zip(ys, extras, strict=True)]
        for op in ops:
            t = _apply(op, t, lambda name: getattr(m, name), ys)
        return t.reshape(-1) if t.dim() > 4 else t

    gen = torch.Generator().manual_seed(seed)
    inputs = [[math.prod(shape)], *[[math.prod(e)] for e in extras]]  # the interface stays 1-D
    example, fresh = (tuple(_rand(gen, s) for s in inputs) for _ in range(2))
    model = _Dynamic(forward, buffers)
    result = _run("legalize_rank", model, example, fresh, exact=exact)
    assert result.details["left"] == [] and _rank_above_4(result.program) == [], (ops, result.details)


@FEW
@given(shape=st.lists(st.integers(1, 3), min_size=5, max_size=6), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_the_default_pipeline_legalizes_random_high_rank_programs(shape, seed, data):
    """The shared pipeline (run_pipeline, as the compile runs it) on the same random programs:
    each record's parity against the eager module is within float32 rounding."""
    ops, extras, buffers, _ = _draw_rank_ops(data, shape)

    def forward(m, x, *ys):
        t = x.reshape(shape)
        for op in ops:
            t = _apply(op, t, lambda name: getattr(m, name), [y.reshape(e) for y, e in zip(ys, extras, strict=True)])
        return t.reshape(-1) if t.dim() > 4 else t

    gen = torch.Generator().manual_seed(seed)
    example = tuple(_rand(gen, [math.prod(s)]) for s in [shape, *extras])
    model = _Dynamic(forward, buffers).eval()
    from mirror.passes.registry import PIPELINES

    with torch.no_grad():
        program = torch.export.export(model, example)
        new, records = run_pipeline(program, PIPELINES["default"], "fuzz", reference=model, example_inputs=example)
    assert [r.name for r in records] == [name for name, _ in PIPELINES["default"]]
    assert all(r.max_abs_vs_reference is not None and r.max_abs_vs_reference <= 1e-5 for r in records), records
    assert _rank_above_4(new) == []


# ----------------------------------------------------------------------------- fold_constants


def _input_independent(program) -> list[str]:
    """Ops whose value does not depend on the user inputs, other than ops on parameters only
    (weights stay parameters) and shape-only ops' consumers of inputs."""
    kinds = {s.arg.name: s.kind for s in program.graph_signature.input_specs}
    shape_only = {aten.zeros_like.default, aten.ones_like.default, aten.full_like.default,
                  aten.new_zeros.default, aten.new_ones.default, aten.new_full.default}  # fmt: skip
    free: dict[torch.fx.Node, bool] = {}  # node -> computed from parameters only
    found = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and kinds.get(node.name) != InputKind.USER_INPUT:
            free[node] = kinds.get(node.name) == InputKind.PARAMETER
        elif node.op == "call_function" and (node.target in shape_only or all(a in free for a in node.all_input_nodes)):
            params_only = node.target not in shape_only and bool(node.all_input_nodes) and all(
                free[a] for a in node.all_input_nodes)  # fmt: skip
            free[node] = params_only
            if not params_only and not isinstance(node.meta.get("val"), (list, tuple)):
                found.append(f"{node.name} ({node.target})")
    return found


_CONST_STEPS = ["scale", "arange", "linspace", "transpose", "cat", "sum", "ones_like", "meshgrid", "reshape"]


@FUZZ
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 2**31 - 1),
       steps=st.lists(st.sampled_from(_CONST_STEPS), min_size=1, max_size=5))  # fmt: skip
def test_fold_constants_leaves_no_input_independent_op(shape, seed, steps):
    """A constant subgraph of random shapes (buffers, arange, linspace, meshgrid, cat, sums,
    shape-only ops of the input) feeding an op on the input; a parameter-only branch stays."""

    def constant(m, x):
        c = m.base
        for step in steps:
            if step == "scale":
                c = c * 0.5 + 1.0
            elif step == "arange":
                c = c + torch.arange(c.shape[-1], dtype=c.dtype)
            elif step == "linspace":
                c = c * torch.linspace(-1.0, 1.0, c.shape[-1])
            elif step == "transpose" and c.dim() >= 2:
                c = c.transpose(0, -1).contiguous()
            elif step == "cat":
                c = torch.cat([c, c[:1] * 2], dim=0)
            elif step == "sum" and c.dim() >= 2:
                c = c.sum(dim=0)
            elif step == "meshgrid":
                ys, xs = torch.meshgrid(torch.arange(2.0), torch.arange(float(c.shape[-1])), indexing="ij")
                c = (c.reshape(-1, 1, c.shape[-1]) + torch.stack([xs, ys])[:1]).reshape(-1, c.shape[-1])
            elif step == "reshape":
                c = c.reshape(-1)
        return c

    gen = torch.Generator().manual_seed(seed)
    base = _rand(gen, shape)
    out_shape = list(constant(type("M", (), {"base": base})(), None).shape)
    weight = _rand(gen, out_shape)

    def forward(m, x):
        c = constant(m, x) + torch.ones_like(x)  # ones_like(x) depends on x's shape only
        return x * c + x * (m.weight * 3.0)

    model = _Dynamic(forward, {"base": base}, {"weight": weight})
    example, fresh = (_rand(gen, out_shape),), (_rand(gen, out_shape),)
    result = _run("fold_constants", model, example, fresh, exact=True)
    program = result.program
    assert result.changed and _input_independent(program) == [], _input_independent(program)
    # Weights stay parameters: the parameter-only branch is not folded into a constant.
    assert [s.target for s in program.graph_signature.input_specs if s.kind == InputKind.PARAMETER] == ["weight"]


# ----------------------------------------------------------------------------- scatter_as_cat


@FUZZ
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_scatter_as_cat_writes_the_same_values_with_slices(shape, seed, data):
    r = len(shape)
    dim = data.draw(st.integers(-r, r - 1), label="dim")
    size = shape[dim]
    kind = data.draw(st.sampled_from(["select", "slice"]), label="kind")
    if kind == "select":
        index = data.draw(st.integers(-size, size - 1), label="index")
        src_shape = shape[: dim % r] + shape[dim % r + 1 :]

        def forward(m, x, src):
            return torch.select_scatter(x * 1.0, src, dim, index)
    else:
        # Negative and out-of-range bounds are clamped as PyTorch does; a step other than 1 is left.
        start = data.draw(st.one_of(st.none(), st.integers(-size - 1, size)), label="start")
        end = data.draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)), label="end")
        step = data.draw(st.sampled_from([1, 1, 2]), label="step")
        written = len(range(size)[slice(start, end, step)])
        src_shape = list(shape)
        src_shape[dim] = written

        def forward(m, x, src):
            return torch.slice_scatter(x * 1.0, src, dim, start, end, step)

    gen = torch.Generator().manual_seed(seed)
    example, fresh = ((_rand(gen, shape), _rand(gen, src_shape)) for _ in range(2))
    result = _run("scatter_as_cat", _Dynamic(forward), example, fresh, exact=True)
    left = _calls(result.program, aten.select_scatter.default, aten.slice_scatter.default)
    assert all(n.args[5] != 1 for n in left if len(n.args) > 5), [n.args for n in left]
    assert len(left) <= (kind == "slice" and step != 1)


# ----------------------------------------------------------------------------- index_as_select


def _single_1d_index(program) -> list[torch.fx.Node]:
    return [n for n in _calls(program, aten.index.Tensor)
            if sum(i is not None for i in n.args[1]) == 1]  # fmt: skip


@FUZZ
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_index_as_select_picks_the_same_elements(shape, seed, data):
    """A constant index (short: slices; long: index_select) or a runtime one, with negative
    and repeated entries, along a random dimension."""
    r = len(shape)
    dim = data.draw(st.integers(0, r - 1), label="dim")
    size = shape[dim]
    entries = data.draw(st.lists(st.integers(-size, size - 1), min_size=1, max_size=20), label="index")
    constant = data.draw(st.booleans(), label="constant index")
    key = (slice(None),) * dim

    if constant:

        def forward(m, x):
            return x[(*key, m.index)] * 1.0

        buffers, extra = {"index": torch.tensor(entries)}, ()
    else:

        def forward(m, x, index):
            return x[(*key, index)] * 1.0

        buffers, extra = {}, (torch.tensor(entries),)
    gen = torch.Generator().manual_seed(seed)
    example, fresh = (_rand(gen, shape), *extra), (_rand(gen, shape), *extra)
    result = _run("index_as_select", _Dynamic(forward, buffers), example, fresh, exact=True)
    assert _single_1d_index(result.program) == []


# ----------------------------------------------------------------------------- affine_grid


@FEW
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       align=st.booleans(), seed=st.integers(0, 2**31 - 1))  # fmt: skip
def test_affine_grid_is_a_4d_base_grid_times_theta(n, c, h, w, align, seed):
    def forward(m, theta):
        return F.affine_grid(theta, [n, c, h, w], align_corners=align)

    gen = torch.Generator().manual_seed(seed)
    example, fresh = (_rand(gen, [n, 2, 3]),), (_rand(gen, [n, 2, 3]),)
    result = _run("affine_grid", _Dynamic(forward), example, fresh, exact=False)
    program = result.program
    assert _calls(program, aten.affine_grid_generator.default) == []
    assert _rank_above_4(program) == []


# ----------------------------------------------------------------------------- explicit_pool_stride


@FUZZ
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(4, 9), st.integers(4, 9)),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)), pad=st.integers(0, 1), ceil=st.booleans(),
       avg=st.booleans(), seed=st.integers(0, 2**31 - 1))  # fmt: skip
def test_explicit_pool_stride_writes_the_default_stride(shape, kernel, pad, ceil, avg, seed):
    pad = min(pad, kernel[0] // 2, kernel[1] // 2)

    def forward(m, x):
        pool = F.avg_pool2d if avg else F.max_pool2d
        return pool(x, kernel, padding=pad, ceil_mode=ceil)

    gen = torch.Generator().manual_seed(seed)
    example, fresh = (_rand(gen, shape),), (_rand(gen, shape),)
    result = _run("explicit_pool_stride", _Dynamic(forward), example, fresh, exact=True)
    for node in _calls(result.program, aten.max_pool2d.default, aten.avg_pool2d.default):
        assert len(node.args) > 2 and list(node.args[2]) == list(kernel)


# ----------------------------------------------------------------------------- litert::broadcast_as_gather


@FUZZ
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_broadcast_as_gather_copies_the_broadcast(shape, seed, data):
    lead = data.draw(st.lists(st.integers(1, 3), max_size=4 - len(shape)), label="new leading dims")
    sizes = list(lead) + [data.draw(st.sampled_from([n, -1] if n != 1 else [1, -1, 2, 3]), label="size")
                          for n in shape]  # fmt: skip

    def forward(m, x):
        return x.expand(*sizes) * 1.0

    gen = torch.Generator().manual_seed(seed)
    example, fresh = (_rand(gen, shape),), (_rand(gen, shape),)
    result = _run("litert::broadcast_as_gather", _Dynamic(forward), example, fresh, exact=True)
    for node in _calls(result.program, aten.expand.default):  # only views are left
        src = [1] * (len(node.args[1]) - node.args[0].meta["val"].dim()) + list(node.args[0].meta["val"].shape)
        assert all(n in (-1, 1, s) for n, s in zip(node.args[1], src, strict=True)), node.args


# ----------------------------------------------------------------------------- litert::log_softmax


@FEW
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_log_softmax_as_max_exp_mean_log(shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")

    def forward(m, x):
        return F.log_softmax(x * 3.0, dim=dim)

    gen = torch.Generator().manual_seed(seed)
    example, fresh = (_rand(gen, shape),), (_rand(gen, shape),)
    result = _run("litert::log_softmax", _Dynamic(forward), example, fresh, exact=False)
    assert _calls(result.program, aten._log_softmax.default, aten.log_softmax.int) == []


# ----------------------------------------------------------------------------- litert::matmul_constant_lhs


@FUZZ
@given(m=st.integers(1, 5), k=st.integers(1, 5), n=st.integers(1, 5), batch=st.lists(st.integers(1, 3), max_size=2),
       seed=st.integers(0, 2**31 - 1))  # fmt: skip
def test_matmul_constant_lhs_moves_the_constant_right(m, k, n, batch, seed):
    gen = torch.Generator().manual_seed(seed)

    def forward(mod, x):
        return torch.matmul(mod.pool, x)

    model = _Dynamic(forward, {"pool": _rand(gen, [m, k])})
    example, fresh = (_rand(gen, [*batch, k, n]),), (_rand(gen, [*batch, k, n]),)
    result = _run("litert::matmul_constant_lhs", model, example, fresh, exact=False)
    program = result.program
    assert all(lifted_value(program, node.args[0]) is None for node in _calls(program, aten.matmul.default))


# ----------------------------------------------------------------------------- litert::select_operands


@FUZZ
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_select_operands_store_broadcast_branches_at_full_shape(shape, seed, data):
    def branch(label: str) -> list[int]:
        ones = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)), label=label)
        return [1 if o else s for o, s in zip(ones, shape, strict=True)]

    gen = torch.Generator().manual_seed(seed)
    buffers = {"a": _rand(gen, branch("a")), "b": _rand(gen, branch("b"))}
    runtime_else = data.draw(st.booleans(), label="runtime else branch")

    def forward(m, x):
        return torch.where(x > 0, m.a, x * 2.0 if runtime_else else m.b)

    example, fresh = (_rand(gen, shape),), (_rand(gen, shape),)
    result = _run("litert::select_operands", _Dynamic(forward, buffers), example, fresh, exact=True)
    program = result.program
    for node in _calls(program, aten.where.self):
        out = list(node.meta["val"].shape)
        for a in node.args[1:]:
            value = lifted_value(program, a) if isinstance(a, torch.fx.Node) else None
            assert value is None or value.numel() <= 1 or list(value.shape) == out


# ----------------------------------------------------------------------------- litert::constant_operands_4d


@FUZZ
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_constant_operands_run_on_rows(shape, seed, data):
    ones = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)), label="broadcast")
    const = [1 if o else s for o, s in zip(ones, shape, strict=True)]
    lead = data.draw(st.integers(0, len(const) - 1), label="dropped leading dims")
    const = const[lead:] if all(n == 1 for n in const[:lead]) else const
    fn = data.draw(st.sampled_from(["add", "mul", "sub", "div", "maximum"]), label="fn")
    scalar_runtime = data.draw(st.booleans(), label="a runtime scalar operand too")
    gen = torch.Generator().manual_seed(seed)

    def forward(m, x, s):
        y = getattr(torch, fn)(x, m.c)
        return y + s if scalar_runtime else y

    model = _Dynamic(forward, {"c": torch.rand(const) + 0.5})
    example, fresh = ((_rand(gen, shape), _rand(gen, [])) for _ in range(2))
    result = _run("litert::constant_operands_4d", model, example, fresh, exact=True)
    program = result.program
    for node in program.graph.nodes:
        if node.op != "call_function" or torch.Tag.pointwise not in getattr(node.target, "tags", ()):
            continue
        out = node.meta["val"]
        for a in node.args:
            value = lifted_value(program, a) if isinstance(a, torch.fx.Node) else None
            if value is not None and value.numel() > 1 and out.dim() < 4:
                aligned = [1] * (out.dim() - value.dim()) + list(value.shape)
                assert out.dim() > 1 and all(s == 1 for s in aligned[:-1]), (node.format_node(), value.shape)


@pytest.mark.parametrize("name", ["legalize_rank", "fold_constants", "scatter_as_cat", "index_as_select",
                                  "affine_grid", "explicit_pool_stride", "litert::broadcast_as_gather",
                                  "litert::log_softmax", "litert::matmul_constant_lhs", "litert::select_operands",
                                  "litert::constant_operands_4d"])  # fmt: skip
def test_every_fuzzed_pass_is_registered(name):
    assert callable(get_pass(name))
