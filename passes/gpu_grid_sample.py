"""``gpu_grid_sample``: rewrite every ``grid_sample`` into gather-and-weight ops.

Stock converters lower ``grid_sample`` to rank-5 tensors, GATHER_ND and int32 index
arithmetic, none of which LiteRT's GPU delegate accepts, so each call splits the graph
into CPU and GPU partitions. This pass replaces every ``aten.grid_sampler`` /
``aten.grid_sampler_2d`` (bilinear or nearest; zeros or border padding; either
``align_corners``) with the plain-torch sampler of ``passes/sampling.py``. The result
holds only standard aten ops (pad, permute, reshape, slice, cat, floor, clamp, gt, eq,
where, arange, index_select with a 1-D int32 index, mul, sum), so the one transformed
program feeds every target: ONNX and Core ML take it as is, and the LiteRT pipeline's
``litert::gather_v1`` (``passes/litert_gather.py``) turns each ``index_select`` into a
GATHER v1. The LiteRT model then holds only PAD, TRANSPOSE, RESHAPE, SLICE,
STRIDED_SLICE, CONCATENATION, ADD, SUB, MUL, SUM, FLOOR, MINIMUM, GREATER, EQUAL,
SELECT(_V2), CAST and GATHER v1: no tensor of rank >= 5, no GATHER_ND, no
int32 tensor except the index between CAST and GATHER, and it runs fully on the real
GPU delegate.

Lowerings (option ``lowering``):

``"fp16_exact"`` (default)
    Every integer in the index arithmetic stays <= 2048, so the sampler reads the right
    pixels when the GPU computes in float16, as LiteRT's GPU delegate does by default on
    phones and as a Core ML fp16 package does. The source is read in blocks of B columns
    (B the smallest power of two with at most 2048 blocks: 32 at 256x192, 8 at 128x96, 1
    up to ~44x44) and the taps are picked inside the block with a one-hot row. Each
    output point reads 2*(B+1) pixels instead of 4.

``"flat"``
    One row per source pixel, 4 taps per output point: the cheapest graph, but its row
    index (up to ~50 k at 256x192) is exact only in float32; in float16 about 75 % of the
    output points at 256x192 read a wrong pixel. Use it for artifacts that run in float32:
    LiteRT on the CPU (XNNPACK), ONNX Runtime, an fp32 Core ML package, or a GPU delegate
    forced to fp32.

Measured per call (``benchmarks/grid_sample_lowerings.py``, its default cases;
LiteRT CPU = XNNPACK on 2 threads, in-process; the MB figure is what the gather writes, in
fp32):

==================  ============  ==============  ======================
call                stock         flat            fp16_exact
==================  ============  ==============  ======================
flow 2ch 128x96     3.9 ms        0.7 ms, 0.4 MB  1.2 ms, 1.7 MB (B=8)
cloth 3ch 256x192   22.7 ms       2.8 ms, 2.2 MB  17.2 ms, 37 MB (B=32)
feat 256ch 128x96   591 ms        28.5 ms, 48 MB  102 ms, 216 MB (B=8)
==================  ============  ==============  ======================

The stock lowering leaves 31 of 107 ops on the CPU (GATHER_ND, rank-5 tensors); both
lowerings here run fully on the delegate with GPU-vs-reference parity <= 2e-5.

Which lowering each artifact gets, and why:

- LiteRT GPU artifact: ``fp16_exact`` (the default). The phone runs it in float16, where
  ``flat`` is silently wrong. LiteRT's native ``Resampler`` custom op would be cheaper on
  the GPU (SwiftShader: 12 ms vs 280 ms for the cloth warp, 0.19 s vs 2.32 s for the
  256-channel 128x96 feature warp), but the CPU interpreter has no kernel for it, so the
  artifact could not be verified on the CPU nor fall back when the GPU is unavailable. It
  is not emitted here.
- LiteRT CPU artifact, ONNX (onnxruntime, fp32), fp32 Core ML: ``flat`` (1.7-6.1x faster
  on the CPU, exact in float32): give that target's pipeline ``lowering="flat"``.
- Core ML fp16 package: ``fp16_exact`` (or ``flat`` with the index ops kept in fp32
  through coremltools' ``op_selector``).

Memory: at 256 channels and 128x96 the fp16_exact gather writes 216 MB in fp32 (108 MB
in fp16) per call; on a phone that is the call to move to ``Resampler`` first.

Calls this pass cannot lower (bicubic, reflection padding, 5-D volumetric sampling, a
source taller than 2045 rows for fp16_exact) are left as they are and listed in
``details["skipped"]``; ``strict=True`` makes them an error instead.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.export import ExportedProgram

from mirror import MirrorError
from mirror.passes import sampling
from mirror.passes.base import PassResult, register

_MODES = {0: "bilinear", 1: "nearest", 2: "bicubic"}
_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}

GRID_SAMPLE_OPS = (
    torch.ops.aten.grid_sampler.default,
    torch.ops.aten.grid_sampler_2d.default,
)


def _describe(node: torch.fx.Node) -> dict[str, Any]:
    x, grid, mode, padding, align_corners = node.args[:5]
    xv, gv = x.meta.get("val"), grid.meta.get("val")
    return {
        "node": node.name,
        "input": list(xv.shape) if xv is not None else None,
        "grid": list(gv.shape) if gv is not None else None,
        "mode": _MODES.get(int(mode), str(mode)),
        "padding_mode": _PADDINGS.get(int(padding), str(padding)),
        "align_corners": bool(align_corners),
    }


def _plan(call: dict[str, Any], lowering: str, block: int | None) -> str | None:
    """Why this call cannot be lowered, or None; fills in the block width chosen."""
    if call["mode"] not in sampling.MODES:
        return f"mode {call['mode']}"
    if call["padding_mode"] not in sampling.PADDINGS:
        return f"padding_mode {call['padding_mode']}"
    shape = call["input"]
    if shape is None or len(shape) != 4 or call["grid"] is None:
        return "not a 4-D sample with static shapes"
    if any(not isinstance(s, int) for s in shape + call["grid"]):
        return "dynamic shapes"
    call["lowering"] = lowering
    if lowering == "fp16_exact":
        n, _, h, w = shape
        try:
            if block is not None:
                call["block"] = block
            else:
                per_gather = sampling._images_per_gather(n, h, w, call["mode"])
                call["block"] = sampling.choose_block(per_gather, h, w, call["mode"])
                call["images_per_gather"] = per_gather
        except sampling.UnsupportedSampling as e:
            return str(e)
    return None


def _plan_calls(program: ExportedProgram, lowering: str, block: int | None) -> tuple[list[dict], list[dict]]:
    """Every grid_sample call, split into those to rewrite and those to leave (with why)."""
    calls, skipped = [], []
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target in GRID_SAMPLE_OPS:
            call = _describe(node)
            reason = _plan(call, lowering, block)
            if reason is None:
                calls.append(call)
            else:
                call["reason"] = reason
                skipped.append(call)
    return calls, skipped


@register("gpu_grid_sample")
def gpu_grid_sample(
    program: ExportedProgram,
    lowering: str = "fp16_exact",
    block: int | None = None,
    strict: bool = False,
) -> PassResult:
    """Replace every ``grid_sample`` with GPU-delegate-friendly ops.

    ``lowering``: ``"fp16_exact"`` (default) or ``"flat"`` (see the module docstring).
    ``block``: force the fp16_exact block width (a power of two); by default it is chosen
    per call from the static shapes. ``strict``: raise on a call that cannot be lowered
    instead of leaving it in place.
    """
    if lowering not in sampling.LOWERINGS:
        raise MirrorError(
            f"gpu_grid_sample: unknown lowering {lowering!r}; use one of "
            f"{', '.join(sampling.LOWERINGS)}"
        )
    if block is not None and (block < 1 or block & (block - 1)):
        raise MirrorError(f"gpu_grid_sample: block must be a power of two, got {block}")

    calls, skipped = _plan_calls(program, lowering, block)
    if skipped and strict:
        s = skipped[0]
        raise MirrorError(
            f"gpu_grid_sample: cannot lower {s['node']} ({s['reason']}); use bilinear or "
            "nearest sampling with zeros or border padding on a 4-D input, or drop "
            "strict=True to keep this call as it is"
        )
    details: dict[str, Any] = {"lowering": lowering, "rewritten": calls, "skipped": skipped}
    if not calls:
        return PassResult(program, changed=False, details=details)

    def decompose(x, grid, mode, padding, align_corners):
        mode_s, pad_s = _MODES.get(int(mode)), _PADDINGS.get(int(padding))
        if mode_s not in sampling.MODES or pad_s not in sampling.PADDINGS or x.dim() != 4:
            return NotImplemented
        try:
            if lowering == "flat":
                return sampling.grid_sample_flat(x, grid, mode_s, pad_s, bool(align_corners))
            return sampling.grid_sample_fp16_exact(
                x, grid, mode_s, pad_s, bool(align_corners), block=block
            )
        except sampling.UnsupportedSampling:
            return NotImplemented

    table = {op: decompose for op in GRID_SAMPLE_OPS}
    # run_decompositions retraces into a new program; the input stays untouched.
    new = copy.deepcopy(program).run_decompositions(table)
    remaining = sum(
        1 for n in new.graph.nodes if n.op == "call_function" and n.target in GRID_SAMPLE_OPS
    )
    # A skipped aten.grid_sampler may come back as grid_sampler_2d: still unlowered.
    details["remaining"] = remaining
    return PassResult(new, changed=True, details=details)
