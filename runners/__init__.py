"""Runners: run an artifact (or the PyTorch reference) on named numpy inputs.

One protocol for every backend (``runners/base.py``). This layer imports numpy, the
standard library and each backend's own runtime (ai_edge_litert, onnxruntime, coremltools
on macOS) only when a runner of that backend is made; never torch and nothing of the
compile side, so ``validation/`` and the on-device ``runtime/`` both stand on it.
"""
