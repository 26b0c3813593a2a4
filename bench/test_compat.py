"""Does the device's own runtime load the artifact, and compute what x86 computes from the same file?

On the device: its installed runtime. Off the device: the device's actual ARM runtime build under QEMU
user-mode emulation (edgemodels/emulation.py), pinned to the device's CPU model. Times under emulation
are never device times; only loadability, outputs and sample accuracy are reported.
"""

import pytest

from edgemodels import suite

pytestmark = [pytest.mark.compat, pytest.mark.emulation]


def test_device_runtime(bench, case):
    result = bench.device_run(case)  # skips with the reason and the enabling command if qemu is missing
    refusal = bench.expected.refusal(bench.profile.runtime, bench.profile.runtime_version, case.quant, case.model)
    expected_refusal = refusal.reason if refusal else None
    if not result.loads:
        works = [m for m in suite.ALL_MODES if not bench.expected.refusal(
            bench.profile.runtime, bench.profile.runtime_version, m, case.model)]
        msg = (f"{bench.profile.runtime} {bench.profile.runtime_version} on {bench.device} refuses {case.id}: "
               f"{result.error}. Modes that load there: {', '.join(works)}")
        if expected_refusal:
            pytest.xfail(msg)
        pytest.fail(msg)
    if (refusal is not None and refusal.crash and not bench.measured_on_device
            and "emulated" not in (result.method or "")):
        pytest.skip(f"{case.id}: the expected refusal is a crash of the device's ARM build ({expected_refusal}); "
                    f"this host's own build of {bench.profile.runtime} runs it, which says nothing about the "
                    "device: run on the device or its emulated runtime")
    assert not expected_refusal, (
        f"{case.id} loads on {bench.profile.runtime} {bench.profile.runtime_version}, which edgemodels/expected.py expects to "
        "refuse it: update its Refusal record in edgemodels/modes.py")
    if result.max_abs_diff is not None:
        tol = suite.arm_diff_limit(case.quant, result.x86_max_abs)
        assert result.max_abs_diff <= tol, (
            f"{case.id}: logits on {result.method} differ from the same file's x86 outputs by "
            f"{result.max_abs_diff:.4g} > {tol:.4g} ({suite.arm_diff_tolerance(case.quant):g} x max(1, largest "
            f"|x86 logit| {result.x86_max_abs:.3g}) for {case.quant})")
