"""Checkpoint I/O: state_dicts as data, never code.

Loads PF-AFN/MIRROR (``PFAFN_warp_*.pth``, ``PFAFN_gen_*.pth``) and SCHP
(``exp-schp-*.pth``, ``{"state_dict": {"module.conv1.weight": ...}}``) checkpoints with
``torch.load(weights_only=True)``, which refuses any pickled object that is not a tensor
or a plain container, so a checkpoint cannot run code on load.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from mirror import MirrorError

# Containers a training script commonly wraps the state_dict in.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
_SHOWN = 5  # how many key names an error lists per category


class CheckpointError(MirrorError):
    """A checkpoint could not be read or does not fit the graph."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` without unpickling arbitrary objects.

    Unwraps ``{"state_dict": ...}``-style containers and strips a ``module.`` prefix
    (checkpoints saved from DataParallel).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .pth state_dict")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive; older checkpoints are a raw pickle (protocol >= 2).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} contains pickled Python objects, not only tensors; MIRROR loads "
                "checkpoints as data and will not run their code. Re-save it with "
                "torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({reason}); expected a file written by torch.save"
        ) from None
    except Exception as exc:  # torch.load raises many types on foreign bytes
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({reason}); expected a file written by torch.save"
        ) from None
    return normalize_state_dict(obj, source=str(path))


def normalize_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap a checkpoint object to a flat ``{name: tensor}`` dict, ``module.`` stripped."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj or not _is_tensor_dict(obj):
        raise CheckpointError(
            f"{source} holds no state_dict (a mapping of parameter names to tensors); "
            "save one with torch.save(model.state_dict(), path)"
        )
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= max(1, len(values) // 2)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return f"{len(names)}: {shown}{more}"


def apply_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], graph: str, source: str = "checkpoint"
) -> None:
    """Load ``state`` into ``module`` strictly; one clear error lists every mismatch kind."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong-shape keys {_listing(wrong_shape)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit graph '{graph}': "
            + "; ".join(problems)
            + f". Check that it is a {graph} checkpoint in the expected key layout"
        )
    with torch.no_grad():
        module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def save_state_dict(module: nn.Module, path: str | Path) -> Path:
    """Write ``module``'s state_dict to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(module.state_dict(), tmp)
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a block without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
