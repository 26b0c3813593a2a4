"""Run a Raspberry Pi's own ARM TFLite runtime on a workstation under QEMU user-mode emulation.

Why: an x86 runtime is not what the device runs. tflite-runtime 2.14.0 (the last wheel, the one a 32-bit Pi 3 can
install) refuses models that a newer converter writes, and ARM kernels compute quantized models differently from
x86 ones. So compatibility checks run the device's actual ARM build (edgemodels/run/rootfs.py builds its user-land),
through the same worker as every other target, executed by `qemu-<arch>-static -L <rootfs>`. The device's facts (its
Debian arch, pinned QEMU CPU and CPU identity) are its profile's `Emulation` (edgemodels/devices.py).

Three traps are handled, each checked again at run time from inside the emulated python:
  (a) QEMU shows the host's x86 /proc/cpuinfo, and ARM runtimes (cpuinfo/XNNPACK) then crash or run without
      XNNPACK: the rootfs gets the device's ARM `proc/cpuinfo` and `sys/devices/system/cpu/...` (QEMU's -L
      redirects those paths into the rootfs), and a runtime that announces XNNPACK must have created its delegate.
  (b) QEMU's default CPU "max" advertises SVE/i8mm/bf16 that no Pi has, so XNNPACK picks kernels the device never
      runs: QEMU_CPU is pinned per device, and the hwcaps the guest sees are compared with the device's.
  (c) Debian resolves libblas/liblapack through absolute /etc/alternatives links that are never created here (no
      dpkg postinst), so numpy fails to import: LD_LIBRARY_PATH names the rootfs's blas/lapack directories.
Timings measured under emulation say nothing about the device: a QemuTarget's results are never timed figures.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

from edgemodels.devices import DeviceProfile, Emulation
from edgemodels.run.targets import WORKER_MODULE, LocalTarget, TargetError

MARKER = "complete.json"
SITE_DIR = "opt/edge-site"
"""Where the runtime wheel is unpacked inside the rootfs."""
EMULATED_THREADS = 1
"""Interpreter threads under QEMU: at 2 threads the aarch64 ai-edge-litert gave int8 logits that changed from run to
run, at 1 they equalled x86's exactly (docs/measurements.md#emulated-threads). A numerics check must be reproducible,
and emulation is never timed."""
ANNOUNCES_XNNPACK = frozenset({"ai-edge-litert"})
"""Runtimes known to log "Created TensorFlow Lite XNNPACK delegate" (tflite-runtime 2.14 does not)."""


class EmulationError(TargetError, RuntimeError):
    """The emulator or the emulated user-land misbehaved (not a property of the model)."""


class EmulationUnavailable(EmulationError):
    """qemu-user-static / debootstrap are not installed here."""


def _emu(profile: DeviceProfile) -> Emulation:
    if profile.emulation is None:
        raise EmulationUnavailable(f"{profile.name}: its profile names no emulation (DeviceProfile.emulation)")
    return profile.emulation


def _arch(profile: DeviceProfile) -> "_Arch":
    return _ARCHES[_emu(profile).debian_arch]


@dataclass(frozen=True)
class _Arch:
    triplet: str
    wheel_arch: str
    auxv_word: int  # bytes per auxv field
    hwcap_names: tuple[str, ...]  # AT_HWCAP bit -> name (as in the kernel's Features line)
    hwcap2_names: tuple[str, ...]
    kernel_selecting: frozenset[str]
    """Features that make XNNPACK/ruy choose different kernels: must match the device exactly."""


_ARCHES: Mapping[str, _Arch] = MappingProxyType({
    "arm64": _Arch(
        triplet="aarch64-linux-gnu",
        wheel_arch="aarch64",
        auxv_word=8,
        hwcap_names=("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics",
                     "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop",
                     "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat",
                     "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"),
        hwcap2_names=("dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4",
                      "flagm2", "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm",
                      "bf16", "dgh", "rng", "bti", "mte", "ecv", "afp", "rpres", "mte3", "sme"),
        kernel_selecting=frozenset({"asimd", "fphp", "asimdhp", "asimddp", "asimdfhm", "asimdrdm",
                                    "sve", "sve2", "svei8mm", "svebf16", "i8mm", "bf16", "sme"}),
    ),
    "armhf": _Arch(
        triplet="arm-linux-gnueabihf",
        wheel_arch="armv7l",
        auxv_word=4,
        hwcap_names=("swp", "half", "thumb", "26bit", "fastmult", "fpa", "vfp", "edsp", "java",
                     "iwmmxt", "crunch", "thumbee", "neon", "vfpv3", "vfpv3d16", "tls", "vfpv4",
                     "idiva", "idivt", "vfpd32", "lpae", "evtstrm", "fphp", "asimdhp", "asimddp",
                     "asimdfhm", "asimdbf16", "i8mm"),
        hwcap2_names=("aes", "pmull", "sha1", "sha2", "crc32", "sb", "ssbs"),
        kernel_selecting=frozenset({"neon", "vfpv4", "idiva", "vfpd32", "fphp", "asimdhp",
                                    "asimddp", "asimdfhm", "asimdbf16", "i8mm"}),
    ),
})


def cpu_files(profile: DeviceProfile) -> dict[str, str]:
    """The ARM CPU description the device's kernel would show, as {rootfs-relative path: text}.

    QEMU's -L makes the guest read these instead of the host's x86 files (trap a).
    """
    ident, n = _emu(profile).cpu, profile.cpu.cores
    last = f"0-{n - 1}" if n > 1 else "0"
    blocks = []
    for cpu in range(n):
        lines = [f"processor\t: {cpu}"]
        if ident.model_name:
            lines.append(f"model name\t: {ident.model_name}")
        lines += [
            "BogoMIPS\t: 108.00" if ident.architecture == 8 else "BogoMIPS\t: 38.40",
            f"Features\t: {' '.join(ident.features)}",
            "CPU implementer\t: 0x41",
            f"CPU architecture: {ident.architecture}",
            f"CPU variant\t: {ident.variant}",
            f"CPU part\t: {ident.part}",
            f"CPU revision\t: {ident.revision}",
        ]
        blocks.append("\n".join(lines) + "\n")
    tail = f"Hardware\t: {ident.hardware}\nRevision\t: {ident.revision_code}\nModel\t\t: {ident.model}\n"
    files = {"proc/cpuinfo": "\n".join(blocks) + "\n" + tail}
    base = "sys/devices/system/cpu"
    for name in ("possible", "present", "online"):
        files[f"{base}/{name}"] = last + "\n"
    files[f"{base}/offline"] = "\n"
    for cpu in range(n):
        d = f"{base}/cpu{cpu}"
        files[f"{d}/online"] = "1\n"
        files[f"{d}/topology/physical_package_id"] = "0\n"
        files[f"{d}/topology/core_id"] = f"{cpu}\n"
        files[f"{d}/topology/cluster_id"] = "0\n"
        for key in ("core_siblings_list", "package_cpus_list", "cluster_cpus_list"):
            files[f"{d}/topology/{key}"] = last + "\n"
        for key in ("thread_siblings_list", "core_cpus_list"):
            files[f"{d}/topology/{key}"] = f"{cpu}\n"
        files[f"{d}/cpufreq/cpuinfo_max_freq"] = f"{ident.max_khz}\n"
        files[f"{d}/cpufreq/cpuinfo_min_freq"] = f"{ident.min_khz}\n"
    return files


def hwcap_names(profile: DeviceProfile, hwcap: int, hwcap2: int) -> tuple[str, ...]:
    """Decode AT_HWCAP/AT_HWCAP2 (what the emulated CPU really offers) into Features names."""
    arch = _arch(profile)
    names = [n for bit, n in enumerate(arch.hwcap_names) if hwcap >> bit & 1]
    names += [n for bit, n in enumerate(arch.hwcap2_names) if hwcap2 >> bit & 1]
    return tuple(names)


def check_cpu(profile: DeviceProfile, probe: Mapping) -> None:
    """Raise EmulationError unless the guest saw the device's CPU (traps a and b took effect)."""
    ident, arch = _emu(profile).cpu, _arch(profile)
    problems = []
    if probe.get("cpu_part") != ident.part:
        problems.append(f"/proc/cpuinfo CPU part is {probe.get('cpu_part')!r}, expected {ident.part!r} "
                        "(the -L rootfs proc/cpuinfo is not being read)")
    if probe.get("cpu_count") != profile.cpu.cores:
        problems.append(f"os.cpu_count() is {probe.get('cpu_count')}, expected {profile.cpu.cores} "
                        "(sys/devices/system/cpu/online is not being read)")
    seen = set(hwcap_names(profile, int(probe.get("hwcap", 0)), int(probe.get("hwcap2", 0))))
    extra = (seen - set(ident.features)) & arch.kernel_selecting
    missing = (set(ident.features) - seen) & arch.kernel_selecting
    if extra or missing:
        problems.append(f"emulated CPU features differ from a {profile.name}: extra {sorted(extra)}, "
                        f"missing {sorted(missing)} (QEMU_CPU={_emu(profile).qemu_cpu} not applied?)")
    if problems:
        raise EmulationError(f"{profile.name}: emulated CPU does not match the device: " + "; ".join(problems))


def availability() -> tuple[bool, str]:
    """Whether ARM emulation can run here, and why not. Never raises."""
    try:
        if platform.system() != "Linux":
            return False, f"QEMU user-mode emulation needs Linux (this is {platform.system()})"
        tools = ("qemu-arm-static", "qemu-aarch64-static", "debootstrap", "dpkg-deb")
        missing = [t for t in tools if shutil.which(t) is None]
        if missing:
            return False, (f"qemu-user-static/debootstrap not installed ({', '.join(missing)} missing): "
                           "run `sudo scripts/install-qemu` (Debian/Ubuntu, root)")
        import importlib.util

        if importlib.util.find_spec("pip") is None:
            return False, f"pip is not available to {sys.executable}; it fetches the ARM runtime wheel"
        try:
            out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.splitlines()
            version = out[0].strip() if out else "qemu (unknown version)"
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"qemu-aarch64-static does not run: {exc}"
        return True, version
    except Exception as exc:  # noqa: BLE001 - contract: never raise
        return False, f"cannot check for QEMU: {exc}"


def project_root() -> Path:
    """The directory holding the edgemodels package (put on the guest's PYTHONPATH)."""
    return Path(__file__).resolve().parents[2]


def _read_marker(rootfs: Path) -> dict:
    try:
        return json.loads((rootfs / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise EmulationError(f"{rootfs}: not a complete ARM rootfs ({MARKER} unreadable: {exc}); "
                             "build it with edgemodels.run.rootfs.ensure_rootfs") from exc


def _lib_dirs(rootfs: Path, debian_arch: str) -> list[str]:
    """The rootfs's BLAS/LAPACK directories, normally reached via /etc/alternatives (trap c)."""
    libdir = rootfs / "usr" / "lib" / _ARCHES[debian_arch].triplet
    dirs = sorted({p.parent.relative_to(rootfs).as_posix()
                   for pat in ("*/libblas.so.3", "*/liblapack.so.3") for p in libdir.glob(pat)})
    return dirs


def qemu_invocation(profile: DeviceProfile, rootfs: Path, python_args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """argv and a clean environment to run the rootfs's python3 under QEMU for this target."""
    rootfs = Path(rootfs).resolve()
    marker = _read_marker(rootfs)
    lib_dirs = [str(rootfs / d) for d in marker.get("lib_dirs", [])]
    if not lib_dirs:
        raise EmulationError(f"{rootfs}: no blas/lapack directories recorded in {MARKER}; numpy would "
                             "not import (rebuild: delete the directory)")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": tempfile.gettempdir(),
        "TMPDIR": tempfile.gettempdir(),
        "QEMU_CPU": _emu(profile).qemu_cpu,  # trap b: never "max"
        "LD_LIBRARY_PATH": ":".join(lib_dirs),  # trap c
        "PYTHONPATH": ":".join([str(rootfs / SITE_DIR), str(project_root())]),
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [_emu(profile).qemu_binary, "-L", str(rootfs), str(rootfs / "usr/bin/python3"), *python_args]
    return argv, env


# --------------------------------------------------------------------------------------------
# The target


class QemuTarget(LocalTarget):
    """A Pi's own ARM runtime under QEMU user mode: loads and numerics, never timings or memory figures."""

    via = "qemu"

    def __init__(self, profile: DeviceProfile, rootfs: Path):
        self.profile, self.rootfs = profile, Path(rootfs)
        self.python = [_emu(profile).qemu_binary, "-L", str(self.rootfs), str(self.rootfs / "usr/bin/python3")]

    @property
    def method(self) -> str:
        return _emu(self.profile).method

    def _command(self, work: Path):
        return qemu_invocation(self.profile, self.rootfs, ["-m", WORKER_MODULE, str(work / "request.json")])

    def _check(self, status: Mapping, stderr: str = "") -> None:
        check_cpu(self.profile, status)
        if not status.get("emulated"):  # the worker must see QEMU, or its figures could pass as device times
            raise EmulationError(f"qemu: the worker did not detect its emulator (status: {status.get('emulator')!r})")
        if status.get("loads") and status.get("runtime") in ANNOUNCES_XNNPACK and "XNNPACK delegate" not in stderr:
            raise EmulationError(f"{self.profile.name}: {status.get('runtime')} under QEMU did not create its XNNPACK "
                                 "delegate (trap a: the emulated CPU description is not being read); its outputs "
                                 "would come from reference kernels the device does not run")

    def run(self, tflite, *, runtime=None, **kw):
        return super().run(tflite, runtime=runtime or self.profile.runtime, **kw)
