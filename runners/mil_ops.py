"""Numpy kernels for the MIL ops of Core ML ML programs, used by ``runners/coreml_mil.py``.

One function per MIL op type, registered in ``KERNELS``. A kernel gets an ``OpCall``
(its inputs by name, already numpy values; its declared output dtypes and shapes) and
returns one array or a tuple of arrays (ops with several outputs, e.g. ``split``). The
executor then rounds each result to the dtype the package declares for that output, so the
semantics are the same for every op:

- an op computes on its inputs as the package stores them (an fp16 tensor holds fp16 values),
  in at least fp32, and its result is rounded once to its declared output dtype;
- for elementwise arithmetic on fp16 operands (``add``, ``mul``, ``floor``, ``cast`` ...) that
  is IEEE fp16 arithmetic, one rounding per op, exactly what an fp16 device computes (numpy's
  float16 ufuncs compute each element in float32 and round; float32 holds the exact result of
  an fp16 add, sub or mul, so the rounding is the device's);
- ``conv``, ``matmul``/``linear``, reductions, norms, pooling, ``upsample_*`` and ``resample``
  accumulate in fp32 and round their output to fp16 once. A GPU or the Neural Engine may
  accumulate in fp16 and lose more; that part of a device's error is not modelled.

Conv runs as im2col (``sliding_window_view`` plus one matmul per group), so a 100-conv warper
at 256x192 runs in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

F32 = np.float32
MISSING: Any = object()


class KernelError(Exception):
    """A kernel cannot compute an op as the package states it (bad attribute, index out of range)."""


@dataclass
class OpCall:
    """What a kernel sees of one op."""

    type: str
    name: str
    inputs: dict[str, Any]  # name -> np.ndarray, or a tuple of them for variadic inputs
    out_dtypes: list[Any] = field(default_factory=list)  # numpy dtype per output, None when not a tensor
    out_shapes: list[tuple[int, ...] | None] = field(default_factory=list)  # None when not static

    def __getitem__(self, key: str) -> Any:
        if key not in self.inputs:
            raise KernelError(f"input {key!r} is missing")
        return self.inputs[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.inputs.get(key, default)

    def scalar(self, key: str, default: Any = MISSING) -> Any:
        """A const input as a Python scalar (bool, int, float or str)."""
        if key not in self.inputs:
            if default is MISSING:
                raise KernelError(f"input {key!r} is missing")
            return default
        v = np.asarray(self.inputs[key])
        if v.size != 1:
            raise KernelError(f"input {key!r} should be a scalar, got shape {v.shape}")
        return v.reshape(()).item()

    def ints(self, key: str, default: Any = MISSING) -> list[int]:
        if key not in self.inputs:
            if default is MISSING:
                raise KernelError(f"input {key!r} is missing")
            return default
        return [int(v) for v in np.asarray(self.inputs[key]).reshape(-1)]

    def bools(self, key: str, n: int) -> list[bool]:
        if key not in self.inputs:
            return [False] * n
        return [bool(v) for v in np.asarray(self.inputs[key]).reshape(-1)]

    def out_shape(self, i: int = 0) -> tuple[int, ...] | None:
        return self.out_shapes[i] if i < len(self.out_shapes) else None

    def out_dtype(self, i: int = 0) -> Any:
        return self.out_dtypes[i] if i < len(self.out_dtypes) else None


Kernel = Callable[[OpCall], Any]
KERNELS: dict[str, Kernel] = {}


def kernel(*names: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for n in names:
            KERNELS[n] = fn
        return fn

    return register


def wide(x: np.ndarray) -> np.ndarray:
    """fp16 (or narrower float) values widened to fp32 for a kernel that accumulates; others as is."""
    x = np.asarray(x)
    return x.astype(F32) if x.dtype == np.float16 else x


# ---------------------------------------------------------------------------------------
# Elementwise


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _binary(fn: Callable[[Any, Any], Any]) -> Kernel:
    def k(op: OpCall) -> Any:
        return fn(np.asarray(op["x"]), np.asarray(op["y"]))

    return k


for _name, _fn in _BINARY.items():
    KERNELS[_name] = _binary(_fn)


@kernel("real_div")
def real_div(op: OpCall) -> Any:
    x, y = np.asarray(op["x"]), np.asarray(op["y"])
    if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer):
        return np.true_divide(x, y).astype(F32)
    return np.true_divide(x, y)


@kernel("floor_div")
def floor_div(op: OpCall) -> Any:
    return np.floor_divide(np.asarray(op["x"]), np.asarray(op["y"]))


@kernel("mod")
def mod(op: OpCall) -> Any:
    return np.mod(np.asarray(op["x"]), np.asarray(op["y"]))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


# Unary ops whose result is exact in the input dtype (computed on it directly) ...
_EXACT_UNARY: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "round": np.round,  # half to even, as coremltools' own value inference
    "sign": np.sign,
    "logical_not": np.logical_not,
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "relu6": lambda x: np.clip(x, np.zeros((), x.dtype), np.full((), 6, x.dtype)),
}
# ... and transcendental ones, computed in fp32 (fp64 for fp32) and rounded by the executor.
_WIDE_UNARY: dict[str, Callable[[Any], Any]] = {
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "cos": np.cos,
    "cosh": np.cosh,
    "exp": np.exp,
    "exp2": np.exp2,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "erf": _erf,
    "sigmoid": lambda x: 0.5 * (np.tanh(0.5 * x) + 1),  # no overflow for large |x|
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "silu": lambda x: x * (0.5 * (np.tanh(0.5 * x) + 1)),
}


def _unary(fn: Callable[[Any], Any], widen: bool) -> Kernel:
    def k(op: OpCall) -> Any:
        x = np.asarray(op["x"])
        return fn(wide(x) if widen else x)

    return k


for _name, _fn in _EXACT_UNARY.items():
    KERNELS[_name] = _unary(_fn, widen=False)
for _name, _fn in _WIDE_UNARY.items():
    KERNELS[_name] = _unary(_fn, widen=True)


@kernel("leaky_relu")
def leaky_relu(op: OpCall) -> Any:
    x, a = wide(op["x"]), op.scalar("alpha")
    return np.where(x >= 0, x, x * F32(a))


@kernel("elu")
def elu(op: OpCall) -> Any:
    x, a = wide(op["x"]), op.scalar("alpha")
    return np.where(x > 0, x, F32(a) * np.expm1(np.minimum(x, 0)))


@kernel("clamped_relu")
def clamped_relu(op: OpCall) -> Any:
    x, a, b = wide(op["x"]), op.scalar("alpha"), op.scalar("beta")
    return np.minimum(np.where(x >= 0, x, x * F32(a)), F32(b))


@kernel("thresholded_relu")
def thresholded_relu(op: OpCall) -> Any:
    x = wide(op["x"])
    return np.where(x > F32(op.scalar("alpha")), x, 0)


@kernel("threshold")
def threshold(op: OpCall) -> Any:
    return np.maximum(wide(op["x"]), F32(op.scalar("alpha")))


@kernel("scaled_tanh")
def scaled_tanh(op: OpCall) -> Any:
    return F32(op.scalar("alpha")) * np.tanh(F32(op.scalar("beta")) * wide(op["x"]))


@kernel("linear_activation")
def linear_activation(op: OpCall) -> Any:
    return F32(op.scalar("alpha")) * wide(op["x"]) + F32(op.scalar("beta"))


@kernel("sigmoid_hard")
def sigmoid_hard(op: OpCall) -> Any:
    return np.clip(F32(op.scalar("alpha")) * wide(op["x"]) + F32(op.scalar("beta")), 0, 1)


@kernel("prelu")
def prelu(op: OpCall) -> Any:
    x, a = wide(op["x"]), wide(op["alpha"]).reshape(-1)
    shape = [1] * x.ndim
    shape[-3] = a.size  # one slope per channel, x is [B, C, *D] with rank(D) == 2 (or [C, *D])
    return np.where(x >= 0, x, x * a.reshape(shape))


@kernel("gelu")
def gelu(op: OpCall) -> Any:
    x, mode = wide(op["x"]), op.scalar("mode", "EXACT")
    if mode == "EXACT":
        return (0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * (0.5 * (np.tanh(0.5 * 1.702 * x) + 1))
    raise KernelError(f"gelu mode {mode!r} is not one of EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION")


@kernel("clip")
def clip(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    return np.minimum(np.maximum(x, np.asarray(op["alpha"], x.dtype)), np.asarray(op["beta"], x.dtype))


def _eps(op: OpCall, default: float) -> Any:
    return F32(op.scalar("epsilon", default))


@kernel("inverse")
def inverse(op: OpCall) -> Any:
    return 1 / (wide(op["x"]) + _eps(op, 1e-4))


@kernel("log")
def log(op: OpCall) -> Any:
    return np.log(wide(op["x"]) + _eps(op, 1e-45))


@kernel("rsqrt")
def rsqrt(op: OpCall) -> Any:
    return 1 / np.sqrt(wide(op["x"]) + _eps(op, 1e-12))


@kernel("select")
def select(op: OpCall) -> Any:
    return np.where(np.asarray(op["cond"]).astype(bool), op["a"], op["b"])


_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "bool": np.bool_,
}


@kernel("cast")
def cast(op: OpCall) -> Any:
    name = op.scalar("dtype")
    if name not in _CAST_DTYPES:
        raise KernelError(f"cast to {name!r} is not one of {', '.join(_CAST_DTYPES)}")
    x = np.asarray(op["x"])
    to = np.dtype(_CAST_DTYPES[name])
    if np.issubdtype(to, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)  # toward zero, as coremltools' value inference (astype)
    return x.astype(to)


# ---------------------------------------------------------------------------------------
# Reductions


def _axes(op: OpCall, rank: int) -> tuple[int, ...] | None:
    axes = op.get("axes")
    if axes is None:
        return None
    return tuple(int(a) % rank for a in np.asarray(axes).reshape(-1))


def _reduce(fn: Callable[..., Any]) -> Kernel:
    def k(op: OpCall) -> Any:
        x = wide(op["x"])
        keep = bool(op.scalar("keep_dims", False))
        return fn(x, _axes(op, x.ndim), keep)

    return k


_REDUCTIONS: dict[str, Callable[..., Any]] = {
    "reduce_sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduce_mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k)),
    "reduce_sum_square": lambda x, a, k: np.sum(x * x, axis=a, keepdims=k),
    "reduce_log_sum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "reduce_log_sum_exp": lambda x, a, k: _logsumexp(x, a, k),
}


def _logsumexp(x: np.ndarray, axes: Any, keep: bool) -> np.ndarray:
    m = np.max(x, axis=axes, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


for _name, _fn in _REDUCTIONS.items():
    KERNELS[_name] = _reduce(_fn)


@kernel("reduce_argmax", "reduce_argmin")
def reduce_arg(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis = int(op.scalar("axis", -1)) % x.ndim
    fn = np.argmax if op.type == "reduce_argmax" else np.argmin
    out = fn(x, axis=axis)
    if op.scalar("keep_dims", False):
        out = np.expand_dims(out, axis)
    return out.astype(np.int32)


@kernel("softmax")
def softmax(op: OpCall) -> Any:
    x = wide(op["x"])
    axis = int(op.scalar("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------
# Shapes, slicing, indexing


@kernel("reshape")
def reshape(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    declared = op.out_shape()
    if declared is not None:
        return x.reshape(declared)
    shape = op.ints("shape")
    out = list(shape)
    for i, s in enumerate(shape):  # a 0 copies the input dim counted from the right (iOS17 rule)
        if s == 0:
            j = x.ndim - (len(shape) - i)
            out[i] = x.shape[j] if j >= 0 else 1
    return x.reshape(out)


@kernel("transpose")
def transpose(op: OpCall) -> Any:
    return np.transpose(op["x"], op.ints("perm"))


@kernel("expand_dims")
def expand_dims(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axes = op.ints("axes")
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(a % rank for a in axes)))


@kernel("squeeze")
def squeeze(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axes = op.get("axes")
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1)))


@kernel("concat")
def concat(op: OpCall) -> Any:
    values = [np.asarray(v) for v in op["values"]]
    if all(v.ndim == 0 for v in values):  # MIL concatenates scalars into a vector (a shape)
        values = [v.reshape(1) for v in values]
    axis = int(op.scalar("axis")) % max(values[0].ndim, 1)
    if op.scalar("interleave", False):
        parts = [np.split(v, v.shape[axis], axis=axis) for v in values]
        return np.concatenate([p for group in zip(*parts, strict=True) for p in group], axis=axis)
    return np.concatenate(values, axis=axis)


@kernel("stack")
def stack(op: OpCall) -> Any:
    return np.stack([np.asarray(v) for v in op["values"]], axis=int(op.scalar("axis")))


@kernel("split")
def split(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis = int(op.scalar("axis")) % x.ndim
    sizes = op.get("split_sizes")
    if sizes is not None:
        cuts = np.cumsum(np.asarray(sizes).reshape(-1))[:-1]
        return tuple(np.split(x, cuts, axis=axis))
    return tuple(np.split(x, int(op.scalar("num_splits")), axis=axis))


@kernel("slice_by_index")
def slice_by_index(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    rank = x.ndim
    begin, end = op.ints("begin"), op.ints("end")
    stride = op.ints("stride", [1] * rank)
    bmask, emask, smask = op.bools("begin_mask", rank), op.bools("end_mask", rank), op.bools("squeeze_mask", rank)
    index: list[Any] = []
    for i in range(rank):
        if smask[i]:
            index.append(begin[i])  # one element at begin (numpy rules for a negative begin)
        else:
            index.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]))
    return x[tuple(index)]


@kernel("slice_by_size")
def slice_by_size(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    begin, size = op.ints("begin"), op.ints("size")
    index = []
    for i, (b, s) in enumerate(zip(begin, size, strict=True)):
        b = b % x.shape[i] if x.shape[i] else 0
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


@kernel("tile")
def tile(op: OpCall) -> Any:
    return np.tile(op["x"], op.ints("reps"))


@kernel("pad")
def pad(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    p = op.ints("pad")
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = op.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(op.get("constant_val", 0), x.dtype))
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise KernelError(f"pad mode {mode!r} is not one of constant, reflect, replicate")


@kernel("fill")
def fill(op: OpCall) -> Any:
    value = np.asarray(op.get("value", 0.0))
    return np.full(op.ints("shape"), value, dtype=op.out_dtype() or value.dtype)


@kernel("fill_like")
def fill_like(op: OpCall) -> Any:
    value = np.asarray(op.get("value", 0.0))
    return np.full(np.asarray(op["ref_tensor"]).shape, value, dtype=op.out_dtype() or value.dtype)


@kernel("range_1d")
def range_1d(op: OpCall) -> Any:
    return np.arange(op.scalar("start"), op.scalar("end"), op.scalar("step"))


@kernel("shape")
def shape_(op: OpCall) -> Any:
    return np.asarray(np.shape(op["x"]), dtype=np.int32)


def _check_indices(idx: np.ndarray, size: int, what: str) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)]
        raise KernelError(
            f"{what}: {bad.size} index value(s) out of range [-{size}, {size}) (e.g. {int(bad.reshape(-1)[0])}); "
            "on a device the result is undefined"
        )
    return np.where(idx < 0, idx + size, idx)


@kernel("gather")
def gather(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis = int(op.scalar("axis", 0)) % x.ndim
    batch_dims = int(op.scalar("batch_dims", 0))
    idx = _check_indices(op["indices"], x.shape[axis], "gather")
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    bshape = x.shape[:batch_dims]
    xb = x.reshape(-1, *x.shape[batch_dims:])
    ib = idx.reshape(-1, *idx.shape[batch_dims:])
    out = np.stack([np.take(xb[b], ib[b], axis=axis - batch_dims) for b in range(xb.shape[0])])
    return out.reshape(*bshape, *out.shape[1:])


@kernel("gather_along_axis")
def gather_along_axis(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis = int(op.scalar("axis", 0)) % x.ndim
    idx = _check_indices(op["indices"], x.shape[axis], "gather_along_axis")
    return np.take_along_axis(x, idx, axis=axis)


@kernel("gather_nd")
def gather_nd(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    idx = np.asarray(op["indices"]).astype(np.int64)
    batch_dims = int(op.scalar("batch_dims", 0))
    k = idx.shape[-1]

    def one(xv: np.ndarray, iv: np.ndarray) -> np.ndarray:
        cols = [_check_indices(iv[..., j], xv.shape[j], "gather_nd") for j in range(k)]
        return xv[tuple(cols)]

    if batch_dims == 0:
        return one(x, idx)
    bshape = x.shape[:batch_dims]
    xb, ib = x.reshape(-1, *x.shape[batch_dims:]), idx.reshape(-1, *idx.shape[batch_dims:])
    out = np.stack([one(xb[b], ib[b]) for b in range(xb.shape[0])])
    return out.reshape(*bshape, *out.shape[1:])


@kernel("one_hot")
def one_hot(op: OpCall) -> Any:
    idx = np.asarray(op["indices"]).astype(np.int64)
    depth = int(op.scalar("one_hot_vector_size"))
    axis = int(op.scalar("axis", -1))
    on, off = op.scalar("on_value", 1), op.scalar("off_value", 0)
    hot = np.expand_dims(idx, -1) == np.arange(depth)
    out = np.where(hot, on, off)
    return np.moveaxis(out, -1, axis % out.ndim)


@kernel("cumsum")
def cumsum(op: OpCall) -> Any:
    x = wide(op["x"])
    axis = int(op.scalar("axis", 0))
    if op.scalar("reverse", False):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if op.scalar("exclusive", False):
        out = out - x
    return np.flip(out, axis) if op.scalar("reverse", False) else out


@kernel("reverse")
def reverse(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axes = op.get("axes")
    return np.flip(x, axis=None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1)))


@kernel("band_part")
def band_part(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    lower, upper = int(op.scalar("lower", -1)), int(op.scalar("upper", -1))
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, np.zeros((), x.dtype))


@kernel("argsort")
def argsort(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis = int(op.scalar("axis", -1))
    order = np.argsort(-x if op.scalar("ascending", False) is False else x, axis=axis, kind="stable")
    return order.astype(np.int32)


@kernel("topk")
def topk(op: OpCall) -> Any:
    """(values, indices) of the k largest (``ascending``: smallest) along ``axis``, sorted;
    ties keep the lower index first."""
    x = np.asarray(op["x"])
    axis, k = int(op.scalar("axis", -1)), int(op.scalar("k", 1))
    ascending = bool(op.scalar("ascending", False))
    order = np.take(np.argsort(x if ascending else -x, axis=axis, kind="stable"), np.arange(k), axis=axis)
    dtype = np.int32 if str(op.scalar("output_indices_dtype", "int32")) == "int32" else np.uint16
    return np.take_along_axis(x, order, axis=axis), order.astype(dtype)


@kernel("flatten2d")
def flatten2d(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis = int(op.scalar("axis", 1)) % (x.ndim + 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _depth_to_space(x: np.ndarray, r: int) -> np.ndarray:
    b, c, h, w = x.shape
    return x.reshape(b, r, r, c // (r * r), h, w).transpose(0, 3, 4, 1, 5, 2).reshape(b, c // (r * r), h * r, w * r)


def _space_to_depth(x: np.ndarray, r: int) -> np.ndarray:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // r, r, w // r, r).transpose(0, 3, 5, 1, 2, 4).reshape(b, c * r * r, h // r, w // r)


@kernel("depth_to_space")
def depth_to_space(op: OpCall) -> Any:
    return _depth_to_space(np.asarray(op["x"]), int(op.scalar("block_size")))


@kernel("space_to_depth")
def space_to_depth(op: OpCall) -> Any:
    return _space_to_depth(np.asarray(op["x"]), int(op.scalar("block_size")))


@kernel("pixel_shuffle")
def pixel_shuffle(op: OpCall) -> Any:
    x, r = np.asarray(op["x"]), int(op.scalar("upscale_factor"))
    b, c, h, w = x.shape
    return x.reshape(b, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(b, c // (r * r), h * r, w * r)


@kernel("pixel_unshuffle")
def pixel_unshuffle(op: OpCall) -> Any:
    x, r = np.asarray(op["x"]), int(op.scalar("downscale_factor"))
    b, c, h, w = x.shape
    return x.reshape(b, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(b, c * r * r, h // r, w // r)


@kernel("sliding_windows")
def sliding_windows(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    axis, size, stride = int(op.scalar("axis")) % x.ndim, int(op.scalar("size")), int(op.scalar("stride", 1))
    win = sliding_window_view(x, size, axis=axis)  # window is the last axis
    win = np.moveaxis(win, -1, axis + 1)
    index = [slice(None)] * win.ndim
    index[axis] = slice(None, None, stride)
    return win[tuple(index)]


@kernel("einsum")
def einsum(op: OpCall) -> Any:
    values = [wide(v) for v in op["values"]]
    return np.einsum(str(op.scalar("equation")), *values)


# ---------------------------------------------------------------------------------------
# Linear algebra, normalization


@kernel("matmul")
def matmul(op: OpCall) -> Any:
    x, y = wide(op["x"]), wide(op["y"])
    if op.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if op.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@kernel("linear")
def linear(op: OpCall) -> Any:
    x, w = wide(op["x"]), wide(op["weight"])
    out = np.matmul(x, w.T)
    b = op.get("bias")
    return out if b is None else out + wide(b)


def _channel(v: Any, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over [B, C, *D]."""
    return wide(v).reshape(-1, *([1] * (rank - 2)))


def _scale_shift(op: OpCall, out: Any, shaped: Any) -> Any:
    """A norm's optional ``gamma`` and ``beta``, each brought to ``out``'s layout by ``shaped``."""
    if op.get("gamma") is not None:
        out = out * shaped(op["gamma"])
    if op.get("beta") is not None:
        out = out + shaped(op["beta"])
    return out


@kernel("batch_norm")
def batch_norm(op: OpCall) -> Any:
    x = wide(op["x"])
    eps = F32(op.scalar("epsilon", 1e-5))
    out = (x - _channel(op["mean"], x.ndim)) / np.sqrt(_channel(op["variance"], x.ndim) + eps)
    return _scale_shift(op, out, lambda v: _channel(v, x.ndim))


@kernel("instance_norm")
def instance_norm(op: OpCall) -> Any:
    x = wide(op["x"])
    axes = tuple(range(2, x.ndim))
    eps = F32(op.scalar("epsilon", 1e-5))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    return _scale_shift(op, out, lambda v: _channel(v, x.ndim))


@kernel("layer_norm")
def layer_norm(op: OpCall) -> Any:
    x = wide(op["x"])
    axes = _axes(op, x.ndim) or tuple(range(x.ndim))
    eps = F32(op.scalar("epsilon", 1e-5))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    norm_shape = [x.shape[a] for a in sorted(axes)]
    return _scale_shift(op, out, lambda v: wide(v).reshape(norm_shape))


@kernel("l2_norm")
def l2_norm(op: OpCall) -> Any:
    x = wide(op["x"])
    axes = tuple(range(max(x.ndim - 3, 1), x.ndim))  # the last three dims (all but the batch)
    eps = F32(op.scalar("epsilon", 1e-6))
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=axes, keepdims=True), eps))


# ---------------------------------------------------------------------------------------
# Convolution and pooling


def _same_pads(size: int, k: int, s: int, d: int, lower: bool) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _pads(op: OpCall, spatial: tuple[int, ...], kernel: list[int], strides: list[int], dil: list[int],
          default_type: str) -> list[tuple[int, int]]:  # fmt: skip
    pad_type = op.scalar("pad_type", default_type)
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = op.ints("pad", [0] * (2 * n))
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        return [_same_pads(spatial[i], kernel[i], strides[i], dil[i], pad_type == "same_lower") for i in range(n)]
    raise KernelError(f"pad_type {pad_type!r} is not one of valid, custom, same, same_lower")


def _windows(x: np.ndarray, kernel: list[int], strides: list[int], dil: list[int], out: list[int]) -> np.ndarray:
    """[B, C, *out, *kernel] strided view of an already padded x [B, C, *spatial]."""
    n = len(kernel)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    index = [slice(None), slice(None)]
    index += [slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides, strict=True)]
    index += [slice(None, None, d) for d in dil]
    return win[tuple(index)]


def _out_sizes(op: OpCall, padded: tuple[int, ...], kernel: list[int], strides: list[int], dil: list[int],
               ceil_mode: bool = False) -> list[int]:  # fmt: skip
    declared = op.out_shape()
    if declared is not None:
        return list(declared[2:])
    out = []
    for size, k, s, d in zip(padded, kernel, strides, dil, strict=True):
        span = (k - 1) * d + 1
        out.append((-(-(size - span) // s) if ceil_mode else (size - span) // s) + 1)
    return out


def _spatial_args(op: OpCall, n: int) -> tuple[list[int], list[int]]:
    return op.ints("strides", [1] * n), op.ints("dilations", [1] * n)


COLS_BYTES = 64 << 20  # im2col buffers are built in input-channel chunks of about this size


@kernel("conv")
def conv(op: OpCall) -> Any:
    x, w = wide(op["x"]), wide(op["weight"])
    n = x.ndim - 2
    if n not in (1, 2, 3):
        raise KernelError(f"conv on a rank-{x.ndim} input (only 1-D, 2-D and 3-D convolutions)")
    groups = int(op.scalar("groups", 1))
    kernel_ = list(w.shape[2:])
    strides, dil = _spatial_args(op, n)
    pads = _pads(op, x.shape[2:], kernel_, strides, dil, "valid")
    xp = np.pad(x, [(0, 0), (0, 0), *pads]) if any(p != (0, 0) for p in pads) else x
    out = _out_sizes(op, xp.shape[2:], kernel_, strides, dil)
    if n == 1:  # as a 2-D conv of height 1
        y = _conv2d(xp[:, :, None], w[:, :, None], [1, *strides], [1, *dil], groups, [1, *out])[:, :, 0]
    elif n == 2:
        y = _conv2d(xp, w, strides, dil, groups, out)
    else:
        y = _conv_nd(xp, w, strides, dil, groups, out)
    bias = op.get("bias")
    if bias is not None:
        y = y + _channel(bias, y.ndim)
    return y


def _conv2d(xp: np.ndarray, w: np.ndarray, strides: list[int], dil: list[int], groups: int,
            out: list[int]) -> np.ndarray:  # fmt: skip
    """2-D convolution of an already padded fp32 input, as one GEMM per group and channel chunk:
    ``W [Cout, Cin*kh*kw] @ cols [Cin*kh*kw, pixels]``.

    With stride 1 the columns are contiguous runs of the flattened padded image (each tap is
    the image shifted by ``ky*Wp + kx``), so building them is a row copy; outputs computed in
    the padding columns are dropped. Other strides take the strided windows (im2col)."""
    b, c, hp, wp = xp.shape
    cout, cin_g, kh, kw = w.shape
    cout_g = cout // groups
    ho, wo = out
    if cin_g == 1 and cout_g == 1 and groups > 1:  # depthwise: one multiply-add per tap
        y = np.zeros((b, cout, ho, wo), F32)
        for ky in range(kh):
            for kx in range(kw):
                oy, ox = ky * dil[0], kx * dil[1]
                rows = slice(oy, oy + (ho - 1) * strides[0] + 1, strides[0])
                cols = slice(ox, ox + (wo - 1) * strides[1] + 1, strides[1])
                y += xp[:, :, rows, cols] * w[:, 0, ky, kx].reshape(1, -1, 1, 1)
        return y
    shifted = strides == [1, 1]
    row = wp if shifted else wo  # output columns computed per output row
    y = np.zeros((b, cout, ho * row), F32)
    chunk = max(1, min(cin_g, COLS_BYTES // max(1, 4 * kh * kw * ho * row)))
    for bi in range(b):
        if shifted:
            flat = xp[bi].reshape(c, hp * wp)
            span = (ho - 1) * wp + wo
        else:
            win = _windows(xp[bi : bi + 1], [kh, kw], strides, dil, out)[0]  # [C, ho, wo, kh, kw]
        for g in range(groups):
            for c0 in range(0, cin_g, chunk):
                c1 = min(c0 + chunk, cin_g)
                lo, hi = g * cin_g + c0, g * cin_g + c1
                if shifted:
                    cols = np.empty((c1 - c0, kh, kw, ho * wp), F32)
                    cols[..., span:] = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            off = ky * dil[0] * wp + kx * dil[1]
                            cols[:, ky, kx, :span] = flat[lo:hi, off : off + span]
                else:
                    cols = np.ascontiguousarray(win[lo:hi].transpose(0, 3, 4, 1, 2))
                wg = w[g * cout_g : (g + 1) * cout_g, c0:c1].reshape(cout_g, -1)
                y[bi, g * cout_g : (g + 1) * cout_g] += wg @ cols.reshape(wg.shape[1], -1)
    return y.reshape(b, cout, ho, row)[..., :wo]


def _conv_nd(xp: np.ndarray, w: np.ndarray, strides: list[int], dil: list[int], groups: int,
             out: list[int]) -> np.ndarray:  # fmt: skip
    """Any-rank convolution by im2col (3-D convs; rare in the graphs this runs)."""
    n = xp.ndim - 2
    kernel_ = list(w.shape[2:])
    cols = _windows(xp, kernel_, strides, dil, out)  # [B, C, *out, *k]
    b, cin = xp.shape[:2]
    cout = w.shape[0]
    cin_g, cout_g = cin // groups, cout // groups
    kprod, sp = int(np.prod(kernel_)), int(np.prod(out))
    results = []
    for g in range(groups):
        cg = cols[:, g * cin_g : (g + 1) * cin_g]  # [B, cin_g, *out, *k]
        # [B, cin_g, *k, *out] -> [B, cin_g * prod(k), prod(out)], one copy
        order = [0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n)]
        cg = np.ascontiguousarray(cg.transpose(order)).reshape(b, cin_g * kprod, sp)
        wg = w[g * cout_g : (g + 1) * cout_g].reshape(cout_g, cin_g * kprod)
        results.append(np.matmul(wg, cg))  # [B, cout_g, prod(out)]
    return np.concatenate(results, axis=1).reshape(b, cout, *out)


@kernel("conv_transpose")
def conv_transpose(op: OpCall) -> Any:
    """Transposed conv as a conv of the zero-upsampled input with the flipped, swapped kernel."""
    x, w = wide(op["x"]), wide(op["weight"])  # w: [Cin, Cout/groups, *k]
    n = x.ndim - 2
    groups = int(op.scalar("groups", 1))
    kernel_ = list(w.shape[2:])
    strides, dil = _spatial_args(op, n)
    # Zero-insert the input by the strides.
    up_shape = [x.shape[0], x.shape[1]] + [(s_ - 1) * st + 1 for s_, st in zip(x.shape[2:], strides, strict=True)]
    up = np.zeros(up_shape, x.dtype)
    up[(slice(None), slice(None), *[slice(None, None, st) for st in strides])] = x
    pad_type = op.scalar("pad_type", "valid")
    if pad_type not in ("valid", "custom"):
        raise KernelError(f"conv_transpose with pad_type {pad_type!r} (only valid and custom here)")
    p = op.ints("pad", [0] * (2 * n)) if pad_type == "custom" else [0] * (2 * n)
    declared = op.out_shape()
    full = [(k - 1) * d for k, d in zip(kernel_, dil, strict=True)]
    widths = []
    for i in range(n):
        lo = full[i] - p[2 * i]
        natural = (x.shape[2 + i] - 1) * strides[i] + full[i] + 1 - p[2 * i] - p[2 * i + 1]
        want = declared[2 + i] if declared is not None else natural
        hi = want + full[i] - lo - up_shape[2 + i]
        widths.append((lo, hi))
    cin = x.shape[1]
    cin_g = cin // groups
    cout_g = w.shape[1]
    # [Cin, Cout/g, *k] -> [Cout, Cin/g, *k], flipped spatially
    wf = np.flip(w, axis=tuple(range(2, 2 + n)))
    wf = wf.reshape(groups, cin_g, cout_g, *kernel_).swapaxes(1, 2).reshape(groups * cout_g, cin_g, *kernel_)
    lo_hi = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    upp = np.pad(up, [(0, 0), (0, 0), *lo_hi])
    crop = tuple([slice(None), slice(None)] + [slice(max(-lo, 0), upp.shape[2 + i] - max(-hi, 0))
                                                for i, (lo, hi) in enumerate(widths)])  # fmt: skip
    upp = upp[crop]
    call = OpCall("conv", op.name, {"x": upp, "weight": wf, "groups": np.int32(groups),
                                    "dilations": np.asarray(dil, np.int32)}, out_shapes=[declared])  # fmt: skip
    y = conv(call)
    bias = op.get("bias")
    return y if bias is None else y + _channel(bias, y.ndim)


def _pool(op: OpCall, kind: str) -> np.ndarray:
    x = wide(op["x"])
    n = x.ndim - 2
    kernel_ = op.ints("kernel_sizes")
    strides = op.ints("strides", [1] * n)
    dil = [1] * n
    pads = _pads(op, x.shape[2:], kernel_, strides, dil, "valid")
    ceil_mode = bool(op.scalar("ceil_mode", False))
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], pads, strict=True))
    out = _out_sizes(op, padded, kernel_, strides, dil, ceil_mode)
    # Extra room on the far side for windows that ceil_mode lets run past the input.
    extra = [max(0, (o - 1) * s + k - p) for o, s, k, p in zip(out, strides, kernel_, padded, strict=True)]
    widths = [(0, 0), (0, 0), *[(lo, hi + e) for (lo, hi), e in zip(pads, extra, strict=True)]]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, widths, constant_values=fill)
    axes = tuple(range(-n, 0))
    win = _windows(xp, kernel_, strides, dil, out)
    if kind == "max":
        return win.max(axis=axes)
    if kind == "l2":
        return np.sqrt((win * win).sum(axis=axes))
    total = win.sum(axis=axes)
    if op.scalar("exclude_padding_from_average", False):
        ones = np.pad(np.ones((1, 1, *x.shape[2:]), x.dtype), widths)
        count = _windows(ones, kernel_, strides, dil, out).sum(axis=axes)
        return total / np.maximum(count, 1)
    # Padding counts, but not the extra room ceil_mode adds past the padded input.
    ones = np.pad(np.ones((1, 1, *padded), x.dtype), [(0, 0), (0, 0), *[(0, e) for e in extra]])
    count = _windows(ones, kernel_, strides, dil, out).sum(axis=axes)
    return total / np.maximum(count, 1)


@kernel("max_pool")
def max_pool(op: OpCall) -> Any:
    return _pool(op, "max")


@kernel("avg_pool")
def avg_pool(op: OpCall) -> Any:
    return _pool(op, "avg")


@kernel("l2_pool")
def l2_pool(op: OpCall) -> Any:
    return _pool(op, "l2")


# ---------------------------------------------------------------------------------------
# Resizing and resampling


def _source_coords(n_in: int, n_out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """Source positions (float64) of the output samples of one axis (MIL upsample_bilinear's rule)."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    elif half_pixel:
        src = (i + 0.5) * (n_in / n_out) - 0.5
    else:
        src = i * (n_in / n_out)
    return np.clip(src, 0, n_in - 1)


def _lerp_axis(x: np.ndarray, axis: int, src: np.ndarray) -> np.ndarray:
    n_in = x.shape[axis]
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0).astype(F32)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    a, b = np.take(x, i0, axis=axis), np.take(x, i1, axis=axis)
    return a + (b - a) * frac


def _out_hw(op: OpCall, x: np.ndarray, fh: float, fw: float) -> tuple[int, int]:
    declared = op.out_shape()
    if declared is not None:
        return declared[-2], declared[-1]
    return int(math.floor(x.shape[-2] * fh)), int(math.floor(x.shape[-1] * fw))


@kernel("upsample_bilinear")
def upsample_bilinear(op: OpCall) -> Any:
    x = wide(op["x"])
    align = bool(op.scalar("align_corners", True))
    half = bool(op.scalar("half_pixel_centers", not align))
    ho, wo = _out_hw(op, x, float(op.scalar("scale_factor_height", 1)), float(op.scalar("scale_factor_width", 1)))
    y = _lerp_axis(x, x.ndim - 2, _source_coords(x.shape[-2], ho, align, half))
    return _lerp_axis(y, x.ndim - 1, _source_coords(x.shape[-1], wo, align, half))


_RESIZE_BILINEAR_MODES = {  # sampling_mode -> (align_corners, half_pixel) of _source_coords
    "STRICT_ALIGN_CORNERS": (True, False),
    "ALIGN_CORNERS": (True, False),
    "DEFAULT": (False, False),
    "UNALIGN_CORNERS": (False, True),
}


@kernel("resize_bilinear")
def resize_bilinear(op: OpCall) -> Any:
    x = wide(op["x"])
    mode = op.scalar("sampling_mode", "DEFAULT")
    if mode not in _RESIZE_BILINEAR_MODES:
        raise KernelError(f"resize_bilinear sampling_mode {mode!r} is not supported here")
    align, half = _RESIZE_BILINEAR_MODES[mode]
    ho = int(op.scalar("target_size_height", x.shape[-2]))
    wo = int(op.scalar("target_size_width", x.shape[-1]))
    y = _lerp_axis(x, x.ndim - 2, _source_coords(x.shape[-2], ho, align, half))
    return _lerp_axis(y, x.ndim - 1, _source_coords(x.shape[-1], wo, align, half))


def _nearest(x: np.ndarray, ho: int, wo: int) -> np.ndarray:
    hi = np.minimum(np.floor(np.arange(ho) * (x.shape[-2] / ho)).astype(np.int64), x.shape[-2] - 1)
    wi = np.minimum(np.floor(np.arange(wo) * (x.shape[-1] / wo)).astype(np.int64), x.shape[-1] - 1)
    return np.take(np.take(x, hi, axis=x.ndim - 2), wi, axis=x.ndim - 1)


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    fh, fw = float(op.scalar("scale_factor_height", 1)), float(op.scalar("scale_factor_width", 1))
    ho, wo = _out_hw(op, x, fh, fw)
    if fh.is_integer() and fw.is_integer() and (ho, wo) == (x.shape[-2] * int(fh), x.shape[-1] * int(fw)):
        return np.repeat(np.repeat(x, int(fh), axis=-2), int(fw), axis=-1)
    return _nearest(x, ho, wo)


@kernel("resize_nearest_neighbor")
def resize_nearest_neighbor(op: OpCall) -> Any:
    x = np.asarray(op["x"])
    return _nearest(x, int(op.scalar("target_size_height")), int(op.scalar("target_size_width")))


def _unnormalize(g: np.ndarray, size: int, mode: str, align: bool) -> np.ndarray:
    if mode == "unnormalized":
        return g
    if mode == "normalized_minus_one_to_one":
        return (g + 1) * 0.5 * (size - 1) if align else ((g + 1) * size - 1) * 0.5
    if mode == "normalized_zero_to_one":
        return g * (size - 1) if align else g * size - 0.5
    raise KernelError(f"resample coordinates_mode {mode!r} is not one of unnormalized, "
                      "normalized_minus_one_to_one, normalized_zero_to_one")  # fmt: skip


def _pad_index(i: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Where a tap at integer position ``i`` reads, and whether it reads the image at all."""
    if mode == "constant":
        inside = (i >= 0) & (i < size)
        return np.clip(i, 0, size - 1), inside
    if mode == "border":
        return np.clip(i, 0, size - 1), np.ones(i.shape, bool)
    if mode == "reflection":  # |1,2,3| -> |.. 2,3,2,1,2,3,2,1 ..|: about the edge pixels' centres
        if size == 1:
            return np.zeros_like(i), np.ones(i.shape, bool)
        period = 2 * (size - 1)
        m = np.mod(i, period)
        return np.where(m < size, m, period - m), np.ones(i.shape, bool)
    if mode == "symmetric":  # |1,2,3| -> |.. 3,2,1,1,2,3,3,2,1 ..|: about the image's edges
        period = 2 * size
        m = np.mod(i, period)
        return np.where(m < size, m, period - 1 - m), np.ones(i.shape, bool)
    raise KernelError(f"resample padding_mode {mode!r} is not one of constant, border, reflection, symmetric")


@kernel("resample")
def resample(op: OpCall) -> Any:
    """MIL ``resample`` (grid_sample): bilinear or nearest, four padding modes, three coordinate modes.

    The coordinates are taken as the package stores them (fp16 in an fp16 package: that
    rounding is the device's too); unnormalizing them and the bilinear weights are computed
    in fp32 (fp64 for fp32 inputs) and the output rounded once.
    """
    x = wide(op["x"])  # [B, C, H, W]
    g = np.asarray(op["coordinates"]).astype(F32)  # [B, Ho, Wo, 2] as (x, y)
    mode = op.scalar("sampling_mode")
    pad_mode = op.scalar("padding_mode")
    pad_value = F32(op.scalar("padding_value", 0.0))
    coords_mode = op.scalar("coordinates_mode")
    align = bool(op.scalar("align_corners"))
    b, c, h, w = x.shape
    px = _unnormalize(g[..., 0], w, coords_mode, align)
    py = _unnormalize(g[..., 1], h, coords_mode, align)
    if pad_mode == "border":
        px, py = np.clip(px, 0, w - 1), np.clip(py, 0, h - 1)
    flat = x.reshape(b, c, h * w)

    def tap(iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        """[B, C, Ho, Wo] values at integer positions, padding applied."""
        ry, in_y = _pad_index(iy, h, pad_mode)
        rx, in_x = _pad_index(ix, w, pad_mode)
        lin = (ry * w + rx).reshape(b, -1)
        vals = np.stack([flat[i][:, lin[i]] for i in range(b)]).reshape(b, c, *iy.shape[1:])
        if pad_mode == "constant":
            vals = np.where((in_y & in_x)[:, None], vals, pad_value)
        return vals

    if mode == "nearest":
        return tap(np.round(py).astype(np.int64), np.round(px).astype(np.int64))
    if mode != "bilinear":
        raise KernelError(f"resample sampling_mode {mode!r} is not one of bilinear, nearest")
    x0f, y0f = np.floor(px), np.floor(py)
    fx, fy = (px - x0f).astype(F32)[:, None], (py - y0f).astype(F32)[:, None]
    x0, y0 = x0f.astype(np.int64), y0f.astype(np.int64)
    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


# ---------------------------------------------------------------------------------------
# Compressed weights (constexpr ops: evaluated once, when the package is loaded)


@kernel("constexpr_affine_dequantize")
def constexpr_affine_dequantize(op: OpCall) -> Any:
    q = np.asarray(op["quantized_data"])
    axis = int(op.scalar("axis")) % q.ndim
    scale, zero = np.asarray(op["scale"]), np.asarray(op["zero_point"])
    shape = [1] * q.ndim
    if scale.ndim:
        shape[axis] = -1
    zero_b = zero.astype(F32).reshape(shape if zero.ndim else [])
    out = (q.astype(F32) - zero_b) * scale.astype(F32).reshape(shape if scale.ndim else [])
    return out.astype(scale.dtype)


@kernel("constexpr_cast")
def constexpr_cast(op: OpCall) -> Any:
    return cast(OpCall("cast", op.name, {"x": op["source_val"], "dtype": op["output_dtype"]}))


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """LSB-first bit-packed unsigned values (coremltools' packing) as int64."""
    bits = np.unpackbits(np.asarray(packed, np.uint8).reshape(-1), bitorder="little")[: count * nbits]
    weights = (1 << np.arange(nbits, dtype=np.int64))
    return bits.reshape(count, nbits).astype(np.int64) @ weights


@kernel("constexpr_lut_to_dense")
def constexpr_lut_to_dense(op: OpCall) -> Any:
    lut = np.asarray(op["lut"])
    idx = np.asarray(op["indices"])
    if "shape" in op.inputs:  # iOS16: packed uint8 indices, a 1-D LUT of 2**nbits entries
        shape = op.ints("shape")
        count = int(np.prod(shape))
        nbits = int(round(math.log2(lut.size)))
        values = idx.astype(np.int64).reshape(-1) if idx.size == count else _unpack_bits(idx, nbits, count)
        return lut.reshape(-1)[values].reshape(shape)
    # iOS18: indices keep the weight's shape; lut is [*blocks, 2**nbits, vector_size]
    if lut.shape[-1] != 1:
        raise KernelError("constexpr_lut_to_dense with vector palettization (vector_size > 1) is not supported")
    idx = idx.astype(np.int64)
    table = lut[..., 0]  # [*blocks, n]
    reps = [s // t for s, t in zip(idx.shape, table.shape[:-1], strict=True)]
    block_of = [np.arange(s) // r for s, r in zip(idx.shape, reps, strict=True)]
    grids = np.meshgrid(*block_of, indexing="ij")
    return table[(*grids, idx)]


@kernel("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(op: OpCall) -> Any:
    data = np.asarray(op["data"]).astype(F32)
    scale = np.asarray(op["scale"])

    def expand(v: np.ndarray) -> np.ndarray:
        v = v.astype(F32)
        for axis, (s, t) in enumerate(zip(data.shape, v.shape, strict=True)):
            v = np.repeat(v, s // t, axis=axis)
        return v

    offset = op.get("offset")
    if offset is not None:
        data = data - expand(np.asarray(offset))
    return (data * expand(scale)).astype(scale.dtype)


@kernel("constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(op: OpCall) -> Any:
    nonzero = np.asarray(op["nonzero_data"])
    mask = np.asarray(op["mask"])
    if "shape" in op.inputs:  # iOS16: bit-packed mask
        shape = op.ints("shape")
        flags = _unpack_bits(mask, 1, int(np.prod(shape))).astype(bool)
    else:
        shape, flags = list(mask.shape), mask.reshape(-1).astype(bool)
    out = np.zeros(int(np.prod(shape)), nonzero.dtype)
    out[flags] = nonzero.reshape(-1)
    return out.reshape(shape)


CONSTEXPR_OPS = frozenset(k for k in KERNELS if k.startswith("constexpr_"))
