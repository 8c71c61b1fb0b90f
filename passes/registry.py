"""Imports every built-in pass (registering it by name) and defines the shared pipelines.

A pipeline is a named list of ``(pass name, options)``. The shared pipelines run once per
graph; each backend then runs its own pipeline on the result (``targets/<backend>.py``,
``pipeline(lowering)``): its ``grid_sample`` lowering and its legalizations, under
namespaced names (``litert::split_wide_conv``, ``coreml::core_aten``). Add a pass by
writing one module with one ``@register("name")`` function and importing it here.
"""

from __future__ import annotations

# Built-in passes register themselves on import.
from mirror.passes import (  # noqa: F401
    adaptive_pool,
    affine_grid,
    bicubic_phases,
    broadcast_as_gather,
    cleanup,
    constant_folding,
    contiguous_inputs,
    conv_batch_norm,
    core_aten,
    einsum_as_bmm,
    float_cast_first,
    float_clamp_bounds,
    gather_as_select,
    gpu_grid_sample,
    index_as_select,
    litert_constant_operands,
    litert_gather,
    litert_log_softmax,
    litert_matmul,
    litert_select_operands,
    one_hot_as_compare,
    pool_stride,
    rank_legalization,
    replicate_pad,
    resize_as_matmul,
    scatter_as_cat,
    split_wide_conv,
    strip_correlation,
    topk_as_max,
    unfold_as_conv,
)
from mirror.passes.base import PipelineSpec

PIPELINES: dict[str, PipelineSpec] = {
    # Any exported model: no-op nodes out, input-independent subgraphs folded, nothing above
    # rank 4 (Core ML stops above 5, LiteRT's GPU delegate above 4); the backends take it
    # from there.
    "default": [
        ("drop_aliases", {}),
        ("explicit_pool_stride", {}),
        ("affine_grid", {}),
        ("fold_constants", {}),
        ("legalize_rank", {}),
    ],
}

# The DIVTON warper exported in its full PF-AFN form.
PIPELINES["divton-warp"] = [("strip_correlation", {"levels": (3, 4)}), *PIPELINES["default"]]


def lowering_passes(lowering: str) -> PipelineSpec:
    """The ``grid_sample`` lowering step of a backend pipeline ("native": none)."""
    return [] if lowering == "native" else [("gpu_grid_sample", {"lowering": lowering})]
