"""strip_correlation turns the exported full PF-AFN warper into the DIVTON graph."""

from __future__ import annotations

import pytest
import torch

from mirror import MirrorError, graphs
from mirror.passes.base import get_pass, run_pipeline

SIZE = (128, 96)


@pytest.fixture(scope="module")
def full_program():
    full = graphs.load("warp", form="full", seed=11)
    return torch.export.export(full, graphs.example_inputs("warp", seed=0, size=SIZE))


def test_strip_equals_divton_reference(full_program):
    divton = graphs.load("warp", seed=11)  # same weights, DIVTON form
    inputs = graphs.example_inputs("warp", seed=21, size=SIZE)
    program, (record,) = run_pipeline(
        full_program, [("strip_correlation", {})], "warp", reference=divton, example_inputs=inputs
    )
    assert record.changed
    assert record.max_abs_vs_reference is not None and record.max_abs_vs_reference <= 1e-5
    # The full form really differs from DIVTON, so the parity above is not vacuous.
    with torch.no_grad():
        full_flow = full_program.module()(*inputs)[0]
        assert float((full_flow - divton(*inputs)[0]).abs().max()) > 1e-4
    # What went: two netMain heads (149,410 parameters each) and their correlation FLOPs.
    assert record.params_before - record.params_after == 2 * 149_410
    assert record.flops_after < record.flops_before
    assert record.ops_removed["grid_sampler"] == 4  # 2 feature warps + 2 flow compositions
    assert record.details["levels_stripped"] == [3, 4]
    state = program.state_dict
    assert "aflow_net.netMain.3.0.weight" not in state and "aflow_net.netMain.4.6.bias" not in state
    assert "aflow_net.netMain.2.0.weight" in state and "aflow_net.netRefine.4.0.weight" in state


def test_strip_is_idempotent_and_does_not_mutate_input(full_program):
    nodes_before = len(full_program.graph.nodes)
    strip = get_pass("strip_correlation")
    once = strip(full_program)
    assert len(full_program.graph.nodes) == nodes_before
    twice = strip(once.program)
    assert not twice.changed


def test_strip_coarsest_level_is_refused(full_program):
    with pytest.raises(MirrorError, match="coarsest level"):
        get_pass("strip_correlation")(full_program, levels=(0,))


def test_unknown_pass_is_named():
    with pytest.raises(MirrorError, match="unknown pass 'strip'"):
        get_pass("strip")
