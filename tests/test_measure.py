"""Measurement helpers: latency statistics, time_calls, projection labels, fresh-process peak RSS."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from edgemodels import devices
from edgemodels.run import stats as measure
from edgemodels.devices import Placement
from edgemodels.run.stats import LatencyStats, Projection

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
    """tflite-runtime 2.14's x86 wheel is ~40x slower than ai-edge-litert: a factor applied to it lies
    (docs/measurements.md#x86-tflite-runtime)."""
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


def _run(path: Path, limit: int | None = None, **kw):
    """One memory run of the worker here (edgemodels.run.targets.LocalTarget): load, 3 dummy inferences."""
    from edgemodels.run.targets import LocalTarget

    kw.setdefault("runtime", None)
    kw.setdefault("threads", 1)
    kw.setdefault("seq_len", 16)
    return LocalTarget().run(path, memory_runs=kw.pop("runs", 3), memory_limit_bytes=limit,
                             timeout_s=kw.pop("timeout_s", 120), **kw)


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_tiny_model_peak_rss_is_the_workers_own(tiny_models):
    from importlib import metadata

    res = _run(tiny_models["dynamic"])
    assert res.loads and res.error is None, res.error
    assert (res.identity.runtime, res.identity.runtime_version) == ("ai-edge-litert", metadata.version("ai-edge-litert"))
    # A Python interpreter with numpy and a runtime loaded: more than 10 MB ...
    assert 10 * MiB < res.peak_rss_bytes
    # ... but not TensorFlow (~500 MB): the worker must not import it, and the tiny_models fixture has TensorFlow
    # loaded in THIS process, whose RSS must not leak into the worker's figure (ru_maxrss carries it over exec).
    assert "tensorflow" in sys.modules
    assert res.peak_rss_bytes < 300 * MiB


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_a_limit_above_the_peak_lets_it_run_to_the_end(tiny_models):
    first = _run(tiny_models["dynamic"])
    res = _run(tiny_models["dynamic"], int(first.peak_rss_bytes * 1.3))
    assert res.loads and res.error is None and res.killed_at_bytes is None
    assert res.peak_rss_bytes > 0.7 * first.peak_rss_bytes


BALLAST_MIB = 192
"""What the worker is made to hold on top of its normal run: far above the run-to-run noise, far from 100 MiB."""
BALLAST_SLACK_MIB = 16
"""The two workers differ only in the ballast (same code, model, runtime, threads): the ballast must show within
this much. Generous: far above the spread of repeated runs (docs/measurements.md#rss-ballast)."""


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_the_peak_grows_by_what_the_worker_holds(tiny_models, tmp_path):
    """Against an independent figure: the same worker holding BALLAST_MIB of written bytes reports that much more
    (the larger of its own VmHWM and what this host polled: tests/test_remote.py checks the remote's own figure)."""
    from conftest import ballast_python

    from edgemodels.run.targets import LocalTarget

    def peak(mib: int) -> int:
        return LocalTarget(ballast_python(tmp_path, mib)).run(tiny_models["dynamic"], threads=1, memory_runs=2,
                                                              seq_len=16).peak_rss_bytes

    plain, fat = peak(0), peak(BALLAST_MIB)
    assert 10 * MiB < plain < 300 * MiB
    assert abs((fat - plain) / MiB - BALLAST_MIB) < BALLAST_SLACK_MIB, (plain / MiB, fat / MiB)


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
def test_a_limit_between_the_two_figures_stops_only_the_heavier_worker(tiny_models, tmp_path):
    from conftest import ballast_python

    from edgemodels.run.targets import LocalTarget

    def run(mib: int, limit: int | None):
        return LocalTarget(ballast_python(tmp_path, mib)).run(tiny_models["dynamic"], threads=1, memory_runs=2,
                                                              seq_len=16, memory_limit_bytes=limit)

    plain = run(0, None).peak_rss_bytes
    limit = plain + BALLAST_MIB // 2 * MiB
    assert run(0, limit).killed_at_bytes is None
    assert run(BALLAST_MIB, limit).killed_at_bytes is not None


def test_a_tiny_limit_is_enforced_by_stopping_the_worker(tiny_models):
    res = _run(tiny_models["dynamic"], 1 * MiB)
    assert res.killed_at_bytes is not None and res.killed_at_bytes > 1 * MiB
    assert res.error is not None and res.error.startswith("exceeded the memory limit: stopped at")
    assert res.peak_rss_bytes >= res.killed_at_bytes


def test_non_tflite_file_is_a_refusal_naming_the_file(tmp_path):
    bogus = tmp_path / "notes.tflite"
    bogus.write_text("this is not a flatbuffer\n" * 4)
    res = _run(bogus)
    assert not res.loads
    assert res.error is not None and str(bogus) in res.error and "TFLite" in res.error


def test_missing_runtime_says_how_to_install(tiny_models):
    from edgemodels.run.targets import TargetError

    if importlib.util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite-runtime is installed here")
    with pytest.raises(TargetError, match="tflite-runtime.*pip install"):
        _run(tiny_models["dynamic"], runtime="tflite-runtime")


def test_timeout_stops_the_worker(tiny_models):
    from edgemodels.run.targets import TargetError

    with pytest.raises(TargetError, match="ran past"):
        _run(tiny_models["dynamic"], timeout_s=0.01)


def test_bad_thread_count_is_refused(tiny_models):
    with pytest.raises(ValueError):
        _run(tiny_models["dynamic"], threads=0)


@pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert not installed")
@pytest.mark.parametrize("kind,expected", [("dynamic", None), ("fixed", 8)])
def test_worker_reports_the_models_inputs(tiny_models, kind, expected):
    res = _run(tiny_models[kind])
    assert res.fixed_length == expected
    assert set(res.inputs) == {"input_ids", "attention_mask"}
