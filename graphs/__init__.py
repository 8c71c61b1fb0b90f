"""PyTorch reference graphs of DIVTON (warp, gen) and the coarse parser, plus checkpoint I/O.

    from mirror import graphs
    warp = graphs.load("warp")                       # seeded weights, DIVTON form
    warp = graphs.load("warp", checkpoint="PFAFN_warp_epoch_101_phif_pl_skip.pth")
    full = graphs.load("warp", form="full")          # PF-AFN form, correlation at all levels
    gen = graphs.load("gen")
    parser = graphs.load("parser", out_size=(256, 192))
    inputs = graphs.example_inputs("warp", seed=0)   # random, valid inputs in spec order

Every graph's inputs and outputs are described by ``graphs.spec(name)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mirror import MirrorError
from mirror.graphs.checkpoints import CheckpointError, apply_state_dict, read_state_dict, seeded

__all__ = [
    "GRAPHS",
    "CheckpointError",
    "GraphSpec",
    "TensorSpec",
    "example_inputs",
    "load",
    "spec",
]

HEIGHT, WIDTH = 256, 192
NUM_CLASSES = 7


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: name, NCHW shape, value kind and meaning.

    ``kind`` is one of: ``image`` (values in [-1, 1]), ``onehot`` (one 1 per pixel across
    channels), ``mask`` (values in [0, 1]), ``grid`` (normalized coordinates, about [-1, 1]),
    ``labels`` (integer class ids stored as float).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    doc: str


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def _t(name: str, channels: int, kind: str, doc: str, size: tuple[int, int] = (HEIGHT, WIDTH)) -> TensorSpec:
    return TensorSpec(name, (1, channels, *size), kind, doc)


_SPECS: dict[str, GraphSpec] = {
    "warp": GraphSpec(
        "warp",
        inputs=(
            _t("person", 3, "image", "person RGB, background set to white"),
            _t("parsing", NUM_CLASSES, "onehot", "one-hot coarse parsing, 7 classes"),
            _t("cloth", 3, "image", "product (garment) RGB"),
            _t("edge", 1, "mask", "garment mask"),
        ),
        outputs=(
            _t("flow", 2, "grid", "sampling grid (x, y), normalized coordinates"),
            _t("warped_cloth", 3, "image", "garment warped onto the person"),
            _t("warped_edge", 1, "mask", "garment mask warped onto the person"),
            _t("gen_input", 7, "image", "cat[person, warped_cloth, warped_edge] for the generator"),
        ),
    ),
    "gen": GraphSpec(
        "gen",
        inputs=(_t("gen_input", 7, "image", "the warp graph's gen_input"),),
        outputs=(
            _t("rendered", 3, "image", "rendered person (tanh)"),
            _t("mask", 1, "mask", "composition mask: sigmoid * warped_edge"),
            _t("tryon", 3, "image", "try-on: warped_cloth * mask + rendered * (1 - mask)"),
            _t("gen_mask", 1, "mask", "paste-back mask (sigmoid; the runtime pastes where > 0.5)"),
        ),
    ),
    "parser": GraphSpec(
        "parser",
        inputs=(_t("image", 3, "image", "person RGB (resized to 512x512 inside the graph)"),),
        outputs=(
            _t("logits", NUM_CLASSES, "image", "class logits at the output size"),
            _t("labels", 1, "labels", "argmax class id 0..6, as float"),
        ),
    ),
}

GRAPHS = tuple(_SPECS)


def spec(name: str) -> GraphSpec:
    """The input/output description of a built-in graph."""
    try:
        return _SPECS[name]
    except KeyError:
        raise MirrorError(f"unknown graph {name!r}; built-in graphs are {', '.join(GRAPHS)}") from None


def _build(name: str, options: dict[str, Any]) -> nn.Module:
    try:
        if name == "warp":
            from mirror.graphs.warp import WarpGraph

            return WarpGraph(**options)
        if name == "gen":
            from mirror.graphs.gen import GenGraph

            return GenGraph(**options)
        if name == "parser":
            from mirror.graphs.parser import build_parser

            return build_parser(**options)
    except TypeError as exc:
        raise MirrorError(f"bad option for graph {name!r}: {exc}") from None
    except ValueError as exc:
        raise MirrorError(f"bad option for graph {name!r}: {exc}") from None
    spec(name)  # raises the unknown-graph error
    raise AssertionError(name)


def load(name: str, checkpoint: str | Path | None = None, seed: int = 0, **options: Any) -> nn.Module:
    """Build graph ``name`` in eval mode.

    With ``checkpoint``, weights come from that state_dict (PF-AFN / SCHP key layout,
    ``module.`` prefix tolerated), loaded strictly. Without it, weights are drawn from
    ``seed``: the same seed gives bit-identical weights. ``options`` go to the graph,
    e.g. ``form="full"``, ``align_corners=True`` for ``warp``, ``out_size=(H, W)`` for
    ``parser``.
    """
    spec(name)
    with seeded(seed):
        module = _build(name, dict(options))
    if checkpoint is not None:
        apply_state_dict(module, read_state_dict(checkpoint), graph=name, source=str(checkpoint))
    return module.eval()


def example_inputs(
    name: str, seed: int = 0, size: tuple[int, int] | None = None, smooth: bool = False
) -> tuple[torch.Tensor, ...]:
    """Random inputs that respect each input's kind (images in [-1, 1], one-hot parsing,
    binary masks), in the graph's input order. Deterministic for a seed.

    ``smooth=True`` draws image-like inputs: fields varying over a few pixels (noise at a
    quarter of the resolution, upsampled), masks and parsings made of regions. Pixel-wise
    i.i.d. noise is the harshest case for resampling (any sub-pixel rounding of a sampling
    position becomes a large intensity error) and no photo looks like it.
    """
    if size is not None and (len(size) != 2 or any(not isinstance(v, int) or v <= 0 or v % 32 for v in size)):
        raise MirrorError(f"size must be (H, W), both positive multiples of 32 (the graphs downsample 5 times); "
                          f"got {tuple(size)}")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for t in spec(name).inputs:
        shape = t.shape if size is None else (*t.shape[:2], *size)
        tensors.append(random_tensor(t.kind, shape, gen, smooth=smooth))
    return tuple(tensors)


def _field(shape: tuple[int, ...], gen: torch.Generator, smooth: bool) -> torch.Tensor:
    """Uniform noise in [0, 1): per pixel, or at 1/4 resolution upsampled (smooth)."""
    if not smooth:
        return torch.rand(shape, generator=gen)
    n, c, h, w = shape
    coarse = torch.rand((n, c, max(h // 4, 1), max(w // 4, 1)), generator=gen)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def random_tensor(kind: str, shape: tuple[int, ...], gen: torch.Generator, smooth: bool = False) -> torch.Tensor:
    """A random tensor of a TensorSpec kind (see ``example_inputs`` for ``smooth``)."""
    if kind == "image":
        return _field(shape, gen, smooth) * 2 - 1
    if kind == "mask":
        return (_field(shape, gen, smooth) > 0.5).float()
    if kind == "onehot":
        labels = _field(shape, gen, smooth).argmax(dim=1)
        return nn.functional.one_hot(labels, shape[1]).permute(0, 3, 1, 2).float().contiguous()
    if kind == "grid":
        return _field(shape, gen, smooth) * 2.4 - 1.2
    raise ValueError(f"no random generator for tensor kind {kind!r}")
