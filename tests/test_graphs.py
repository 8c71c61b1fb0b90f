"""The PyTorch reference graphs: correlation, shapes, forms, checkpoints, seeding."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from mirror import MirrorError, graphs
from mirror.graphs.checkpoints import CheckpointError, save_state_dict
from mirror.graphs.correlation import correlation

SMALL = (128, 96)  # smallest size whose coarsest pyramid level is whole (4x3)


def naive_correlation(a: torch.Tensor, b: torch.Tensor, d: int = 3) -> torch.Tensor:
    _, c, h, w = a.shape
    out = torch.zeros(a.shape[0], (2 * d + 1) ** 2, h, w, dtype=torch.float64)
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            ch = (dy + d) * (2 * d + 1) + (dx + d)
            for y in range(h):
                for x in range(w):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, ch, y, x] = (a[:, :, y, x].double() * b[:, :, yy, xx].double()).sum(1) / c
    return out


def test_correlation_matches_naive_loop():
    a, b = torch.randn(2, 1, 16, 9, 7).unbind(0)
    got = correlation(a, b)
    want = naive_correlation(a, b)
    assert got.shape == (1, 49, 9, 7)
    assert float((got.double() - want).abs().max()) <= 1e-6


def test_correlation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        correlation(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))


@pytest.fixture(scope="module")
def warp_outputs():
    warp = graphs.load("warp")
    inputs = graphs.example_inputs("warp", seed=1)
    with torch.no_grad():
        return warp(*inputs), inputs


def test_warp_forward_shapes_and_ranges(warp_outputs):
    (flow, warped_cloth, warped_edge, gen_input), (person, _, cloth, edge) = warp_outputs
    h, w = graphs.HEIGHT, graphs.WIDTH
    assert flow.shape == (1, 2, h, w)
    assert warped_cloth.shape == (1, 3, h, w)
    assert warped_edge.shape == (1, 1, h, w)
    assert gen_input.shape == (1, 7, h, w)
    assert torch.isfinite(flow).all()
    # The flow is a sampling grid: near [-1, 1], and different from the identity.
    assert float(flow.abs().max()) < 4
    assert -1.0 - 1e-6 <= float(warped_cloth.min()) and float(warped_cloth.max()) <= 1.0 + 1e-6
    assert 0.0 <= float(warped_edge.min()) and float(warped_edge.max()) <= 1.0 + 1e-6
    assert torch.equal(gen_input[:, :3], person)
    assert torch.equal(gen_input[:, 3:6], warped_cloth)
    assert torch.equal(gen_input[:, 6:], warped_edge)


def test_warped_edge_is_edge_sampled_by_flow(warp_outputs):
    (flow, _, warped_edge, _), (_, _, _, edge) = warp_outputs
    want = F.grid_sample(edge, flow.permute(0, 2, 3, 1), padding_mode="zeros", align_corners=False)
    assert torch.allclose(warped_edge, want, atol=1e-6)


def test_gen_forward_shapes_ranges_and_composition():
    gen = graphs.load("gen")
    (gen_input,) = graphs.example_inputs("gen", seed=2)
    gen_input[:, 6:] = (gen_input[:, 6:] > 0).float()  # warped edge is a mask
    with torch.no_grad():
        rendered, mask, tryon, gen_mask = gen(gen_input)
    for t, c in ((rendered, 3), (mask, 1), (tryon, 3), (gen_mask, 1)):
        assert t.shape == (1, c, graphs.HEIGHT, graphs.WIDTH)
    assert float(rendered.abs().max()) <= 1.0
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    assert 0.0 <= float(gen_mask.min()) and float(gen_mask.max()) <= 1.0
    # The mask is zero wherever the warped edge is zero.
    assert float(mask[gen_input[:, 6:] == 0].abs().max()) == 0.0
    warped_cloth = gen_input[:, 3:6]
    assert torch.allclose(tryon, warped_cloth * mask + rendered * (1 - mask), atol=1e-6)


def test_full_and_divton_forms_differ_and_divton_ignores_fine_netmain():
    divton = graphs.load("warp")
    full = graphs.load("warp", form="full")
    assert torch.equal(divton.aflow_net.netMain[4][0].weight, full.aflow_net.netMain[4][0].weight)
    inputs = graphs.example_inputs("warp", seed=3, size=SMALL)
    with torch.no_grad():
        flow_divton = divton(*inputs)[0]
        flow_full = full(*inputs)[0]
        assert float((flow_divton - flow_full).abs().max()) > 1e-4
        for level in (3, 4):
            for p in divton.aflow_net.netMain[level].parameters():
                p.add_(torch.randn_like(p))
            for p in full.aflow_net.netMain[level].parameters():
                p.add_(torch.randn_like(p))
        assert torch.equal(divton(*inputs)[0], flow_divton)
        assert not torch.equal(full(*inputs)[0], flow_full)


def test_warp_alignment_is_configurable():
    inputs = graphs.example_inputs("warp", seed=4, size=SMALL)
    with torch.no_grad():
        a = graphs.load("warp")(*inputs)[0]
        b = graphs.load("warp", align_corners=True, interp_align_corners=True)(*inputs)[0]
    assert float((a - b).abs().max()) > 1e-4


@pytest.mark.parametrize(
    "graph,keys",
    [
        ("warp", ["aflow_net.netMain.4.0.weight", "cond_FPN.smooth.4.bias",
                  "image_features.encoders.0.0.block.0.weight", "aflow_net.netRefine.0.6.bias",
                  "cond_features.encoders.0.0.block.2.weight", "image_FPN.adaptive.0.weight"]),
        ("gen", ["model.model.4.model.0.weight", "model.model.0.weight", "model.model.6.weight"]),
    ],
)
def test_canonical_pfafn_key_names(graph, keys):
    state = graphs.load(graph).state_dict()
    for key in keys:
        assert key in state, key
    if graph == "warp":
        assert state["cond_features.encoders.0.0.block.2.weight"].shape == (64, 10, 3, 3)


def test_parameter_counts_match_divton():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(graphs.load("warp")) / 1e6, 1) == 29.3
    assert round(count(graphs.load("gen")) / 1e6, 1) == 43.9


def test_state_dict_round_trip(tmp_path):
    gen = graphs.load("gen", seed=7)
    path = save_state_dict(gen, tmp_path / "gen.pth")
    loaded = graphs.load("gen", checkpoint=path, seed=99)
    for (k, a), (_, b) in zip(gen.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_module_prefix_and_wrapper_are_tolerated(tmp_path):
    gen = graphs.load("gen", seed=7)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in gen.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    loaded = graphs.load("gen", checkpoint=tmp_path / "wrapped.pth")
    assert torch.equal(loaded.model.model[0].weight, gen.model.model[0].weight)


def test_seeded_weights_are_deterministic():
    a = graphs.load("warp", seed=5).state_dict()
    b = graphs.load("warp", seed=5).state_dict()
    c = graphs.load("warp", seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["aflow_net.netMain.0.0.weight"], c["aflow_net.netMain.0.0.weight"])


def test_loading_does_not_disturb_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    graphs.load("gen", seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_missing_keys_are_listed(tmp_path):
    state = graphs.load("gen").state_dict()
    for key in [k for k in state if not k.endswith("num_batches_tracked")][:7]:
        del state[key]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError) as info:
        graphs.load("gen", checkpoint=tmp_path / "partial.pth")
    msg = str(info.value)
    assert "missing keys 7:" in msg and "model.model.0.weight" in msg and "(+2 more)" in msg
    assert "\n" not in msg


def test_wrong_shapes_and_unexpected_keys_are_listed(tmp_path):
    state = graphs.load("gen").state_dict()
    state["model.model.0.weight"] = torch.zeros(64, 3, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        graphs.load("gen", checkpoint=tmp_path / "bad.pth")
    msg = str(info.value)
    assert "wrong-shape keys 1: model.model.0.weight (64, 3, 3, 3) != (64, 7, 3, 3)" in msg
    assert "unexpected keys 1: extra.weight" in msg


def test_warp_checkpoint_rejected_by_gen(tmp_path):
    path = save_state_dict(graphs.load("warp"), tmp_path / "warp.pth")
    with pytest.raises(CheckpointError, match="does not fit graph 'gen'"):
        graphs.load("gen", checkpoint=path)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        graphs.load("gen", checkpoint=path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        graphs.load("gen", checkpoint=tmp_path / "nope.pth")


class _Payload:
    """A pickle that would run code when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        graphs.load("gen", checkpoint=path)
    assert not marker.exists()
    # A raw (non-zip) pickle is refused too.
    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        graphs.load("gen", checkpoint=raw)
    assert not marker.exists()


def test_unknown_graph_and_bad_option():
    with pytest.raises(MirrorError, match="unknown graph 'wrap'"):
        graphs.load("wrap")
    with pytest.raises(MirrorError, match="bad option for graph 'warp'"):
        graphs.load("warp", form="half")
