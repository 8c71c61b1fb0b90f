"""Static GPU-delegate rules, partitioning and delegate-log parsing on hand-built flatbuffers.

No conversion here: each model is written directly with the flatbuffer schema that
ai_edge_litert ships, so every rule is exercised in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

from mirror.runners.tflite_file import read_tflite
from mirror.targets.gpu_delegate import (
    check_static,
    parse_delegate_log,
    verify_gpu_delegate,
)

F32, I32 = fb.TensorType.FLOAT32, fb.TensorType.INT32


def build(path: Path, tensors: list[tuple], ops: list[tuple], inputs: list[int], outputs: list[int]) -> Path:
    """tensors: (name, shape, type, const data or None); ops: (name, version, ins, outs, options)."""
    buffers = [fb.BufferT()]
    ts = []
    for name, shape, ttype, data in tensors:
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), ttype
        if data is not None:
            b = fb.BufferT()
            b.data = np.frombuffer(np.asarray(data).tobytes(), np.uint8)
            buffers.append(b)
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        ts.append(t)
    codes: list[tuple[str, int]] = []
    operators = []
    for name, version, ins, outs, options in ops:
        if (name, version) not in codes:
            codes.append((name, version))
        o = fb.OperatorT()
        o.opcodeIndex = codes.index((name, version))
        o.inputs, o.outputs = ins, outs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options
        operators.append(o)
    opcodes = []
    for name, version in codes:
        oc = fb.OperatorCodeT()
        if hasattr(fb.BuiltinOperator, name):
            code = getattr(fb.BuiltinOperator, name)
        else:
            code = fb.BuiltinOperator.CUSTOM
            oc.customCode = name
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
        opcodes.append(oc)
    sub = fb.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs = ts, operators, inputs, outputs
    sig = fb.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "main", 0
    sig.inputs, sig.outputs = [], []
    for idx in inputs:
        m = fb.TensorMapT()
        m.name, m.tensorIndex = ts[idx].name, idx
        sig.inputs.append(m)
    for idx in outputs:
        m = fb.TensorMapT()
        m.name, m.tensorIndex = ts[idx].name, idx
        sig.outputs.append(m)
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, opcodes, [sub]
    model.buffers, model.signatureDefs = buffers, [sig]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def reasons(result: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for u in result["unsupported"]:
        out.setdefault(u["op"], []).append(u["reason"])
    return out


def test_conv_tanh_like_model_passes(tmp_path):
    p = build(
        tmp_path / "ok.tflite",
        [("x", (1, 8, 8, 4), F32, None), ("h", (1, 8, 8, 4), F32, None), ("y", (1, 8, 8, 4), F32, None)],
        [("ADD", 1, [0, 0], [1], None), ("TANH", 1, [1], [2], None)],
        [0],
        [2],
    )
    r = check_static(p)
    assert r["fully_accelerated"] and r["unsupported"] == []
    assert (r["ops_total"], r["ops_on_gpu"], r["partitions"]) == (2, 2, 1)
    assert r["verified_on"].startswith("static-rules")


def test_rank5_gather_nd_and_int32_arithmetic_are_flagged(tmp_path):
    p = build(
        tmp_path / "bad.tflite",
        [
            ("x", (1, 4, 4, 2), F32, None),  # 0
            ("shape5", (5,), I32, np.array([1, 1, 4, 4, 2], np.int32)),  # 1
            ("x5", (1, 1, 4, 4, 2), F32, None),  # 2
            ("idx_f", (1, 4, 4, 2), F32, None),  # 3
            ("idx", (1, 4, 4, 2), I32, None),  # 4
            ("one", (), I32, np.array(1, np.int32)),  # 5
            ("idx1", (1, 4, 4, 2), I32, None),  # 6
            ("g", (1, 4, 4), F32, None),  # 7
        ],
        [
            ("RESHAPE", 1, [0, 1], [2], None),
            ("FLOOR", 1, [0], [3], None),
            ("CAST", 1, [3], [4], None),  # int32 into CAST: fine
            ("ADD", 1, [4, 5], [6], None),  # int32 arithmetic: classic refuses
            ("GATHER_ND", 1, [0, 6], [7], None),
        ],
        [0],
        [2, 7],
    )
    classic = reasons(check_static(p, "classic"))
    assert "rank" in " ".join(classic["RESHAPE"]).lower() or "less than 5" in classic["RESHAPE"][0]
    assert classic["GATHER_ND"] == ["Operation is not supported."]
    assert "INT32" in classic["ADD"][0]
    assert "CAST" not in classic and "FLOOR" not in classic
    webgpu = reasons(check_static(p, "webgpu"))
    assert "ADD" not in webgpu  # LiteRT's WebGPU accelerator runs int32 arithmetic
    assert set(webgpu) == {"RESHAPE", "GATHER_ND"}


def test_gather_slice_custom_rules(tmp_path):
    gopt = fb.GatherOptionsT()
    gopt.axis, gopt.batchDims = 1, 0
    sopt = fb.StridedSliceOptionsT()
    sopt.shrinkAxisMask = 1
    c4 = np.array([0, 0, 0, 0], np.int32)
    p = build(
        tmp_path / "mixed.tflite",
        [
            ("x", (1, 8, 4, 4), F32, None),  # 0
            ("i1", (2,), I32, np.array([0, 1], np.int32)),  # 1
            ("g_ok", (1, 2, 4, 4), F32, None),  # 2
            ("g_v2", (1, 2, 4, 4), F32, None),  # 3
            ("i2", (1, 2), I32, np.array([[0, 1]], np.int32)),  # 4
            ("g_2d", (1, 1, 2, 4, 4), F32, None),  # 5 (rank 5 too; checked first)
            ("begin", (4,), I32, c4),  # 6
            ("end", (4,), I32, np.array([1, 1, 4, 4], np.int32)),  # 7
            ("stride", (4,), I32, np.array([1, 1, 1, 1], np.int32)),  # 8
            ("ss", (1, 4, 4), F32, None),  # 9
            ("flat", (1, 128), F32, None),  # 10
            ("b2", (2,), I32, np.array([0, 0], np.int32)),  # 11
            ("s2", (2,), I32, np.array([1, 64], np.int32)),  # 12
            ("sl2", (1, 64), F32, None),  # 13
            ("cust", (1, 8, 4, 4), F32, None),  # 14
            ("res", (1, 8, 4, 4), F32, None),  # 15
        ],
        [
            ("GATHER", 1, [0, 1], [2], (fb.BuiltinOptions.GatherOptions, gopt)),
            ("GATHER", 2, [0, 1], [3], (fb.BuiltinOptions.GatherOptions, gopt)),
            ("GATHER", 1, [0, 4], [5], (fb.BuiltinOptions.GatherOptions, gopt)),
            ("STRIDED_SLICE", 1, [0, 6, 7, 8], [9], (fb.BuiltinOptions.StridedSliceOptions, sopt)),
            ("SLICE", 1, [10, 11, 12], [13], None),
            ("MyOp", 1, [0], [14], None),
            ("Resampler", 1, [0, 0], [15], None),
        ],
        [0, 10],
        [2, 3, 5, 9, 13, 14, 15],
    )
    g = read_tflite(p)
    assert [op.name for op in g.ops][:2] == ["GATHER", "GATHER"] and g.ops[5].custom
    r = check_static(p, "classic")
    by_index = {i: u["reason"] for u in r["unsupported"] for i in u["indices"]}
    assert 0 not in by_index  # GATHER v1 with 1-D int32 indices
    assert "version" in by_index[1]
    assert 2 in by_index  # 2-D indices (and a rank-5 output)
    assert "shrink_axis_mask" in by_index[3]
    assert "3-D/4-D" in by_index[4]
    assert "custom" in by_index[5].lower()
    assert 6 not in by_index  # Resampler is one of the delegate's custom ops
    webgpu = check_static(p, "webgpu")
    assert 4 not in {i for u in webgpu["unsupported"] for i in u["indices"]}  # 2-D SLICE ok


def test_partitions_follow_dependencies(tmp_path):
    # x -> A(gpu) -> B(cpu) -> C(gpu); x -> D(gpu), independent of B.
    t = [(n, (1, 4, 4, 1), F32, None) for n in ("x", "a", "b", "c", "d")]
    p = build(
        tmp_path / "parts.tflite",
        t,
        [
            ("TANH", 1, [0], [1], None),
            ("GATHER_ND", 1, [1, 1], [2], None),
            ("TANH", 1, [2], [3], None),
            ("RELU", 1, [0], [4], None),
        ],
        [0],
        [3, 4],
    )
    r = check_static(p)
    # D joins A's partition (it does not depend on the CPU op): [A, D], [B], [C].
    assert r["partition_sizes"] == [2, 1]
    assert r["ops_on_gpu"] == 2 and r["cpu_partitions"] == 1
    assert not r["fully_accelerated"]


def test_parse_delegate_log():
    log = (
        "INFO: something\n"
        "ERROR: Following operations are not supported by GPU delegate:\n"
        "BROADCAST_TO: Operation is not supported.\n"
        "RESHAPE: Tensor dimensions must be less than 5. __main__.G;11\n"
        "SLICE: Slicing is unsupported for input with rank > 4\n"
        "76 operations will run on the GPU, and the remaining 37 operations will run on the CPU.\n"
        "I0000 00:00 environment.cc:532] Selected adapter: SwiftShader Device (Subzero), arch=x\n"
    )
    parsed = parse_delegate_log(log)
    assert parsed["gpu_ops"] == 76 and parsed["cpu_ops"] == 37
    assert parsed["adapter"] == "SwiftShader Device (Subzero)"
    assert [n for n, _ in parsed["refusals"]] == ["BROADCAST_TO", "RESHAPE", "SLICE"]


def test_static_mode_without_driver(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRROR_VK_ICD", str(tmp_path / "missing_icd.json"))
    p = build(
        tmp_path / "ok.tflite",
        [("x", (1, 4, 4, 1), F32, None), ("y", (1, 4, 4, 1), F32, None)],
        [("TANH", 1, [0], [1], None)],
        [0],
        [1],
    )
    r = verify_gpu_delegate(p)
    assert r["fully_accelerated"]
    assert r["verified_on"].startswith("static-rules")
    assert "missing_icd.json" in r["verified_on"] and "apt-get install chromium" in r["verified_on"]


@pytest.mark.parametrize("mode", ["static"])
def test_missing_model_is_a_user_error(tmp_path, mode):
    from mirror import MirrorError

    with pytest.raises(MirrorError, match="no such model"):
        verify_gpu_delegate(tmp_path / "nope.tflite", mode=mode)
