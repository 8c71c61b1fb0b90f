"""Module paths survive into the emitted artifacts: a user who opens one in Netron or Model
Explorer sees the torch module each tensor comes from, and ``--localize`` matches tensors
to the PyTorch reference by them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mirror.runners.tflite_file import fx_node, module_path, read_tflite


class _Heads(nn.Module):
    """Two ModuleLists of identical Sequentials: stock names cannot tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.main = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(2))
        self.refine = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        for i in range(2):
            y = self.refine[i](self.main[i](y)) + y
        return torch.tanh(y)


def test_module_path_reads_both_naming_schemes():
    assert module_path("warp/aflow_net/netRefine.3/0/conv2d_12;4") == "aflow_net.netRefine.3.0"
    fused = "warp/aflow_net/netRefine.3/1/leaky_relu_9;;warp/aflow_net/netRefine.3/0/conv2d_12;4"
    assert module_path(fused) == "aflow_net.netRefine.3.1" and fx_node(fused) == "leaky_relu_9"
    stock = "__main__.M/__main__.Block_enc/torch.nn.modules.conv.Conv2d_conv;1"
    assert module_path(stock) == "enc.conv"
    assert module_path("arith.constant3") == ""
    assert module_path("warp/mul_3;17") == "" and fx_node("warp/mul_3;17") == "mul_3"
    assert fx_node(stock) == "" and fx_node("warp_person") == ""


def test_tflite_tensors_carry_module_paths(tmp_path):
    from mirror.targets.tflite import convert_to_bytes

    torch.manual_seed(0)
    model = _Heads().eval()
    x = torch.randn(1, 3, 16, 16)
    program = torch.export.export(model, (x,))
    path = tmp_path / "heads.tflite"
    path.write_bytes(convert_to_bytes(program, (x,), ["image"], ["out"], "heads"))
    fb = read_tflite(path)
    assert fb.signature_key == "heads"
    assert [n for n, _ in fb.signature_inputs] == ["image"] and [n for n, _ in fb.signature_outputs] == ["out"]
    paths = {module_path(fb.tensors[o].name) for op in fb.ops for o in op.outputs}
    # Every conv of both lists is told apart (the ReLU fused into a conv names its output).
    for i in range(2):
        assert {f"main.{i}.1", f"refine.{i}.1"} <= paths, sorted(paths)
    assert "stem" in paths
    fx_names = {n.name for n in program.graph.nodes}
    named = [fb.tensors[o].name for op in fb.ops for o in op.outputs if fx_node(fb.tensors[o].name)]
    assert named and all(fx_node(n) in fx_names for n in named)


def test_onnx_nodes_and_tensors_carry_module_paths():
    from mirror.runners.taps import split_onnx_name
    from mirror.targets.onnx import export_onnx, simplify_onnx

    torch.manual_seed(0)
    model = _Heads().eval()
    x = torch.randn(1, 3, 16, 16)
    program = torch.export.export(model, (x,))
    onnx_model, _ = simplify_onnx(export_onnx(program, (x,), ["image"], ["out"], graph="heads"))
    convs = [n for n in onnx_model.graph.node if n.op_type == "Conv"]
    paths = {split_onnx_name(n.name)[0] for n in convs}
    assert paths == {"stem", "main.0.0", "main.1.0", "refine.0.0", "refine.1.0"}, paths
    fx_nodes = {n.name for n in program.graph.nodes}
    for node in convs:  # each conv's output tensor is named after its FX node, under its path
        path, fx = split_onnx_name(node.output[0])
        assert path == split_onnx_name(node.name)[0] and fx in fx_nodes
    assert [o.name for o in onnx_model.graph.output] == ["out"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_coreml_ops_carry_module_paths(tmp_path, precision):
    from mirror.runners.taps import coreml_node_names, coreml_node_of, split_onnx_name
    from mirror.targets.coreml import CoreMLEmitter, _load_spec

    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    program = torch.export.export(_Heads().eval(), (x,)).run_decompositions({})
    names = [n.name for n in program.graph.nodes]
    art = CoreMLEmitter().emit(program, "heads", precision, tmp_path, example_inputs=(x,),
                               input_names=["image"], output_names=["out"])  # fmt: skip
    assert [n.name for n in program.graph.nodes] == names  # the program is left as it was
    spec = _load_spec(art.path)
    paths = coreml_node_names(spec)
    ops = next(iter(spec.mlProgram.functions["main"].block_specializations.values())).operations
    conv_nodes = [split_onnx_name(coreml_node_of(op.outputs[0].name, paths)) for op in ops if op.type == "conv"]
    conv_paths = {path for path, _ in conv_nodes}
    assert all(fx in names for _, fx in conv_nodes)
    assert conv_paths == {"stem", "main.0.0", "main.1.0", "refine.0.0", "refine.1.0"}, conv_paths
    # The names themselves show the path too (sanitized to identifiers by coremltools).
    assert any(op.outputs[0].name.startswith("refine_1_0_") for op in ops if op.type == "conv")
