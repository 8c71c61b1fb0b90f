"""What a try-on run cost, and what VITOFF saved: the stats.json document and its summary line.

`speedup_vs_every_frame` compares this run with DIVTON on every frame: frames x (the
median DIVTON latency measured on this run's keyframes + the median keyframe
compositing, i.e. crop and paste-back) divided by what the Runtime phase paid here
(dnn + vitoff). Decoding and encoding cost the same either way and are left out of
both sides; `speedup_with_preview` also charges this run's Preview, when it ran, to
VITOFF's side. Absent frames (Preview found no subject: no DNN, no paste) are counted
apart (`absent_frames`, `absent_fraction`), so a clip that is mostly empty cannot pass for
one where tracking saved the DNN.
"""

from __future__ import annotations

import statistics

PHASES = ("decode", "preview", "dnn", "vitoff", "encode")


def tryon_stats(frames: int, dnn_frames: int, ms: dict[str, float], divton_ms: list[float],
                keyframe_ms: list[float], absent_frames: int = 0) -> dict:
    """The stats.json document; `ms` holds milliseconds per phase (PHASES)."""
    phase_ms = {p: round(ms.get(p, 0.0), 3) for p in PHASES}
    total = sum(phase_ms.values())
    median_dnn = statistics.median(divton_ms) if divton_ms else 0.0
    median_paste = statistics.median(keyframe_ms) if keyframe_ms else 0.0
    every_frame = frames * (median_dnn + median_paste)
    runtime = phase_ms["dnn"] + phase_ms["vitoff"]
    return {
        "frames": frames,
        "dnn_frames": dnn_frames,
        "dnn_fraction": round(dnn_frames / frames, 6) if frames else 0.0,
        "absent_frames": absent_frames,
        "absent_fraction": round(absent_frames / frames, 6) if frames else 0.0,
        "ms": phase_ms | {"total": round(total, 3)},
        "ms_per_frame": {p: round(v / max(frames, 1), 3) for p, v in phase_ms.items()}
        | {"total": round(total / max(frames, 1), 3)},
        "divton_median_ms": round(median_dnn, 3),
        "keyframe_compositing_median_ms": round(median_paste, 3),
        "every_frame_ms": round(every_frame, 3),
        "speedup_vs_every_frame": round(every_frame / runtime, 3) if runtime > 0 else None,
        "speedup_with_preview": round(every_frame / (runtime + phase_ms["preview"]), 3)
        if phase_ms["preview"] > 0 and runtime > 0 else None,
    }


def summary_line(stats: dict, out: str) -> str:
    """One line for the terminal."""
    f, k = stats["frames"], stats["dnn_frames"]
    phases = ", ".join(f"{p} {stats['ms'][p] / 1e3:.1f} s" for p in PHASES if stats["ms"][p] > 0)
    speed = stats["speedup_vs_every_frame"]
    speed_txt = f", speedup over DIVTON on every frame {speed:.1f}x" if speed else ""
    absent = stats.get("absent_frames", 0)
    absent_txt = f", no subject on {absent} ({stats['absent_fraction']:.1%}: left as they are)" if absent else ""
    return (f"tryon: {f} frames, DIVTON on {k} ({stats['dnn_fraction']:.1%}, "
            f"{stats['divton_median_ms']:.0f} ms each){absent_txt}{speed_txt}; {phases}; "
            f"{stats['ms']['total'] / 1e3:.1f} s in all -> {out}")
