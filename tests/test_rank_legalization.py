"""legalize_rank: ops on rank >= 5 tensors run at rank <= 4, bit-exact."""

from __future__ import annotations

import torch

from mirror.passes.base import get_pass


class _Scrambles(torch.nn.Module):
    """A 6-D permute with no two dimensions staying adjacent, a 5-D broadcast against a
    constant, a 6-D select and a 5-D cat."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.arange(1.0, 4.0).view(1, 3, 1, 1, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        six = x.view(2, 3, 4, 5, 6, 1).permute(5, 3, 1, 4, 2, 0)
        five = y.view(2, 3, 4, 5, 6) * self.scale + y.view(2, 3, 4, 5, 6)[:, :1]
        picked = x.view(2, 3, 4, 5, 6, 1)[:, :, 2]
        joined = torch.cat([five, five[:, :, :1]], dim=2)
        return six.reshape(30, 24), five.sum(dim=1), picked.reshape(6, 30), joined.reshape(2, -1)


def _rank_above_4(program) -> int:
    return sum(1 for n in program.graph.nodes if isinstance(v := n.meta.get("val"), torch.Tensor) and v.dim() > 4)


def test_high_rank_ops_become_rank_4_exactly():
    x, y = torch.rand(6, 4, 5, 6), torch.rand(6, 4, 5, 6)  # the interface stays 4-D
    model = _Scrambles()
    program = torch.export.export(model, (x, y))
    assert _rank_above_4(program) > 0
    result = get_pass("legalize_rank")(program)
    assert result.changed and result.details["left"] == [] and _rank_above_4(result.program) == 0
    for want, got in zip(model(x, y), result.program.module()(x, y), strict=True):
        assert got.shape == want.shape and torch.equal(got, want)  # moves and the same arithmetic: bit-exact


def test_a_program_without_high_rank_tensors_is_returned_as_is():
    program = torch.export.export(torch.nn.Conv2d(3, 4, 3), (torch.rand(1, 3, 8, 8),))
    result = get_pass("legalize_rank")(program)
    assert not result.changed and result.program is program
