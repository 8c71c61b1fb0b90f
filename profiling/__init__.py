"""profiling: where the time of a graph goes, layer by layer, keyed by torch module path.

It sits after validation and before the compiler: it reads exported programs (graphs,
passes), built artifacts and their reports (validation's report.json), and the runners'
files, and the compiler's ``mirror profile`` command drives it. Per-layer FLOPs and bytes
(``layers``), estimates for named mobile GPUs (``roofline`` over ``devices/*.json``),
measurements on this machine (``measure_torch``, ``measure_ort``, ``measure_litert``), on
a phone (``phone``, ``benchmark_output``) and the HTML report (``html``).
"""
