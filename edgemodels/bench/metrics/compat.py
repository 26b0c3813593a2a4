"""Does the device's own runtime load a case's file, and compute what x86 computes from the same file?

On the device: its installed runtime (the host run, here or over --remote). Off it: the device's actual ARM build
under QEMU, pinned to its CPU (memoised in the cache: emulation costs seconds to minutes per file), or, where no
emulation is possible, this host's runtime said to be so. Emulated outputs are compared with the same file's x86
outputs, so only the kernels differ, never the quantization.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

from edgemodels.bench import outcome
from edgemodels.bench.device import DeviceRun
from edgemodels.study.matrix import Case


def device_run(s, case: Case) -> DeviceRun:
    """The case's file on the device's own runtime (memoised for the session: compat, speed and memory ask)."""
    if case in s.device_runs:
        return s.device_runs[case]
    art = s.artifact(case)
    if s.side.measured_on_device:
        s.too_big(case, art, "compat")
    infer = s.infer_compat(case)
    feeds = s.feeds(case, s.source.compat_examples)
    result = s.side.device_run(case.id, art, feeds, infer, lambda: s.host_run(case), s.source.store)
    if result.loads and infer and feeds and result.outputs is None and result.error:
        # Loaded, then failed on a feed (tflite-runtime 2.14 on int4: "Type not currently supported" at the first
        # invoke): the runtime cannot run the file, which is what a refusal is here.
        result.loads = False
    _fill_row(s, case, result)
    s.device_runs[case] = result
    return result


def _fill_row(s, case: Case, result: DeviceRun) -> None:
    row = s.row(case)
    row.arm_loads, row.arm_error, row.arm_method = result.loads, result.error, result.method
    if result.outputs is None:
        if result.loads and not s.infer_compat(case):
            row.notes.append("emulated: load only (inference too slow under emulation for this size)"
                             if "emulated" in result.method else "compat: load only (no inference run for this model)")
        return
    host, reference = _reference(s, case, result.compared_with_host)
    y = s.source.labels(case, s.source.compat_examples)
    row.arm_accuracy = float(np.mean(result.outputs.argmax(1) == y))
    if host is not None:
        result.max_abs_diff = float(np.max(np.abs(result.outputs - host)))
        result.x86_max_abs = float(np.max(np.abs(host)))
        result.reference = reference
        row.arm_max_abs_diff, row.arm_reference = result.max_abs_diff, reference
        row.x86_accuracy_sample = float(np.mean(host.argmax(1) == y))
    elif s.source.holds_references:
        row.notes.append(f"compat: outputs from this host, not the {s.device}: the export's x86 reference is not "
                         "compared on a host of its own arch")


def _reference(s, case: Case, x86_elsewhere: bool) -> tuple[np.ndarray | None, str | None]:
    """(x86 outputs on the same feeds, what they are), or (None, None) when there is no other side: on the device
    without an export (it used to compare the device with itself and call that side "x86"), or an export opened on
    a host of the reference's own arch off the device (x86 against x86 could not show ARM drift)."""
    outputs, label, arch = s.source.reference(case)
    if outputs is not None:
        if not s.side.on_device and platform.machine() == arch:
            return None, None
        return outputs, label
    if not x86_elsewhere:
        return None, None
    res = s.require_host_run(case)
    rt, version = s.side.here_runtime()
    return res.outputs, f"x86 on this host ({platform.machine()}, {rt} {version})"


def check(s, case: Case) -> DeviceRun:
    """device_run with the outcome rule: a refusal is an xfail where expected; a crash expected of the device's ARM
    build that this host's build does not reproduce says nothing (skip); so does this host's other runtime where the
    device's cannot run here (no QEMU): its verdict would be taken for the device's."""
    unchecked = s.side.unchecked_runtime()
    if unchecked:
        s.row(case).notes.append(f"compat: not checked ({s.profile.runtime} cannot run here)")
        pytest.skip(f"{case.id}: {unchecked}")
    result = device_run(s, case)
    refusal = s.device_refusal(case)
    if not result.loads:
        from edgemodels.study.matrix import ALL_MODES

        works = [m for m in ALL_MODES if not s.expected.refusal(s.profile.runtime, s.profile.runtime_version, m,
                                                                 case.model)]
        outcome.settle(refusal, f"{s.profile.runtime} {s.profile.runtime_version} on {s.device} refuses {case.id}: "
                                f"{result.error}. Modes that load there: {', '.join(works)}")
    if refusal is not None and refusal.crash and not s.side.measured_on_device and "emulated" not in result.method:
        pytest.skip(f"{case.id}: the expected refusal is a crash of the device's ARM build ({refusal.reason}); this "
                    f"host's own build of {s.profile.runtime} runs it, which says nothing about the device: run on "
                    "the device or its emulated runtime")
    return result


def device_must_load(s, case: Case) -> None:
    """Where this host times another runtime than the device's (no tflite-runtime here for a Pi 3), a mode the device
    cannot load is not timed: its emulated verdict decides (xfail where the refusal is expected). Without emulation
    the host's figure is kept and the row says the runtimes differ."""
    if not s.side.runtime_note or not s.side.emulates:
        return
    verdict = device_run(s, case)
    if not verdict.loads:
        outcome.settle(s.device_refusal(case), f"{s.profile.runtime} {s.profile.runtime_version} on {s.device} cannot "
                                               f"load {case.id} ({verdict.method}): {verdict.error}")
