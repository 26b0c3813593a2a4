"""Tests for edgemodels.run.qemu: the device's own ARM runtime under QEMU user-mode emulation.

Unit tests always run (no QEMU, no network). Tests marked `emulation` build a Debian ARM user-land
once (about a minute; kept in conftest's `arm_cache`) and skip, with the reason, when
qemu-user-static/debootstrap are missing: in CI that is a failure (conftest.missing).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemodels import devices
from edgemodels.run import qemu as emu
from edgemodels.run import rootfs as rfs
from edgemodels.run.qemu import EmulationError

TARGETS = {name: devices.get(name) for name in ("pi3", "pi4", "pi5")}

ROOT = Path(__file__).resolve().parent.parent

# Kernel ABI bits (arch/arm64/include/uapi/asm/hwcap.h), independent of emulation's tables.
A64_FP, A64_ASIMD, A64_ASIMDHP, A64_ASIMDDP, A64_SVE = 1 << 0, 1 << 1, 1 << 10, 1 << 20, 1 << 22
A64_HWCAP2_I8MM = 1 << 13
# arch/arm/include/uapi/asm/hwcap.h
A32_NEON, A32_VFPV4, A32_IDIVA, A32_VFPD32 = 1 << 12, 1 << 16, 1 << 17, 1 << 19


def _cpuinfo_field(text: str, key: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.split(":", 1)[0].strip() == key]


# ------------------------------------------------------------------------------------ targets


def test_emulation_facts_live_in_the_profiles_and_are_pinned():
    from edgemodels.run.runtime import RUNTIMES

    pi3, pi4, pi5 = (TARGETS[d] for d in ("pi3", "pi4", "pi5"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pi4.emulation.qemu_cpu = "max"  # type: ignore[misc]
    assert {t.runtime for t in TARGETS.values()} <= set(RUNTIMES)
    e3, e4, e5 = pi3.emulation, pi4.emulation, pi5.emulation
    assert (e3.debian_arch, e3.qemu_binary, e3.qemu_cpu) == ("armhf", "qemu-arm-static", "cortex-a7")
    assert (pi3.runtime, pi3.runtime_version) == ("tflite-runtime", "2.14.0")
    assert (e4.debian_arch, e4.qemu_cpu, e5.qemu_cpu) == ("arm64", "cortex-a72", "cortex-a76")
    assert e4.method == "emulated ARM (qemu, cortex-a72)"
    assert devices.get("desktop").emulation is None
    for bad in ("max", "host", ""):  # trap b at the source: QEMU's default offers features no Pi has
        with pytest.raises(ValueError, match="pin a real CPU model"):
            dataclasses.replace(e4, qemu_cpu=bad)


# ------------------------------------------------------------------- trap a: the CPU files


@pytest.mark.parametrize("device, part, arch_line, model_name", [
    ("pi3", "0xd03", "7", "ARMv7 Processor rev 4 (v7l)"),  # Cortex-A53, 32-bit kernel
    ("pi4", "0xd08", "8", None),  # Cortex-A72
    ("pi5", "0xd0b", "8", None),  # Cortex-A76
])
def test_cpu_files_describe_the_device(device, part, arch_line, model_name):
    target = TARGETS[device]
    files = emu.cpu_files(target)
    cpuinfo = files["proc/cpuinfo"]
    assert _cpuinfo_field(cpuinfo, "processor") == [str(i) for i in range(target.cpu.cores)]
    assert _cpuinfo_field(cpuinfo, "CPU part") == [part] * target.cpu.cores
    assert _cpuinfo_field(cpuinfo, "CPU implementer") == ["0x41"] * target.cpu.cores
    assert _cpuinfo_field(cpuinfo, "CPU architecture") == [arch_line] * target.cpu.cores
    assert _cpuinfo_field(cpuinfo, "model name") == ([model_name] * target.cpu.cores if model_name else [])
    assert "GenuineIntel" not in cpuinfo and "flags" not in cpuinfo
    features = set(_cpuinfo_field(cpuinfo, "Features")[0].split())
    assert not features & {"sve", "sve2", "i8mm", "bf16", "svei8mm"}  # no Pi has these
    if device == "pi4":
        assert "asimd" in features and not features & {"asimddp", "asimdhp"}
    if device == "pi5":
        assert {"asimddp", "asimdhp"} <= features
    if device == "pi3":
        assert {"neon", "vfpv4"} <= features
    for name in ("possible", "present", "online"):
        assert files[f"sys/devices/system/cpu/{name}"] == "0-3\n"
    for cpu in range(target.cpu.cores):
        assert f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq" in files
        assert files[f"sys/devices/system/cpu/cpu{cpu}/topology/core_id"] == f"{cpu}\n"


# ------------------------------------------------------- trap b: the guest CPU is checked


def _probe(part, hwcap, hwcap2=0, cpu_count=4):
    return {"cpu_part": part, "cpu_count": cpu_count, "hwcap": hwcap, "hwcap2": hwcap2}


def test_check_cpu_accepts_the_pinned_cpus():
    # hwcaps QEMU 7.2 gives for -cpu cortex-a72 / cortex-a76 / cortex-a7 (measured)
    emu.check_cpu(TARGETS["pi4"], _probe("0xd08", 0x8FB))
    emu.check_cpu(TARGETS["pi5"], _probe("0xd0b", 0x119FFB))
    emu.check_cpu(TARGETS["pi3"], _probe("0xd03", 0x1FB8D7))
    assert "asimddp" in emu.hwcap_names(TARGETS["pi5"], 0x119FFB, 0)
    assert "sve" not in emu.hwcap_names(TARGETS["pi4"], 0x8FB, 0)


def test_check_cpu_rejects_qemu_max_and_host_cpuinfo():
    pi4, pi5 = TARGETS["pi4"], TARGETS["pi5"]
    with pytest.raises(EmulationError, match=r"extra \[.*'sve'"):
        emu.check_cpu(pi4, _probe("0xd08", A64_FP | A64_ASIMD | A64_SVE))
    with pytest.raises(EmulationError, match="i8mm"):
        emu.check_cpu(pi5, _probe("0xd0b", 0x119FFB, A64_HWCAP2_I8MM))
    with pytest.raises(EmulationError, match=r"missing \['asimddp'"):  # a Pi 5 has dot product
        emu.check_cpu(pi5, _probe("0xd0b", A64_FP | A64_ASIMD | A64_ASIMDHP | 1 << 9))
    with pytest.raises(EmulationError, match="CPU part"):  # the host's x86 /proc/cpuinfo
        emu.check_cpu(pi4, _probe(None, 0x8FB))
    with pytest.raises(EmulationError, match="cpu_count"):
        emu.check_cpu(pi4, _probe("0xd08", 0x8FB, cpu_count=2))
    with pytest.raises(EmulationError, match="neon"):
        emu.check_cpu(TARGETS["pi3"], _probe("0xd03", A32_VFPV4 | A32_IDIVA | A32_VFPD32))


# ----------------------------------------------------- rootfs build (heavy step mocked)


class FakePopulate:
    """Stands in for debootstrap + pip: a minimal tree with the BLAS/LAPACK layout of Debian."""

    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    def __call__(self, target, dest: Path, arm_dir: Path) -> dict:
        self.calls += 1
        triplet = emu._ARCHES[target.emulation.debian_arch].triplet
        for rel in ("usr/bin/python3", f"usr/lib/{triplet}/blas/libblas.so.3",
                    f"usr/lib/{triplet}/lapack/liblapack.so.3", f"{emu.SITE_DIR}/runtime/__init__.py"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text("")
        if self.fail:
            raise EmulationError("simulated download failure")
        return {"wheel": "fake.whl"}


def test_incomplete_rootfs_is_detected_and_rebuilt(tmp_path, monkeypatch):
    fake = FakePopulate()
    monkeypatch.setattr(rfs, "_populate", fake)
    target = TARGETS["pi4"]
    final = rfs.rootfs_dir(target, tmp_path)
    assert final.parent == tmp_path / "arm" and final.name.startswith("pi4-ai-edge-litert-2.3.0-")
    final.mkdir(parents=True)
    (final / "half-written").write_text("not ours")  # no marker: never deleted (issue 10), an error instead
    from edgemodels.store.entries import CacheError
    with pytest.raises(CacheError, match=rf"{final}: in the way of a cache entry but not one"):
        rfs.ensure_rootfs(target, tmp_path)
    assert (final / "half-written").exists() and fake.calls == 0
    (final / "half-written").unlink()
    final.rmdir()

    assert rfs.ensure_rootfs(target, tmp_path) == final
    assert fake.calls == 1
    marker = json.loads((final / emu.MARKER).read_text())
    assert marker["recipe_hash"] == final.name.rsplit("-", 1)[1]
    assert marker["lib_dirs"] == ["usr/lib/aarch64-linux-gnu/blas", "usr/lib/aarch64-linux-gnu/lapack"]
    assert (final / "proc/cpuinfo").read_text() == emu.cpu_files(target)["proc/cpuinfo"]

    assert rfs.ensure_rootfs(target, tmp_path) == final  # complete: reused
    assert fake.calls == 1

    (final / emu.MARKER).write_text(json.dumps({"recipe_hash": "somethingelse"}))  # foreign marker
    rfs.ensure_rootfs(target, tmp_path)
    assert fake.calls == 2
    assert not [p for p in final.parent.iterdir() if ".tmp" in p.name]


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(rfs, "_populate", FakePopulate(fail=True))
    with pytest.raises(EmulationError, match="simulated"):
        rfs.ensure_rootfs(TARGETS["pi3"], tmp_path)
    leftovers = [p.name for p in (tmp_path / "arm").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


# ------------------------------------------------- trap c: the environment QEMU gets


def test_invocation_pins_cpu_and_points_numpy_at_blas(tmp_path, monkeypatch):
    monkeypatch.setattr(rfs, "_populate", FakePopulate())
    for device in ("pi3", "pi4"):
        target = TARGETS[device]
        rootfs = rfs.ensure_rootfs(target, tmp_path)
        argv, env = emu.qemu_invocation(target, rootfs, ["-c", "pass"])
        assert argv[:3] == [target.emulation.qemu_binary, "-L", str(rootfs.resolve())]
        assert argv[3] == str(rootfs.resolve() / "usr/bin/python3")
        assert env["QEMU_CPU"] == target.emulation.qemu_cpu
        triplet = "arm-linux-gnueabihf" if device == "pi3" else "aarch64-linux-gnu"
        libdirs = env["LD_LIBRARY_PATH"].split(":")
        assert str(rootfs.resolve() / f"usr/lib/{triplet}/blas") in libdirs
        assert str(rootfs.resolve() / f"usr/lib/{triplet}/lapack") in libdirs
        assert env["PYTHONPATH"].split(":") == [str(rootfs.resolve() / emu.SITE_DIR), str(ROOT)]
        assert "VIRTUAL_ENV" not in env and "PYTHONHOME" not in env


def test_invocation_refuses_an_incomplete_rootfs(tmp_path):
    with pytest.raises(EmulationError, match="not a complete ARM rootfs"):
        emu.qemu_invocation(TARGETS["pi4"], tmp_path, [])


# ------------------------------------------------------------- mirror, availability, script


def test_mirror_comes_from_apt_config(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEMODELS_DEBIAN_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64] http://archive.ubuntu.com/ubuntu jammy main\n")
    (apt / "sources.list.d/a.sources").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n")
    (apt / "sources.list.d/b.list.disabled").write_text("deb http://ignored.example/debian bookworm main\n")
    assert rfs.debian_mirror(apt) == "http://mirror.example/debian"
    assert rfs.debian_mirror(tmp_path / "none") == rfs.DEFAULT_MIRROR
    monkeypatch.setenv("EDGEMODELS_DEBIAN_MIRROR", "http://local/debian/")
    assert rfs.debian_mirror(apt) == "http://local/debian"


def test_availability_explains_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, why = emu.availability()
    assert ok is False
    assert "qemu-user-static/debootstrap not installed" in why and "scripts/install-qemu" in why


def _stub(bindir: Path, name: str, body: str = "exit 0") -> None:
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_install_script_is_idempotent_and_explains_root(tmp_path):
    script = ROOT / "scripts" / "install-qemu"
    keyring = tmp_path / "keyring.gpg"
    keyring.write_text("")
    done = tmp_path / "done"
    done.mkdir()
    for tool in ("qemu-arm-static", "qemu-aarch64-static", "debootstrap"):
        _stub(done, tool)
    _stub(done, "apt-get", "echo apt-get must not run >&2; exit 9")
    env = {"PATH": str(done), "DEBIAN_KEYRING": str(keyring)}
    proc = subprocess.run(["/bin/bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout

    missing = tmp_path / "missing"
    missing.mkdir()
    _stub(missing, "apt-get", "echo apt-get must not run >&2; exit 9")
    _stub(missing, "id", "echo 1000")
    proc = subprocess.run(["/bin/bash", str(script)], env={"PATH": str(missing), "DEBIAN_KEYRING": str(keyring)},
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "needs root" in proc.stderr and "sudo" in proc.stderr


# ------------------------------------------------------------------ worker and run_model


def test_worker_reports_a_refusal_as_a_result(tmp_path):
    """Run the worker with the host python: a non-TFLite file is refused, status says why."""
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    request = {"model": str(bad), "runtime": "ai-edge-litert", "num_threads": 1, "feeds": [],
               "feeds_file": str(tmp_path / "feeds.npz"), "outputs_file": str(tmp_path / "out.npz"),
               "status_file": str(tmp_path / "status.json")}
    (tmp_path / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "edgemodels.run.worker", str(tmp_path / "request.json")],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["loads"] is False
    assert "not a TFLite FlatBuffer" in status["error"] and str(bad) in status["error"]
    assert not (tmp_path / "out.npz").exists()


def test_a_crash_is_a_result_not_an_exception(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3")

    def crashing(target, rootfs, args):
        code = "import os, signal, sys; sys.stderr.write('boom\\n'); sys.stderr.flush(); os.kill(os.getpid(), signal.SIGSEGV)"
        return [sys.executable, "-c", code], dict(os.environ)

    monkeypatch.setattr(emu, "qemu_invocation", crashing)
    run = emu.QemuTarget(TARGETS["pi4"], tmp_path).run(model, feeds=[{"input_ids": np.ones((1, 4), np.int32)}])
    assert run.loads is False and run.outputs is None
    assert run.error.startswith("worker crashed (signal 11)") and "boom" in run.error


def test_a_run_rejects_bad_arguments(tmp_path):
    from edgemodels.run.targets import TargetError

    target = emu.QemuTarget(TARGETS["pi4"], tmp_path)
    with pytest.raises(TargetError, match="missing.tflite"):
        target.run(tmp_path / "missing.tflite", feeds=[{"x": np.ones(1)}])
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3")
    with pytest.raises(ValueError, match=r"feeds\[1\] must be a non-empty dict"):
        target.run(model, feeds=[{"x": np.ones(1)}, {}])


# ============================================================ integration: real QEMU


# `rootfs` (device -> its built user-land) and `arm_cache` are tests/conftest.py's: shared with test_remote.


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A BERT-shaped toy classifier (embedding, rank-3 Dense, masked mean pool), fp32 and DRQ."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)

    class Toy(tf.Module):
        def __init__(self):
            super().__init__()
            self.emb = tf.Variable(rng.normal(size=(100, 32)).astype(np.float32))
            self.w1 = tf.Variable((rng.normal(size=(32, 64)) * 0.2).astype(np.float32))
            self.b1 = tf.Variable(rng.normal(size=(64,)).astype(np.float32) * 0.1)
            self.w2 = tf.Variable((rng.normal(size=(64, 3)) * 0.2).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32, name="input_ids"),
                                      tf.TensorSpec([1, None], tf.int32, name="attention_mask")])
        def __call__(self, input_ids, attention_mask):
            x = tf.gather(self.emb, input_ids)  # [1, L, 32]
            h = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)  # rank-3 Dense, as in BERT
            m = tf.cast(attention_mask, tf.float32)[..., None]
            pooled = tf.reduce_sum(h * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
            return {"logits": tf.matmul(pooled, self.w2)}

    toy = Toy()
    fn = toy.__call__.get_concrete_function()
    out = tmp_path_factory.mktemp("tiny-models")
    paths = {}
    for name, quantize in (("fp32", False), ("drq", True)):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], toy)
        if quantize:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(conv.convert())
    return paths


FEEDS = [  # different sequence lengths: the dynamic model resizes per feed
    {"input_ids": np.array([[1, 5, 7, 9]], np.int32), "attention_mask": np.ones((1, 4), np.int32)},
    {"input_ids": np.array([[3, 2, 8, 9, 11, 12, 13]], np.int32),
     "attention_mask": np.array([[1, 1, 1, 1, 1, 0, 0]], np.int32)},
    {"input_ids": np.arange(20, 36, dtype=np.int32)[None], "attention_mask": np.ones((1, 16), np.int32)},
]


def _x86_reference(path: Path) -> np.ndarray:
    pytest.importorskip("ai_edge_litert")
    from edgemodels.run import runtime

    model = runtime.load(path, runtime="ai-edge-litert", num_threads=1)
    return np.stack([model.run(f)[0] for f in FEEDS])


@pytest.mark.emulation
@pytest.mark.parametrize("device", ["pi4", "pi5"])
def test_litert_on_arm64_matches_x86(device, rootfs, tiny_models):
    target = TARGETS[device]
    fp32 = emu.QemuTarget(target, rootfs(device)).run(tiny_models["fp32"], threads=1, feeds=FEEDS)
    assert fp32.loads and fp32.error is None, fp32.error
    assert (fp32.identity.arch, fp32.identity.runtime_version) == ("aarch64", "2.3.0")
    assert fp32.identity.cpu_part == target.emulation.cpu.part and fp32.identity.cores == 4  # trap a
    # trap b (no SVE/i8mm) and XNNPACK's delegate are checked by every QemuTarget run: it raises otherwise
    assert fp32.outputs.shape == (len(FEEDS), 3)
    np.testing.assert_allclose(fp32.outputs, _x86_reference(tiny_models["fp32"]), atol=1e-4, rtol=0)

    drq = emu.QemuTarget(target, rootfs(device)).run(tiny_models["drq"], threads=1, feeds=FEEDS)
    assert drq.loads and drq.error is None, drq.error
    assert drq.outputs.shape == (len(FEEDS), 3) and np.isfinite(drq.outputs).all()

    load_only = emu.QemuTarget(target, rootfs(device)).run(tiny_models["drq"], threads=1, feeds=[])
    assert load_only.loads and load_only.error is None and load_only.outputs is None


@pytest.mark.emulation
def test_pi3_tflite_runtime_214_loads_fp32_and_refuses_new_drq(rootfs, tiny_models):
    target = TARGETS["pi3"]
    fp32 = emu.QemuTarget(target, rootfs("pi3")).run(tiny_models["fp32"], threads=1, feeds=FEEDS)
    assert fp32.loads and fp32.error is None, fp32.error
    assert (fp32.identity.arch, fp32.identity.runtime_version) == ("armv7l", "2.14.0")
    assert fp32.identity.cpu_part == "0xd03" and fp32.identity.cores == 4
    np.testing.assert_allclose(fp32.outputs, _x86_reference(tiny_models["fp32"]), atol=1e-4, rtol=0)

    # TF 2.21 writes a rank-3 dynamic-range FULLY_CONNECTED as op version 12; 2.14 stops at 11.
    drq = emu.QemuTarget(target, rootfs("pi3")).run(tiny_models["drq"], threads=1, feeds=FEEDS)
    assert drq.loads is False and drq.outputs is None
    assert "FULLY_CONNECTED" in drq.error and "tflite-runtime 2.14.0" in drq.error
    assert drq.identity.runtime_version == "2.14.0"
    load_only = emu.QemuTarget(target, rootfs("pi3")).run(tiny_models["drq"], threads=1, feeds=[])  # no feeds: same verdict
    assert load_only.loads is False and "FULLY_CONNECTED" in load_only.error


@pytest.mark.emulation
@pytest.mark.parametrize("device", ["pi3", "pi4"])
def test_guest_sees_device_cpu_and_numpy_blas_works(device, rootfs):
    """Traps a and c from inside the emulated python: our cpuinfo is read, numpy's BLAS loads."""
    target = TARGETS[device]
    code = ("import os, platform, numpy as np; a = np.ones((64, 64)); "
            "print(repr(open('/proc/cpuinfo').read())); print(os.cpu_count()); "
            "print(platform.machine()); print(float((a @ a)[0, 0]))")
    argv, env = emu.qemu_invocation(target, rootfs(device), ["-c", code])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cpuinfo, count, machine, dot = proc.stdout.strip().splitlines()
    assert eval(cpuinfo) == emu.cpu_files(target)["proc/cpuinfo"]  # noqa: S307 - repr of a str
    assert int(count) == target.cpu.cores
    assert machine == ("armv7l" if device == "pi3" else "aarch64")
    assert float(dot) == 64.0


@pytest.mark.emulation
def test_unpinned_qemu_cpu_is_caught(rootfs, tiny_models):
    """Trap b: QEMU's default "max" CPU offers SVE; the run must not pass as a Pi 4."""
    pi4 = TARGETS["pi4"]
    unpinned = dataclasses.replace(pi4, emulation=dataclasses.replace(pi4.emulation, qemu_cpu="a64fx"))  # has SVE
    with pytest.raises(EmulationError, match="sve"):
        emu.QemuTarget(unpinned, rootfs("pi4")).run(tiny_models["fp32"], threads=1, feeds=FEEDS[:1])
