"""The statistical throughput gate: adaptive timing against a committed yardstick, a sample digest, a decision.

How the bench uses it (one case; the gate times at GATE_THREADS, whatever the device's thread count)::

    from edgemodels.run import speedgate

    yard = speedgate.yardstick.load(num_threads=speedgate.GATE_THREADS, runtime=runtime_name)  # once
    model = runtime.load(tflite, runtime=runtime_name, num_threads=speedgate.GATE_THREADS)
    digest, verdict = speedgate.gate(run, yard, threads=speedgate.GATE_THREADS,
                                     settings=speedgate.settings_for(scale), baseline=baseline_or_None,
                                     threshold=0.10, same_machine=True, mode=case.quant)
    row["throughput_gate"] = digest.to_json()   # Digest.from_json(...) reads it back as the next baseline

Modules: stats (pure: intervals, digest, decision), timer (the loop, priority, load), yardstick (the pinned file).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from edgemodels.run.speedgate import stats, timer, yardstick
from edgemodels.run.speedgate.stats import (CONFIDENCE, INCONCLUSIVE, PASS, REGRESSION, Digest, DigestError, Estimate,
                                        Incomparable, Load, Verdict, compare)
from edgemodels.run.speedgate.timer import GATE_THREADS, SCALE_SETTINGS, Settings, settings_for, time_case

CROSS_MACHINE_SPREAD: Mapping[str, float] = MappingProxyType({"drq": 0.25, "drq-compat": 0.25})
"""How far an unchanged file's yardstick-relative speed may move between CPU types, per mode (0.25 = 25 %): a
comparison with a baseline from another machine lowers its limit by this much. Int8-weight kernels scale across CPUs
much like the yardstick's own, float and int8-activation kernels do not; weak evidence (two x86 CPUs, 2 threads,
unrecorded load) rounded up (docs/measurements.md#cross-cpu-spread)."""

UNMEASURED_SPREAD = 0.45
"""Every other mode's tolerance: float and int8 files moved up to 40 % (docs/measurements.md#cross-cpu-spread)."""


DYNAMIC_PROCESS_SPREAD = 0.15
"""How far a dynamic-length model's relative speed may move between processes on one machine: 10 % measured (the
gate timing its median-length tweet, desktop CI runs of 2026-12-06), rounded up; its rounds show less, so the limit
is lowered by this much (docs/measurements.md#gate-dynamic)."""


def cross_machine_spread(mode: str) -> tuple[float, str]:
    """The tolerance for `mode` across CPU types, and what it rests on (for the verdict's label)."""
    if mode in CROSS_MACHINE_SPREAD:
        return CROSS_MACHINE_SPREAD[mode], f"{mode}'s shift between two x86 CPU types, rounded up"
    return UNMEASURED_SPREAD, f"{mode}: the float and int8 files' shift between two x86 CPU types, rounded up"


def compare_args(*, threshold: float = 0.10, same_machine: bool = True, mode: str | None = None,
                 dynamic: bool = False) -> dict:
    """The arguments of stats.compare for a case: across machines, its mode's cross-CPU spread and what that rests on;
    for a dynamic-length model (dynamic=True), the spread between processes."""
    args: dict = dict(threshold=threshold, same_machine=same_machine)
    if not same_machine:
        args["cross_machine_spread"], args["spread_basis"] = cross_machine_spread(mode or "")
    if dynamic:
        args["process_spread"] = DYNAMIC_PROCESS_SPREAD
        args["process_basis"] = "a dynamic-length model's figure moved up to 10 % between processes, rounded up"
    return args


def decided(baseline: Digest | None, **compare_args) -> Callable[[Digest], bool] | None:
    """The stop rule for time_case: stop as soon as the comparison with the baseline is conclusive."""
    if baseline is None:
        return None
    return lambda d: compare(d, baseline, **compare_args).conclusive


def gate(run: Callable[[], object], yard: yardstick.Yardstick, *, threads: int | None,
         settings: Settings = Settings(), baseline: Digest | None = None, threshold: float = 0.10,
         same_machine: bool = True, mode: str | None = None) -> tuple[Digest, Verdict | None]:
    """Time `run` (one inference per call) against the yardstick and, given a baseline digest, decide.

    Without a baseline the timing aims at settings.target (a digest fit to be saved as one); with one it stops
    as soon as the verdict is conclusive, else at settings.cap_s (inconclusive). same_machine=False: the
    baseline is another machine's, and the limit widens by the cross-CPU spread of the case's mode
    (cross_machine_spread; the verdict's basis says so). Raises Incomparable, before timing anything, when the
    baseline was timed against another yardstick or at another thread count.
    """
    args = compare_args(threshold=threshold, same_machine=same_machine, mode=mode)
    if baseline is not None:  # before any time is spent
        stats.check_comparable(baseline, yard.sha256, threads)
    digest = time_case(run, yard.run, yardstick_sha256=yard.sha256, threads=threads, settings=settings,
                       stop=decided(baseline, **args))
    return digest, None if baseline is None else compare(digest, baseline, **args)


__all__ = ["CONFIDENCE", "CROSS_MACHINE_SPREAD", "DYNAMIC_PROCESS_SPREAD", "GATE_THREADS", "INCONCLUSIVE", "PASS",
           "REGRESSION", "SCALE_SETTINGS", "UNMEASURED_SPREAD", "compare_args", "Digest", "DigestError", "Estimate",
           "Incomparable", "Load", "Settings", "Verdict", "compare", "cross_machine_spread", "decided", "gate",
           "settings_for", "stats", "time_case", "timer", "yardstick"]
