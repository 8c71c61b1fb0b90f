"""Checks shared by the tests that compile a user model (see conftest.compile_user_model)."""

from __future__ import annotations


def whole_on_gpu(report: dict) -> dict:
    """The LiteRT artifact of a passing compile report, checked to run every op on the real
    GPU delegate in one partition."""
    assert report["summary"]["passed"], report["summary"]
    tflite = next(a for a in report["artifacts"] if a["target"] == "tflite")
    gpu = tflite["gpu_delegate"]
    assert gpu["ops_on_gpu"] == gpu["ops_total"] and gpu["partitions"] == 1, gpu
    return tflite
