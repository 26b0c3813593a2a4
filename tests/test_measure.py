"""Measurement helpers: latency statistics, time_calls, projection labels, fresh-process peak RSS."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgemodels import devices, measure
from edgemodels.devices import Placement
from edgemodels.measure import LatencyStats, MemoryResult, Projection

MiB = 2**20
HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


# --- LatencyStats ----------------------------------------------------------------------------


def test_from_samples_percentiles_match_hand_computed_linear_interpolation():
    # 1..100 s: linear-interpolated percentiles sit at index (n-1)*q = 49.5, 89.1 and 98.01.
    stats = LatencyStats.from_samples([float(i) for i in range(100, 0, -1)])
    assert stats.n == 100
    assert stats.mean_s == pytest.approx(50.5)
    assert stats.p50_s == pytest.approx(50.5)
    assert stats.p90_s == pytest.approx(90.1)
    assert stats.p99_s == pytest.approx(99.01)
    assert (stats.min_s, stats.max_s) == (1.0, 100.0)
    assert stats.inferences_per_s == pytest.approx(1 / 50.5)


def test_from_samples_single_sample():
    stats = LatencyStats.from_samples([0.25])
    assert stats.n == 1
    assert stats.mean_s == stats.p50_s == stats.p99_s == stats.min_s == stats.max_s == 0.25
    assert stats.inferences_per_s == pytest.approx(4.0)


@pytest.mark.parametrize("bad", [[], [0.1, -0.1], [float("nan")], [float("inf")]])
def test_from_samples_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        LatencyStats.from_samples(bad)


# --- time_calls ------------------------------------------------------------------------------


class FakeClock:
    """perf_counter that advances only when the timed function runs: deterministic latencies."""

    def __init__(self, step: float):
        self.now = 0.0
        self.step = step
        self.calls = 0

    def perf_counter(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += self.step


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock(step=0.1)
    monkeypatch.setattr(measure.time, "perf_counter", fake.perf_counter)
    return fake


def test_time_calls_runs_warmup_then_rounds(clock):
    stats = measure.time_calls(clock.work, warmup=2, rounds=5)
    assert clock.calls == 7
    assert stats.n == 5
    assert stats.mean_s == pytest.approx(0.1)


@pytest.mark.parametrize(
    "max_seconds,rounds,expected_n",
    [
        (0.55, 10, 6),  # stops at the first round ending at or past 0.55 s
        (0.25, 10, 3),
        (0.01, 10, 3),  # never fewer than 3 rounds
        (0.01, 2, 2),  # ... unless fewer were asked for
        (None, 10, 10),
        (100.0, 10, 10),
    ],
)
def test_time_calls_max_seconds(clock, max_seconds, rounds, expected_n):
    stats = measure.time_calls(clock.work, warmup=0, rounds=rounds, max_seconds=max_seconds)
    assert stats.n == expected_n == clock.calls


def test_time_calls_real_clock_measures_sleep():
    stats = measure.time_calls(lambda: time.sleep(0.01), warmup=0, rounds=3)
    assert stats.n == 3
    assert stats.min_s >= 0.009
    assert stats.inferences_per_s < 101


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"warmup": -1}, {"max_seconds": 0}])
def test_time_calls_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        measure.time_calls(lambda: None, **kwargs)


# --- project ---------------------------------------------------------------------------------


def test_measured_placement_passes_value_through():
    pl = Placement(devices.get("desktop"), True, "measured")
    proj = measure.project(12.5, pl)
    assert proj == Projection(12.5, "measured", None, proj.basis)
    assert "measured" in proj.label


@pytest.mark.parametrize("name", ["pi3", "pi4", "pi5"])
def test_projected_placement_scales_by_speed_factor(name):
    profile = devices.get(name)
    proj = measure.project(20.0, Placement(profile, False, "projected"), host_threads=4)
    assert proj.method == "projected"
    assert proj.factor == profile.speed_factor
    assert proj.value == pytest.approx(20.0 * profile.speed_factor)
    assert "4 thread" in proj.basis and f"{profile.speed_factor:g}" in proj.basis
    assert "undercounts" not in proj.basis
    assert proj.label.endswith("(projected)")


def test_projection_from_fewer_host_threads_says_it_undercounts():
    proj = measure.project(10.0, Placement(devices.get("pi4"), False, "projected"), host_threads=2)
    assert "2 thread" in proj.basis and "undercounts" in proj.basis


def test_projection_default_threads_follow_the_profile_on_this_host():
    profile = devices.get("pi5")
    proj = measure.project(1.0, Placement(profile, False, "projected"))
    assert f"{profile.threads()} thread" in proj.basis


def test_projecting_a_profile_without_factor_errors():
    with pytest.raises(ValueError, match="no speed factor"):
        measure.project(5.0, Placement(devices.get("desktop"), False, "projected"))


def test_projection_is_refused_from_a_runtime_the_factor_does_not_hold_for():
    """tflite-runtime 2.14's x86 wheel is ~40x slower than ai-edge-litert: a factor applied to it lies."""
    pl = Placement(devices.get("pi3"), False, "projected")
    with pytest.raises(measure.ProjectionRefused, match="tflite-runtime.*ai-edge-litert"):
        measure.project(2.0, pl, host_threads=2, runtime="tflite-runtime")
    assert measure.project(2.0, pl, host_threads=2, runtime="ai-edge-litert").method == "projected"
    # on the device itself the runtime is the device's: measured, whatever it is
    assert measure.project(2.0, Placement(devices.get("pi3"), True, "measured"), runtime="tflite-runtime").value == 2.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_project_rejects_bad_throughput(bad):
    with pytest.raises(ValueError):
        measure.project(bad, Placement(devices.get("pi3"), False, "projected"))


# --- peak_rss_of_run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Two 3-class classifiers over int32 input_ids/attention_mask: dynamic and fixed (8) length."""
    tf = pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for kind, length in (("dynamic", None), ("fixed", 8)):

        class Tiny(tf.Module):
            def __init__(self):
                super().__init__()
                self.w = tf.constant([[0.5, -1.0, 2.0]], dtype=tf.float32)

            @tf.function(
                input_signature=[
                    tf.TensorSpec([1, length], tf.int32, name="input_ids"),
                    tf.TensorSpec([1, length], tf.int32, name="attention_mask"),
                ]
            )
            def serve(self, input_ids, attention_mask):
                x = tf.cast(input_ids * attention_mask, tf.float32)
                return {"logits": tf.matmul(tf.reduce_mean(x, axis=1, keepdims=True), self.w)}

        module = Tiny()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
        path = out / f"{kind}.tflite"
        path.write_bytes(converter.convert())
        paths[kind] = path
    return paths


def _run(path: Path, budget: int, **kw) -> MemoryResult:
    kw.setdefault("runtime", None)
    kw.setdefault("threads", 1)
    kw.setdefault("seq_len", 16)
    return measure.peak_rss_of_run(path, budget_bytes=budget, timeout_s=kw.pop("timeout_s", 120), **kw)


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_tiny_model_fits_a_big_budget(tiny_models):
    from importlib import metadata

    res = _run(tiny_models["dynamic"], 4096 * MiB)
    assert res.error is None, res.error
    assert res.fits and res.returncode == 0
    assert (res.runtime, res.runtime_version) == ("ai-edge-litert", metadata.version("ai-edge-litert"))
    # A Python interpreter with numpy and a runtime loaded: more than 10 MB ...
    assert 10 * MiB < res.peak_rss_bytes
    # ... but not TensorFlow (~500 MB): the child must not import it, and the tiny_models fixture has
    # TensorFlow loaded in THIS process, whose RSS must not leak into the child's figure (ru_maxrss
    # carries it over fork+exec on Linux).
    assert "tensorflow" in sys.modules
    assert res.peak_rss_bytes < 300 * MiB


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_over_budget_without_reaching_kill_threshold_does_not_fit(tiny_models):
    first = _run(tiny_models["dynamic"], 4096 * MiB)
    budget = int(first.peak_rss_bytes * 0.8)  # kill threshold 1.2x the peak: it runs to the end
    res = _run(tiny_models["dynamic"], budget)
    assert res.returncode == 0 and res.error is None
    assert res.peak_rss_bytes > budget
    assert not res.fits


BALLAST_MIB = 192
"""What the child is made to hold on top of its normal run: far above the run-to-run noise, far from 100 MiB."""
BALLAST_SLACK_MIB = 16
"""The two children differ only in the ballast (same code, model, runtime, threads): the ballast must show within
this much. Generous: six runs of each child on a loaded 2-core VM spread by under 1 MiB, the ballast by 192.0."""


def _child_peak(model: Path, python: list[str]) -> int:
    """The peak RSS the child itself reports (its VmHWM), read from its JSON line: no parent-side polling."""
    proc = subprocess.run([*python, "-m", "edgemodels.measure", "--child", str(model), "--seq-len", "16", "--runs", "2",
                           "--threads", "1"], capture_output=True, text=True, timeout=120, env=measure._child_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])["peak_rss_bytes"]


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_the_childs_own_peak_grows_by_what_it_holds(tiny_models, tmp_path):
    """Against an independent figure: the same child with BALLAST_MIB of written bytes held reports that much more."""
    from conftest import ballast_python

    plain = _child_peak(tiny_models["dynamic"], ballast_python(tmp_path, 0))
    fat = _child_peak(tiny_models["dynamic"], ballast_python(tmp_path, BALLAST_MIB))
    assert 10 * MiB < plain < 300 * MiB
    assert abs((fat - plain) / MiB - BALLAST_MIB) < BALLAST_SLACK_MIB, (plain / MiB, fat / MiB)


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_peak_rss_of_run_grows_by_what_the_child_holds_and_judges_the_budget_by_it(tiny_models, tmp_path):
    """peak_rss_of_run's figure (polled and reported) against a known amount: BALLAST_MIB more, within the noise;
    and a budget between the two figures is met by the plain child only."""
    from conftest import ballast_python

    plain = _run(tiny_models["dynamic"], 4096 * MiB, python=ballast_python(tmp_path, 0))
    fat = _run(tiny_models["dynamic"], 4096 * MiB, python=ballast_python(tmp_path, BALLAST_MIB))
    assert plain.error is None and fat.error is None, (plain.error, fat.error)
    grew = (fat.peak_rss_bytes - plain.peak_rss_bytes) / MiB
    assert abs(grew - BALLAST_MIB) < BALLAST_SLACK_MIB, (plain.peak_rss_mib, fat.peak_rss_mib)
    budget = plain.peak_rss_bytes + BALLAST_MIB * 3 // 4 * MiB  # 1.5x that is above the fat child: it runs to the end
    assert _run(tiny_models["dynamic"], budget, python=ballast_python(tmp_path, 0)).fits
    over = _run(tiny_models["dynamic"], budget, python=ballast_python(tmp_path, BALLAST_MIB))
    assert over.error is None and not over.fits and over.peak_rss_bytes > budget


def test_tiny_budget_is_enforced_by_killing_the_child(tiny_models):
    res = _run(tiny_models["dynamic"], 1 * MiB)
    assert not res.fits
    assert res.error is not None and res.error.startswith("exceeded budget; killed at")
    assert res.returncode != 0
    assert res.peak_rss_bytes > 1.5 * MiB


def test_non_tflite_file_reports_the_child_error(tmp_path):
    bogus = tmp_path / "notes.tflite"
    bogus.write_text("this is not a flatbuffer\n" * 4)
    res = _run(bogus, 4096 * MiB)
    assert not res.fits
    assert res.returncode == 1
    assert res.error is not None
    assert str(bogus) in res.error and "TFLite" in res.error


def test_missing_runtime_reports_how_to_install(tiny_models):
    if importlib.util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite-runtime is installed here")
    res = _run(tiny_models["dynamic"], 4096 * MiB, runtime="tflite-runtime")
    assert not res.fits and res.returncode == 1
    assert "tflite-runtime" in res.error and "pip install" in res.error


def test_timeout_kills_the_child(tiny_models):
    res = _run(tiny_models["dynamic"], 4096 * MiB, timeout_s=0.01)
    assert not res.fits
    assert res.error is not None and res.error.startswith("timed out")


@pytest.mark.parametrize("bad", [{"budget": 0}, {"threads": 0}, {"runs": 0}])
def test_peak_rss_rejects_bad_arguments(tiny_models, bad):
    budget = bad.pop("budget", 4096 * MiB)
    with pytest.raises(ValueError):
        _run(tiny_models["dynamic"], budget, **bad)


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
@pytest.mark.parametrize("kind,expected_len", [("dynamic", 16), ("fixed", 8)])
def test_child_uses_seq_len_or_the_models_fixed_length(tiny_models, kind, expected_len):
    proc = subprocess.run(
        [sys.executable, "-m", "edgemodels.measure", "--child", str(tiny_models[kind]), "--seq-len", "16",
         "--runs", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=120, env=measure._child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    report = json.loads(line)
    assert report["seq_len"] == expected_len
    assert report["runs"] == 2
    assert report["peak_rss_bytes"] > 0


def test_module_without_child_flag_prints_usage():
    proc = subprocess.run([sys.executable, "-m", "edgemodels.measure"], capture_output=True, text=True,
                          timeout=60, env=measure._child_env())
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_memory_result_mib():
    res = MemoryResult(3 * MiB, 10 * MiB, True, 0, None, "ai-edge-litert", "2.3.0")
    assert math.isclose(res.peak_rss_mib, 3.0)
