"""The runner layer: the child-process helper every out-of-process runner stands on, and the
LiteRT GPU runner that keeps one child across runs.

The child tests start a tiny child module written into ``tmp_path`` (numpy and
``mirror.runners.child`` only), so each takes well under a second.
"""

from __future__ import annotations

import os
import textwrap
import time

import numpy as np
import pytest

from mirror.runners.base import RunnerError
from mirror.runners.child import Child, child_env, run_once

CHILD_MODULE = "mirror_test_child"
CHILD_SOURCE = textwrap.dedent(
    '''
    import os
    import signal
    import sys
    import time

    from mirror.runners.child import serve


    def echo(payload, arrays, stage):
        print(f"echo saw {sorted(arrays)}")
        outputs = {f"{k}_x{payload['scale']}": v * payload["scale"] for k, v in arrays.items()}
        result = {"pid": os.getpid(), "payload": payload,
                  "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
                  "shapes": {k: list(v.shape) for k, v in arrays.items()}}
        return result, outputs


    def pid(payload, arrays, stage):
        return {"pid": os.getpid()}, {}


    def fail(payload, arrays, stage):
        raise ValueError("the handler gave up\\nafter two lines")


    def crash(payload, arrays, stage):
        stage("boom")
        os.kill(os.getpid(), signal.SIGSEGV)
        return {}, {}


    def check(payload, arrays, stage):
        # What a native library's failed CHECK leaves: a warning that mentions an error,
        # then glog's fatal line, then the process exits.
        stage("load")
        print("WARNING: [plugin.cc:312] Failed to load plugin with error: ERROR: [plugin.cc:259]", flush=True)
        print("F0000 00:00:17.757 18651 model.cc:218] Check failed: !IsInput(consumer, value) Node 4", flush=True)
        os._exit(1)


    def nap(payload, arrays, stage):
        stage("nap")
        time.sleep(payload["seconds"])
        return {}, {}


    if __name__ == "__main__":
        sys.exit(serve({"echo": echo, "pid": pid, "fail": fail, "crash": crash, "check": check, "nap": nap}))
    '''
)


@pytest.fixture(scope="module")
def child_env_with_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("child")
    (folder / f"{CHILD_MODULE}.py").write_text(CHILD_SOURCE)
    # child_env puts this process's sys.path on PYTHONPATH; the test module goes first.
    base = child_env()["PYTHONPATH"]
    return child_env({"PYTHONPATH": os.pathsep.join([str(folder), base])})


@pytest.fixture
def child(child_env_with_module):
    with Child(CHILD_MODULE, env=child_env_with_module, label="test child") as c:
        yield c


def test_request_round_trip_with_arrays(child):
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    b = np.array([-3, 0, 7], dtype=np.int8)
    out = child.request("echo", {"scale": 2, "note": "hello"}, {"a": a, "b": b}, timeout=60)
    assert out.ok and out.error == "" and out.returncode is None and not out.crashed
    assert out.result["payload"] == {"scale": 2, "note": "hello"}
    assert out.result["dtypes"] == {"a": "float32", "b": "int8"}
    assert out.result["shapes"] == {"a": [1, 3, 2, 2], "b": [3]}
    assert set(out.outputs) == {"a_x2", "b_x2"}
    np.testing.assert_array_equal(out.outputs["a_x2"], a * 2)
    assert out.outputs["a_x2"].dtype == np.float32
    np.testing.assert_array_equal(out.outputs["b_x2"], b * 2)
    assert out.outputs["b_x2"].dtype == np.int8
    assert out.stage == "echo"  # the kind is the stage until the handler names another
    assert "echo saw ['a', 'b']" in out.log  # what the child printed while serving it


def test_one_process_serves_many_requests(child):
    first = child.request("pid", timeout=60)
    second = child.request("echo", {"scale": 1}, {"x": np.ones(2, np.float32)}, timeout=60)
    assert first.ok and second.ok
    assert first.result["pid"] == second.result["pid"] == child.process.pid != os.getpid()
    assert "echo saw" not in first.log and "echo saw ['x']" in second.log  # each request its own log


def test_handler_exception_is_one_line_and_the_child_serves_on(child):
    before = child.request("pid", timeout=60).result["pid"]
    out = child.request("fail", timeout=60)
    assert not out.ok and not out.crashed and out.returncode is None
    assert out.error.startswith("ValueError: ") and "\n" not in out.error
    assert child.alive
    after = child.request("pid", timeout=60)
    assert after.ok and after.result["pid"] == before


def test_crash_is_reported_with_its_stage(child):
    first_pid = child.request("pid", timeout=60).result["pid"]
    out = child.request("crash", timeout=60)
    assert not out.ok and out.crashed
    assert out.returncode == -11
    assert out.stage == "boom"
    assert out.error == "test child crashed with SIGSEGV during boom"
    assert not child.alive
    # The next request starts a fresh process.
    again = child.request("pid", timeout=60)
    assert again.ok and again.result["pid"] != first_pid


def test_a_failed_native_check_is_named_not_the_warning_before_it(child):
    """A library that aborts on a failed CHECK prints warnings first (LiteRT: a vendor plugin
    that did not load, "with error: ERROR"): the error names the check."""
    out = child.request("check", timeout=60)
    assert not out.ok and out.returncode == 1 and not out.crashed
    assert out.error == ("test child exited with status 1 during load: "
                         "Check failed: !IsInput(consumer, value) Node 4")  # fmt: skip


def test_timeout_kills_the_child_and_says_so(child):
    t = time.perf_counter()
    out = child.request("nap", {"seconds": 60}, timeout=1.0)
    assert time.perf_counter() - t < 30
    assert not out.ok
    assert "timed out" in out.error and out.error == "test child timed out after 1 s during nap"
    assert out.stage == "nap" and out.returncode is not None
    assert out.timed_out and not out.crashed  # killed for the timeout, not a crash of its own
    assert not child.alive


def test_run_once_uses_a_fresh_child(child_env_with_module):
    a = run_once(CHILD_MODULE, "pid", env=child_env_with_module, timeout=60)
    b = run_once(CHILD_MODULE, "pid", env=child_env_with_module, timeout=60)
    assert a.ok and b.ok and a.result["pid"] != b.result["pid"]


# ---------------------------------------------------------------------------------------
# The LiteRT GPU runner


@pytest.fixture
def probe_model(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from mirror.runners.gpu_probe import tiny_probe_model

    path = tmp_path / "probe.tflite"
    path.write_bytes(tiny_probe_model())
    return path


def test_gpu_runner_without_a_driver_is_unavailable_not_broken(probe_model, tmp_path, monkeypatch):
    from mirror.runners.litert import LiteRTGpuRunner

    monkeypatch.setenv("MIRROR_VK_ICD", str(tmp_path / "missing_icd.json"))
    with LiteRTGpuRunner(probe_model) as runner:
        ok, why = runner.availability()
        assert not ok and "missing_icd.json" in why
        loaded = runner.load()
        assert not loaded.ok and why in loaded.error and runner._child is None  # no child started
        with pytest.raises(RunnerError, match="missing_icd.json"):
            runner.run({"a": np.zeros((1, 8, 8, 4), np.float32), "b": np.zeros((1, 8, 8, 4), np.float32)})


@pytest.mark.gpu_delegate
def test_litert_gpu_runner_keeps_one_child_across_runs(probe_model):
    from mirror.runners.litert import LiteRTGpuRunner
    from mirror.runners.vulkan import find_vulkan_driver

    driver = find_vulkan_driver()
    if not driver.found:
        pytest.skip(f"LiteRT's GPU accelerator needs a Vulkan driver: {driver.reason}")
    rng = np.random.default_rng(0)
    pids = []
    with LiteRTGpuRunner(probe_model) as runner:
        assert runner.name == "litert-gpu" and runner.availability() == (True, "")
        assert runner.input_names == ["a", "b"] and runner.output_names == ["y"]
        for _ in range(2):
            a = rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
            b = rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
            out = runner.run({"a": a, "b": b})
            assert list(out) == ["y"] and out["y"].dtype == np.float32
            np.testing.assert_allclose(out["y"], np.tanh(a + b), atol=1e-3)
            pids.append(runner._child.process.pid)
        assert pids[0] == pids[1] != os.getpid()
        assert runner.loaded.ok and runner.diagnostics()["fully_accelerated"] is True
    assert runner._child is None  # closed with the runner
