"""Imports every built-in pass (registering it by name) and defines the named pipelines.

A pipeline is a named list of ``(pass name, options)``. Add a pass by writing one module
with one ``@register("name")`` function and importing it here.
"""

from __future__ import annotations

from mirror.passes.base import PipelineSpec

# Built-in passes register themselves on import.
from mirror.passes import cleanup  # noqa: F401,E402

PIPELINES: dict[str, PipelineSpec] = {
    # Any exported model: make it convertible and GPU-friendly.
    "default": [
        ("drop_aliases", {}),
    ],
}
