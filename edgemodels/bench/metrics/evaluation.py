"""Evaluation throughput: tweets per second `edgemodels evaluate` gets through on this machine, end to end.

A record, not a gate (the rate moves with whatever else shares the cores). Timed by pytest-benchmark (pedantic,
one round: tokenizing, process start-up, model loads, inference) where evaluation runs: the desktop run, or the
device itself from an export; not again for each projected Pi, nor for a --remote device (evaluation stays here).
"""

from __future__ import annotations

import pytest

from edgemodels.bench import outcome
from edgemodels.study.matrix import Case

SAMPLE = 200
"""Most tweets per timing for a compact model: a rate needs no more (docs/measurements.md#eval-speed-sample)."""

SAMPLE_LARGE = 50
"""Most tweets per timing for a large model: its tweet costs ~10x a compact model's (docs/measurements.md#eval-speed-sample)."""


def timed(s, case: Case, benchmark):
    """(the Accuracy of the timed evaluation, the tweets it had to cover); skips where evaluation is not this device's."""
    elsewhere = s.side.evaluation_elsewhere()
    if elsewhere:
        pytest.skip(elsewhere)
    art = s.artifact(case)
    if not art.manifest.get("trained"):
        pytest.skip(f"{case.model} is a random init: never evaluated for accuracy, so evaluation is not timed")
    s.too_big(case, art, "evaluation")
    s.require_host_run(case)  # a runtime that refuses (or crashes on) the file is met in a worker first
    rt, version = s.host_runtime
    run, expected_n, source = s.source.evaluation(case, rt, SAMPLE if case.compact else SAMPLE_LARGE)
    try:
        result = benchmark.pedantic(run, rounds=1, iterations=1)
    except RuntimeError as exc:  # failed in the evaluation's own processes
        outcome.runtime_refused(s.refusal(case, rt, version), case.id, f"{rt} {version}", loaded=True, error=str(exc))
    if benchmark.stats is None:  # --benchmark-disable: pytest-benchmark ran it once, untimed
        assert result.n == expected_n
        pytest.skip(f"{case.id}: --benchmark-disable: evaluated once ({result.n} tweets), untimed, so no tweets/s "
                    "figure; run without --benchmark-disable to measure it")
    return result, expected_n, source
