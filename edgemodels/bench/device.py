"""Where a bench run's device figures come from, decided once at configure time.

`HostSide`: this machine. On the device itself (a Pi running its own bench, or the desktop) every figure is
measured; off it, speed is projected (host timing x the profile's factor), memory is the host's RSS against the
device's budget, and the device's own runtime is checked under QEMU where its profile names an emulation.
`RemoteSide`: a device reached over SSH (or a labgrid place): timed, measured and checked there by the same worker;
under an emulator never timed. Both run every model in a fresh worker process (edgemodels/run/targets.py), so the
device's runtime never shares a process with the TensorFlow that built the model.
"""

from __future__ import annotations

import platform
import socket
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemodels import devices
from edgemodels.run import stats
from edgemodels.run.targets import Identity, LocalTarget, Target, WorkerResult


@dataclass
class DeviceRun:
    """A case's file on the device's own runtime: does it load, and what does it output on the compat sample."""

    loads: bool
    error: str | None
    outputs: Any  # np.ndarray [n, labels] or None
    method: str  # "emulated ARM (qemu, cortex-a72)" | "measured here (...)" | "host (...)" | a remote's label
    runtime: str
    compared_with_host: bool = False  # ran elsewhere than this host (QEMU, a remote): x86 here is the reference
    max_abs_diff: float | None = None  # vs the same file's x86 outputs (None: nothing else to compare with)
    x86_max_abs: float | None = None  # the largest |x86 logit|: the scale criteria.arm_diff_limit allows for
    reference: str | None = None  # what the outputs were compared with


class SideError(Exception):
    """The side cannot serve this run (no runtime on the remote, say); the plugin stops with its message."""


class DeviceSide:
    """What every side answers: the profile, how figures are labelled, the runtime and threads, the timing target."""

    profile: devices.DeviceProfile
    method: str  # "measured" | "projected" | "emulated" (a remote under an emulator: never a device figure)
    threads: int
    runtime: str  # the TFLite runtime that times and checks the models on this side
    runtime_version: str
    runtime_note: str = ""  # why this side's runtime is not the device's own, where it is not
    timing: Target
    identity: Identity | None = None
    remote = False  # figures come from another machine (RemoteSide); x86 outputs here are its reference
    shares_gate = False  # its gate timing is this host's at 1 thread, the same whatever the device profile

    @property
    def on_device(self) -> bool:
        return self.method != "projected"

    @property
    def measured_on_device(self) -> bool:
        """Figures taken on the device itself: then a file larger than its memory budget is never loaded."""
        return self.method == "measured"

    @property
    def memory_limit_bytes(self) -> int | None:
        """Where this side can watch a worker's memory, the RSS it is stopped at (budget x KILL_FACTOR)."""
        return None

    def where(self) -> str:
        return f"{self.profile.name} ({self.profile.title})"

    def project(self, inferences_per_s: float) -> stats.Projection:
        raise NotImplementedError

    @property
    def emulates(self) -> bool:
        """Whether the device's own runtime is checked here under an emulator."""
        return False

    def unchecked_runtime(self) -> str | None:
        """Why the device's own runtime cannot be checked on this side (a skip reason), or None where it can."""
        return None

    def device_run(self, case_id: str, art, feeds: list[dict], infer: bool,
                   host_run: Callable[[], WorkerResult], store) -> DeviceRun:
        """The file on the device's own runtime (feeds only when `infer`; else a load check)."""
        raise NotImplementedError

    def here_runtime(self) -> tuple[str, str]:
        """(name, version) of the runtime that runs models on this machine (accuracy, x86 references)."""
        from edgemodels.run import runtime

        found = {r.name: r.version for r in runtime.available()}
        name = self.profile.runtime if self.profile.runtime in found else next(iter(found), "ai-edge-litert")
        return name, found.get(name, "not installed")

    def evaluation_elsewhere(self) -> str | None:
        """Why evaluation speed is not this device's figure here (a skip reason), or None."""
        if not self.on_device:
            return (f"evaluation runs on the host, not the {self.profile.name}: its throughput is recorded by the "
                    "desktop run (or on the device itself)")
        return None

    def figure_note(self, what: str, ident: Identity, runtime: str) -> str | None:
        """What a row's note says of where a figure (`what`: throughput, memory) was taken, if anything."""
        if what == "memory" and not self.on_device:
            return f"memory: host RSS ({runtime}) vs {self.profile.name} budget"
        return None

    def report_info(self) -> dict:
        """What report.json's machine section adds for this side."""
        return {}

    def release(self) -> dict | None:
        """Release what the session held (a labgrid place) and say so for report.json; None where nothing was held."""
        return None

    def close(self) -> None:
        self.timing.close()


class HostSide(DeviceSide):
    """This machine, the device itself or standing in for it."""

    def __init__(self, placement: devices.Placement, *, threads: int | None, runtime: str | None,
                 cache_root: Path | None, emulate: bool):
        from edgemodels.run import runtime as rt

        self.profile, self.method = placement.profile, placement.method
        self.threads = threads or self.profile.threads()
        found = {r.name: r for r in rt.available()}  # found without importing them
        if runtime:
            self.runtime = runtime
        elif self.profile.runtime in found:
            self.runtime = self.profile.runtime
        elif found:
            self.runtime = next(iter(found))
            self.runtime_note = (f"host runs {self.runtime} {found[self.runtime].version}; {self.profile.name} uses "
                                 f"{self.profile.runtime} {self.profile.runtime_version} (checked under emulation by "
                                 "test_compat)")
        else:
            raise SideError("no TFLite runtime installed here: pip install ai-edge-litert (or '.[device]')")
        self.runtime_version = found[self.runtime].version if self.runtime in found else "not installed"
        self.timing = LocalTarget()
        self._cache_root, self._emulate = cache_root, emulate

    shares_gate = True

    def here_runtime(self) -> tuple[str, str]:
        return self.runtime, self.runtime_version

    @property
    def memory_limit_bytes(self) -> int:
        return int(self.profile.memory_budget_bytes * stats.KILL_FACTOR)

    def label_here(self) -> str:
        """'measured here (<host>, <arch>)' on the device, else the host, said to be so."""
        if self.on_device:
            return f"measured here ({socket.gethostname()}, {platform.machine()})"
        return f"host ({socket.gethostname()}, {platform.machine()}; not the {self.profile.name})"

    def project(self, inferences_per_s: float) -> stats.Projection:
        return stats.project(inferences_per_s, devices.Placement(self.profile, self.on_device, self.method),
                             host_threads=self.threads, runtime=self.runtime)

    @cached_property
    def emulation(self) -> tuple[bool, str]:
        """(whether the device's runtime runs here under QEMU, why not)."""
        if self.on_device or not self._emulate or self.profile.emulation is None or self._cache_root is None:
            return False, "no emulation for this run"
        from edgemodels.run import qemu

        return qemu.availability()

    @property
    def emulates(self) -> bool:
        return self.emulation[0]

    def unchecked_runtime(self) -> str | None:
        if self.on_device or not self.runtime_note or self.emulates:
            return None
        return (f"this host runs {self.runtime} {self.runtime_version}, not the {self.profile.name}'s "
                f"{self.profile.runtime} {self.profile.runtime_version}, and cannot run that under emulation: "
                f"{self.emulation[1]}")

    def device_run(self, case_id, art, feeds, infer, host_run, store) -> DeviceRun:
        """Off the device with an emulation: the device's ARM build under QEMU, memoised in the cache (emulation
        costs seconds to minutes per file). Else this host's own run, which on the device is the device's."""
        if self.emulates:
            return self._emulated(case_id, art, feeds if infer else feeds[:0], store)
        res = host_run()
        return DeviceRun(res.loads, res.error, res.outputs if infer else None, self.label_here(),
                         f"{res.identity.runtime or self.runtime} {res.identity.runtime_version or ''}".strip())

    def _emulated(self, case_id: str, art, feeds: list[dict], store) -> DeviceRun:
        """Memoised by the file, the emulated device, the feeds and the code that decides the verdict."""
        from edgemodels.run import qemu, rootfs
        from edgemodels.store.cache import Key
        from edgemodels.store.keys import EMULATION_CODE, code_identity, feeds_digest

        p, emu = self.profile, self.profile.emulation
        key = Key("emulated", f"{p.name}-{case_id}", {
            "artifact": art.manifest["key"]["digest"], "feeds": feeds_digest(feeds), "threads": qemu.EMULATED_THREADS,
            "target": {"device": p.name, "runtime": p.runtime, "version": p.runtime_version, "cores": p.cpu.cores,
                       **asdict(emu)},
            "code": code_identity(*EMULATION_CODE)})

        def compute() -> dict:
            target = qemu.QemuTarget(p, rootfs.ensure_rootfs(p, self._cache_root))  # built only when not memoised
            res = target.run(art.tflite, threads=qemu.EMULATED_THREADS, feeds=feeds)
            return {"loads": res.loads, "error": res.error, "runtime_version": res.identity.runtime_version,
                    "arch": res.identity.arch, "outputs": None if res.outputs is None else res.outputs.tolist()}

        run, _ = store.memo_json(key, compute)
        outputs = None if run["outputs"] is None else np.asarray(run["outputs"], dtype=np.float32)
        return DeviceRun(run["loads"], run["error"], outputs, emu.method,
                         f"{p.runtime} {run['runtime_version']} ({run['arch']})", compared_with_host=True)


class RemoteSide(DeviceSide):
    """A device driven over SSH: it answers for itself (its board is checked against --device at start-up)."""

    def __init__(self, target: Target, device: str, *, extra=None, threads: int | None, runtime: str | None,
                 install_hint: str):
        from edgemodels.run import ssh

        self.timing = target
        try:
            self.identity = ident = target.identity()
            ssh.check_device(ident, device, extra)
        except Exception:
            target.close()
            raise
        self.profile = ssh.profile_for(ident) if device == "native" else devices.get(device, extra)
        self.method = ident.method
        self.threads = threads or max(1, min(self.profile.cpu.cores, ident.cores))
        found = ident.runtimes
        named = runtime or (self.profile.runtime if self.profile.runtime in found else None)
        if not named and not found:
            target.close()
            raise SideError(f"no TFLite runtime on {ident.via}; install one there: {install_hint}")
        self.runtime = named or next(iter(found))
        self.runtime_version = found.get(self.runtime, "not installed")

    def where(self) -> str:
        return self.identity.label

    def project(self, inferences_per_s: float) -> stats.Projection:
        return stats.Projection(inferences_per_s, "measured", None, self.identity.label)

    remote = True

    def device_run(self, case_id, art, feeds, infer, host_run, store) -> DeviceRun:
        res = self.timing.run(art.tflite, runtime=self.runtime, threads=self.threads, feeds=feeds if infer else feeds[:0])
        ident = res.identity
        return DeviceRun(res.loads, res.error, res.outputs, ident.label,
                         f"{ident.runtime or self.runtime} {ident.runtime_version} ({ident.arch})",
                         compared_with_host=True)

    def evaluation_elsewhere(self) -> str | None:
        return (f"evaluation runs on this host, not on the --remote {self.profile.name}: not timed as a device "
                "figure")

    def figure_note(self, what: str, ident: Identity, runtime: str) -> str | None:
        return f"{what} {ident.label}"

    def report_info(self) -> dict:
        return {"remote": self.identity.as_dict()}  # the figures' machine; the rest is this host's

    def release(self) -> dict | None:
        from edgemodels.lab import places

        return places.release_for_report(self.timing)  # timing is over: free a labgrid place, say when
