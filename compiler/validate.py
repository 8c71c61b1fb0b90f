"""``mirror validate``: parity of artifacts that already exist, on fresh or given inputs.

Two ways in:

- a build folder (``mirror compile``'s): every artifact in its ``manifest.json``, checked
  first against its SHA-256 there, against the reference rebuilt from ``report.json``'s
  settings (seeded weights with the compile's seed, or the checkpoint it named);
- one file of any target (``.tflite``, ``.onnx``/``.ort``, ``.mlpackage``), built by us or
  not, against a built-in graph (``--graph``, seeded weights or ``--checkpoint``) or the
  user's own model (``--model package.module:factory``).

Inputs are drawn fresh (image-like, seeded; never the compile's validation or calibration
seeds) or read from the user's ``.npz`` (one array per input, named as in the graph's spec).
Each artifact runs on every runner its target names (``runners/``); the bounds are the
recipes' (``mirror/precisions.py``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirror import MirrorError, __version__
from mirror.compiler.config import DEFAULT_PIPELINES, KNOWN_GRAPHS, GraphConfig
from mirror.compiler.driver import emitter_for
from mirror.compiler.localize import ReferenceCache, localize_artifact
from mirror.compiler.progress import Progress
from mirror.compiler.units import CompileUnit, builtin_unit, feed_array, feeds_of, user_unit
from mirror.files import sha256_of
from mirror.precisions import get_recipe, names
from mirror.targets.base import Artifact
from mirror.validation.parity import check_runners, gpu_skips
from mirror.validation.reference import TorchReferenceRunner
from mirror.validation.report import ArtifactEntry, ValidateReport

VALIDATE_SEED_OFFSET = 3000  # apart from the compile's validation (1000) and calibration (2000) seeds
SUFFIX_TARGETS = {".tflite": "tflite", ".onnx": "onnx", ".ort": "onnx", ".mlpackage": "coreml"}


@dataclass
class Subject:
    """One artifact to check, the graph it comes from, and the digest it must have."""

    unit: CompileUnit
    artifact: Artifact
    sha256: str | None = None  # from the build's manifest; None for a lone file
    passes: list[str] | None = None  # the passes that made it, from the build's report
    lowering: str | None = None  # the compile's grid_sample lowering for its target


def build_subjects(
    build: Path, checkpoints: dict[str, str] | None = None, *, exact_export: bool = False
) -> tuple[list[Subject], int]:
    """Every artifact of a build with its graph's reference; also the compile's seed.

    ``exact_export``: also load the module the compile exported (the full PF-AFN warper for
    the divton-warp pipeline), so that ``--localize`` can rebuild the very program."""
    manifest, report = _read_json(build / "manifest.json", build), _read_json(build / "report.json", build)
    try:
        entries, config = manifest["artifacts"], report["config"]
        infos = {(a["graph"], a["target"], a["precision"]): a for a in report["artifacts"]}
        seed = int(config.get("seed", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise MirrorError(f"{build} is not a MIRROR build (its report lacks {exc}); run `mirror compile`") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise MirrorError(f"{build}/manifest.json is damaged (artifacts is not a list of entries); recompile")
    units: dict[str, CompileUnit] = {}
    subjects = []
    for e in entries:
        graph = e["graph"]
        if not (build / str(e["path"])).resolve().is_relative_to(build.resolve()):
            raise MirrorError(f"{build}/manifest.json points outside the build ({e['path']}); rerun `mirror compile`")
        if graph not in units:
            units[graph] = _build_unit(graph, config, seed, checkpoints or {}, exact_export)
        entry = infos.get((graph, e["target"], e["precision"]), {})
        art = Artifact(graph, e["target"], e["precision"], build / e["path"], units[graph].input_names,
                       units[graph].output_names, entry.get("info", {}))  # fmt: skip
        lowering = (config.get("sampling") or {}).get(e["target"])
        subjects.append(Subject(units[graph], art, e.get("sha256"), entry.get("passes"), lowering))
    return subjects, seed


def file_subject(
    path: Path, *, graph: str | None, model: str | None, precision: str | None, checkpoint: str | None, seed: int,
    exact_export: bool = False,
) -> Subject:
    """One file of any target, against a built-in graph or the user's model (``exact_export``:
    exported as ``mirror compile`` exports it by default, for ``--localize``). Like the target
    (from the suffix), the precision defaults to what the file's name says (``precision_of``)."""
    target = SUFFIX_TARGETS.get(path.suffix.lower())
    if target is None:
        raise MirrorError(f"{path.name}: not a model file mirror can run ({', '.join(SUFFIX_TARGETS)})")
    if not path.exists():
        raise MirrorError(f"no such artifact: {path}")
    if (graph is None) == (model is None):
        raise MirrorError("--artifact needs its reference: --graph NAME (a built-in graph) or --model pkg.mod:factory")
    precision = precision or precision_of(path)
    get_recipe(precision)  # an unknown precision stops here, with the known names
    if model is not None:
        unit = user_unit(model)
    else:
        if graph not in KNOWN_GRAPHS:
            raise MirrorError(f"unknown graph {graph!r}; built-in graphs: {', '.join(KNOWN_GRAPHS)}")
        pipeline = DEFAULT_PIPELINES.get(graph, "default") if exact_export else "default"
        unit = builtin_unit(GraphConfig(graph, checkpoint=Path(checkpoint) if checkpoint else None,
                                        pipeline=pipeline), seed)  # fmt: skip
    art = Artifact(unit.name, target, precision, path, unit.input_names, unit.output_names, {})
    return Subject(unit, art)


def precision_of(artifact: Path) -> str:
    """The precision in a name the compiler gives (``warp_int8.tflite``: int8), else fp32."""
    last = Path(artifact).stem.rsplit("_", 1)[-1]
    return last if last in names() else "fp32"


def validate(
    subjects: list[Subject], *, seed: int, inputs: Path | None, gpu_parity: str, progress: Progress,
    localizer: ReferenceCache | None = None,
) -> ValidateReport:
    """Run every subject on every runner of its target and compare with its reference;
    with ``localizer``, also find each runner's first divergent layer (compiler/localize.py)."""
    t0 = time.perf_counter()
    report = ValidateReport(str(inputs) if inputs else f"random, image-like, seed {seed}", mirror=__version__)
    cache: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    for s in subjects:
        a = s.artifact
        if s.unit.name not in cache:
            cache[s.unit.name] = _feeds_and_reference(s.unit, inputs, seed)
        feeds, want = cache[s.unit.name]
        with progress.step(f"{a.graph}: {a.target} {a.precision}") as note:
            entry = _check(s, feeds, want, gpu_parity)
            note["result"] = entry.error or ", ".join(f"{r}: {p.brief()}" for r, p in entry.parity.items())
        if localizer is not None and entry.error is None:
            with progress.step(f"{a.graph}: {a.target} {a.precision}: localize") as note:
                found = localize_artifact(s.unit, a, feeds, localizer, s.passes, s.lowering)
                entry.localize = {r: loc.to_json() for r, loc in found.items()}
                note["result"] = "; ".join(f"{r}: {loc.brief()}" for r, loc in found.items())
        report.artifacts.append(entry)
    report.seconds = time.perf_counter() - t0
    return report


def _check(s: Subject, feeds: dict[str, np.ndarray], want: dict[str, np.ndarray], gpu_parity: str) -> ArtifactEntry:
    a = s.artifact
    entry = ArtifactEntry(a.graph, a.target, a.precision, path=str(a.path))
    if not a.path.exists():
        entry.error = f"{a.path} is listed in the manifest but missing"
        return entry
    entry.sha256 = sha256_of(a.path)
    if s.sha256 is not None and entry.sha256 != s.sha256:
        entry.error = f"{a.path.name} does not match its manifest digest (changed after compile)"
        return entry
    runners = emitter_for(a.target).runners(a)
    skip = gpu_skips(runners, gpu_parity, a.precision)
    try:
        entry.parity = check_runners(runners, feeds, want, a.precision, value_ranges=s.unit.value_ranges,
                                     psnr_output=s.unit.psnr_output, skip=skip)  # fmt: skip
    finally:
        for r in runners:
            r.close()
    return entry


def _feeds_and_reference(
    unit: CompileUnit, inputs: Path | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The inputs (the user's, or drawn for ``seed``) and the reference's outputs on them."""
    if inputs is not None:
        feeds = read_inputs(inputs, unit)
    else:
        feeds = feeds_of(unit, unit.inputs(seed))
    ref = TorchReferenceRunner(unit.reference, unit.input_names, unit.output_names)
    return feeds, ref.run_tensors(tuple(torch.from_numpy(feeds[n]) for n in unit.input_names))


def read_inputs(path: Path, unit: CompileUnit) -> dict[str, np.ndarray]:
    """The user's inputs from an ``.npz``: one array per input name, in the graph's shapes
    (float32, or the input's own dtype for an integer or boolean input)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError:
        raise MirrorError(f"--inputs {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise MirrorError(f"--inputs {path} is not a readable .npz of plain arrays ({exc})") from None
    want = dict(zip(unit.input_names, unit.example_inputs, strict=True))
    missing, unknown = sorted(set(want) - set(arrays)), sorted(set(arrays) - set(want))
    if missing or unknown:
        raise MirrorError(
            f"--inputs {path.name} must hold exactly {', '.join(want)} for {unit.name}; "
            f"missing {', '.join(missing) or 'none'}, unknown {', '.join(unknown) or 'none'}"
        )
    feeds = {}
    for name, example in want.items():
        a = arrays[name]
        if a.shape == tuple(example.shape[1:]):
            a = a[None]  # one sample without its batch axis
        want_dtype = feed_array(example[:0]).dtype
        if a.shape != tuple(example.shape) or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise MirrorError(f"--inputs {path.name}: {name} is {a.dtype} {list(a.shape)}, "
                              f"{unit.name} takes {want_dtype} {list(example.shape)}")  # fmt: skip
        feeds[name] = np.ascontiguousarray(a, dtype=want_dtype)
    return feeds


def _build_unit(
    graph: str, config: dict[str, Any], seed: int, checkpoints: dict[str, str], exact_export: bool = False
) -> CompileUnit:
    """The reference of one graph of a build, rebuilt from the compile's settings."""
    if config.get("model"):
        return user_unit(config["model"])
    settings = next((g for g in config.get("graph_configs") or [] if g.get("name") == graph), {"name": graph})
    checkpoint = checkpoints.get(graph) or settings.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        raise MirrorError(f"{graph} was compiled from {checkpoint}, which is not there; "
                          f"pass --checkpoint {graph}=PATH")  # fmt: skip
    cfg = GraphConfig(graph, checkpoint=Path(checkpoint) if checkpoint else None,
                      size=tuple(settings["size"]) if settings.get("size") else None,
                      options=dict(settings.get("options") or {}))  # fmt: skip
    if exact_export:
        return builtin_unit(dataclasses.replace(cfg, pipeline=settings.get("pipeline") or cfg.pipeline), seed)
    # The reference only: the default pipeline does not load the full PF-AFN export form.
    return builtin_unit(dataclasses.replace(cfg, pipeline="default"), seed)


def _read_json(path: Path, build: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MirrorError(f"{build} has no {path.name}; run `mirror compile --out {build}` first")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MirrorError(f"{path} is unreadable ({exc}); rerun `mirror compile`") from None
