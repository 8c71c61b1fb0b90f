"""Per-layer time of an eager module on this machine, from ``torch.profiler``.

Each submodule's call is wrapped in a ``record_function`` range named after its module path
(forward hooks), so the profiler's own events give the inclusive time of every module; a
layer's time is its range minus the ranges of its submodules, and what the top-level
forward does itself goes to ``(root)``. The keys match ``layers.layer_of``. The profiler
slows the model down (about 2x on a 2-core CPU), so the whole-model time is taken from runs
without it, and the layers' times add up to more than it.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch import nn

from mirror.profiling.layers import ROOT

_PREFIX = "mirror.layer::"


def _hook(module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Open a profiler range named after each submodule for the span of its forward."""
    handles = []
    open_ranges: list[torch.profiler.record_function] = []

    def enter(name: str):
        def pre(_mod, _args):
            rf = torch.profiler.record_function(_PREFIX + name)
            rf.__enter__()
            open_ranges.append(rf)

        return pre

    def leave(_mod, _args, _out):
        open_ranges.pop().__exit__(None, None, None)

    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_pre_hook(enter(name)))
            handles.append(sub.register_forward_hook(leave))
    return handles


@torch.no_grad()
def torch_layer_ms(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], runs: int = 3, threads: int | None = None
) -> tuple[dict[str, float], float]:
    """(exclusive milliseconds per module path under the profiler, whole-forward milliseconds
    without it), both averaged over ``runs``, on ``threads`` intra-op threads (torch's default if None)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        return _measure(module, inputs, runs)
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _measure(module: nn.Module, inputs: tuple[torch.Tensor, ...], runs: int) -> tuple[dict[str, float], float]:
    module(*inputs)  # warm-up: first-call allocations are not the model's time
    t0 = time.perf_counter()
    for _ in range(runs):
        module(*inputs)
    whole = (time.perf_counter() - t0) * 1e3 / runs
    handles = _hook(module)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                with torch.profiler.record_function(_PREFIX):
                    module(*inputs)
    finally:
        for h in handles:
            h.remove()
    inclusive: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name.startswith(_PREFIX):
            inclusive[event.name[len(_PREFIX) :] or ROOT] += event.cpu_time_total / 1e3 / runs
    return _exclusive(inclusive), whole


def _exclusive(inclusive: dict[str, float]) -> dict[str, float]:
    """Each module's time less its direct submodules' (the root's children have no dot)."""
    out = dict(inclusive)
    for path, ms in inclusive.items():
        if path == ROOT:
            continue
        parent = path.rpartition(".")[0]
        while parent and parent not in inclusive:  # ModuleList/ModuleDict are never called
            parent = parent.rpartition(".")[0]
        out[parent or ROOT] = out.get(parent or ROOT, 0.0) - ms
    return {path: max(ms, 0.0) for path, ms in out.items()}
