"""Peak resident memory of a fresh process that loads a case's file and runs it, against the device's budget.

The budget is the device's RAM times the share an application may use (edgemodels/devices.py). Off the device the
same runtime runs here in the worker and its peak RSS is compared with the device's budget; a worker past budget x
KILL_FACTOR is stopped (the budget is enforced, not crashed into). A file larger than the budget is never loaded on
the device itself (BenchSession.too_big).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgemodels.bench import outcome
from edgemodels.bench.metrics.compat import device_must_load
from edgemodels.study.matrix import Case

RUNS = 3
"""Inferences the memory worker runs after loading: the high-water mark of a model in use, not just loaded."""


@dataclass(frozen=True)
class Memory:
    peak_rss_bytes: int
    budget_bytes: int
    fits: bool
    stopped: bool  # the worker passed the kill threshold and was stopped
    error: str | None
    runtime: str
    runtime_version: str


def memory(s, case: Case) -> Memory:
    device_must_load(s, case)
    art = s.artifact(case)
    s.too_big(case, art, "memory")
    side, row = s.side, s.row(case)
    res = side.timing.run(art.tflite, runtime=side.runtime, threads=side.threads, memory_runs=RUNS,
                          seq_len=case.seq or art.manifest["max_length"], memory_limit_bytes=side.memory_limit_bytes)
    ident = res.identity
    runtime, version = ident.runtime or side.runtime, ident.runtime_version or side.runtime_version
    stopped = res.killed_at_bytes is not None
    if not res.loads or (res.error and not stopped and s.refusal(case, runtime, version)):
        row.notes.append(f"memory: {runtime} {version} {'fails to run it' if res.loads else 'cannot load it'}")
        outcome.runtime_refused(s.refusal(case, runtime, version), case.id, f"{runtime} {version}", loaded=res.loads,
                                error=res.error)
    if ident.emulated:
        row.notes.append(f"memory: {ident.label}: the emulator's RSS is no device figure")
        pytest.skip(f"{case.id} on {ident.label}: the emulator's RSS is no device figure")
    budget = s.profile.memory_budget_bytes
    peak = int(res.peak_rss_bytes or 0)
    m = Memory(peak, budget, res.error is None and peak <= budget, stopped, res.error, runtime, version)
    row.peak_rss_bytes, row.memory_budget_bytes, row.fits = m.peak_rss_bytes, m.budget_bytes, m.fits
    note = side.figure_note("memory", ident, f"{runtime} {version}")
    if note:
        row.notes.append(note)
    return m
