"""Peak resident memory of a fresh process that loads the model and runs it, against the device budget.

The budget is the device's RAM times the share an application may use (edgemodels/devices.py); off the device the
same runtime runs here in a fresh worker and its peak RSS is compared with the device's budget
(edgemodels/bench/metrics/memory.py). A large model that cannot fit (BERT-Large fp32 on a 1 GB Pi 3) is an expected
outcome on the devices edgemodels/study/expected.py lists: xfail with its numbers; anywhere else not fitting fails.
"""

import pytest

from edgemodels.bench.metrics.memory import memory

pytestmark = pytest.mark.memory


def test_memory_fits(bench, case):
    res = memory(bench, case)
    mib = 1 << 20
    msg = (f"{case.id} on {bench.device}: peak RSS {res.peak_rss_bytes / mib:.0f} MiB vs budget "
           f"{res.budget_bytes / mib:.0f} MiB ({bench.profile.title}; runtime {res.runtime} {res.runtime_version})")
    if res.error and not res.stopped:
        pytest.fail(f"{msg}: the process failed: {res.error}")
    expected = bench.expected.memory_miss(bench.device, case)
    if not res.fits and expected:
        pytest.xfail(f"does not fit (expected for a large model: {expected.reason}): {msg}")
    assert res.fits, f"does not fit: {msg}"
