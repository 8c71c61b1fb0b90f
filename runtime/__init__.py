"""The on-device side of MIRROR: VITOFF in numpy.

VITOFF ("virtual try-off") carries the last DNN try-on result to the following frames
with keypoint optical flow and a thin-plate-spline warp, and decides per frame whether
DIVTON must run again. Preview (once per video) tracks and writes a context store;
Runtime (once per garment) replays it. VITOFF itself imports numpy and the standard
library only, so it ships to a phone without OpenCV, scipy or torch; media I/O on a
workstation uses PyAV (video) and Pillow (images).

Modules: video (decoding through PyAV, .npy clips, the 960x540 canvas), encode (.mp4
output with audio), image (photos through Pillow), pipeline (Preview and Runtime
streamed over a file), stats (stats.json), sample (the built-in sample), imgproc
(filters, pyramids, resize),
keypoints (Shi-Tomasi + greedy NMS), lk (pyramidal Lucas-Kanade), tps (thin-plate
splines), remap (nearest/bilinear/bicubic remap, compositing), triggers (WE/KE),
crop (256x192 DNN crops), preview, store (context store), replay (Runtime),
perf (opt-in allocator tuning), synthetic (clips with known motion for tests and
self-checks).
"""

from .lk import LKParams, track
from .perf import tune_allocator
from .preview import Preview, PreviewResult, VitoffConfig, run_preview
from .replay import KeyframeRequest, iter_replay, replay
from .store import ContextStore, open_store, write_store
from .tps import TPS, TPSDegenerate, fit_tps

__all__ = [
    "ContextStore", "KeyframeRequest", "LKParams", "Preview", "PreviewResult", "TPS",
    "TPSDegenerate", "VitoffConfig", "fit_tps", "iter_replay", "open_store", "replay",
    "run_preview", "track", "tune_allocator", "write_store",
]
