"""What the driver compiles: a built-in graph or a user's model, as one ``CompileUnit``.

A unit holds the eager reference (parity is measured against it), the module that is
exported (for the warper, the full PF-AFN form that ``strip_correlation`` turns into
DIVTON), example inputs and the tensors' names and value ranges.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mirror import MirrorError, graphs, one_line
from mirror.compiler.config import CompileConfig, GraphConfig

# PSNR value range by tensor kind (graphs.TensorSpec.kind).
_KIND_RANGE = {"image": 2.0, "mask": 1.0, "grid": 2.0, "onehot": 1.0, "labels": 6.0}
# The output whose PSNR decides reduced-precision parity: the picture a user sees.
_HEADLINE = {"warp": "warped_cloth", "gen": "tryon", "parser": "logits"}


@dataclass
class CompileUnit:
    name: str
    reference: nn.Module
    export_module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    pipeline: str
    value_ranges: dict[str, float] = field(default_factory=dict)
    psnr_output: str | None = None
    make_inputs: Callable[[int], tuple[torch.Tensor, ...]] | None = None
    checkpoint: str | None = None

    def inputs(self, seed: int) -> tuple[torch.Tensor, ...]:
        """Validation inputs for ``seed`` (random, valid for each input's kind)."""
        if self.make_inputs is None:
            gen = torch.Generator().manual_seed(seed)
            return tuple(random_like(t, gen) for t in self.example_inputs)
        return self.make_inputs(seed)


def feeds_of(unit: CompileUnit, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    """Inputs as the runners take them, by name: float32 for float inputs, their own dtype
    for integer and boolean ones (class ids, indices: a float would not be accepted)."""
    return {n: feed_array(t) for n, t in zip(unit.input_names, inputs, strict=True)}


def feed_array(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.is_floating_point() else t).numpy()


def random_like(example: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random tensor of ``example``'s shape and dtype, with values of its kind: integers
    (class ids, indices, also when stored as floats) anywhere in the example's own range,
    booleans at random, other floats in [-1, 1]."""
    if example.dtype == torch.bool:
        return torch.rand(example.shape, generator=gen) < 0.5
    integral = not example.is_floating_point() or bool(torch.equal(example, example.round()))
    if integral and example.numel() and example.min() < example.max():
        lo, hi = int(example.min()), int(example.max())
        return torch.randint(lo, hi + 1, example.shape, generator=gen).to(example.dtype)
    if not example.is_floating_point():
        return example.clone()  # one value throughout: nothing to vary
    return torch.rand(example.shape, generator=gen, dtype=example.dtype) * 2 - 1


def builtin_unit(cfg: GraphConfig, seed: int) -> CompileUnit:
    """A built-in graph (warp, gen, parser) with seeded or checkpoint weights."""
    spec = graphs.spec(cfg.name)
    options = dict(cfg.options)
    if cfg.name == "parser":
        options.setdefault("psp_pool", "matmul")  # no adaptive-pool index math on the GPU
        if cfg.size is not None:
            options.setdefault("out_size", cfg.size)
    reference = graphs.load(cfg.name, checkpoint=cfg.checkpoint, seed=seed, **options)
    export_module = reference
    if cfg.name == "warp" and cfg.pipeline == "divton-warp":
        if options.get("form", "divton") != "divton":
            raise MirrorError("the divton-warp pipeline exports the full form itself; drop options.form")
        export_module = graphs.load("warp", checkpoint=cfg.checkpoint, seed=seed, form="full", **options)
    size = cfg.size

    def make_inputs(s: int) -> tuple[torch.Tensor, ...]:
        # Image-like inputs: reduced-precision parity is judged on pictures, not on noise.
        return graphs.example_inputs(cfg.name, seed=s, size=size, smooth=True)

    return CompileUnit(
        name=cfg.name,
        reference=reference,
        export_module=export_module,
        example_inputs=make_inputs(seed),
        input_names=spec.input_names,
        output_names=spec.output_names,
        pipeline=cfg.pipeline,
        value_ranges={t.name: _KIND_RANGE[t.kind] for t in spec.outputs},
        psnr_output=_HEADLINE.get(cfg.name),
        make_inputs=make_inputs,
        checkpoint=str(cfg.checkpoint) if cfg.checkpoint else None,
    )


def user_unit(ref: str, pipeline: str = "default") -> CompileUnit:
    """A user's model from ``package.module:factory``.

    The factory takes no arguments and returns ``(module, example_inputs)`` or
    ``(module, example_inputs, input_names, output_names)``; ``example_inputs`` is a tuple of
    tensors. Validation inputs are drawn uniformly in [-1, 1] with the same shapes.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise MirrorError(f"--model takes package.module:factory; got {ref!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError as exc:
        raise MirrorError(f"cannot import {module_name!r} for --model ({exc}); is it on PYTHONPATH?") from None
    except AttributeError:
        raise MirrorError(f"{module_name!r} has no attribute {attr!r} for --model") from None
    made = factory()
    if not isinstance(made, tuple) or len(made) not in (2, 4):
        raise MirrorError(
            f"{ref} must return (module, example_inputs) or (module, example_inputs, input_names, output_names)"
        )
    module, example = made[0], made[1]
    if isinstance(example, torch.Tensor):
        example = (example,)
    if not isinstance(module, nn.Module) or not all(isinstance(t, torch.Tensor) for t in example):
        raise MirrorError(f"{ref} must return an nn.Module and a tuple of example tensors")
    module = module.eval()
    with torch.no_grad():
        outputs = module(*example)
    n_out = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
    input_names = list(made[2]) if len(made) == 4 else [f"input_{i}" for i in range(len(example))]
    output_names = list(made[3]) if len(made) == 4 else [f"output_{i}" for i in range(n_out)]
    if len(input_names) != len(example) or len(output_names) != n_out:
        raise MirrorError(
            f"{ref}: {len(example)} inputs / {n_out} outputs but {len(input_names)} / {len(output_names)} names"
        )
    name = getattr(module, "mirror_name", None) or type(module).__name__.lower()
    outs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    ranges = {n: max(float(o.max() - o.min()), 1e-6) for n, o in zip(output_names, outs, strict=True)}
    return CompileUnit(
        name=name,
        reference=module,
        export_module=module,
        example_inputs=tuple(example),
        input_names=input_names,
        output_names=output_names,
        pipeline=pipeline,
        value_ranges=ranges,
        psnr_output=output_names[0],
    )


def units_for(config: CompileConfig) -> list[CompileUnit]:
    """What a compile works on: the user's model, or the configured built-in graphs."""
    if config.model:
        return [user_unit(config.model)]
    return [builtin_unit(g, config.seed) for g in config.graphs]


def export_program(unit: CompileUnit) -> torch.export.ExportedProgram:
    """``torch.export`` of the unit's module; a model it cannot trace is a one-line error."""
    try:
        return torch.export.export(unit.export_module, unit.example_inputs)
    except MirrorError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; one line for the user
        raise MirrorError(
            f"torch.export cannot trace {unit.name}: {one_line(exc)}; the model must run as one graph "
            "(no Python branches on tensor values, no data-dependent shapes)"
        ) from None
