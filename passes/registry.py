"""Imports every built-in pass (registering it by name) and defines the named pipelines.

A pipeline is a named list of ``(pass name, options)``. Add a pass by writing one module
with one ``@register("name")`` function and importing it here.
"""

from __future__ import annotations

# Built-in passes register themselves on import.
from mirror.passes import cleanup, gpu_grid_sample, split_wide_conv, strip_correlation  # noqa: F401
from mirror.passes.base import PipelineSpec

PIPELINES: dict[str, PipelineSpec] = {
    # Any exported model: make it convertible and GPU-friendly.
    "default": [
        ("drop_aliases", {}),
        ("split_wide_conv", {"max_in_channels": 512}),
        ("gpu_grid_sample", {}),
    ],
}

# The DIVTON warper exported in its full PF-AFN form.
PIPELINES["divton-warp"] = [("strip_correlation", {"levels": (3, 4)}), *PIPELINES["default"]]
