"""The emulated device's user-land: a Debian bookworm rootfs (python3 + numpy from the Debian mirror) plus the
device's own runtime wheel, built once per device into the artifact cache (about a minute) and reused.

No root, chroot, binfmt or mounts are needed: debootstrap only downloads, and the .debs are unpacked with
`dpkg-deb -x`. The base user-land of an arch is shared (hard-linked) by every device of that arch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Sequence

from edgemodels.devices import DeviceProfile
from edgemodels.run.qemu import (_ARCHES, MARKER, SITE_DIR, EmulationError, EmulationUnavailable, _arch, _emu,
                                 _lib_dirs, availability, cpu_files)
from edgemodels.store.files import atomic_write_text

SUITE = "bookworm"
"""Debian release of the ARM user-land: Python 3.11.2 + numpy 1.24.2, accepted by both runtimes."""
PYTHON_VERSION = "3.11"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_INCLUDE = ("python3", "python3-numpy")
_RECIPE_VERSION = 1
"""Bump when the build steps change, so old cache directories are not reused."""


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


def _recipe(profile: DeviceProfile) -> dict:
    """Everything that determines the rootfs contents; its hash names the cache directory."""
    return {
        "recipe": _RECIPE_VERSION,
        "suite": SUITE,
        "debian_arch": _emu(profile).debian_arch,
        "include": list(_INCLUDE),
        "python": PYTHON_VERSION,
        "runtime": profile.runtime,
        "runtime_version": profile.runtime_version,
        "wheel_arch": _ARCHES[_emu(profile).debian_arch].wheel_arch,
        "cpu_files": cpu_files(profile),
    }


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def rootfs_dir(profile: DeviceProfile, cache_root: Path) -> Path:
    """Where ensure_rootfs puts this target's rootfs."""
    return Path(cache_root) / "arm" / f"{profile.name}-{profile.runtime}-{profile.runtime_version}-{_digest(_recipe(profile))}"


def _is_complete(path: Path) -> bool:
    """The cache's one completion rule, plus our own marker naming this recipe."""
    from edgemodels.store.entries import entry_marker

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
    """Build `final` (<cache root>/arm/<name>) once, by the cache's one rule (entries.locked_build)."""
    from edgemodels.store.entries import locked_build

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


def _fetch_wheel(profile: DeviceProfile, dest: Path) -> Path:
    """Download the device's runtime wheel with the host's pip (for the guest's Python/arch)."""
    arch = _ARCHES[_emu(profile).debian_arch].wheel_arch
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(36, 16, -1)] + [f"manylinux2014_{arch}", f"linux_{arch}"]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--dest", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    _run([*cmd, f"{profile.runtime}=={profile.runtime_version}"],
         f"pip download of {profile.runtime}=={profile.runtime_version} for {arch}", timeout=1800)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise EmulationError(f"expected one wheel for {profile.runtime} in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def _populate(profile: DeviceProfile, dest: Path, arm_dir: Path) -> dict:
    """The heavy step: Debian user-land (hard-linked from the shared base) + the runtime wheel."""
    base = _base_rootfs(_emu(profile).debian_arch, arm_dir)
    shutil.copytree(base, dest, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)
    (dest / MARKER).unlink(missing_ok=True)  # the base's marker, not ours
    download = dest / ".wheel-download"  # inside dest: a crashed build leaves nothing elsewhere
    wheel = _fetch_wheel(profile, download)
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


def ensure_rootfs(profile: DeviceProfile, cache_root: Path) -> Path:
    """The target's ARM rootfs under <cache_root>/arm/, built once (about a minute) and reused."""
    final = rootfs_dir(profile, cache_root)
    arm_dir = final.parent

    def build(tmp: Path) -> dict:
        info = dict(_populate(profile, tmp, arm_dir))
        for rel, text in cpu_files(profile).items():  # trap a
            path = tmp / rel
            if path.is_symlink() or path.exists():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        lib_dirs = _lib_dirs(tmp, _emu(profile).debian_arch)  # trap c
        if not lib_dirs:
            raise EmulationError(f"{tmp}: no libblas.so.3/liblapack.so.3 under usr/lib/{_arch(profile).triplet}")
        return {**info, "target": profile.name, "runtime": profile.runtime,
                "runtime_version": profile.runtime_version, "lib_dirs": lib_dirs, "suite": SUITE}

    return _locked_build(final, build)


