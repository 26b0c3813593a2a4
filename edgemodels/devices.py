"""Device profiles: what each target can install, how much memory an app may use, how fast it is.

Off the device, a Raspberry Pi's throughput is PROJECTED, never measured:

    projected device inferences/s = host inferences/s (measured at the device's thread count)
                                    x speed_factor

The speed factor is the throughput of one device core relative to one *reference x86-64 desktop
core*: an AVX2/FMA core at about 4 GHz (Intel Skylake/Coffee Lake, e.g. Core i7-8700, or AMD Zen 2,
e.g. Ryzen 7 3700X). When the host is not such a core (a laptop, a 2-vCPU cloud VM, a core with
AVX-512) the projection inherits the difference. There is no published MobileBERT/BERT TFLite
benchmark that measures a Pi 3, Pi 4, Pi 5 and an x86 desktop with the same runtime, so each
factor is a chain of published figures, stated in full in ``speed_factor_derivation``:

1. Peak SIMD float throughput per core (Arm Cortex-A53/A72/A76 technical reference manuals; x86
   AVX2): Cortex-A53 has a 64-bit NEON datapath, 4 FP32 FLOP/cycle; Cortex-A72 and A76 have two
   128-bit NEON pipes, 16 FP32 FLOP/cycle; an AVX2 desktop core has two 256-bit FMA units,
   32 FP32 FLOP/cycle. This bounds each factor from above.
2. Published ratios between the Pis: Raspberry Pi Ltd's Pi 5 launch figure "2-3x the CPU
   performance of Raspberry Pi 4"; Alasdair Allan's ~2x ML inference speed-up of Pi 4 over
   Pi 3 B+ (both on 32-bit Raspbian); single-thread sysbench on 64-bit Raspberry Pi OS
   (Pi 3 B+ 687, Pi 4 1478, Pi 5 2737 events/s).
3. The 32-bit penalty: a Pi 3 can only install tflite-runtime for armv7l on 32-bit Raspberry Pi
   OS, which lacks the AArch64 NEON kernels (half the vector registers, no AArch64-tuned
   XNNPACK/ruy micro-kernels). Single-core OpenBLAS Linpack on a Pi 4 drops from 4200 MFLOPS
   (64-bit OS) to 2440 MFLOPS (32-bit Raspbian), a factor of 0.58.

The resulting factors (pi3 0.025, pi4 0.10, pi5 0.25) carry roughly +-50% uncertainty; each
profile's derivation gives its range. A projection is an estimate for planning: only a run on the
device itself is a measurement (``place`` tells which one a run is).
"""

from __future__ import annotations

import os
import platform
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from edgemodels.errors import EdgeModelsError

GiB = 1024**3

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
"""Where the Raspberry Pi firmware publishes the board name."""

_ARCHES = ("armv7l", "aarch64", "x86_64")


@dataclass(frozen=True)
class CPU:
    cores: int
    clock_ghz: float
    microarch: str  # e.g. "Cortex-A53"

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ValueError(f"CPU.cores must be >= 1, got {self.cores}")
        if self.clock_ghz < 0:
            raise ValueError(f"CPU.clock_ghz must be >= 0, got {self.clock_ghz}")


@dataclass(frozen=True)
class CpuIdentity:
    """What the device's kernel reports about its CPU: written into an emulated user-land's /proc and /sys, because
    QEMU shows the host's x86 files, and ARM runtimes (cpuinfo, XNNPACK) then crash or pick other kernels."""

    part: str  # MIDR part number, e.g. "0xd08"
    variant: str
    revision: int
    architecture: int  # "CPU architecture" line: 7 on a 32-bit Pi 3 kernel, 8 on 64-bit
    model_name: str | None  # only 32-bit kernels print a "model name" line
    features: tuple[str, ...]  # the device's Features line
    max_khz: int
    min_khz: int
    hardware: str
    revision_code: str
    model: str  # the board, as /proc/device-tree/model and cpuinfo's Model line say it


QEMU_BINARIES: Mapping[str, str] = MappingProxyType({"armhf": "qemu-arm-static", "arm64": "qemu-aarch64-static"})
"""Debian architecture -> the QEMU user-mode emulator that runs its binaries."""


@dataclass(frozen=True)
class Emulation:
    """How the device's own runtime build is run on a workstation: QEMU user mode over a Debian user-land of its
    architecture (edgemodels.run.qemu), with the CPU pinned (never QEMU's default "max", which advertises SVE/i8mm
    that no Pi has) and the device's CPU identity shown to the runtime. A profile that has one gets the emulated
    compat checks off the device; without one they skip."""

    debian_arch: str  # "armhf" | "arm64"
    qemu_cpu: str  # e.g. "cortex-a72"
    cpu: CpuIdentity

    def __post_init__(self) -> None:
        if self.debian_arch not in QEMU_BINARIES:
            raise ValueError(f"Emulation.debian_arch {self.debian_arch!r}: one of {', '.join(QEMU_BINARIES)}")
        if self.qemu_cpu in ("", "max", "host"):
            raise ValueError(f"Emulation.qemu_cpu {self.qemu_cpu!r}: pin a real CPU model (e.g. cortex-a72): "
                             "'max' offers features no Pi has, so the runtime would pick other kernels")

    @property
    def qemu_binary(self) -> str:
        return QEMU_BINARIES[self.debian_arch]

    @property
    def method(self) -> str:
        """How figures from this emulation were obtained, for reports."""
        return f"emulated ARM (qemu, {self.qemu_cpu})"


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """One deployment target, described by what matters for running a .tflite classifier on it."""

    name: str
    title: str
    cpu: CPU
    ram_bytes: int
    app_memory_share: float
    """Share of RAM one application may use; the OS, GPU memory split and desktop take the rest."""
    arch: str
    os_bits: int
    runtime: str
    """The TFLite runtime this device can really install (pip wheel exists for its arch/OS)."""
    runtime_version: str
    numpy_constraint: str
    emulation: Emulation | None = None
    """How its own runtime is emulated on a workstation (QEMU); None where no emulation is needed or possible."""
    target_inferences_per_s: float = 1.0
    """The paper's goal: classify at least one tweet per second on the device."""
    speed_factor: float | None
    """Device throughput / reference x86-64 desktop core throughput; None where measured, not projected."""
    speed_factor_derivation: str

    def __post_init__(self) -> None:
        if not 0 < self.app_memory_share <= 1:
            raise ValueError(f"{self.name}: app_memory_share must be in (0, 1], got {self.app_memory_share}")
        if self.ram_bytes <= 0:
            raise ValueError(f"{self.name}: ram_bytes must be > 0, got {self.ram_bytes}")
        if self.os_bits not in (32, 64):
            raise ValueError(f"{self.name}: os_bits must be 32 or 64, got {self.os_bits}")
        if self.speed_factor is not None and not self.speed_factor > 0:
            raise ValueError(f"{self.name}: speed_factor must be > 0 or None, got {self.speed_factor}")
        if self.target_inferences_per_s <= 0:
            raise ValueError(f"{self.name}: target_inferences_per_s must be > 0")

    @property
    def memory_budget_bytes(self) -> int:
        """What one application may use: RAM x app_memory_share."""
        return int(self.ram_bytes * self.app_memory_share)

    def threads(self, host_cores: int | None = None) -> int:
        """Interpreter threads for this device: its core count, capped by the cores the host really has."""
        host = _host_cores() if host_cores is None else host_cores
        if host < 1:
            raise ValueError(f"host_cores must be >= 1, got {host}")
        return max(1, min(self.cpu.cores, host))

    @property
    def projected(self) -> bool:
        """True when off-device throughput for this profile is a projection (it has a speed factor)."""
        return self.speed_factor is not None


def _host_cores() -> int:
    """CPUs this process may run on (respects container/affinity limits, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --- Sources quoted in the derivations (titles and addresses) --------------------------------
_SRC_PEAK = (
    "peak FP32 FLOP/cycle from the Arm Cortex-A53/A72/A76 technical reference manuals "
    "(A53: one 64-bit NEON datapath; A72/A76: two 128-bit NEON pipes) and Intel/AMD AVX2 "
    "(two 256-bit FMA units); XNNPACK provides NEON and AVX2 float kernels for TFLite: "
    "'Accelerating TensorFlow Lite with XNNPACK Integration', TensorFlow Blog, 2020-07-24, "
    "https://blog.tensorflow.org/2020/07/accelerating-tensorflow-lite-xnnpack-integration.html"
)
_SRC_SYSBENCH = (
    "single-thread sysbench 1.0.20 on 64-bit Raspberry Pi OS: Pi 3 B+ 687, Pi 4 1478, Pi 5 2737 "
    "events/s ('Raspberry Pi CPU Benchmarks', https://leoncode.co.uk/articles/raspberry-pi-benchmarks)"
)
_SRC_PI5 = (
    "Raspberry Pi Ltd's launch figure of 2-3x the CPU performance of Raspberry Pi 4 (reported e.g. in "
    "'The Raspberry Pi 5 is here', ZDNET, https://www.zdnet.com/google-amp/article/the-raspberry-pi-5-is-here-and-it-comes-with-some-huge-improvements/)"
)
_SRC_ALLAN = (
    "~2x faster ML inference on Pi 4 than on Pi 3 B+, both on 32-bit Raspbian (A. Allan, "
    "'Benchmarking Machine Learning on the New Raspberry Pi 4, Model B', Hackster.io, 2019, "
    "https://www.hackster.io/news/benchmarking-machine-learning-on-the-new-raspberry-pi-4-model-b-88db9304ce4)"
)
_SRC_32BIT = (
    "single-core OpenBLAS Linpack on a Pi 4: 4200 MFLOPS on a 64-bit OS vs 2440 MFLOPS on 32-bit "
    "Raspbian, x0.58 ('32- or 64-bit: Speed', https://www.sci-pi.org.uk/arch/32vs64.html)"
)
_REFERENCE = (
    "Reference: one x86-64 desktop core with AVX2+FMA at ~4 GHz (Skylake/Coffee Lake e.g. Core i7-8700, "
    "or Zen 2 e.g. Ryzen 7 3700X): 32 FP32 FLOP/cycle, ~128 GFLOPS peak."
)

_PI5_DERIVATION = (
    "PROJECTION, not a measurement. Pi 5 (4x Cortex-A76 @ 2.4 GHz, 64-bit OS): peak 16 FP32 FLOP/cycle "
    "x 2.4 GHz = 38.4 GFLOPS = 0.30 of the reference core, an upper bound; with its smaller caches "
    "(512 KB L2/core, 2 MB L3) and 32-bit LPDDR4X we take 0.25 of the reference core. Cross-check: "
    "pi5/pi4 = 0.25/0.10 = 2.5, the middle of Raspberry Pi's '2-3x' and above sysbench's 1.85x (sysbench is "
    "scalar integer, the A76 gains more on SIMD). Range 0.15-0.35. " + _REFERENCE + " Sources: " + _SRC_PEAK
    + "; " + _SRC_PI5 + "; " + _SRC_SYSBENCH + "."
)
_PI4_DERIVATION = (
    "PROJECTION, not a measurement. Pi 4 B (4x Cortex-A72 @ 1.5 GHz, 64-bit OS): peak 16 FP32 FLOP/cycle "
    "x 1.5 GHz = 24 GFLOPS = 0.19 of the reference core; the A72 reaches a smaller share of peak (1 MB shared "
    "L2, 32-bit LPDDR4-3200), and the published Pi 5 to Pi 4 ratio of 2-3x puts it at 0.25/2.5 = 0.10. "
    "Range 0.07-0.15. Boards with the BCM2711 C0 stepping (Rev 1.4 and later) default to 1.8 GHz and "
    "run ~20% faster. " + _REFERENCE + " Sources: " + _SRC_PEAK + "; " + _SRC_PI5 + "; " + _SRC_SYSBENCH + "."
)
_PI3_DERIVATION = (
    "PROJECTION, not a measurement. Pi 3 B (4x Cortex-A53 @ 1.2 GHz, in-order) on 32-bit Raspberry Pi OS "
    "with tflite-runtime for armv7l, which has no AArch64 NEON kernels. From the Pi 4 factor 0.10: / 2 "
    "(Pi 4 vs Pi 3 B+ ML inference, both 32-bit) x 0.58 (a 32-bit OS's speed relative to 64-bit on the "
    "same board) x 1.2/1.4 GHz (Pi 3 B vs 3 B+) = 0.025. Cross-check: peak 4 FP32 FLOP/cycle x 1.2 GHz "
    "= 4.8 GFLOPS = 0.0375 of the reference core, x 0.58 = 0.022. Range 0.015-0.04. " + _REFERENCE
    + " Sources: " + _SRC_ALLAN + "; " + _SRC_32BIT + "; " + _SRC_SYSBENCH + "; " + _SRC_PEAK + "."
)

_PI_A53_32 = ("half", "thumb", "fastmult", "vfp", "edsp", "neon", "vfpv3", "tls", "vfpv4", "idiva",
              "idivt", "vfpd32", "lpae", "evtstrm", "crc32")
# Pi 3 Model B (BCM2837, Cortex-A53) under 32-bit Raspberry Pi OS: the kernel reports ARMv7. QEMU 7.2 has no 32-bit
# Cortex-A53, so the ISA is emulated as a Cortex-A7: the same ARMv7 NEON-VFPv4 instruction set that the Pi 3's 32-bit
# kernel exposes (minus crc32).
_PI3_CPU = CpuIdentity("0xd03", "0x0", 4, 7, "ARMv7 Processor rev 4 (v7l)", _PI_A53_32,
                       1_200_000, 600_000, "BCM2835", "a02082", "Raspberry Pi 3 Model B Rev 1.2")
_PI4_CPU = CpuIdentity("0xd08", "0x0", 3, 8, None, ("fp", "asimd", "evtstrm", "crc32", "cpuid"),
                       1_500_000, 600_000, "BCM2835", "c03111", "Raspberry Pi 4 Model B Rev 1.1")
_PI5_CPU = CpuIdentity("0xd0b", "0x4", 1, 8, None,
                       ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
                        "asimdhp", "cpuid", "asimdrdm", "lrcpc", "dcpop", "asimddp"),
                       2_400_000, 1_500_000, "BCM2712", "d04170", "Raspberry Pi 5 Model B Rev 1.0")

_PROFILES: dict[str, DeviceProfile] = {
    "desktop": DeviceProfile(
        name="desktop",
        title="x86-64 desktop workstation (8 cores, 16 GB), 64-bit Linux",
        cpu=CPU(cores=8, clock_ghz=4.0, microarch="x86-64 (AVX2)"),
        ram_bytes=16 * GiB,
        # An IDE, a browser and the desktop typically hold a quarter of a 16 GB workstation.
        app_memory_share=0.75,
        arch="x86_64",
        os_bits=64,
        runtime="ai-edge-litert",
        runtime_version="2.3.0",
        numpy_constraint="",
        speed_factor=None,
        speed_factor_derivation=(
            "Measured, not projected: the desktop profile is this x86-64 workstation measured as itself."
        ),
    ),
    "pi3": DeviceProfile(
        name="pi3",
        title="Raspberry Pi 3 Model B (1 GB), 32-bit Raspberry Pi OS",
        cpu=CPU(cores=4, clock_ghz=1.2, microarch="Cortex-A53"),
        ram_bytes=1 * GiB,
        # ~700 MB: the GPU memory split (64-76 MB by default) and Raspberry Pi OS with its desktop
        # (roughly 200 MB at idle) leave about 0.7 of the 1 GB for an application without swapping.
        app_memory_share=0.7,
        arch="armv7l",
        os_bits=32,
        # ai-edge-litert publishes aarch64/x86_64 wheels only; tflite-runtime 2.14.0 is the last armv7l build,
        # and it was compiled against the numpy 1.x ABI.
        runtime="tflite-runtime",
        runtime_version="2.14.0",
        numpy_constraint="numpy<2",
        # QEMU 7.2 has no 32-bit cortex-a53 model; cortex-a7 is the closest ARMv7 NEON/VFPv4 core.
        emulation=Emulation("armhf", "cortex-a7", _PI3_CPU),
        speed_factor=0.025,
        speed_factor_derivation=_PI3_DERIVATION,
    ),
    "pi4": DeviceProfile(
        name="pi4",
        # The 4 GB board is the default: the most common Pi 4 and the paper-era mid-range model.
        title="Raspberry Pi 4 Model B (4 GB), 64-bit Raspberry Pi OS",
        cpu=CPU(cores=4, clock_ghz=1.5, microarch="Cortex-A72"),
        ram_bytes=4 * GiB,
        # The OS, desktop and GPU split use well under 1 GB; 0.8 leaves headroom for a browser/UI.
        app_memory_share=0.8,
        arch="aarch64",
        os_bits=64,
        runtime="ai-edge-litert",
        runtime_version="2.3.0",
        numpy_constraint="",
        emulation=Emulation("arm64", "cortex-a72", _PI4_CPU),
        speed_factor=0.10,
        speed_factor_derivation=_PI4_DERIVATION,
    ),
    "pi5": DeviceProfile(
        name="pi5",
        # 8 GB chosen: the launch flagship, and the model most used for on-device ML.
        title="Raspberry Pi 5 (8 GB), 64-bit Raspberry Pi OS",
        cpu=CPU(cores=4, clock_ghz=2.4, microarch="Cortex-A76"),
        ram_bytes=8 * GiB,
        # The OS and desktop take ~1 GB of 8 GB; 0.85 keeps the rest for the application.
        app_memory_share=0.85,
        arch="aarch64",
        os_bits=64,
        runtime="ai-edge-litert",
        runtime_version="2.3.0",
        numpy_constraint="",
        emulation=Emulation("arm64", "cortex-a76", _PI5_CPU),
        speed_factor=0.25,
        speed_factor_derivation=_PI5_DERIVATION,
    ),
}

PROFILES: Mapping[str, DeviceProfile] = MappingProxyType(_PROFILES)
"""The fixed targets (immutable). "native" is built per host by native_profile()."""

NAMES: tuple[str, ...] = (*_PROFILES, "native")
"""Every name get() and place() accept."""


def get(name: str, extra: Mapping[str, DeviceProfile] | None = None) -> DeviceProfile:
    """The profile called `name`; "native" is this host measured as itself; `extra`: profiles a conftest.py
    added (hookspec.pytest_edgemodels_add_devices)."""
    if name == "native":
        return native_profile()
    if extra and name in extra:
        return extra[name]
    try:
        return PROFILES[name]
    except KeyError:
        valid = (*NAMES, *(extra or ()))
        raise ValueError(f"unknown device {name!r}; valid devices: {', '.join(valid)}") from None


class DeviceProfileError(EdgeModelsError, ValueError):
    """A device profile added by a conftest.py hook that cannot be used (wrong type, clashing name)."""


def merge_extra(answers) -> Mapping[str, DeviceProfile]:
    """The profiles from every `pytest_edgemodels_add_devices` implementation (a list of lists), by name, checked."""
    out: dict[str, DeviceProfile] = {}
    for answer in answers or ():
        for profile in answer or ():
            if not isinstance(profile, DeviceProfile):
                raise DeviceProfileError(f"pytest_edgemodels_add_devices returned {profile!r}; return "
                                         "edgemodels.devices.DeviceProfile objects")
            if profile.name in NAMES or profile.name in out:
                raise DeviceProfileError(f"pytest_edgemodels_add_devices: a device named {profile.name!r} exists "
                                         "already; give the profile another name")
            out[profile.name] = profile
    return MappingProxyType(out)


_MODEL_RE = re.compile(r"^Raspberry Pi ([345]) Model B\b")


def detect(model_path: Path | str = DEVICE_TREE_MODEL) -> str | None:
    """"pi3"/"pi4"/"pi5" when this host is that Raspberry Pi (from the device-tree model), else None."""
    try:
        raw = Path(model_path).read_bytes()
    except OSError:
        return None
    text = raw.replace(b"\x00", b"").decode("ascii", errors="replace").strip()
    match = _MODEL_RE.match(text)
    return f"pi{match.group(1)}" if match else None


@dataclass(frozen=True)
class Placement:
    """Where a run's figures come from: the device itself ("measured") or this host ("projected")."""

    profile: DeviceProfile
    on_device: bool
    method: str  # "measured" | "projected"


def place(name: str, model_path: Path | str = DEVICE_TREE_MODEL,
          extra: Mapping[str, DeviceProfile] | None = None) -> Placement:
    """Decide whether a run for device `name` is a measurement on it or a projection from this host.

    Measured: "native"; "desktop" on any host that is not a Raspberry Pi; a Pi profile on that Pi; an
    added profile (`extra`) without a speed factor (it describes this host).
    Everything else is projected, and the speed factors assume the host is an x86-64 desktop core.
    """
    if name == "native":
        return Placement(native_profile(), True, "measured")
    if extra and name in extra:
        profile = extra[name]
        return Placement(profile, True, "measured") if profile.speed_factor is None else \
            Placement(profile, False, "projected")
    profile = get(name)
    here = detect(model_path)
    if name == "desktop" and here is None:
        return Placement(profile, True, "measured")
    if here == name:
        return Placement(profile, True, "measured")
    return Placement(profile, False, "projected")


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_profile() -> DeviceProfile:
    """This host measured as itself (cores, RAM and arch read from the machine, never projected)."""
    import psutil

    from importlib import metadata

    try:
        litert_version = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        litert_version = "not installed"
    freq = psutil.cpu_freq()  # None where the kernel exposes no cpufreq (many VMs)
    clock = round((freq.max or freq.current) / 1000, 2) if freq else 0.0
    machine = platform.machine() or "unknown"
    model = _cpu_model_name()
    cores = _host_cores()
    return DeviceProfile(
        name="native",
        title=f"This machine: {model}, {cores} cores, {machine}",
        cpu=CPU(cores=cores, clock_ghz=float(clock), microarch=model),
        ram_bytes=int(psutil.virtual_memory().total),
        # Same share as the desktop profile: leave a quarter for the OS and other applications.
        app_memory_share=0.75,
        arch=machine,
        os_bits=struct.calcsize("P") * 8,
        runtime="ai-edge-litert",
        runtime_version=litert_version,
        numpy_constraint="",
        speed_factor=None,
        speed_factor_derivation="Measured, not projected: this host measured as itself.",
    )
