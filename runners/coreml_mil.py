"""The ``coreml-mil`` runner: a saved Core ML ``.mlpackage`` executed op by op in numpy, on any OS.

Core ML itself predicts only on macOS (``runners/coreml.py``). This runner checks what ships
on Linux too: it reads the package from disk, the spec protobuf (``Manifest.json`` ->
``Data/com.apple.CoreML/model.mlmodel``) and the weight blob (``weights/weight.bin``, through
coremltools' own ``_BlobStorageReader``), and runs the ML program's ``main`` function in
topological order with the numpy kernels of ``runners/mil_ops.py``. Nothing comes from the
in-memory program the converter made: a package damaged or changed after saving runs as it
is on disk.

What it checks: every op of the program as saved, with the weights as stored (fp16, or int8
and 6-bit palettes expanded by their ``constexpr_*`` ops exactly as the package states),
the package's own input and output names, and each op's result shape against the shape the
package declares for it (a mismatch is an error naming the op).

fp16 semantics: each op computes on its inputs as the package stores them and its result is
rounded once to the dtype the package declares for that output. The ``cast`` ops an fp16
package carries and every op whose output is fp16 therefore compute in fp16: elementwise
and index arithmetic (``add``, ``mul``, ``floor``, ``cast`` to int32 ...) is IEEE fp16
arithmetic with one rounding per op, as on a device, so a sampler whose index math was left
in fp16 reads the wrong pixels here as it would on the phone. ``conv``, ``matmul``,
reductions, norms, pooling, ``upsample_*`` and ``resample`` accumulate in fp32 and round
their output to fp16 once; a GPU or the Neural Engine may accumulate in fp16 and lose a
little more, which this runner does not model (nor the Neural Engine's own fp16 kernels).

Limits: ML programs only (not the older neural-network ``.mlmodel``); the ``main`` function;
no control flow (``cond``, ``while_loop``), states or dynamic shapes. An op without a kernel
stops the run with a ``RunnerError`` that names its type. It is a reference executor for
parity, not a latency measure: it runs on the CPU at numpy speed.

torch: this module imports no torch, and neither do the coremltools modules it reads the
package with once torch is absent (``import coremltools`` only imports torch when torch is
installed, to offer its converter; a test runs this runner with torch blocked). Where torch
is installed, importing coremltools also imports it, which the compile side does anyway.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirror import MirrorError
from mirror.runners.base import RunnerBase, RunnerError, missing_inputs
from mirror.runners.mil_ops import CONSTEXPR_OPS, KERNELS, KernelError, OpCall

NAME = "coreml-mil"
# Inputs whose arguments form a tuple even when there is only one (MIL's variadic inputs).
_VARIADIC = {("concat", "values"), ("stack", "values"), ("einsum", "values")}
_SUB_BYTE = {"INT4": (4, True), "UINT1": (1, False), "UINT2": (2, False), "UINT3": (3, False),
             "UINT4": (4, False), "UINT6": (6, False)}  # fmt: skip
_NUMPY = {
    "BOOL": np.bool_, "FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT4": np.int8, "UINT1": np.uint8, "UINT2": np.uint8, "UINT3": np.uint8, "UINT4": np.uint8, "UINT6": np.uint8,
}  # fmt: skip
_BLOB_READS = {
    "FLOAT16": "read_fp16_data", "FLOAT32": "read_float_data", "INT8": "read_int8_data", "UINT8": "read_uint8_data",
    "INT16": "read_int16_data", "UINT16": "read_uint16_data", "INT32": "read_int32_data",
    "UINT32": "read_uint32_data", "INT4": "read_int4_data", "UINT1": "read_uint1_data", "UINT2": "read_uint2_data",
    "UINT3": "read_uint3_data", "UINT4": "read_uint4_data", "UINT6": "read_uint6_data",
}  # fmt: skip


class PackageError(Exception):
    """The package cannot be read or executed as saved (one line, for ``RunnerError``)."""


def coremltools_modules() -> tuple[Any, Any, Any]:
    """(MIL_pb2, Model_pb2, _BlobStorageReader) from coremltools, imported quietly on first use."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "Failed to load _MLModelProxy" off macOS; untested-torch notes
    try:
        from coremltools.libmilstoragepython import _BlobStorageReader
        from coremltools.proto import MIL_pb2, Model_pb2
    finally:
        logger.setLevel(level)
    return MIL_pb2, Model_pb2, _BlobStorageReader


def package_spec_path(package: str | Path) -> Path:
    """The spec file of a saved package (``Manifest.json``'s root model), or the file itself."""
    package = Path(package)
    if package.is_file():
        return package
    try:
        manifest = json.loads((package / "Manifest.json").read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        path = package / "Data" / root["path"]
    except FileNotFoundError:
        raise PackageError(f"{package.name} has no Manifest.json: not an .mlpackage") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{package.name}/Manifest.json is damaged ({type(exc).__name__}: {exc})") from None
    if not path.resolve().is_relative_to(package.resolve()) or not path.is_file():
        raise PackageError(f"{package.name}: the manifest's model file {root.get('path')!r} is not in the package")
    return path


def load_package_spec(package: str | Path) -> Any:
    """The ``Model`` protobuf of a saved package."""
    _, model_pb2, _ = coremltools_modules()
    spec = model_pb2.Model()
    path = package_spec_path(package)
    try:
        spec.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise PackageError(f"{path.name} is not a Core ML spec ({type(exc).__name__})") from None
    return spec


@dataclass
class MilOp:
    """One op of the program, ready to run."""

    type: str
    name: str
    inputs: dict[str, list[Any]]  # input name -> bindings: a var name (str) or a literal array
    outputs: list[str]
    out_dtypes: list[Any]
    out_shapes: list[tuple[int, ...] | None]


class _Weights:
    """The package's weight blobs, read through coremltools' ``_BlobStorageReader``."""

    def __init__(self, model_dir: Path, package: Path) -> None:
        self.model_dir, self.package = model_dir, package
        self.readers: dict[Path, Any] = {}

    def read(self, file_name: str, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        path = (self.model_dir / file_name.replace("@model_path/", "", 1)).resolve()
        if not path.is_relative_to(self.package.resolve()) or not path.is_file():
            raise PackageError(f"weight file {file_name!r} is not in the package")
        if dtype not in _BLOB_READS:
            raise PackageError(f"weights of type {dtype} cannot be read")
        if path not in self.readers:
            _, _, reader = coremltools_modules()
            self.readers[path] = reader(str(path))
        try:
            raw = np.asarray(getattr(self.readers[path], _BLOB_READS[dtype])(int(offset)))
        except Exception as exc:  # noqa: BLE001 - the reader's own error on a damaged blob
            raise PackageError(f"{path.name} at offset {offset}: {type(exc).__name__}: {exc}") from None
        if dtype == "FLOAT16":
            raw = raw.view(np.float16)
        count = int(np.prod(shape))
        if raw.size < count:
            raise PackageError(f"{path.name} at offset {offset} holds {raw.size} values, the op declares {count}")
        return raw.reshape(-1)[:count].astype(_NUMPY[dtype], copy=False).reshape(shape)


class MilProgram:
    """A saved ML program's ``main`` function, loaded from disk and runnable in numpy."""

    def __init__(self, package: str | Path) -> None:
        t0 = time.perf_counter()
        self.package = Path(package)
        mil_pb2, _, _ = coremltools_modules()
        self._dtype_names = {v: k for k, v in mil_pb2.DataType.items()}
        spec = load_package_spec(self.package)
        if spec.WhichOneof("Type") != "mlProgram":
            raise PackageError(f"{self.package.name} is a {spec.WhichOneof('Type')} model, not an ML program")
        self.spec_version = spec.specificationVersion
        functions = spec.mlProgram.functions
        if "main" not in functions:
            raise PackageError(f"{self.package.name} has no 'main' function")
        fn = functions["main"]
        self.opset = fn.opset
        if fn.opset not in fn.block_specializations:
            raise PackageError(f"{self.package.name}: main has no block for its opset {fn.opset}")
        block = fn.block_specializations[fn.opset]
        self._weights = _Weights(package_spec_path(self.package).parent, self.package)
        self.inputs = [(i.name, *self._tensor_type(i.type)) for i in fn.inputs]
        self.output_names = list(block.outputs)
        desc_out = [o.name for o in spec.description.output]
        if desc_out and sorted(desc_out) == sorted(self.output_names):
            self.output_names = desc_out  # the model description's order
        self.consts: dict[str, np.ndarray] = {}
        self.ops: list[MilOp] = []
        for op in block.operations:
            if op.blocks:
                raise PackageError(f"op {op.type} ({_op_name(op)}) has nested blocks: control flow is not supported")
            if op.type == "const":
                self.consts[op.outputs[0].name] = self._value(op.attributes["val"])
            else:
                self.ops.append(self._op(op))
        self._fold_constexpr()
        self.unknown = sorted({op.type for op in self.ops if op.type not in KERNELS})
        self._last_use = self._last_uses()
        self.load_s = time.perf_counter() - t0
        self.seconds_by_type: dict[str, float] = defaultdict(float)

    # ----------------------------------------------------------------------------- loading

    def _tensor_type(self, value_type: Any) -> tuple[Any, tuple[int, ...] | None]:
        kind = value_type.WhichOneof("type")
        if kind != "tensorType":
            return None, None
        t = value_type.tensorType
        name = self._dtype_names.get(t.dataType, "?")
        dims = []
        for d in t.dimensions:
            if d.WhichOneof("dimension") != "constant":
                return _numpy_dtype(name), None
            dims.append(int(d.constant.size))
        return _numpy_dtype(name), tuple(dims)

    def _value(self, value: Any) -> np.ndarray:
        if value.type.WhichOneof("type") != "tensorType":
            raise PackageError(f"values of type {value.type.WhichOneof('type')} are not supported")
        t = value.type.tensorType
        dtype = self._dtype_names.get(t.dataType, "?")
        shape = tuple(int(d.constant.size) for d in t.dimensions)
        which = value.WhichOneof("value")
        if which == "blobFileValue":
            return self._weights.read(value.blobFileValue.fileName, value.blobFileValue.offset, dtype, shape)
        if which != "immediateValue" or value.immediateValue.WhichOneof("value") != "tensor":
            raise PackageError(f"a {which} value is not supported")
        tv = value.immediateValue.tensor
        field = tv.WhichOneof("value")
        if field == "strings":
            return np.asarray(list(tv.strings.values)).reshape(shape)
        if field == "bytes":
            raw = tv.bytes.values
            if dtype in _SUB_BYTE:
                nbits, signed = _SUB_BYTE[dtype]
                return _unpack(np.frombuffer(raw, np.uint8), nbits, signed, int(np.prod(shape))).reshape(shape)
            return np.frombuffer(raw, _numpy_dtype(dtype)).reshape(shape).copy()
        if field is None:
            return np.zeros(shape, _numpy_dtype(dtype))
        values = list(getattr(tv, field).values)
        return np.asarray(values).astype(_numpy_dtype(dtype)).reshape(shape)

    def _op(self, op: Any) -> MilOp:
        inputs: dict[str, list[Any]] = {}
        for key, arg in op.inputs.items():
            bindings: list[Any] = []
            for b in arg.arguments:
                bindings.append(b.name if b.WhichOneof("binding") == "name" else self._value(b.value))
            inputs[key] = bindings
        for key, value in op.attributes.items():  # iOS16's constexpr ops hold their data here
            if key != "name" and key not in inputs:
                inputs[key] = [self._value(value)]
        types = [self._tensor_type(o.type) for o in op.outputs]
        return MilOp(op.type, _op_name(op), inputs, [o.name for o in op.outputs],
                     [t[0] for t in types], [t[1] for t in types])  # fmt: skip

    def _fold_constexpr(self) -> None:
        """Evaluate the ``constexpr_*`` ops (compressed weights) once, into constants."""
        rest = []
        for op in self.ops:
            if op.type in CONSTEXPR_OPS:
                for name, value in zip(op.outputs, self._execute(op, self.consts), strict=True):
                    self.consts[name] = value
            else:
                rest.append(op)
        self.ops = rest

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            for bindings in op.inputs.values():
                for b in bindings:
                    if isinstance(b, str):
                        last[b] = i
        return last

    # ----------------------------------------------------------------------------- running

    def run(self, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
        """The program's outputs (every intermediate too with ``keep=True``) for ``feeds``."""
        if self.unknown:
            raise PackageError(
                f"MIL op{'s' if len(self.unknown) > 1 else ''} {', '.join(self.unknown)} "
                f"{'have' if len(self.unknown) > 1 else 'has'} no numpy kernel in coreml-mil "
                f"(runners/mil_ops.py); the package cannot be checked on this OS"
            )
        env: dict[str, np.ndarray] = dict(self.consts)
        for name, dtype, shape in self.inputs:
            a = np.asarray(feeds[name])
            if shape is not None and tuple(a.shape) != shape:
                raise PackageError(f"input {name} is {list(a.shape)}, the package takes {list(shape)}")
            env[name] = a.astype(dtype) if dtype is not None else a
        keep_names = set(self.output_names)
        for i, op in enumerate(self.ops):
            t = time.perf_counter()
            for name, value in zip(op.outputs, self._execute(op, env), strict=True):
                env[name] = value
            self.seconds_by_type[op.type] += time.perf_counter() - t
            if not keep:
                for bindings in op.inputs.values():
                    for b in bindings:
                        if isinstance(b, str) and self._last_use.get(b) == i and b not in keep_names \
                                and b not in self.consts:  # fmt: skip
                            env.pop(b, None)
        missing = [n for n in self.output_names if n not in env]
        if missing:
            raise PackageError(f"the program never computes its output(s) {', '.join(missing)}")
        if keep:
            return {k: v for k, v in env.items() if k not in self.consts}
        return {n: env[n] for n in self.output_names}

    def _execute(self, op: MilOp, env: dict[str, np.ndarray]) -> list[np.ndarray]:
        args: dict[str, Any] = {}
        for key, bindings in op.inputs.items():
            values = [env[b] if isinstance(b, str) else b for b in bindings]
            args[key] = tuple(values) if (op.type, key) in _VARIADIC or len(values) > 1 else values[0]
        call = OpCall(op.type, op.name, args, op.out_dtypes, op.out_shapes)
        try:
            result = KERNELS[op.type](call)
        except KernelError as exc:
            raise PackageError(f"{op.type} {op.name}: {exc}") from None
        except KeyError as exc:
            raise PackageError(f"{op.type} {op.name}: input {exc} is not computed before it is used") from None
        except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
            raise PackageError(f"{op.type} {op.name}: {type(exc).__name__}: {exc}") from None
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(results) != len(op.outputs):
            raise PackageError(f"{op.type} {op.name}: {len(results)} results for {len(op.outputs)} outputs")
        out = []
        for r, dtype, shape, name in zip(results, op.out_dtypes, op.out_shapes, op.outputs, strict=True):
            r = np.asarray(r)
            if dtype is not None and r.dtype != dtype:
                with np.errstate(over="ignore", invalid="ignore"):  # fp16 overflow is the device's too
                    r = r.astype(dtype)
            if shape is not None and tuple(r.shape) != shape:
                raise PackageError(f"{op.type} {op.name}: output {name} is {list(r.shape)}, "
                                   f"the package declares {list(shape)}")  # fmt: skip
            out.append(r)
        return out

    # ----------------------------------------------------------------------------- facts

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(op.type for op in self.ops).items()))

    def fp16_ops(self) -> int:
        return sum(1 for op in self.ops if any(d == np.float16 for d in op.out_dtypes))


class CoreMLMilRunner(RunnerBase):
    """Runs a saved ``.mlpackage`` in numpy (``MilProgram``); any OS, CPU, float32 in and out."""

    name = NAME
    accelerator = "cpu"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._program: MilProgram | None = None
        self._run_s: float | None = None

    def availability(self) -> tuple[bool, str]:
        try:
            coremltools_modules()
        except ImportError as exc:
            return False, f"not run: coreml-mil reads the package with coremltools, which does not import ({exc})"
        return True, ""

    def program(self) -> MilProgram:
        if self._program is None:
            if not self.path.exists():
                raise RunnerError(f"coreml-mil: no such package: {self.path}")
            try:
                self._program = MilProgram(self.path)
            except PackageError as exc:
                raise RunnerError(f"coreml-mil: {self.path.name}: {exc}") from None
        return self._program

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_all(feeds, keep=False)

    def run_all(self, feeds: dict[str, np.ndarray], keep: bool = True) -> dict[str, np.ndarray]:
        """Like ``run``; with ``keep=True`` every intermediate value too, by MIL var name."""
        ok, why = self.availability()
        if not ok:
            raise RunnerError(why)
        program = self.program()
        try:
            missing_inputs(f"coreml-mil: {self.path.name}", [n for n, _, _ in program.inputs], feeds)
        except MirrorError as exc:
            raise RunnerError(str(exc)) from None
        t = time.perf_counter()
        try:
            with np.errstate(all="ignore"):  # NaN/Inf are reported by parity, as on a device
                out = program.run(feeds, keep=keep)
        except PackageError as exc:
            raise RunnerError(f"coreml-mil: {self.path.name}: {exc}") from None
        self._run_s = time.perf_counter() - t
        return {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v) for k, v in out.items()}

    def diagnostics(self) -> dict[str, Any]:
        p = self._program
        if p is None:
            return {}
        slow = sorted(p.seconds_by_type.items(), key=lambda kv: -kv[1])[:5]
        return {
            "ops": len(p.ops),
            "op_types": p.op_counts(),
            "fp16_ops": p.fp16_ops(),
            "opset": p.opset,
            "specification_version": p.spec_version,
            "load_s": round(p.load_s, 3),
            "run_s": round(self._run_s, 3) if self._run_s is not None else None,
            "slowest_op_types_s": {k: round(v, 3) for k, v in slow},
        }

    def close(self) -> None:
        self._program = None


def _op_name(op: Any) -> str:
    attr = op.attributes.get("name") if hasattr(op.attributes, "get") else None
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return str(attr.immediateValue.tensor.strings.values[0])
    return op.outputs[0].name if op.outputs else op.type


def _numpy_dtype(name: str) -> Any:
    if name == "STRING":
        return None
    if name not in _NUMPY:
        raise PackageError(f"tensors of type {name} are not supported")
    return np.dtype(_NUMPY[name])


def _unpack(packed: np.ndarray, nbits: int, signed: bool, count: int) -> np.ndarray:
    """LSB-first bit-packed values (coremltools' packing of sub-byte types)."""
    bits = np.unpackbits(packed.reshape(-1), bitorder="little")[: count * nbits]
    values = bits.reshape(count, nbits).astype(np.int64) @ (1 << np.arange(nbits, dtype=np.int64))
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
    return values.astype(np.int8 if signed else np.uint8)
