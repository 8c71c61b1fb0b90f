"""The coarse parser reference graph (SCHP AugmentCE2P, ResNet-101, 7 classes)."""

from __future__ import annotations

import pytest
import torch

from mirror import MirrorError
from mirror.graphs import parser as P

H, W = 256, 192


@pytest.fixture(scope="module")
def model() -> P.CoarseParser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return P.build_parser().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, H, W, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def outputs(model, image):
    with torch.no_grad():
        return model(image)


def test_names():
    assert P.parser_input_names() == P.INPUT_NAMES == ("image",)
    assert P.parser_output_names() == P.OUTPUT_NAMES == ("logits", "labels")
    assert len(P.CLASS_NAMES) == P.NUM_CLASSES == 7


def test_forward_shapes_and_values(outputs):
    logits, labels = outputs
    assert logits.shape == (1, 7, H, W) and logits.dtype == torch.float32
    assert labels.shape == (1, 1, H, W) and labels.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert torch.equal(labels, labels.round())
    assert labels.min() >= 0 and labels.max() <= 6
    assert torch.equal(labels, torch.argmax(logits, dim=1, keepdim=True).float())


def test_parameter_count(model):
    n = P.parameter_count(model)
    print(f"coarse parser parameters: {n}")
    assert 66_000_000 < n < 67_500_000


def test_schp_key_layout(model):
    sd = model.state_dict()
    shapes = {
        "conv1.weight": (64, 3, 3, 3),
        "conv2.weight": (64, 64, 3, 3),
        "conv3.weight": (128, 64, 3, 3),
        "bn3.running_var": (128,),
        "layer1.0.conv1.weight": (64, 128, 1, 1),
        "layer1.0.downsample.0.weight": (256, 128, 1, 1),
        "layer1.0.downsample.1.running_mean": (256,),
        "layer3.22.conv3.weight": (1024, 256, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.weight": (2048,),
        "context_encoding.stages.0.1.weight": (512, 2048, 1, 1),
        "context_encoding.stages.3.2.running_var": (512,),
        "context_encoding.bottleneck.0.weight": (512, 4096, 3, 3),
        "context_encoding.bottleneck.1.bias": (512,),
        "edge.conv1.0.weight": (256, 256, 1, 1),
        "edge.conv3.1.weight": (256,),
        "edge.conv4.weight": (2, 256, 3, 3),
        "edge.conv5.weight": (2, 6, 1, 1),
        "decoder.conv1.0.weight": (256, 512, 1, 1),
        "decoder.conv2.0.weight": (48, 256, 1, 1),
        "decoder.conv3.0.weight": (256, 304, 1, 1),
        "decoder.conv3.3.running_mean": (256,),
        "decoder.conv4.bias": (7,),
        "fushion.0.weight": (256, 1024, 1, 1),
        "fushion.1.weight": (256,),
        "fushion.3.weight": (7, 256, 1, 1),
        "fushion.3.bias": (7,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    # InPlaceABNSync keeps no batch counter, and pre/post-processing constants are not weights.
    assert not any(k.endswith("num_batches_tracked") for k in sd)
    assert not any(k.startswith(("input_", "context_encoding.pool_")) for k in sd)
    assert {k.split(".")[0] for k in sd} == {
        "conv1",
        "bn1",
        "conv2",
        "bn2",
        "conv3",
        "bn3",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "context_encoding",
        "edge",
        "decoder",
        "fushion",
    }
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert all(b.conv2.dilation == (2, 2) and b.conv2.stride == (1, 1) for b in model.layer4)


def test_schp_checkpoint_round_trip(model):
    """A ``module.``-prefixed SCHP-style state_dict loads strictly once the prefix is stripped."""
    ckpt = {"state_dict": {f"module.{k}": v.clone() for k, v in model.state_dict().items()}}
    stripped = {k[len("module.") :]: v for k, v in ckpt["state_dict"].items()}
    result = model.load_state_dict(stripped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_preprocess_is_schp_normalization(model):
    img = torch.rand(1, 3, 4, 4) * 2 - 1
    x = model.preprocess(img)
    assert x.shape == (1, 3, 512, 512)
    # Reference: [-1, 1] RGB -> [0, 1] -> BGR -> ImageNet mean/std in BGR order -> resize.
    bgr = ((img + 1) / 2).flip(1)
    mean = torch.tensor(P.BGR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(P.BGR_STD).view(1, 3, 1, 1)
    ref = torch.nn.functional.interpolate(
        (bgr - mean) / std, size=(512, 512), mode="bilinear", align_corners=True
    )
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=1e-5)


def test_first_argmax_float_matches_argmax_with_ties():
    g = torch.Generator().manual_seed(3)
    logits = torch.randint(-2, 3, (2, 7, 9, 5), generator=g).float()  # many ties
    expected = torch.argmax(logits, dim=1, keepdim=True).float()
    assert torch.equal(P.first_argmax_float(logits), expected)
    assert torch.equal(P.first_argmax_float(logits.half()), expected.half())


def test_psp_matmul_pool_equals_adaptive():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        psp = P.PSPModule(16, 8).eval()
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        ref = psp(x)
        psp.pool = "matmul"
        psp.set_feature_size((32, 32))
        torch.testing.assert_close(psp(x), ref, atol=1e-5, rtol=1e-5)
        odd = torch.randn(1, 16, 13, 21)  # no precomputed matrices for this size
        psp.pool = "adaptive"
        ref_odd = psp(odd)
        psp.pool = "matmul"
        torch.testing.assert_close(psp(odd), ref_odd, atol=1e-5, rtol=1e-5)


def test_abn_abs_weight():
    bn = P.ActivatedBatchNorm(3, activation="none").eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-2.0, 1.0, 0.5]))
    x = torch.randn(1, 3, 2, 2)
    scale = torch.tensor([2.0, 1.0, 0.5]) + bn.eps
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5 * scale.view(1, 3, 1, 1))
    bn.abs_weight = False
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5 * bn.weight.view(1, 3, 1, 1))
    leaky = P.ActivatedBatchNorm(1, abs_weight=False).eval()
    torch.testing.assert_close(
        leaky(torch.tensor([-1.0, 2.0]).view(1, 1, 2, 1)).flatten(),
        torch.tensor([-0.01, 2.0]) / (1 + 1e-5) ** 0.5,
    )


def test_backbone_size():
    assert P.backbone_size((512, 512)) == (32, 32)
    assert P.backbone_size((473, 473)) == (30, 30)


def test_bad_options():
    with pytest.raises(MirrorError):
        P.PSPModule(8, 4, pool="gather")
    with pytest.raises(MirrorError):
        P._check_size("out_size", (256,))
    with pytest.raises(MirrorError):
        P._check_size("out_size", (0, 192))


def test_bad_input_shape(model):
    with pytest.raises(MirrorError):
        model(torch.zeros(1, 4, 8, 8))


@pytest.mark.slow
def test_export_single_graph(model, image, outputs):
    """Exports with torch.export in one graph; the deployable options leave no argmax, no
    adaptive pool and no int tensors in the program."""
    ep = torch.export.export(model, (image,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("argmax" in t for t in targets)
    with torch.no_grad():
        logits, labels = ep.module()(image)
    torch.testing.assert_close(logits, outputs[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(labels, outputs[1])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        deployable = P.build_parser(psp_pool="matmul").eval()
    ep2 = torch.export.export(deployable, (image,)).run_decompositions()
    targets = {str(n.target) for n in ep2.graph.nodes if n.op == "call_function"}
    assert not any("adaptive" in t or "argmax" in t for t in targets)
    for node in ep2.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            assert val.dtype.is_floating_point or val.dtype == torch.bool, (node.target, val.dtype)
