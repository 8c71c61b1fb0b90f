"""``fold_batch_norm``: batch norms after convolutions go into the weights, exactly (float32 rounding),
and only where that is the same function; the reference outputs of a pipeline are computed once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirror.passes import analysis
from mirror.passes.base import run_pipeline
from mirror.targets.tflite import TFLiteEmitter


class _ConvBn(nn.Module):
    """Plain, grouped and bias-free convolutions with batch norms, an InPlace-ABN style
    ``|w| + eps`` scale, and a convolution whose output is read twice (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.c4, self.b4 = nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)
        gen = torch.Generator().manual_seed(0)
        for bn in (self.b1, self.b2, self.b3, self.b4):
            bn.running_mean.uniform_(-1, 1, generator=gen)
            bn.running_var.uniform_(0.5, 2, generator=gen)
            bn.weight.data.uniform_(-2, 2, generator=gen)
            bn.bias.data.uniform_(-1, 1, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        b3 = self.b3
        y = F.batch_norm(self.c3(y), b3.running_mean, b3.running_var, b3.weight.abs() + 1e-5, b3.bias, False, 0.1, 1e-5)
        z = self.c4(y)
        return self.b4(z) + z.mean()


def _batch_norms(program: torch.export.ExportedProgram) -> int:
    return sum(1 for n in program.graph.nodes if n.op == "call_function" and "batch_norm" in str(n.target))


def test_fold_batch_norm_is_exact_and_leaves_shared_convolutions():
    model, x = _ConvBn().eval(), torch.rand(1, 3, 16, 16) * 2 - 1
    program = torch.export.export(model, (x,))
    new, (record,) = run_pipeline(program, [("fold_batch_norm", {})], "m", reference=model, example_inputs=(x,))
    assert record.changed and len(record.details["rewritten"]) == 3
    assert _batch_norms(program) == 4 and _batch_norms(new) == 1  # c4 feeds its batch norm and the mean
    assert record.max_abs_vs_reference is not None and record.max_abs_vs_reference <= 1e-5
    again, (second,) = run_pipeline(new, [("fold_batch_norm", {})], "m")
    assert not second.changed and again is new


def test_fold_batch_norm_in_the_litert_pipeline():
    names = [name for name, _ in TFLiteEmitter().pipeline("fp16_exact")]
    # After fold_constants, before split_wide_conv (which would put a sum between conv and norm).
    assert names.index("fold_constants") < names.index("fold_batch_norm") < names.index("litert::split_wide_conv")


def test_reference_runs_once_per_pipeline(monkeypatch):
    model, inputs = _ConvBn().eval(), (torch.rand(1, 3, 16, 16),)  # the same inputs object, as the driver's
    reference_runs, program_runs = [], []
    real_reference, real_difference = analysis.reference_outputs, analysis.max_abs_difference

    def reference_outputs(reference, inputs):
        reference_runs.append(1)
        return real_reference(reference, inputs)

    def max_abs_difference(program, reference, inputs, want=None):
        program_runs.append(1)
        return real_difference(program, reference, inputs, want=want)

    monkeypatch.setattr(analysis, "reference_outputs", reference_outputs)
    monkeypatch.setattr(analysis, "max_abs_difference", max_abs_difference)
    program = torch.export.export(model, inputs)
    cache: dict = {}
    folded, records = run_pipeline(program, [("fold_batch_norm", {}), ("fold_constants", {})], "m",
                                   reference=model, example_inputs=inputs, cache=cache)  # fmt: skip
    assert len(reference_runs) == 1 and len(program_runs) == 1  # fold_constants changed nothing
    assert all(r.max_abs_vs_reference is not None for r in records)
    # A second pipeline sharing the cache, from the first one's result: a first pass that
    # changes nothing keeps the parity already measured; nothing runs again.
    _, (record,) = run_pipeline(folded, [("fold_batch_norm", {})], "m", reference=model, example_inputs=inputs,
                                cache=cache)  # fmt: skip
    assert not record.changed and record.max_abs_vs_reference == records[-1].max_abs_vs_reference
    assert len(reference_runs) == 1 and len(program_runs) == 1
