"""Inferences per second at batch 1, timed by the worker on the device side (this host or the remote device), and
the throughput gate's figure (edgemodels/run/speedgate) timed in the same worker.

On the device the figure is measured; off it, the host runs the model at the device's thread count (capped by the
host's cores) and the figure is projected with the profile's speed factor (edgemodels/devices.py). The worker's own
samples (perf_counter around each invoke) are handed to pytest-benchmark, so its table, --benchmark-json and
--benchmark-save/--benchmark-compare see the same timings the report does.

What a regression gate decides on is not that figure: it is the file's speed relative to a committed yardstick,
timed interleaved with it at 1 thread and real-time priority until its interval is narrow (speedgate), which held
under a busy neighbour where absolute inferences/s halved. Both are in the row.
"""

from __future__ import annotations

import os

import pytest

from edgemodels.bench import outcome
from edgemodels.bench.metrics.compat import device_must_load
from edgemodels.run.stats import LatencyStats, Projection, ProjectionRefused
from edgemodels.run.targets import GateRequest, Timing
from edgemodels.study.matrix import THROUGHPUT_SAMPLE, Case

GATE_SHARE_ENV = "EDGEMODELS_GATE_SHARE"
"""Set to one token for several bench runs (.ci/run sets it for its desktop, pi4 and pi3 runs): the gate times this
host at 1 thread whatever the device, so those runs time the same thing, and the later ones reuse the first's digest
of a file (same file, runtime, code, machine and token), saying so in the row. Unset (the default), every run times
its own: a digest is never reused across runs a user starts, so a run is never compared with itself."""

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
    gate = None if disabled else _gate_request(s, case, art)
    res = side.timing.run(art.tflite, runtime=side.runtime, threads=side.threads, outputs=False,
                          feeds=s.feeds(case, THROUGHPUT_SAMPLE), gate=gate.request if gate else None,
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
    note = side.figure_note("throughput", res.identity, f"{row.runtime} {row.runtime_version}")
    if note:
        row.notes.append(note)
    if gate is not None:
        _decide(s, case, row, gate, res.gate)
    benchmark.extra_info.update(device=s.device, method=proj.method, basis=proj.basis, threads=res.threads,
                                inferences_per_s=proj.value, host_inferences_per_s=stats.inferences_per_s,
                                p50_ms=row.p50_ms, p90_ms=row.p90_ms, p99_ms=row.p99_ms,
                                runtime=f"{row.runtime} {row.runtime_version}", seq=case.seq_label)
    return proj


class _Gate:
    """One case's gate: what the worker is asked (None: a fresh digest of this file is reused), and the baseline."""

    def __init__(self, request: GateRequest | None, key, reused: dict | None, baseline: tuple | None, args: dict):
        self.request, self.key, self.reused, self.baseline, self.args = request, key, reused, baseline, args


def _gate_request(s, case: Case, art) -> _Gate | None:
    """The gate's request for this case (its baseline's digest, if gated, lets the worker stop once it knows)."""
    from dataclasses import asdict

    from edgemodels.run import speedgate
    from edgemodels.store.cache import Key
    from edgemodels.store.keys import code_identity

    if s.side.method == "emulated":  # a remote under an emulator: never timed
        return None
    baseline = (s.gate_baselines or {}).get((case.model, case.quant, case.seq_label))
    from edgemodels.report.gate import gate_machine_id

    machine = gate_machine_id(s.report.machine)
    args = speedgate.compare_args(threshold=s.gate_threshold, same_machine=baseline is None or baseline[1] == machine,
                                  mode=case.quant, dynamic=case.seq is None)
    settings = speedgate.settings_for(s.scale.name)
    key = reused = None
    share = os.environ.get(GATE_SHARE_ENV)
    if share and s.side.shares_gate and s.source.store is not None:  # this host, runs told to share the timing
        key = Key("gate", case.id, {
            "artifact": art.manifest["key"]["digest"], "runtime": [s.side.runtime, s.side.runtime_version],
            "threads": speedgate.GATE_THREADS, "yardstick": speedgate.yardstick.SHA256, "machine": machine,
            "settings": asdict(settings), "share": share,
            "code": code_identity("edgemodels.run.speedgate.timer", "edgemodels.run.speedgate.stats",
                                  "edgemodels.run.worker", "edgemodels.run.runtime")})
        entry = s.source.store.get(key)
        if entry is not None:
            import json

            reused = json.loads(entry.file("result.json").read_text(encoding="utf-8"))
    request = None if reused is not None else GateRequest(
        yardstick=speedgate.yardstick.PATH, threads=speedgate.GATE_THREADS, settings=asdict(settings),
        baseline=baseline[0] if baseline else None, compare=args,
        one_length=case.seq is None)
    return _Gate(request, key, reused, baseline, args)


def _decide(s, case: Case, row, gate: _Gate, timed: dict | None) -> None:
    """The digest (timed now or reused) into the row, and against the baseline, the verdict."""
    from edgemodels.run import speedgate

    digest_json = gate.reused if gate.reused is not None else timed
    if digest_json is None:
        return
    if gate.reused is None:
        if gate.key is not None:  # shared: later runs of this file reuse it
            s.source.store.memo_json(gate.key, lambda: digest_json)
    else:
        row.notes.append(f"throughput gate: this machine's 1-thread digest of the same file, timed by an earlier run "
                         f"sharing {GATE_SHARE_ENV}={os.environ.get(GATE_SHARE_ENV)} (reused)")
    row.throughput_gate = digest_json
    if gate.baseline is None:
        return
    try:
        verdict = speedgate.compare(speedgate.Digest.from_json(digest_json),
                                    speedgate.Digest.from_json(gate.baseline[0], where="baseline digest"), **gate.args)
    except speedgate.Incomparable as exc:  # another yardstick or thread count: no verdict, and never a pass
        row.throughput_decision = {"decision": "incomparable", "ratio": float("nan"), "low": float("nan"),
                                   "high": float("nan"), "limit": 1 - s.gate_threshold, "basis": str(exc),
                                   "confidence": speedgate.CONFIDENCE, "notes": []}
        return
    row.throughput_decision = verdict.to_json()
