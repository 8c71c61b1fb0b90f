"""A build of small stand-in ONNX graphs with DIVTON's exact input and output names and shapes.

warp: identity flow, so warped_cloth = cloth * edge; gen: try-on = warped cloth where the
edge is set, person elsewhere. Enough to check the Runtime's wiring in seconds; the real
graphs' artifacts are proven by the compile tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from mirror.files import sha256_of

H, W = 256, 192


def _vi(name: str, c: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c, H, W])


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def stand_in_warp(path: Path) -> None:
    nodes = [
        helper.make_node("Mul", ["cloth", "edge"], ["warped_cloth"]),
        helper.make_node("Identity", ["edge"], ["warped_edge"]),
        helper.make_node("Concat", ["person", "warped_cloth", "warped_edge"], ["gen_input"], axis=1),
        helper.make_node("Sub", ["edge", "edge"], ["zero"]),
        helper.make_node("Concat", ["zero", "zero"], ["flow"], axis=1),
    ]
    _save(
        helper.make_graph(
            nodes,
            "warp",
            [_vi("person", 3), _vi("parsing", 7), _vi("cloth", 3), _vi("edge", 1)],
            [_vi("flow", 2), _vi("warped_cloth", 3), _vi("warped_edge", 1), _vi("gen_input", 7)],
        ),
        path,
    )


def stand_in_gen(path: Path) -> None:
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Split", ["gen_input"], ["rendered", "cloth", "mask"], axis=1, num_outputs=3),
        helper.make_node("Mul", ["cloth", "mask"], ["a"]),
        helper.make_node("Sub", ["one", "mask"], ["inv"]),
        helper.make_node("Mul", ["rendered", "inv"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["tryon"]),
        helper.make_node("Identity", ["mask"], ["gen_mask"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gen",
        [_vi("gen_input", 7)],
        [_vi("rendered", 3), _vi("mask", 1), _vi("tryon", 3), _vi("gen_mask", 1)],
        [one],
    )
    _save(graph, path)


def make_standin_build(root: Path) -> Path:
    """warp_fp32.onnx, gen_fp32.onnx and their manifest.json in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    stand_in_warp(root / "warp_fp32.onnx")
    stand_in_gen(root / "gen_fp32.onnx")
    entries = [
        {"graph": g, "target": "onnx", "precision": "fp32", "path": f"{g}_fp32.onnx",
         "sha256": sha256_of(root / f"{g}_fp32.onnx")}
        for g in ("warp", "gen")
    ]
    (root / "manifest.json").write_text(json.dumps({"version": 1, "artifacts": entries}))
    return root
