"""The VITOFF context store: what Preview leaves on the phone for every later garment.

A store is a plain folder:

    manifest.json   {"format": "mirror-vitoff-context", "version": 4, "frames": T,
                     "frame_size": [H, W], "files": {name: {"bytes": n, "sha256": hex}},
                     "source": {"bytes": n, "sha256": hex}}
    context.npz     per-frame arrays (boxes, keypoints, TPS, paddings, NCC, KE, decisions,
                    absent frames, box/body IoU)
    parsing.npz     256x192 parsing crops (ROI mask in ROI mode) of the DNN frames, in
                    frame order, compressed
    preview.json    human-readable decisions, dnn_fraction, absent_fraction, (with a
                    body model) box_on_body_fraction, per-stage milliseconds

Version 3 added the absent frames (no DNN, no paste; keyframe -1) and the per-frame
IoU of the box with the body. Version 4: `frame_size` is the canvas Preview tracked on,
960x540 in the video's own orientation ([960, 540] portrait, [540, 960] landscape), and
Runtime replays onto that canvas. Older stores are refused with a request to rerun
Preview: a version 3 store put every video on the portrait canvas (its boxes are in
that canvas's pixels), and a version 2 store's DNN-free frames may hold a box that
left the subject.

Payloads are numpy .npz archives read with allow_pickle=False (data, never code).
Opening a store checks the manifest's format and version, every file's size (a
truncated file) and SHA-256 (a changed byte), then every array's dtype and shape;
any mismatch is a one-line MirrorError, so Runtime never replays a damaged context.
`source` fingerprints the video Preview read (size and SHA-256 of the file), so a
store is never replayed onto another video (``check_source``).
Stores are written into a temporary sibling folder and renamed into place; an
existing folder is replaced only if it is itself a store (or empty).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mirror import MirrorError, __version__
from mirror.files import sha256_of

from .preview import STAGES, PreviewResult

FORMAT = "mirror-vitoff-context"
VERSION = 4
_WHY_RERUN = {2: "its DNN-free frames may hold a box that left the subject",
              3: "it tracked every video on the portrait canvas; the canvas now follows the video's orientation"}
MANIFEST = "manifest.json"
_CONTEXT = "context.npz"
_PARSING = "parsing.npz"
_PREVIEW = "preview.json"

# name -> (dtype, shape with T for frames and P for max points)
_ARRAYS: dict[str, tuple[str, tuple]] = {
    "boxes": ("float64", ("T", 4)),
    "dnn": ("bool", ("T",)),
    "keyframe": ("int32", ("T",)),
    "n_points": ("int32", ("T",)),
    "points": ("float32", ("T", "P", 2)),
    "key_points": ("float32", ("T", "P", 2)),
    "tps_ok": ("bool", ("T",)),
    "tps_ctrl": ("float64", ("T", "P", 2)),
    "tps_coef": ("float64", ("T", "P+3", 2)),
    "tps_norm": ("float64", ("T", 3)),
    "paddings": ("int32", ("T", 4)),
    "ncc": ("float32", ("T",)),
    "ncc_threshold": ("float32", ("T",)),
    "tps_error": ("float32", ("T",)),
    "absent": ("bool", ("T",)),
    "box_iou": ("float32", ("T",)),
}


def _json_num(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


def _reason_counts(reasons: list[str], dnn: np.ndarray, absent: np.ndarray) -> dict[str, int]:
    """How many frames each kind of decision took ("WE", "fold", "absent", ...)."""
    counts: dict[str, int] = {}
    for why, key, gone in zip(reasons, dnn, absent, strict=True):
        if key or gone:
            kind = why.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def preview_summary(res: PreviewResult, extra: dict | None = None) -> dict:
    """The preview.json document: decisions per frame, dnn_fraction, absent_fraction,
    box_on_body_fraction (with a body model: see PreviewResult), stage timings."""
    ms = {s: res.stage_ms[s] for s in STAGES}
    total = sum(ms.values())
    on_body = res.box_on_body_fraction
    return {
        "frames": res.frames,
        "frame_size": list(res.frame_size),
        "mask_source": res.mask_source,
        "dnn_frames": [int(i) for i in np.nonzero(res.dnn)[0]],
        "dnn_fraction": round(res.dnn_fraction, 6),
        "dnn_free_fraction": round(1.0 - res.dnn_fraction, 6),
        "absent_frames": int(res.absent.sum()),
        "absent_fraction": round(res.absent_fraction, 6),
        "tracked_fraction": round(float((~res.dnn & ~res.absent).mean()), 6),
        "decision_counts": _reason_counts(res.reasons, res.dnn, res.absent),
        **({"box_on_body_fraction": round(on_body, 6),
            "box_on_body": "IoU >= 0.5 of the tracked box's core with the body model's labels 1-4 box, "
                           "over the DNN-free tracked frames"} if on_body is not None else {}),
        "stage_ms": {
            "mean_per_frame": {s: round(float(v.mean()), 4) for s, v in ms.items()}
            | {"total": round(float(total.mean()), 4)},
            "sum": {s: round(float(v.sum()), 3) for s, v in ms.items()}
            | {"total": round(float(total.sum()), 3)},
        },
        "config": res.config,
        "decisions": [
            {"frame": i, "dnn": bool(res.dnn[i]), "absent": bool(res.absent[i]), "reason": res.reasons[i],
             "keyframe": int(res.keyframe[i]), "points": int(res.n_points[i]),
             "ncc": _json_num(res.ncc[i]), "ncc_threshold": _json_num(res.ncc_threshold[i]),
             "tps_error": _json_num(res.tps_error[i]), "box_iou": _json_num(res.box_iou[i])}
            for i in range(res.frames)
        ],
    } | (extra or {})


def _is_store(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def video_fingerprint(video: str | Path) -> dict:
    """What identifies a video file: its size and SHA-256."""
    video = Path(video)
    return {"bytes": video.stat().st_size, "sha256": sha256_of(video)}


def write_store(path: str | Path, res: PreviewResult, extra: dict | None = None,
                source: dict | None = None) -> Path:
    """Write `res` as a context store at `path`, atomically.

    Refuses to replace anything that is not a context store (or an empty folder).
    `extra` adds keys to preview.json (e.g. source video, placement); `source` is the
    video's fingerprint (``video_fingerprint``).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise MirrorError(f"'{path}' exists and is not a folder; choose another --out")
        if any(path.iterdir()) and not _is_store(path):
            raise MirrorError(f"'{path}' exists and is not a VITOFF context store; "
                              "refusing to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        arrays = {name: np.ascontiguousarray(getattr(res, name)) for name in _ARRAYS}
        np.savez(tmp / _CONTEXT, **arrays)
        np.savez_compressed(tmp / _PARSING, parsing=np.ascontiguousarray(res.parsing))
        (tmp / _PREVIEW).write_text(json.dumps(preview_summary(res, extra), indent=1))
        files = {}
        for name in (_CONTEXT, _PARSING, _PREVIEW):
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_of(tmp / name)}
        manifest = {
            "format": FORMAT, "version": VERSION, "writer": f"mirror {__version__}",
            "frames": res.frames, "frame_size": list(res.frame_size),
            "max_points": int(res.points.shape[1]), "files": files, "source": source,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for name in (*files, MANIFEST):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_manifest(path: Path, where: str) -> dict:
    """The store's manifest, checked for format, version and file list."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise MirrorError(f"{where} has no {MANIFEST}; run `mirror preview` to create it")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise MirrorError(f"{where}: unreadable {MANIFEST} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MirrorError(f"{where} is not a VITOFF context store (format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    version = manifest.get("version")
    if version != VERSION:
        why = _WHY_RERUN.get(version) if isinstance(version, int) else None
        raise MirrorError(f"{where} has format version {version!r}; this mirror reads version {VERSION}"
                          f"{f' ({why})' if why else ''}: rerun `mirror preview`")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {_CONTEXT, _PARSING, _PREVIEW}:
        raise MirrorError(f"{where}: the manifest's file list is damaged")
    return manifest


def _check_files(path: Path, files: dict, where: str) -> None:
    """Every payload file is there, with the size and digest the manifest gives."""
    for name, meta in files.items():
        fp = path / name
        if not fp.is_file():
            raise MirrorError(f"{where}: {name} is missing")
        size = fp.stat().st_size
        if size != meta.get("bytes"):
            raise MirrorError(f"{where}: {name} has {size} bytes, the manifest says "
                              f"{meta.get('bytes')} (truncated or replaced)")
        if sha256_of(fp) != meta.get("sha256"):
            raise MirrorError(f"{where}: {name} does not match its SHA-256 in the manifest "
                              "(the store was modified)")


def _check_arrays(arrays: dict[str, np.ndarray], parsing: np.ndarray, t: int, p: int, where: str) -> None:
    """Dtypes and shapes as the format says, and keyframe bookkeeping that holds together."""
    dims = {"T": t, "P": p, "P+3": p + 3}
    for name, (dtype, shape) in _ARRAYS.items():
        want = tuple(dims.get(d, d) for d in shape)
        a = arrays.get(name)
        if a is None or str(a.dtype) != dtype or a.shape != want:
            got = "missing" if a is None else f"{a.dtype} {list(a.shape)}"
            raise MirrorError(f"{where}: array '{name}' should be {dtype} {list(want)}, got {got}")
    k = int(arrays["dnn"].sum())
    if parsing.dtype != np.uint8 or parsing.shape != (k, 256, 192):
        raise MirrorError(f"{where}: parsing crops should be uint8 [{k}, 256, 192], one per DNN frame")
    _check_states(arrays["dnn"], arrays["absent"], arrays["tps_ok"], arrays["keyframe"], t, where)
    ok = arrays["tps_ok"]
    if not np.isfinite(arrays["boxes"]).all() or not np.isfinite(arrays["tps_coef"][ok]).all():
        raise MirrorError(f"{where}: its boxes or warps hold NaN or Inf (damaged); rerun `mirror preview`")


def _check_states(dnn: np.ndarray, absent: np.ndarray, tps_ok: np.ndarray, kf: np.ndarray, t: int,
                  where: str) -> None:
    """Every frame is a keyframe, a tracked frame replaying the keyframe before it with no
    absent frame in between, or absent (keyframe -1); the first frame that is not absent
    is a keyframe."""
    if t < 1:
        raise MirrorError(f"{where}: it holds no frames")
    present = ~absent
    if (dnn & absent).any() or (tps_ok & absent).any() or (kf[absent] != -1).any():
        raise MirrorError(f"{where}: an absent frame has a DNN decision, a TPS or a keyframe")
    if present.any() and not dnn[int(np.argmax(present))]:
        raise MirrorError(f"{where}: the first frame that is not absent must be a DNN keyframe")
    if not (dnn | tps_ok | absent).all():
        raise MirrorError(f"{where}: a frame has neither a DNN decision nor a TPS")
    k = kf[present]
    if (k < 0).any() or (k > np.nonzero(present)[0]).any() or not dnn[k].all():
        raise MirrorError(f"{where}: keyframe indices are inconsistent")
    tracked = np.nonzero(present & ~dnn)[0]
    if tracked.size and (absent[tracked - 1].any() or (kf[tracked] != kf[tracked - 1]).any()):
        raise MirrorError(f"{where}: keyframe indices are inconsistent")
    if not np.array_equal(kf[dnn], np.nonzero(dnn)[0]):
        raise MirrorError(f"{where}: keyframe indices are inconsistent")


class ContextStore:
    """A verified, loaded context store (see the module docstring for the layout)."""

    def __init__(self, path: Path, manifest: dict, arrays: dict[str, np.ndarray],
                 parsing: np.ndarray, preview: dict) -> None:
        self.path = path
        self.manifest = manifest
        self.arrays = arrays
        self.parsing = parsing
        self.preview = preview
        self._key_index: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return int(self.manifest["frames"])

    @property
    def frame_size(self) -> tuple[int, int]:
        h, w = self.manifest["frame_size"]
        return int(h), int(w)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def parsing_at(self, t: int) -> np.ndarray:
        """The parsing crop of DNN frame t."""
        if self._key_index is None:
            self._key_index = np.cumsum(self.arrays["dnn"]) - 1
        return self.parsing[self._key_index[t]]

    def check_source(self, video: str | Path) -> None:
        """Refuse a video other than the one Preview read (size and SHA-256 differ)."""
        want = self.manifest.get("source")
        if not isinstance(want, dict):
            raise MirrorError(f"context store '{self.path}' does not record its video; rerun `mirror preview`")
        video = Path(video)
        if video.stat().st_size != want.get("bytes") or video_fingerprint(video) != want:
            raise MirrorError(f"context store '{self.path}' was made from another video than '{video}'; "
                              "run `mirror preview` on this video (or give its own --context)")


def open_store(path: str | Path) -> ContextStore:
    """Open and verify a store; any damage or mismatch raises a one-line MirrorError."""
    path = Path(path)
    where = f"context store '{path}'"
    manifest = _read_manifest(path, where)
    _check_files(path, manifest["files"], where)
    try:
        t = int(manifest["frames"])
        p = int(manifest["max_points"])
        fh, fw = (int(v) for v in manifest["frame_size"])
    except (KeyError, TypeError, ValueError):
        raise MirrorError(f"{where}: the manifest lacks frames/max_points/frame_size") from None
    try:
        with np.load(path / _CONTEXT, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        with np.load(path / _PARSING, allow_pickle=False) as z:
            parsing = z["parsing"]
        preview = json.loads((path / _PREVIEW).read_text())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise MirrorError(f"{where}: cannot read its payload ({exc})") from None
    _check_arrays(arrays, parsing, t, p, where)
    return ContextStore(path, manifest | {"frame_size": [fh, fw]}, arrays, parsing, preview)
