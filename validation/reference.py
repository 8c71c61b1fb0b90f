"""The PyTorch eager reference as a runner: what every artifact is compared with.

It follows the runners' protocol (``runners/base.py``) so that validation can treat the
reference like any backend, but it lives on the compile side: the runners layer imports
no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mirror.runners.base import RunnerBase, missing_inputs


class TorchReferenceRunner(RunnerBase):
    """Runs an ``nn.Module`` in eager mode on named numpy inputs (float32 outputs)."""

    name = "pytorch"

    def __init__(self, module: torch.nn.Module, input_names: list[str], output_names: list[str]) -> None:
        self.module = module
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing_inputs("the PyTorch reference", self.input_names, feeds)
        return self.run_tensors(tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names))

    def run_tensors(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        """The same on torch tensors (the compile's validation inputs)."""
        with torch.no_grad():
            out = self.module(*inputs)
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return {n: o.detach().float().numpy() for n, o in zip(self.output_names, out, strict=True)}
