"""VITOFF Runtime: replay a context store for one garment.

Runtime runs once per garment and repeats none of Preview's tracking. For each frame:

- a DNN frame (Preview's decision) gets a KeyframeRequest - the 256x192 person crop
  (background, i.e. parsing label 0, set to white), its parsing crop, box and paddings -
  and the caller's `dnn` callable answers with the 256x192 try-on image and its paste
  mask (the compiled DIVTON runner in production, anything in tests). The answer is
  taken back to box pixels and pasted into the frame; it becomes the keyframe output.
- every other frame regenerates its dense TPS grid from the stored spline and the moved
  box, remaps the keyframe output through it (bicubic colour, nearest mask) and pastes
  the result where the remapped mask is set. Colour is only interpolated at pixels the
  mask keeps, and written straight into the output frame.
- an absent frame (Preview found no subject, or its box left the frame) passes through
  unchanged: no DNN, no paste. The next frame with a subject is a keyframe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .crop import DNN_H, DNN_W, box_pixels, from_dnn, to_dnn
from .remap import Source, composite, remap_planar, to_uint8
from .store import ContextStore, open_store
from .tps import TPS


@dataclass(frozen=True)
class KeyframeRequest:
    """What the try-on DNN gets for one keyframe."""

    frame_index: int
    person: np.ndarray  # [256,192,3] uint8, letterboxed and background-whitened
    parsing: np.ndarray  # [256,192] uint8 (ROI mode: 1 inside the region)
    box: np.ndarray  # [4] (x, y, w, h) in frame pixels
    paddings: np.ndarray  # [4] (top, bottom, left, right) of the letterbox


TryOn = Callable[[KeyframeRequest], tuple[np.ndarray, np.ndarray]]


def keyframe_request(store: ContextStore, t: int, frame: np.ndarray) -> KeyframeRequest:
    """Build the DNN input of frame t from the stored box and parsing crop."""
    box = store["boxes"][t]
    person = to_dnn(frame, box, 255)
    parsing = store.parsing_at(t)
    person = np.where((parsing == 0)[..., None], np.uint8(255), person)
    return KeyframeRequest(t, person, parsing, box.copy(), store["paddings"][t].copy())


def _check_dnn_answer(t: int, answer) -> tuple[np.ndarray, np.ndarray]:
    try:
        rgb, mask = answer
    except (TypeError, ValueError):
        raise MirrorError(f"the try-on callable must return (image, mask) for frame {t + 1}") from None
    rgb, mask = np.asarray(rgb), np.asarray(mask)
    if rgb.shape != (DNN_H, DNN_W, 3) or mask.shape != (DNN_H, DNN_W):
        raise MirrorError(f"the try-on for frame {t + 1} must be [256,192,3] + [256,192], got "
                          f"{list(rgb.shape)} + {list(mask.shape)}")
    return rgb.astype(np.float32), mask.astype(bool)


def warp_mask(mask: Source, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Flat indices (into the grid) of the pixels whose nearest-remapped paste mask is set."""
    return np.flatnonzero(remap_planar(mask, map_x, map_y, "nearest")[0] > 0.5)


def warp_colour(colour: Source, map_x: np.ndarray, map_y: np.ndarray, sel: np.ndarray,
                interpolation: str = "bicubic") -> np.ndarray:
    """The try-on colour remapped at the selected grid pixels only: uint8 [3, len(sel)]."""
    return to_uint8(remap_planar(colour, map_x.reshape(-1)[sel], map_y.reshape(-1)[sel],
                                 interpolation))


def paste(frame: np.ndarray, sel: np.ndarray, colour: np.ndarray, x0: int, y0: int,
          width: int) -> np.ndarray:
    """A copy of frame with colour [3, M] written at grid pixels sel of a grid `width` wide at (x0, y0)."""
    fw = frame.shape[1]
    # Byte offset of each pasted pixel in the frame: grid row r starts (fw - width) pixels
    # further on in the frame than in the grid.
    pix = sel // width
    pix *= fw - width
    pix += sel
    pix += y0 * fw + x0
    pix *= 3
    out = frame.copy()
    flat = out.reshape(-1)
    # Three 1-D scatters (cheaper than one masked [h,w,3] copy), stepping the byte
    # offsets in place from one channel to the next instead of allocating new ones.
    flat[pix] = colour[0]
    pix += 1
    flat[pix] = colour[1]
    pix += 1
    flat[pix] = colour[2]
    return out


def _keyframe(store: ContextStore, t: int, frame: np.ndarray, dnn: TryOn) -> tuple[np.ndarray, tuple]:
    """Run the DNN on frame t and paste its answer; returns (frame, keyframe state)."""
    x0, y0, bw, bh = box_pixels(store["boxes"][t])
    rgb, mask = _check_dnn_answer(t, dnn(keyframe_request(store, t, frame)))
    pad = store["paddings"][t]
    colour = from_dnn(rgb, pad, bw, bh)
    paste_mask = from_dnn(mask, pad, bw, bh, nearest=True)
    key = (Source(colour), Source(paste_mask.astype(np.float32)), x0, y0)
    return composite(frame, colour, paste_mask, x0, y0), key


def replay_grid_step(pixels: int) -> int:
    """The TPS grid's lattice step for a box of this many pixels (TPS.grid's `step`).

    A box of 256x256 pixels or more takes every 4th pixel plus cubic filling, within
    ~0.01 px of the exact grid for Preview's smoothing splines of tracked bodies (0.014 px
    on carphone.mp4's 510x488 box; an interpolating spline there was 0.13 px off) and
    about 3x cheaper (5.7 against 20.1 ms); a smaller one is cheap to evaluate exactly, and its
    spline bends more between lattice points (a 48x85 walker's: 0.05 px at step 4).
    """
    return 4 if pixels >= 1 << 16 else 1


def _tracked(store: ContextStore, t: int, frame: np.ndarray, key: tuple, interpolation: str,
             grid_step: int | None) -> np.ndarray:
    """Frame t composited by replaying the stored TPS onto the last keyframe's output."""
    fh, fw = store.frame_size
    x0, y0, bw, bh = box_pixels(store["boxes"][t])
    spline = TPS.from_arrays(store["tps_ctrl"][t], store["tps_coef"][t], store["tps_norm"][t],
                             int(store["n_points"][t]))
    # Only the part of the moved box inside the frame is evaluated.
    xa, xb = max(0, x0), min(fw, x0 + bw)
    ya, yb = max(0, y0), min(fh, y0 + bh)
    if xa >= xb or ya >= yb:
        return frame.copy()
    if grid_step is None:  # see replay_grid_step
        grid_step = replay_grid_step((xb - xa) * (yb - ya))
    mx, my = spline.grid(xa, ya, xb - xa, yb - ya, step=grid_step)
    mx -= key[2]
    my -= key[3]
    sel = warp_mask(key[1], mx, my)
    colour = warp_colour(key[0], mx, my, sel, interpolation)
    return paste(frame, sel, colour, xa, ya, xb - xa)


def iter_replay(store: ContextStore | str | Path, dnn: TryOn, frames: Iterable[np.ndarray],
                interpolation: str = "bicubic", grid_step: int | None = None,
                keyframe_ms: list[float] | None = None) -> Iterator[np.ndarray]:
    """Yield the composited frames one by one (uint8 [960,540,3]) as `frames` yields them.

    `frames` may be any iterable (a decoder, an array); it must hold the store's frame
    count. `keyframe_ms`, if given, receives the milliseconds of each DNN frame spent
    outside `dnn` (crop, paste-back): the compositing an every-frame DNN would also pay.
    `grid_step` is the TPS grid's lattice step (1: exact); None chooses by the box's size
    (replay_grid_step).
    """
    if not isinstance(store, ContextStore):
        store = open_store(store)
    n = store.frames
    fh, fw = store.frame_size
    key = None  # (colour Source, mask Source, x0, y0) of the last keyframe output
    t = -1
    for t, frame in enumerate(frames):
        if t >= n:
            raise MirrorError(f"the context store was made from {n} frames; the video has more")
        frame = np.asarray(frame)
        if frame.shape != (fh, fw, 3) or frame.dtype != np.uint8:
            raise MirrorError(f"frame {t + 1} must be uint8 [{fh},{fw},3], got "
                              f"{frame.dtype} {list(frame.shape)}")
        if store["absent"][t]:
            key = None  # tracking restarts from a new keyframe
            yield frame
        elif store["dnn"][t]:
            t0, calls = time.perf_counter(), _dnn_seconds(dnn)
            out, key = _keyframe(store, t, frame, dnn)
            if keyframe_ms is not None:
                keyframe_ms.append(1e3 * (time.perf_counter() - t0 - (_dnn_seconds(dnn) - calls)))
            yield out
        else:
            yield _tracked(store, t, frame, key, interpolation, grid_step)
    if t + 1 != n:
        raise MirrorError(f"the context store was made from {n} frames, the video has {t + 1}")


def _dnn_seconds(dnn: TryOn) -> float:
    """Seconds the try-on callable reports it spent (0 when it keeps no count)."""
    return float(getattr(dnn, "seconds", 0.0))


def replay(store: ContextStore | str | Path, dnn: TryOn, frames: Iterable[np.ndarray],
           interpolation: str = "bicubic", grid_step: int | None = None) -> np.ndarray:
    """Composite the garment into every frame: uint8 [T,960,540,3].

    store: a ContextStore or its folder; dnn: callable(KeyframeRequest) -> (try-on
    [256,192,3], paste mask [256,192]), called only on the stored DNN frames; frames:
    the same 960x540 RGB frames Preview saw.
    """
    return np.stack(list(iter_replay(store, dnn, frames, interpolation, grid_step)))
