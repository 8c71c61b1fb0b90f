"""The first layer that diverges: an artifact's intermediate tensors against the PyTorch
reference, node by node, keyed by torch module path and FX node.

The reference is an FX interpreter over the very program the artifact was emitted from
(after the shared and backend passes), so each of its nodes has the name the artifact's
tensors carry (``runners/taps.py`` reads them). A tap is matched to the node it names (the
last tap of that node whose shape fits: LiteRT keeps NHWC inside, onnxruntime's taps come
flattened); an artifact that does not carry FX names (not built by us) is matched at the
module level instead: the last tap of each module against the module's last node.

Per matched node: max abs error and the signal-to-noise ratio, ``SNR = 10 log10(sum ref^2 /
sum (got - ref)^2)`` over the 99% best-matching elements (index arithmetic flips a few
elements by a whole unit with no effect downstream; see ``_compare``). A node diverges when
its SNR falls under the precision's bound (``SNR_BOUNDS_DB``) or its tap holds NaN/Inf the
reference does not. The *first divergent layer* is the first node in topological order that
diverges while every matched node it reads from (its nearest matched ancestors) does not:
like Polygraphy's ``--mark all`` and onnx2tf's ``-cotof``, an op is the source when it fails
and its inputs pass. For quantized artifacts the nodes that *add* most error (the drop from
their inputs' SNR to theirs) are ranked as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirror.passes.graph_utils import module_path
from mirror.precisions import get_recipe
from mirror.runners.taps import Tap

# Per-layer bounds. fp32 backends agree with PyTorch to ~1e-6 relative (SNR > 100 dB) but a
# floor() near an integer may pick a neighbouring texel, so the bound leaves room for that;
# fp16 keeps about 3 decimal digits; int8 about 2.
SNR_BOUNDS_DB = {"fp32": 50.0, "fp16": 30.0, "int8": 15.0}
TOP = 3
TRIM = 0.01  # share of elements (the largest errors) the SNR leaves out; see _compare
_TORCH_DIR = str(Path(torch.__file__).parent)


@dataclass
class RefNode:
    """One reference node: where it is in the model, and the nodes it reads."""

    name: str
    module: str
    op: str
    source: str
    inputs: list[str]
    sampler: str = ""  # the grid_sample call this node was decomposed from, if any


@dataclass
class LayerError:
    node: str
    module: str
    op: str
    source: str
    tensor: str  # the artifact's tensor it was matched with
    artifact_op: str
    max_abs: float
    snr_db: float
    inputs_snr_db: float  # the worst of its nearest matched ancestors (cap if none)
    non_finite: bool = False

    @property
    def added(self) -> float:
        """Relative noise power this layer adds to what its inputs carried (0 if none)."""
        return max(0.0, _noise(self.snr_db) - _noise(self.inputs_snr_db))

    @property
    def added_db(self) -> float:
        """The added noise as an SNR: lower means this layer hurts more (inf: adds none)."""
        return -10.0 * math.log10(self.added) if self.added > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module or "(root)", "node": self.node, "op": self.op, "source": self.source,
            "tensor": self.tensor, "artifact_op": self.artifact_op, "max_abs": _num(self.max_abs),
            "snr_db": _num(self.snr_db), "inputs_snr_db": _num(self.inputs_snr_db),
            "added_db": _num(self.added_db), "non_finite": self.non_finite,
        }  # fmt: skip


@dataclass
class Localization:
    """What ``--localize`` found on one runner."""

    runner: str
    bound_db: float | None = None
    matching: str = ""  # "fx node" or "module"
    layers: list[LayerError] = field(default_factory=list)
    taps: int = 0
    unavailable: str | None = None

    @property
    def first_divergent(self) -> LayerError | None:
        return next((e for e in self.layers if self._bad(e) and self.inputs_ok(e)), None)

    def inputs_ok(self, e: LayerError) -> bool:
        return self.bound_db is None or e.inputs_snr_db >= self.bound_db

    def _bad(self, e: LayerError) -> bool:
        return e.non_finite or (self.bound_db is not None and e.snr_db < self.bound_db)

    def top_added(self, n: int = TOP) -> list[LayerError]:
        return sorted((e for e in self.layers if e.added > 0), key=lambda e: -e.added)[:n]

    def to_json(self) -> dict[str, Any]:
        if self.unavailable:
            return {"unavailable": self.unavailable}
        first = self.first_divergent
        return {
            "bound": f"SNR >= {self.bound_db:g} dB per layer", "matching": self.matching,
            "taps": self.taps, "layers_compared": len(self.layers),
            "first_divergent": first.to_json() if first else None,
            "top_error_added": [e.to_json() for e in self.top_added()],
            "worst_layers": [e.to_json() for e in sorted(self.layers, key=lambda e: e.snr_db)[:TOP]],
        }  # fmt: skip

    def brief(self) -> str:
        if self.unavailable:
            return f"not available: {self.unavailable}"
        first = self.first_divergent
        if first is None:
            return f"no layer under {self.bound_db:g} dB ({len(self.layers)} layers compared)"
        what = "NaN/Inf" if first.non_finite else f"SNR {first.snr_db:.1f} dB, max abs {first.max_abs:.3g}"
        return f"first divergent layer {first.module or '(root)'} ({first.op}, {first.source}): {what}"


def bound_for(precision: str) -> float:
    recipe = get_recipe(precision)
    if recipe.name == "fp32":
        return SNR_BOUNDS_DB["fp32"]
    return SNR_BOUNDS_DB["fp16"] if recipe.name == "fp16" else SNR_BOUNDS_DB["int8"]


def localize(
    runner: str, program: Any, feeds: dict[str, np.ndarray], input_names: list[str], taps: list[Tap], precision: str
) -> Localization:
    """Run ``program`` on ``feeds`` and compare each node with its tap; see the module docstring."""
    result = Localization(runner, bound_for(precision), taps=len(taps))
    by_fx = any(t.fx for t in taps)
    result.matching = "fx node" if by_fx else "module"
    nodes, measured = _measure(program, feeds, input_names, taps, by_fx)
    # A decomposed sampler is judged by its output only: inside it, index arithmetic is
    # discontinuous (a coordinate a rounding away from an integer flips floor() and the
    # fraction by a whole unit) and the gathers that follow make up for it exactly.
    sampler_output = {n.sampler: n.name for n in nodes if n.sampler}
    snr: dict[str, float] = {}
    nearest: dict[str, set[str]] = {}
    for node in nodes:
        near: set[str] = set()
        for i in node.inputs:
            near |= {i} if i in snr else nearest.get(i, set())
        nearest[node.name] = near
        if node.name not in measured or (node.sampler and sampler_output[node.sampler] != node.name):
            continue
        tap, (max_abs, snr_db, non_finite) = measured[node.name]
        inputs_db = min((snr[i] for i in near), default=math.inf)
        snr[node.name] = snr_db
        result.layers.append(LayerError(node.name, node.module, node.op, node.source, tap.name, tap.op,
                                        max_abs, snr_db, inputs_db, non_finite))  # fmt: skip
    return result


def _measure(
    program: Any, feeds: dict[str, np.ndarray], input_names: list[str], taps: list[Tap], by_fx: bool
) -> tuple[list[RefNode], dict[str, tuple[Tap, tuple[float, float, bool]]]]:
    """Every call of ``program`` in topological order, and the error of each matched one.

    Each reference value is compared as soon as the interpreter makes it and then dropped
    (the interpreter frees it after its last use), so the reference never holds the whole
    graph's tensors. A node is matched to its own last fitting tap (``by_fx``) or, at the
    module level, to its module's last fitting tap, where only each module's last matched
    node is kept.
    """
    index: dict[str, list[Tap]] = {}
    for tap in taps:
        key = tap.fx if by_fx else tap.module
        if key:
            index.setdefault(key, []).append(tap)
    nodes: list[RefNode] = []
    measured: dict[str, tuple[Tap, tuple[float, float, bool]]] = {}
    last_in_module: dict[str, str] = {}

    class Comparing(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            if n.op != "call_function":
                return out
            node = RefNode(n.name, module_path(n), _op_name(n.target), _source(n), [a.name for a in n.all_input_nodes],
                           _sampler_origin(n))  # fmt: skip
            nodes.append(node)
            if isinstance(out, torch.Tensor) and (by_fx or node.module):
                want = out.detach().float().numpy()
                for tap in reversed(index.get(n.name if by_fx else node.module, [])):
                    layouts = fit_layouts(tap.value, want.shape)
                    if layouts:
                        if not by_fx and node.module in last_in_module:
                            measured.pop(last_in_module[node.module], None)
                        # Where both layouts fit (N, C, H, W with C = H = W), the one that matches.
                        measured[n.name] = (tap, max((_compare(got, want) for got in layouts), key=lambda e: e[1]))
                        last_in_module[node.module] = n.name
                        break
            return out

    with torch.no_grad():
        Comparing(program.module()).run(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names))
    return nodes, measured


def fit_layouts(value: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``value`` in the reference's layout: as is, NHWC -> NCHW, or a flattened tensor
    reshaped; empty when it cannot be the same tensor. Both of the first two when the shape
    cannot tell them apart (LiteRT's NHWC [1, 128, 128, 128] after the parser's max pool)."""
    fits = []
    if value.shape == tuple(shape):
        fits.append(value)
    if value.ndim == 4 and len(shape) == 4 and value.shape == (shape[0], shape[2], shape[3], shape[1]):
        fits.append(value.transpose(0, 3, 1, 2))
    if not fits and value.ndim == 1 and value.size == math.prod(shape):
        fits.append(value.reshape(shape))
    return fits


def _compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float, bool]:
    """(max abs, SNR dB of the best-matching ``1 - TRIM`` of the elements, NaN/Inf in got
    where want is finite).

    Index arithmetic is discontinuous: ``x - floor(x)`` jumps by a whole unit when a
    coordinate a float rounding away from an integer lands on its other side, which changes
    nothing downstream (bilinear weights w and 1 - w meet there) but would dominate a plain
    SNR. Such flips touch few elements; a wrong layer touches most. So the largest errors,
    up to ``TRIM`` of the elements, are left out of the SNR (max abs still shows them).
    """
    got64, want64 = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    if np.any(~np.isfinite(got64) & np.isfinite(want64)):
        return math.inf, -math.inf, True
    finite = np.isfinite(got64) & np.isfinite(want64)
    diff, ref = np.abs(got64 - want64)[finite], want64[finite]
    if not diff.size:
        return 0.0, math.inf, False
    keep = diff.size - int(diff.size * TRIM)
    if keep < diff.size:
        order = np.argpartition(diff, keep - 1)[:keep]
        diff_kept, ref_kept = diff[order], ref[order]
    else:
        diff_kept, ref_kept = diff, ref
    noise = float(np.sum(diff_kept**2))
    if noise == 0.0:
        return float(diff.max()), math.inf, False
    return float(diff.max()), 10.0 * math.log10(max(float(np.sum(ref_kept**2)), 1e-30) / noise), False


def _sampler_origin(node: torch.fx.Node) -> str:
    """The grid_sample call a node was decomposed from ('' if none), by its provenance."""
    history = node.meta.get("from_node") or []
    origin = None
    while history:
        origin = history[0]
        history = getattr(origin, "from_node", None) or []
    if origin is None or "grid_sampler" not in str(getattr(origin, "target", "")):
        return ""
    return str(origin.name)


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", str(target))
    return name.removesuffix(".default")


def _source(node: torch.fx.Node) -> str:
    """``file:line`` of the innermost frame of the node's stack trace ('' if none)."""
    trace = node.meta.get("stack_trace") or ""
    frames = [line.strip() for line in trace.splitlines() if line.strip().startswith("File ")]
    # The innermost frame of the model's own code, not of torch.nn's modules.
    own = [f for f in frames if _TORCH_DIR not in f]
    if not (own or frames):
        return ""
    head = (own or frames)[-1]  # File "/path/model.py", line 42, in forward
    try:
        path = head.split('"')[1]
        line = head.split("line ")[1].split(",")[0]
    except IndexError:
        return ""
    return f"{path}:{line}"


def _noise(snr_db: float) -> float:
    """Noise power relative to the signal's, from an SNR."""
    if snr_db == math.inf:
        return 0.0
    return math.inf if snr_db == -math.inf else 10.0 ** (-snr_db / 10.0)


def _num(x: float) -> float | str:
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return float(f"{x:.4g}")
