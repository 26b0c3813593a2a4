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
from functools import cached_property
from pathlib import Path
from typing import Callable

from edgemodels import devices
from edgemodels.run import stats
from edgemodels.run.targets import Identity, LocalTarget, Target


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

    def compat_target(self) -> tuple[Callable[[], Target], str, bool]:
        """(a call giving the target that runs the device's own runtime, how its figures are labelled, whether it is
        emulated). A call, so that an emulated user-land is built only when a check is not memoised already."""
        raise NotImplementedError

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

    def compat_target(self) -> tuple[Callable[[], Target], str, bool]:
        if self.emulation[0]:
            from edgemodels.run import qemu, rootfs

            return (lambda: qemu.QemuTarget(self.profile, rootfs.ensure_rootfs(self.profile, self._cache_root)),
                    self.profile.emulation.method, True)
        return (lambda: self.timing), self.label_here(), False


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

    def compat_target(self) -> tuple[Callable[[], Target], str, bool]:
        return (lambda: self.timing), self.identity.label, self.identity.emulated
