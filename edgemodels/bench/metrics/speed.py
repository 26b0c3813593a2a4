"""Inferences per second at batch 1, timed by the worker on the device side (this host or the remote device).

On the device the figure is measured; off it, the host runs the model at the device's thread count (capped by the
host's cores) and the figure is projected with the profile's speed factor (edgemodels/devices.py). The worker's own
samples (perf_counter around each invoke) are handed to pytest-benchmark, so its table, --benchmark-json and
--benchmark-save/--benchmark-compare see the same timings the report does.
"""

from __future__ import annotations

import pytest

from edgemodels.bench import outcome
from edgemodels.bench.metrics.compat import device_must_load
from edgemodels.run.stats import LatencyStats, Projection, ProjectionRefused
from edgemodels.run.targets import Timing
from edgemodels.study.matrix import THROUGHPUT_SAMPLE, Case


def record_samples(benchmark, samples) -> None:
    """Give pytest-benchmark the worker's samples as this test's timings (one round each, one iteration).

    pytest-benchmark times callables in its own process; here the device side times in a fresh worker (the device's
    runtime never shares a process with TensorFlow, and a remote device times itself), so its samples go in through
    the fixture's stats object. tests/test_speed_metric.py checks this against the installed pytest-benchmark."""
    benchmark._mode = "edgemodels worker"  # what pedantic() marks: the fixture was used
    stats = benchmark._make_stats(1)
    for sample in samples:
        stats.update(sample)


def throughput(s, case: Case, benchmark) -> Projection:
    """Time the case on the device side, fill its row and pytest-benchmark's extra_info; the figure's Projection."""
    device_must_load(s, case)
    art = s.artifact(case)
    s.too_big(case, art, "throughput")
    side, row = s.side, s.row(case)
    if side.runtime_note:
        row.notes.append(side.runtime_note)
    disabled = benchmark.disabled
    res = side.timing.run(art.tflite, runtime=side.runtime, threads=side.threads, outputs=False,
                          feeds=s.feeds(case, THROUGHPUT_SAMPLE),
                          timing=Timing(rounds=1 if disabled else s.scale.throughput_rounds, warmup=0 if disabled else 1))
    if not res.loads or res.error:
        row.notes.append(f"throughput: {side.runtime} {'fails to run it' if res.loads else 'cannot load it'}")
        outcome.runtime_refused(s.refusal(case, res.identity.runtime or side.runtime, res.identity.runtime_version or
                                          side.runtime_version), case.id, side.runtime, loaded=res.loads,
                                error=res.error, where=f"on {side.where()}")
    if res.identity.emulated:
        row.notes.append(f"throughput: {res.identity.label}: no device timing")
        pytest.skip(f"{case.id} loads on {res.identity.label}; an emulator's timing is no device figure")
    if disabled:
        pytest.skip(f"{case.id}: --benchmark-disable: the model loaded and ran once, untimed, so no throughput "
                    "figure; run without --benchmark-disable to measure it")
    record_samples(benchmark, res.latency_s)
    stats = LatencyStats.from_samples(res.latency_s)
    try:
        proj = side.project(stats.inferences_per_s)
    except ProjectionRefused as exc:
        row.notes.append(f"throughput {exc}")
        pytest.skip(f"{case.id} on {s.device}: {exc}")
    scale = 1.0 if proj.factor is None else 1.0 / proj.factor  # projected latency = host latency / factor
    row.inferences_per_s, row.method, row.threads = proj.value, proj.method, res.threads
    row.p50_ms, row.p90_ms, row.p99_ms = (1e3 * v * scale for v in (stats.p50_s, stats.p90_s, stats.p99_s))
    row.runtime, row.runtime_version = res.identity.runtime, res.identity.runtime_version
    if side.identity is not None:
        row.notes.append(f"throughput {res.identity.label}")
    benchmark.extra_info.update(device=s.device, method=proj.method, basis=proj.basis, threads=res.threads,
                                inferences_per_s=proj.value, host_inferences_per_s=stats.inferences_per_s,
                                p50_ms=row.p50_ms, p90_ms=row.p90_ms, p99_ms=row.p99_ms,
                                runtime=f"{row.runtime} {row.runtime_version}", seq=case.seq_label)
    return proj
