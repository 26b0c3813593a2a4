"""Does the device's own runtime load the artifact, and compute what x86 computes from the same file?

On the device: its installed runtime. Off the device: the device's actual ARM runtime build under QEMU user-mode
emulation (edgemodels/run/qemu.py), pinned to the device's CPU model. Times under emulation are never device times;
only loadability, outputs and sample accuracy are reported (edgemodels/bench/metrics/compat.py).
"""

import pytest

from edgemodels.bench.metrics import compat
from edgemodels.study import criteria

pytestmark = [pytest.mark.compat, pytest.mark.emulation]


def test_device_runtime(bench, case):
    result = compat.check(bench, case)  # xfails an expected refusal, fails any other
    refusal = bench.device_refusal(case)
    assert refusal is None, (
        f"{case.id} loads on {bench.profile.runtime} {bench.profile.runtime_version}, which edgemodels/study/"
        f"expected.py expects to refuse it: update its Refusal record in edgemodels/build/modes.py")
    if result.max_abs_diff is not None:
        tol = criteria.arm_diff_limit(case.quant, result.x86_max_abs)
        assert result.max_abs_diff <= tol, (
            f"{case.id}: logits on {result.method} differ from the same file's x86 outputs by "
            f"{result.max_abs_diff:.4g} > {tol:.4g} ({criteria.arm_diff_tolerance(case.quant):g} x max(1, largest "
            f"|x86 logit| {result.x86_max_abs:.3g}) for {case.quant})")
