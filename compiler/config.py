"""Compile configuration: embedded defaults, an optional TOML file, then CLI overrides.

Example ``mirror.toml``::

    out = "build"
    graphs = ["warp", "gen", "parser"]    # the default: all three built-in graphs
    targets = ["tflite", "coreml", "onnx"]
    precisions = ["fp32", "fp16", "int8"]   # also: int8-full (calibrated), palettize6 (Core ML)
    seed = 0                              # seeded weights and validation inputs
    baseline = true                       # also convert with stock litert-torch, for comparison
    gpu_check = "auto"                    # real LiteRT GPU delegate if a Vulkan driver is found, else static rules
    gpu_parity = "fp32"                   # artifacts that also run inference on the GPU delegate: fp32, all, none
    allow_cpu_fallback = false            # a LiteRT artifact with ops left on the CPU fails the compile

    [sampling]                            # grid_sample lowering per target (see DEFAULT_SAMPLING)
    coreml = "native"                     # keep grid_sample: coremltools maps it to MIL resample

    [graph.warp]
    checkpoint = "PFAFN_warp_epoch_101_phif_pl_skip.pth"
    size = [256, 192]
    options = { align_corners = false }
    pipeline = "divton-warp"

    [graph.gen]
    checkpoint = "PFAFN_gen_epoch_101_phif_pl_skip.pth"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirror import MirrorError, precisions

TARGETS = ("tflite", "coreml", "onnx")
PRECISIONS = precisions.names()  # recipes and aliases, stated in mirror/precisions.py
DEFAULT_PRECISIONS = precisions.DEFAULT
KNOWN_GRAPHS = ("warp", "gen", "parser")
DEFAULT_GRAPHS = KNOWN_GRAPHS  # warp, gen and the coarse parser: ~7 min on 2 cores (README, "Measured")
# How each target gets grid_sample (the gpu_grid_sample pass's lowering, or "native" to keep
# grid_sample for the target's own sampler, e.g. Core ML's resample):
# - tflite: fp16_exact. Phone GPU delegates compute in fp16, where a flat pixel index above
#   2048 reads wrong pixels, and the delegate has no per-op precision.
# - onnx: flat. ORT runs fp32 on CPU; the fp16 model keeps its index ops in fp32, so the
#   cheaper flat gather (4 reads per point instead of 2*(B+1)) stays exact.
# - coreml: fp16_exact. The package computes in fp16 on GPU/ANE; exact at any precision.
DEFAULT_SAMPLING = {"tflite": "fp16_exact", "onnx": "flat", "coreml": "fp16_exact"}
SAMPLINGS = ("fp16_exact", "flat", "native")
# The warper is exported in its full PF-AFN form; the pipeline strips it to DIVTON.
DEFAULT_PIPELINES = {"warp": "divton-warp", "gen": "default", "parser": "default"}


@dataclass
class GraphConfig:
    name: str
    checkpoint: Path | None = None
    size: tuple[int, int] | None = None  # (H, W); None keeps the graph's own
    options: dict[str, Any] = field(default_factory=dict)
    pipeline: str = "default"


@dataclass
class CompileConfig:
    out: Path = Path("build")
    graphs: list[GraphConfig] = field(default_factory=list)
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    precisions: list[str] = field(default_factory=lambda: list(DEFAULT_PRECISIONS))
    seed: int = 0
    baseline: bool = True
    gpu_check: str = "auto"  # "auto": real delegate when a Vulkan driver is found, "static" otherwise
    gpu_parity: str = "fp32"  # which artifacts run inference on the LiteRT GPU: fp32, all, none
    allow_cpu_fallback: bool = False  # True: ops left on the CPU by the GPU delegate do not fail the compile
    sampling: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SAMPLING))
    model: str | None = None  # "package.module:factory" for a user model
    rebuild: bool = False  # True: ignore the previous build's artifacts (compiler/reuse.py)


def _check_choice(kind: str, values: list[str], allowed: tuple[str, ...]) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise MirrorError(f"unknown {kind} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")
    if not values:
        raise MirrorError(f"no {kind}s selected; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))


def _graph_config(name: str, table: dict[str, Any]) -> GraphConfig:
    unknown = set(table) - {"checkpoint", "size", "options", "pipeline"}
    if unknown:
        raise MirrorError(f"[graph.{name}] has unknown keys {sorted(unknown)}; use checkpoint, size, options, pipeline")
    size = table.get("size")
    if size is not None and (
        not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)
        or any(v % 32 for v in size)
    ):  # fmt: skip
        raise MirrorError(f"[graph.{name}] size must be [H, W], both multiples of 32; got {size}")
    if not isinstance(table.get("options", {}), dict):
        raise MirrorError(f"[graph.{name}] options must be a table, e.g. options = {{ align_corners = false }}")
    checkpoint = table.get("checkpoint")
    return GraphConfig(
        name=name,
        checkpoint=Path(checkpoint).expanduser() if checkpoint else None,
        size=tuple(int(s) for s in size) if size else None,  # type: ignore[arg-type]
        options=dict(table.get("options", {})),
        pipeline=str(table.get("pipeline", DEFAULT_PIPELINES.get(name, "default"))),
    )


_KNOWN_KEYS = ("out", "graphs", "targets", "precisions", "seed", "baseline", "gpu_check", "gpu_parity", "graph",
               "model", "sampling", "allow_cpu_fallback", "rebuild")  # fmt: skip


def load_config(path: Path | None = None, **overrides: Any) -> CompileConfig:
    """Defaults, then the TOML file at ``path`` (if any), then non-None ``overrides``."""
    data = _read_toml(path) if path is not None else {}
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    gpu_check = data.get("gpu_check", "auto")
    if gpu_check not in ("auto", "static", "delegate"):
        raise MirrorError(f"gpu_check must be auto, static or delegate; got {gpu_check!r}")
    gpu_parity = data.get("gpu_parity", "fp32")
    if gpu_parity not in ("fp32", "all", "none"):
        raise MirrorError(f"gpu_parity must be fp32, all or none; got {gpu_parity!r}")
    return CompileConfig(
        out=_out(data),
        graphs=_graphs(data),
        targets=_check_choice("target", _names(data, "targets", TARGETS), TARGETS),
        precisions=_check_choice("precision", _names(data, "precisions", DEFAULT_PRECISIONS), PRECISIONS),
        seed=_seed(data),
        baseline=_flag(data, "baseline", True),
        gpu_check=gpu_check,
        gpu_parity=gpu_parity,
        allow_cpu_fallback=_flag(data, "allow_cpu_fallback", False),
        sampling=_sampling(data),
        model=_model(data),
        rebuild=_flag(data, "rebuild", False),
    )


def _names(data: dict[str, Any], key: str, default: tuple[str, ...]) -> list[str]:
    """A list of names; a bare string (``graphs = "gen"``) is refused rather than read letter by letter."""
    value = data.get(key, default)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        example = ", ".join(f'"{d}"' for d in default[:2])
        raise MirrorError(f"{key} must be a list of names, e.g. {key} = [{example}]; got {value!r}")
    return list(value)


def _seed(data: dict[str, Any]) -> int:
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MirrorError(f"seed must be a whole number >= 0; got {seed!r}")
    return seed


def _out(data: dict[str, Any]) -> Path:
    out = data.get("out", "build")
    if not isinstance(out, (str, Path)) or not str(out):
        raise MirrorError(f"out must be a folder path; got {out!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MirrorError(f"--out {out} is a file; name a folder for the build (it is created if missing)")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise MirrorError(f"--out {out} lies under {blocked}, which is a file; name a folder for the build")
    return out


def _model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise MirrorError(f"model must be 'package.module:factory'; got {model!r}")
    return model


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    """A true/false setting; a string such as "false" is refused rather than read as true."""
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise MirrorError(f"{key} must be true or false; got {value!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MirrorError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise MirrorError(f"config file {path} is a folder; give the .toml file") from None
    except UnicodeDecodeError:
        raise MirrorError(f"config file {path} is not text; give a TOML file") from None
    except OSError as exc:
        raise MirrorError(f"config file {path} cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise MirrorError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - set(_KNOWN_KEYS)
    if unknown:
        raise MirrorError(f"config file {path} has unknown keys {sorted(unknown)}; known keys: {sorted(_KNOWN_KEYS)}")
    return data


def _graphs(data: dict[str, Any]) -> list[GraphConfig]:
    """The graphs to compile, each with its ``[graph.NAME]`` table and --checkpoint."""
    tables = data.get("graph", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise MirrorError("graph settings go in tables: [graph.warp], [graph.gen], [graph.parser]")
    unknown = sorted(set(tables) - set(KNOWN_GRAPHS))
    if unknown:
        raise MirrorError(f"[graph.{unknown[0]}] is not a graph; graph tables: {', '.join(KNOWN_GRAPHS)}")
    checkpoints = data.get("checkpoints") or {}
    if data.get("model"):
        if checkpoints or "graphs" in data:
            raise MirrorError("--graphs and --checkpoint are for the built-in graphs; --model brings its own weights")
        return []
    names = _check_choice("graph", _names(data, "graphs", DEFAULT_GRAPHS), KNOWN_GRAPHS)
    _check_checkpoints(checkpoints, names)
    graphs = []
    for name in names:
        table = dict(tables.get(name, {}))
        if name in checkpoints:
            table["checkpoint"] = checkpoints[name]
        graphs.append(_graph_config(name, table))
    return graphs


def _check_checkpoints(checkpoints: dict[str, str], names: list[str]) -> None:
    """Every --checkpoint names a graph that this compile builds (a typo would ship seeded weights)."""
    for graph in checkpoints:
        if graph not in KNOWN_GRAPHS:
            raise MirrorError(f"--checkpoint {graph}=...: unknown graph {graph!r}; graphs: {', '.join(KNOWN_GRAPHS)}")
        if graph not in names:
            raise MirrorError(f"--checkpoint {graph}=... but {graph} is not compiled (graphs: {', '.join(names)})")


def _sampling(data: dict[str, Any]) -> dict[str, str]:
    """The grid_sample lowering per target: the defaults, with the ``[sampling]`` table over them."""
    sampling = dict(DEFAULT_SAMPLING)
    for target, lowering in dict(data.get("sampling", {})).items():
        _check_choice("target", [target], TARGETS)
        _check_choice("sampling", [lowering], SAMPLINGS)
        if target == "tflite" and lowering == "native":
            raise MirrorError("tflite cannot keep grid_sample: the GPU delegate refuses its stock lowering")
        sampling[target] = lowering
    return sampling
