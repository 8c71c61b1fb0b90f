"""Preview and Runtime over a video file, streamed: decode, process, encode, drop.

One frame at a time goes from the decoder onto the processing canvas (960x540 in the
video's own orientation: video.canvas_size), through VITOFF
(Preview: tracking; Runtime: DIVTON on keyframes, replay elsewhere), back to the source
frame and into the encoder; nothing per frame is kept but Preview's small records (and
its keyframes' parsing crops), so memory does not grow with the clip's length.

The try-on goes back onto the source frame at the source's resolution: only the pixels
the garment changed on the canvas are scaled back and replaced; the rest of the frame
is the decoded source, untouched by the canvas's downscaling.

Each phase's time is measured (``Clock``): decode (demux, decode, fit to the canvas),
preview, dnn (warp + gen), vitoff (replay and paste-back), encode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from mirror import MirrorError

from .crop import nearest_resize
from .encode import open_mp4
from .imgproc import resize
from .preview import Parser, Preview, PreviewResult
from .replay import TryOn, iter_replay
from .store import ContextStore, video_fingerprint, write_store
from .video import Frame, Placement, VideoClip, on_canvas, placement

Progress = Callable[[str, int, int], None]  # (phase, frames done, frames expected)


class Clock:
    """Milliseconds per phase, accumulated."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.ms[phase] = self.ms.get(phase, 0.0) + 1e3 * seconds

    def timed(self, items: Iterable, phase: str) -> Iterator:
        """Iterate `items`, charging the time spent producing each one to `phase`."""
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.add(phase, time.perf_counter() - t0)
                return
            self.add(phase, time.perf_counter() - t0)
            yield item


def _canvas(clip: VideoClip, place: Placement, clock: Clock, current: list) -> Iterator[np.ndarray]:
    """Canvas frames of the clip (decode time charged); `current[0]` holds the source Frame."""
    for frame in clock.timed(clip, "decode"):
        t0 = time.perf_counter()
        canvas = on_canvas(frame.scaled(place.height, place.width), place)
        clock.add("decode", time.perf_counter() - t0)
        current[0] = frame
        yield canvas


def run_preview_video(clip: VideoClip, store_path: Path, roi_src: tuple[int, int, int, int] | None = None,
                      progress: Progress | None = None, parser: Parser | None = None) -> tuple[PreviewResult, Clock]:
    """Preview the whole clip and write the store.

    The body comes from `roi_src` (source pixels) when given, else from `parser` (frame ->
    7-class labels; default: the MediaPipe body model of body.py, made here).
    """
    clock = Clock()
    place = placement(clip.info.height, clip.info.width)  # the canvas of the video's orientation
    roi = None
    if roi_src is not None:
        x, y, w, h = roi_src
        cx, cy = place.to_canvas(x, y)
        roi = (cx, cy, w * place.scale, h * place.scale)
        parser = None
    elif parser is None:
        from .body import BodyModel

        parser = BodyModel()
    seen = _Seen(parser) if parser is not None else None
    pv = Preview(roi=roi, parser=seen, frame_size=place.canvas)
    current: list = [None]
    for k, canvas in enumerate(_canvas(clip, place, clock, current)):
        t0 = time.perf_counter()
        pv.step(canvas)
        clock.add("preview", time.perf_counter() - t0)
        if progress is not None:
            progress("preview", k + 1, clip.info.frames)
    res = pv.result()
    _check_subject(clip, res, seen)
    extra = {
        "source": {"path": str(clip.path), "frames": res.frames, "width": clip.info.width,
                   "height": clip.info.height, "decode_ms": round(clock.ms.get("decode", 0.0), 3)},
        "placement": place.as_dict(),
    }
    if roi is not None:
        extra["roi"] = {"input": list(roi_src), "canvas": [round(v, 3) for v in roi]}
    else:
        extra["body"] = {"model": type(parser).__name__, "frames_with_person": seen.frames_with_person}
    write_store(store_path, res, extra, source=video_fingerprint(clip.path))
    return res, clock


class _Seen:
    """A parser wrapper that counts the frames where it found a person (a non-zero label)."""

    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self.frames_with_person = 0

    def __getattr__(self, name: str):  # last_mask and the like: the wrapped parser's
        return getattr(self.parser, name)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        labels = self.parser(frame)
        self.frames_with_person += bool(np.any(labels))
        return labels


def _check_subject(clip: VideoClip, res: PreviewResult, seen: _Seen | None) -> None:
    """A one-line error when there was nothing to follow on any frame."""
    if seen is not None and res.frames and seen.frames_with_person == 0:
        raise MirrorError(f"{clip.path.name}: no person was found on any of its {res.frames} frames; "
                          "give --roi x,y,w,h around the torso and arms")  # fmt: skip
    if res.frames and int(res.n_points.max()) == 0:
        # Nothing to track anywhere: every frame would need DIVTON, on a region with no subject.
        where = "the body" if seen is not None else "the region"
        check = "the video" if seen is not None else "the video and --roi"
        raise MirrorError(f"{clip.path.name}: no corner to track inside {where} on any of its {res.frames} "
                          f"frames (a blank or one-colour video there?); check {check}")  # fmt: skip


def to_source(src: np.ndarray, before: np.ndarray, after: np.ndarray, place: Placement) -> np.ndarray:
    """The source frame with the pixels that changed between canvas `before` and `after` replaced."""
    if place.scale == 1.0 and place.offset_x == place.offset_y == 0:
        return after
    changed = np.any(before != after, axis=-1)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not len(rows):
        return src
    s, oy, ox = place.scale, place.offset_y, place.offset_x
    cy0, cy1, cx0, cx1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    sy0, sy1 = max(0, round((cy0 - oy) / s)), min(src.shape[0], round((cy1 - oy) / s))
    sx0, sx1 = max(0, round((cx0 - ox) / s)), min(src.shape[1], round((cx1 - ox) / s))
    if sy0 >= sy1 or sx0 >= sx1:
        return src
    colour = np.clip(np.rint(resize(after[cy0:cy1, cx0:cx1], sy1 - sy0, sx1 - sx0)), 0, 255).astype(np.uint8)
    mask = nearest_resize(changed[cy0:cy1, cx0:cx1], sy1 - sy0, sx1 - sx0)
    out = src.copy()
    region = out[sy0:sy1, sx0:sx1]
    np.copyto(region, colour, where=mask[..., None])
    return out


def run_tryon_video(clip: VideoClip, store: ContextStore, dnn: TryOn, out: Path,
                    progress: Progress | None = None) -> tuple[Clock, list[float]]:
    """Put the garment on every frame and encode `out`; returns the clock and keyframe paste ms."""
    clock = Clock()
    # The canvas Preview tracked on (the store's frame size), whatever this mirror would choose now.
    place = placement(clip.info.height, clip.info.width, *store.frame_size)
    current: list[Frame | None] = [None]
    keyframe_ms: list[float] = []
    canvases = _canvas(clip, place, clock, current)
    audio = clip.path if clip.info.has_audio else None
    with open_mp4(out, clip.info, audio) as writer:
        replayed = clock.timed(iter_replay(store, dnn, _keep(canvases, current), keyframe_ms=keyframe_ms), "replay")
        for k, composited in enumerate(replayed):
            t0 = time.perf_counter()
            src = current[0]
            writer.write(to_source(src.rgb(), current[1], composited, place), src.pts)
            clock.add("encode", time.perf_counter() - t0)
            current[0] = current[1] = None  # the frame is done: let it go
            if progress is not None:
                progress("tryon", k + 1, store.frames)
    dnn_s = float(getattr(dnn, "seconds", 0.0))
    clock.ms["dnn"] = 1e3 * dnn_s
    clock.ms["vitoff"] = clock.ms.pop("replay") - clock.ms.get("decode", 0.0) - clock.ms["dnn"]
    return clock, keyframe_ms


def _keep(canvases: Iterator[np.ndarray], current: list) -> Iterator[np.ndarray]:
    """Pass canvas frames on, remembering the last one in current[1] (for to_source)."""
    current.append(None)
    for canvas in canvases:
        current[1] = canvas
        yield canvas
