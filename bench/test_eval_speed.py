"""Evaluation throughput: tweets per second that `edgemodels evaluate` gets through on this machine, per artifact.

A record, not a gate (edgemodels/bench/metrics/evaluation.py): evaluate() with its default plan, on a seeded sample
of the evaluation split, timed end to end by pytest-benchmark where evaluation runs (the desktop run, or the device
itself from an export). Artifacts never evaluated for accuracy (random init) are not timed either.
"""

import pytest

from edgemodels.bench.metrics import evaluation
from edgemodels.run.evaluate import cores

pytestmark = pytest.mark.throughput


def test_evaluation_throughput(bench, case, benchmark):
    result, expected_n, source = evaluation.timed(bench, case, benchmark)
    seconds = benchmark.stats.stats.mean
    how = f"{result.workers} process(es) x {result.threads} thread(s)"
    benchmark.extra_info.update(
        tweets_per_s=result.n / seconds, n=result.n, seq=case.seq_label, workers=result.workers,
        threads=result.threads, cores=cores(), runtime=f"{result.runtime} {result.runtime_version}",
        method=f"{bench.side.label_here()}: evaluate() end to end, {how}, {result.n} {source}, batch 1")
    bench.row(case).notes.append(f"evaluate: {result.n / seconds:.0f} tweets/s measured ({how}, {result.n} tweets, "
                                 "end to end)")
    assert result.n == expected_n
