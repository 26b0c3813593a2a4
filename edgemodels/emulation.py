"""Run a Raspberry Pi's own ARM TFLite runtime on a workstation under QEMU user-mode emulation.

Why: an x86 runtime is not what the device runs. tflite-runtime 2.14.0 (the last wheel, the one a
32-bit Pi 3 can install) refuses models that a newer converter writes, and ARM kernels compute
quantized models differently from x86 ones. So accuracy/compatibility checks run the device's
actual ARM build: a Debian bookworm user-land (python3 + numpy from the Debian mirror) plus the
device's runtime wheel, executed by `qemu-<arch>-static -L <rootfs>`. No root, chroot, binfmt or
mounts are needed (debootstrap only downloads; the .debs are unpacked with `dpkg-deb -x`).

Three traps are handled here, each checked again at run time from inside the emulated python:
  (a) QEMU shows the host's x86 /proc/cpuinfo, and ARM runtimes (cpuinfo/XNNPACK) then crash or
      run without XNNPACK: the rootfs gets the device's ARM `proc/cpuinfo` and
      `sys/devices/system/cpu/...` (QEMU's -L redirects those paths into the rootfs).
  (b) QEMU's default CPU "max" advertises SVE/i8mm/bf16 that no Pi has, so XNNPACK picks kernels
      the device never runs: QEMU_CPU is pinned per device, and the hwcaps the guest sees are
      compared with the device's.
  (c) Debian resolves libblas/liblapack through absolute /etc/alternatives links that are never
      created here (no dpkg postinst), so numpy fails to import: LD_LIBRARY_PATH names the
      rootfs's blas/lapack directories.
Timings measured under emulation say nothing about the device: `ArmRun.wall_s` is for budgeting.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from edgemodels.cache import atomic_write_text

SUITE = "bookworm"
"""Debian release of the ARM user-land: Python 3.11.2 + numpy 1.24.2, accepted by both runtimes."""
PYTHON_VERSION = "3.11"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MARKER = "complete.json"
SITE_DIR = "opt/edge-site"
"""Where the runtime wheel is unpacked inside the rootfs."""
_INCLUDE = ("python3", "python3-numpy")
_RECIPE_VERSION = 1
"""Bump when the build steps change, so old cache directories are not reused."""


class EmulationError(RuntimeError):
    """The emulator or the emulated user-land misbehaved (not a property of the model)."""


class EmulationUnavailable(EmulationError):
    """qemu-user-static / debootstrap are not installed here."""


# --------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class CpuIdentity:
    """What the device's kernel reports about its CPU; written into the rootfs (trap a)."""

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
    model: str


@dataclass(frozen=True)
class ArmTarget:
    """One device as emulated: its Debian arch, the pinned QEMU CPU, and the runtime it installs."""

    device: str  # "pi3" | "pi4" | "pi5"
    debian_arch: str  # "armhf" | "arm64"
    qemu_binary: str  # "qemu-arm-static" | "qemu-aarch64-static"
    qemu_cpu: str  # trap b: never QEMU's default "max"
    cores: int
    runtime: str  # a name from edgemodels.runtime.RUNTIMES
    runtime_version: str

    @property
    def method(self) -> str:
        """How figures from this target were obtained, for reports."""
        return f"emulated ARM (qemu, {self.qemu_cpu})"

    @property
    def wheel_arch(self) -> str:
        return _ARCHES[self.debian_arch].wheel_arch


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

_PI_A53_32 = ("half", "thumb", "fastmult", "vfp", "edsp", "neon", "vfpv3", "tls", "vfpv4", "idiva",
              "idivt", "vfpd32", "lpae", "evtstrm", "crc32")

_IDENTITY: Mapping[str, CpuIdentity] = MappingProxyType({
    # Pi 3 Model B (BCM2837, Cortex-A53) under 32-bit Raspberry Pi OS: the kernel reports ARMv7.
    # QEMU 7.2 has no 32-bit Cortex-A53, so the ISA is emulated as a Cortex-A7: the same
    # ARMv7 NEON-VFPv4 instruction set that the Pi 3's 32-bit kernel exposes (minus crc32).
    "pi3": CpuIdentity("0xd03", "0x0", 4, 7, "ARMv7 Processor rev 4 (v7l)", _PI_A53_32,
                       1_200_000, 600_000, "BCM2835", "a02082", "Raspberry Pi 3 Model B Rev 1.2"),
    "pi4": CpuIdentity("0xd08", "0x0", 3, 8, None, ("fp", "asimd", "evtstrm", "crc32", "cpuid"),
                       1_500_000, 600_000, "BCM2835", "c03111", "Raspberry Pi 4 Model B Rev 1.1"),
    "pi5": CpuIdentity("0xd0b", "0x4", 1, 8, None,
                       ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32",
                        "atomics", "fphp", "asimdhp", "cpuid", "asimdrdm", "lrcpc", "dcpop",
                        "asimddp"),
                       2_400_000, 1_500_000, "BCM2712", "d04170", "Raspberry Pi 5 Model B Rev 1.0"),
})

TARGETS: Mapping[str, ArmTarget] = MappingProxyType({
    "pi3": ArmTarget("pi3", "armhf", "qemu-arm-static", "cortex-a7", 4, "tflite-runtime", "2.14.0"),
    "pi4": ArmTarget("pi4", "arm64", "qemu-aarch64-static", "cortex-a72", 4, "ai-edge-litert", "2.3.0"),
    "pi5": ArmTarget("pi5", "arm64", "qemu-aarch64-static", "cortex-a76", 4, "ai-edge-litert", "2.3.0"),
})


def _identity(target: ArmTarget) -> CpuIdentity:
    try:
        return _IDENTITY[target.device]
    except KeyError:
        raise ValueError(f"no CPU identity for device {target.device!r}; known: {', '.join(_IDENTITY)}") from None


def _arch(target: ArmTarget) -> _Arch:
    try:
        return _ARCHES[target.debian_arch]
    except KeyError:
        raise ValueError(f"unsupported debian_arch {target.debian_arch!r}; known: {', '.join(_ARCHES)}") from None


def cpu_files(target: ArmTarget) -> dict[str, str]:
    """The ARM CPU description the device's kernel would show, as {rootfs-relative path: text}.

    QEMU's -L makes the guest read these instead of the host's x86 files (trap a).
    """
    ident, n = _identity(target), target.cores
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


def hwcap_names(target: ArmTarget, hwcap: int, hwcap2: int) -> tuple[str, ...]:
    """Decode AT_HWCAP/AT_HWCAP2 (what the emulated CPU really offers) into Features names."""
    arch = _arch(target)
    names = [n for bit, n in enumerate(arch.hwcap_names) if hwcap >> bit & 1]
    names += [n for bit, n in enumerate(arch.hwcap2_names) if hwcap2 >> bit & 1]
    return tuple(names)


def check_cpu(target: ArmTarget, probe: Mapping) -> None:
    """Raise EmulationError unless the guest saw the device's CPU (traps a and b took effect)."""
    ident, arch = _identity(target), _arch(target)
    problems = []
    if probe.get("cpu_part") != ident.part:
        problems.append(f"/proc/cpuinfo CPU part is {probe.get('cpu_part')!r}, expected {ident.part!r} "
                        "(the -L rootfs proc/cpuinfo is not being read)")
    if probe.get("cpu_count") != target.cores:
        problems.append(f"os.cpu_count() is {probe.get('cpu_count')}, expected {target.cores} "
                        "(sys/devices/system/cpu/online is not being read)")
    seen = set(hwcap_names(target, int(probe.get("hwcap", 0)), int(probe.get("hwcap2", 0))))
    extra = (seen - set(ident.features)) & arch.kernel_selecting
    missing = (set(ident.features) - seen) & arch.kernel_selecting
    if extra or missing:
        problems.append(f"emulated CPU features differ from a {target.device}: extra {sorted(extra)}, "
                        f"missing {sorted(missing)} (QEMU_CPU={target.qemu_cpu} not applied?)")
    if problems:
        raise EmulationError(f"{target.device}: emulated CPU does not match the device: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Availability and invocation


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
    return Path(__file__).resolve().parent.parent


def _read_marker(rootfs: Path) -> dict:
    try:
        return json.loads((rootfs / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise EmulationError(f"{rootfs}: not a complete ARM rootfs ({MARKER} unreadable: {exc}); "
                             "build it with edgemodels.emulation.ensure_rootfs") from exc


def _lib_dirs(rootfs: Path, debian_arch: str) -> list[str]:
    """The rootfs's BLAS/LAPACK directories, normally reached via /etc/alternatives (trap c)."""
    libdir = rootfs / "usr" / "lib" / _ARCHES[debian_arch].triplet
    dirs = sorted({p.parent.relative_to(rootfs).as_posix()
                   for pat in ("*/libblas.so.3", "*/liblapack.so.3") for p in libdir.glob(pat)})
    return dirs


def qemu_invocation(target: ArmTarget, rootfs: Path, python_args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
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
        "QEMU_CPU": target.qemu_cpu,  # trap b: never "max"
        "LD_LIBRARY_PATH": ":".join(lib_dirs),  # trap c
        "PYTHONPATH": ":".join([str(rootfs / SITE_DIR), str(project_root())]),
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [target.qemu_binary, "-L", str(rootfs), str(rootfs / "usr/bin/python3"), *python_args]
    return argv, env


# --------------------------------------------------------------------------------------------
# Rootfs build


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt is configured with (EDGEMODELS_DEBIAN_MIRROR overrides).

    Only a URI ending in /debian counts: an Ubuntu archive does not carry bookworm.
    """
    override = os.environ.get("EDGEMODELS_DEBIAN_MIRROR", "").strip()
    if override:
        return override.rstrip("/")
    for uri in _apt_uris(Path(etc_apt)):
        if re.match(r"^https?://", uri) and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _apt_uris(etc_apt: Path) -> list[str]:
    """Binary-package URIs from sources.list (one-line) and *.sources (deb822), in apt's order."""
    uris: list[str] = []
    files = [etc_apt / "sources.list"] + sorted((etc_apt / "sources.list.d").glob("*.list"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if words:
                uris.append(words[0])
    for f in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        try:
            text = f.read_text()
        except OSError:
            continue
        for para in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                uris.extend(fields.get("uris", "").split())
    return uris


def _recipe(target: ArmTarget) -> dict:
    """Everything that determines the rootfs contents; its hash names the cache directory."""
    return {
        "recipe": _RECIPE_VERSION,
        "suite": SUITE,
        "debian_arch": target.debian_arch,
        "include": list(_INCLUDE),
        "python": PYTHON_VERSION,
        "runtime": target.runtime,
        "runtime_version": target.runtime_version,
        "wheel_arch": target.wheel_arch,
        "cpu_files": cpu_files(target),
    }


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def rootfs_dir(target: ArmTarget, cache_root: Path) -> Path:
    """Where ensure_rootfs puts this target's rootfs."""
    return Path(cache_root) / "arm" / f"{target.device}-{target.runtime}-{target.runtime_version}-{_digest(_recipe(target))}"


def _is_complete(path: Path) -> bool:
    """The cache's one completion rule, plus our own marker naming this recipe."""
    from edgemodels.cache import entry_marker

    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (entry_marker(path) is not None and isinstance(marker, dict)
            and marker.get("recipe_hash") == path.name.rsplit("-", 1)[-1])


def _remove_stale(parent: Path, name: str) -> None:
    """Temp dirs left by builds of earlier versions, which named them .<name>.tmp* (we hold the lock)."""
    for stale in parent.glob(f".{name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)


def _locked_build(final: Path, build) -> Path:
    """Build `final` (<cache root>/arm/<name>) once, by the cache's one rule (cache.locked_build)."""
    from edgemodels.cache import locked_build

    def build_with_marker(tmp: Path) -> None:
        _remove_stale(final.parent, final.name)
        started = time.monotonic()
        info = build(tmp)
        marker = {**info, "recipe_hash": final.name.rsplit("-", 1)[-1],
                  "build_s": round(time.monotonic() - started, 1),
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(tmp / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")

    locked_build(final.parent.parent, final.parent.name, final.name, build_with_marker, complete=_is_complete)
    return final


def _run(cmd: Sequence[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise EmulationError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def _debootstrap(debian_arch: str, dest: Path) -> dict:
    """Download bookworm python3 + numpy for debian_arch and unpack them into dest (no root)."""
    ok, why = availability()
    if not ok:
        raise EmulationUnavailable(why)
    mirror = debian_mirror()
    cmd = ["debootstrap", "--download-only", "--variant=minbase", f"--arch={debian_arch}",
           f"--include={','.join(_INCLUDE)}"]
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    if keyring.is_file():
        cmd.append(f"--keyring={keyring}")
    _run([*cmd, SUITE, str(dest), mirror], f"debootstrap {SUITE} {debian_arch} from {mirror}", timeout=1800)
    archives = dest / "var/cache/apt/archives"
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise EmulationError(f"debootstrap downloaded no packages into {archives}")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"unpacking {deb.name}", timeout=600)
        deb.unlink()
    shutil.rmtree(dest / "debootstrap", ignore_errors=True)
    if not (dest / "usr/bin/python3").exists():
        raise EmulationError(f"{dest}: usr/bin/python3 missing after unpacking {len(debs)} packages")
    return {"mirror": mirror, "packages": len(debs)}


def _base_rootfs(debian_arch: str, arm_dir: Path) -> Path:
    """The Debian user-land for one arch, shared (hard-linked) by every target of that arch."""
    key = _digest({"recipe": _RECIPE_VERSION, "suite": SUITE, "arch": debian_arch, "include": _INCLUDE})
    final = arm_dir / f"base-{SUITE}-{debian_arch}-{key}"
    return _locked_build(final, lambda tmp: _debootstrap(debian_arch, tmp))


def _fetch_wheel(target: ArmTarget, dest: Path) -> Path:
    """Download the device's runtime wheel with the host's pip (for the guest's Python/arch)."""
    arch = target.wheel_arch
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(36, 16, -1)] + [f"manylinux2014_{arch}", f"linux_{arch}"]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--dest", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    _run([*cmd, f"{target.runtime}=={target.runtime_version}"],
         f"pip download of {target.runtime}=={target.runtime_version} for {arch}", timeout=1800)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise EmulationError(f"expected one wheel for {target.runtime} in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def _populate(target: ArmTarget, dest: Path, arm_dir: Path) -> dict:
    """The heavy step: Debian user-land (hard-linked from the shared base) + the runtime wheel."""
    base = _base_rootfs(target.debian_arch, arm_dir)
    shutil.copytree(base, dest, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)
    (dest / MARKER).unlink(missing_ok=True)  # the base's marker, not ours
    download = dest / ".wheel-download"  # inside dest: a crashed build leaves nothing elsewhere
    wheel = _fetch_wheel(target, download)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest / SITE_DIR)
    shutil.rmtree(download)
    return {"wheel": wheel.name, "base": base.name}


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (the base is never modified in place), or copy where links are not allowed."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def ensure_rootfs(target: ArmTarget, cache_root: Path) -> Path:
    """The target's ARM rootfs under <cache_root>/arm/, built once (about a minute) and reused."""
    final = rootfs_dir(target, cache_root)
    arm_dir = final.parent

    def build(tmp: Path) -> dict:
        info = dict(_populate(target, tmp, arm_dir))
        for rel, text in cpu_files(target).items():  # trap a
            path = tmp / rel
            if path.is_symlink() or path.exists():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        lib_dirs = _lib_dirs(tmp, target.debian_arch)  # trap c
        if not lib_dirs:
            raise EmulationError(f"{tmp}: no libblas.so.3/liblapack.so.3 under usr/lib/{_arch(target).triplet}")
        return {**info, "target": target.device, "runtime": target.runtime,
                "runtime_version": target.runtime_version, "lib_dirs": lib_dirs, "suite": SUITE}

    return _locked_build(final, build)


# --------------------------------------------------------------------------------------------
# Running a model


@dataclass(frozen=True)
class ArmRun:
    target: ArmTarget
    loads: bool
    error: str | None
    """The runtime's own message when it refuses the model (or the crash / run failure)."""
    outputs: np.ndarray | None
    """Stacked logits [n_feeds, n_labels]."""
    runtime_version: str
    arch: str
    """platform.machine() inside the emulated python."""
    wall_s: float
    """Emulation wall time: NEVER a device time; only for budgeting."""
    cpu_part: str = ""
    cpu_count: int = 0
    cpu_features: tuple[str, ...] = field(default=())
    """Features the emulated CPU actually offers (decoded AT_HWCAP/AT_HWCAP2)."""
    xnnpack: bool | None = None
    """Whether the runtime announced its XNNPACK delegate (None: could not tell)."""


_ANNOUNCES_XNNPACK = frozenset({"ai-edge-litert"})
"""Runtimes known to log "Created TensorFlow Lite XNNPACK delegate" (tflite-runtime 2.14 does not)."""


def _check_feeds(feeds: list[dict[str, np.ndarray]]) -> None:
    for i, feed in enumerate(feeds):
        if not isinstance(feed, Mapping) or not feed:
            raise ValueError(f"run_model: feeds[{i}] must be a non-empty dict of input name -> array")


def run_model(target: ArmTarget, rootfs: Path, tflite_path: Path, feeds: list[dict[str, np.ndarray]], *,
              num_threads: int = 2, timeout_s: float = 900) -> ArmRun:
    """Run the model on each feed with the device's ARM runtime under QEMU.

    A runtime refusing the model is a result (loads False, error = its message), not an exception.
    No feeds: only check that it loads (outputs None), for models too slow to run emulated.
    """
    tflite_path = Path(tflite_path).resolve()
    if not tflite_path.is_file():
        raise FileNotFoundError(f"{tflite_path}: no such model file")
    _check_feeds(feeds)
    with tempfile.TemporaryDirectory(prefix="edgemodels-arm-") as td:
        work = Path(td)
        arrays, manifest = {}, []
        for i, feed in enumerate(feeds):
            keys = {}
            for j, (name, value) in enumerate(sorted(feed.items())):
                arrays[f"f{i}_{j}"] = np.asarray(value)
                keys[name] = f"f{i}_{j}"
            manifest.append(keys)
        np.savez(work / "feeds.npz", **arrays)
        request = {"model": str(tflite_path), "runtime": target.runtime, "num_threads": num_threads,
                   "feeds": manifest, "feeds_file": str(work / "feeds.npz"),
                   "outputs_file": str(work / "outputs.npz"), "status_file": str(work / "status.json")}
        (work / "request.json").write_text(json.dumps(request))
        argv, env = qemu_invocation(target, Path(rootfs), ["-m", "edgemodels.arm_worker", str(work / "request.json")])
        return _execute(target, argv, env, work, timeout_s)


def _execute(target: ArmTarget, argv: list[str], env: dict[str, str], work: Path, timeout_s: float) -> ArmRun:
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise EmulationError(f"{target.device}: emulated run exceeded {timeout_s:.0f} s; raise timeout_s "
                             "or pass fewer feeds") from None
    wall = time.monotonic() - started
    tail = (out + err)[-2000:].strip()
    status_file = work / "status.json"
    if proc.returncode < 0:  # the runtime (or QEMU under it) died: a result about this model
        return ArmRun(target, False, f"qemu/python crashed (signal {-proc.returncode}): {tail}", None, "", "", wall)
    if proc.returncode != 0 and not status_file.exists():
        raise EmulationError(f"{target.device}: the emulated python failed before running the model "
                             f"(exit {proc.returncode}):\n{tail}")
    try:
        status = json.loads(status_file.read_text())
    except (OSError, ValueError) as exc:
        raise EmulationError(f"{target.device}: worker wrote no readable status ({exc}); output:\n{tail}") from exc
    if status.get("fatal"):
        raise EmulationError(f"{target.device}: {status['fatal']}")
    check_cpu(target, status)
    outputs = None
    if status.get("loads") and not status.get("error") and status.get("n_outputs"):
        with np.load(work / "outputs.npz") as z:
            outputs = np.array(z["outputs"])
    xnn = None
    if status.get("loads"):
        if "XNNPACK delegate" in err:
            xnn = True
        elif target.runtime in _ANNOUNCES_XNNPACK:
            xnn = False  # trap a: a runtime that silently fell back to its reference kernels
    return ArmRun(
        target=target, loads=bool(status.get("loads")), error=status.get("error"), outputs=outputs,
        runtime_version=str(status.get("runtime_version", "")), arch=str(status.get("arch", "")),
        wall_s=wall, cpu_part=str(status.get("cpu_part", "")), cpu_count=int(status.get("cpu_count") or 0),
        cpu_features=hwcap_names(target, int(status.get("hwcap", 0)), int(status.get("hwcap2", 0))),
        xnnpack=xnn,
    )
