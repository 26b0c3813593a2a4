"""Inferences per second at batch 1, timed by pytest-benchmark (pedantic: warm-up, then fixed rounds).

Method: on the device, the figure is measured. Off the device, the host runs the model at the device's
thread count (capped by the host's cores) with the device's runtime where it is installed here, and the
figure is *projected* with the device profile's speed factor (derivation in edgemodels/devices.py).
Deployment candidates (compact models, dynamic-range quantized: what the paper deploys) must reach the
device's target; the others are recorded and may miss it on a Pi (xfail with the figure, never a silent skip).
Under `--benchmark-disable` nothing is timed: each case runs once (it must load and run) and skips, saying so.
"""

import pytest

from edgemodels import measure

pytestmark = pytest.mark.throughput


def test_throughput(bench, case, benchmark):
    if bench.target is not None:  # --remote: timed on the device by the worker there, not by this host
        result = bench.remote_throughput(case, benchmark.extra_info)
    else:
        run = bench.throughput_runner(case)  # skips/xfails with the runtime's own error if it cannot load
        benchmark.pedantic(run, warmup_rounds=1, rounds=bench.scale.throughput_rounds, iterations=1)
        if benchmark.stats is None:  # --benchmark-disable: pytest-benchmark ran it once, untimed
            pytest.skip(f"{case.id}: --benchmark-disable: the model loaded and ran once, untimed, so no throughput "
                        "figure; run without --benchmark-disable to measure it")
        stats = measure.LatencyStats.from_samples(benchmark.stats.stats.data)
        result = bench.record_throughput(case, stats, benchmark.extra_info)
    target = bench.profile.target_inferences_per_s
    msg = (f"{case.id} on {bench.device}: {result.label} < target {target}/s "
           f"(method: {result.method}; {result.basis})")
    speed = bench.expected.find("speed", "test_throughput", device=bench.device, model=case.model, mode=case.quant,
                                seq=case.seq_label)  # a non-strict record (at the target within noise) has a floor
    if speed is not None and speed.floor is not None and result.value < speed.floor:
        pytest.fail(f"{msg}; below the floor {speed.floor:g}/s of its speed record (edgemodels/expected.py): slower "
                    "than timing noise explains")
    if not case.candidate and result.value < target:
        pytest.xfail(f"not a deployment candidate (the paper deploys compact models, dynamic-range quantized): {msg}")
    assert result.value >= target, msg
