"""Device profiles: lookup, Pi detection, measured-vs-projected placement, threads and budgets."""

from __future__ import annotations

import dataclasses
import re
import platform
from pathlib import Path

import pytest

from edgemodels import devices
from edgemodels.devices import GiB


def _model_file(tmp_path: Path, text: str) -> Path:
    """A fake /proc/device-tree/model: the firmware writes a NUL-terminated string."""
    path = tmp_path / "model"
    path.write_bytes(text.encode() + b"\x00")
    return path


# --- get / PROFILES --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["desktop", "pi3", "pi4", "pi5"])
def test_get_returns_the_named_profile(name):
    assert devices.get(name).name == name
    assert devices.get(name) is devices.PROFILES[name]


def test_get_unknown_lists_valid_names():
    with pytest.raises(ValueError) as info:
        devices.get("pi7")
    msg = str(info.value)
    assert "'pi7'" in msg
    for name in ("desktop", "pi3", "pi4", "pi5", "native"):
        assert name in msg


def test_profiles_are_immutable():
    with pytest.raises(TypeError):
        devices.PROFILES["pi9"] = devices.PROFILES["pi3"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        devices.PROFILES["pi3"].ram_bytes = 1  # type: ignore[misc]


def test_pi3_is_32bit_with_the_last_armv7_runtime():
    pi3 = devices.get("pi3")
    assert (pi3.arch, pi3.os_bits) == ("armv7l", 32)
    assert (pi3.runtime, pi3.runtime_version, pi3.numpy_constraint) == ("tflite-runtime", "2.14.0", "numpy<2")
    assert pi3.emulation.qemu_cpu == "cortex-a7"
    assert pi3.cpu == devices.CPU(cores=4, clock_ghz=1.2, microarch="Cortex-A53")


@pytest.mark.parametrize("name,qemu", [("pi4", "cortex-a72"), ("pi5", "cortex-a76")])
def test_64bit_pis_use_litert(name, qemu):
    p = devices.get(name)
    assert (p.arch, p.os_bits, p.runtime, p.runtime_version) == ("aarch64", 64, "ai-edge-litert", "2.3.0")
    assert p.numpy_constraint == ""
    assert p.emulation.qemu_cpu == qemu


def test_desktop_is_measured_not_projected():
    desktop = devices.get("desktop")
    assert desktop.arch == "x86_64" and desktop.emulation is None
    assert desktop.speed_factor is None and not desktop.projected


def test_speed_factors_are_ordered_fractions_with_sourced_derivations():
    f = {n: devices.get(n).speed_factor for n in ("pi3", "pi4", "pi5")}
    assert all(0 < v < 1 for v in f.values())
    assert f["pi3"] < f["pi4"] < f["pi5"]
    for name in f:
        text = devices.get(name).speed_factor_derivation
        assert "PROJECTION" in text and "https://" in text and "x86-64 desktop core" in text


def test_target_is_one_inference_per_second():
    assert all(p.target_inferences_per_s == 1.0 for p in devices.PROFILES.values())


# --- budgets and threads ---------------------------------------------------------------------


def test_memory_budgets():
    pi3 = devices.get("pi3")
    assert pi3.ram_bytes == 1 * GiB
    assert pi3.memory_budget_bytes == int(1 * GiB * 0.7)
    assert 650 * 2**20 < pi3.memory_budget_bytes < 750 * 2**20  # "about 700 MB"
    assert devices.get("pi4").ram_bytes == 4 * GiB
    assert devices.get("pi5").ram_bytes == 8 * GiB
    budgets = [devices.get(n).memory_budget_bytes for n in ("pi3", "pi4", "pi5")]
    assert budgets == sorted(budgets)


def test_invalid_share_is_rejected():
    with pytest.raises(ValueError, match="app_memory_share"):
        dataclasses.replace(devices.get("pi3"), app_memory_share=1.5)


@pytest.mark.parametrize("host,expected", [(1, 1), (2, 2), (4, 4), (16, 4)])
def test_threads_capped_by_host_cores(host, expected):
    assert devices.get("pi4").threads(host_cores=host) == expected


def test_threads_default_uses_this_host():
    import os

    host = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert devices.get("pi4").threads() == min(4, host)
    assert devices.get("desktop").threads() == min(8, host)


def test_threads_rejects_zero_host_cores():
    with pytest.raises(ValueError):
        devices.get("pi4").threads(host_cores=0)


# --- detect ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Raspberry Pi 3 Model B Rev 1.2", "pi3"),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "pi3"),
        ("Raspberry Pi 4 Model B Rev 1.4", "pi4"),
        ("Raspberry Pi 5 Model B Rev 1.0", "pi5"),
        ("Raspberry Pi 400 Rev 1.0", None),
        ("Raspberry Pi Compute Module 4 Rev 1.0", None),
        ("Raspberry Pi 2 Model B Rev 1.1", None),
        ("Pine64 RockPro64 v2.1", None),
    ],
)
def test_detect_from_device_tree_model(tmp_path, text, expected):
    assert devices.detect(_model_file(tmp_path, text)) == expected


def test_detect_missing_file_is_none(tmp_path):
    assert devices.detect(tmp_path / "absent") is None


def test_detect_on_this_host_matches_its_arch():
    # A workstation running the tests is not a Pi; on a Pi the model file names it.
    if platform.machine() == "x86_64":
        assert devices.detect() is None


# --- place -----------------------------------------------------------------------------------


def test_place_on_the_named_pi_is_measured(tmp_path):
    pl = devices.place("pi4", model_path=_model_file(tmp_path, "Raspberry Pi 4 Model B Rev 1.4"))
    assert (pl.on_device, pl.method, pl.profile.name) == (True, "measured", "pi4")


def test_place_other_pi_is_projected(tmp_path):
    pl = devices.place("pi3", model_path=_model_file(tmp_path, "Raspberry Pi 4 Model B Rev 1.4"))
    assert (pl.on_device, pl.method, pl.profile.name) == (False, "projected", "pi3")


@pytest.mark.parametrize("name", ["pi3", "pi4", "pi5"])
def test_place_pi_from_workstation_is_projected(tmp_path, name):
    pl = devices.place(name, model_path=tmp_path / "no-device-tree")
    assert (pl.on_device, pl.method) == (False, "projected")


def test_place_desktop_on_a_workstation_is_measured(tmp_path):
    pl = devices.place("desktop", model_path=tmp_path / "no-device-tree")
    assert (pl.on_device, pl.method, pl.profile.name) == (True, "measured", "desktop")


def test_place_desktop_on_a_pi_is_not_measured(tmp_path):
    pl = devices.place("desktop", model_path=_model_file(tmp_path, "Raspberry Pi 5 Model B Rev 1.0"))
    assert (pl.on_device, pl.method) == (False, "projected")


def test_place_native_is_measured(tmp_path):
    pl = devices.place("native", model_path=_model_file(tmp_path, "Raspberry Pi 3 Model B Rev 1.2"))
    assert (pl.on_device, pl.method, pl.profile.name) == (True, "measured", "native")


def test_place_unknown_name_errors():
    with pytest.raises(ValueError, match="valid devices"):
        devices.place("jetson")


# --- native ----------------------------------------------------------------------------------


def test_native_profile_reads_this_host():
    import psutil

    native = devices.native_profile()
    assert native.name == "native"
    assert native.arch == platform.machine()
    assert native.ram_bytes == psutil.virtual_memory().total
    assert native.cpu.cores == devices.get("native").cpu.cores >= 1
    assert native.speed_factor is None and native.emulation is None
    assert native.runtime == "ai-edge-litert"
    assert 0 < native.memory_budget_bytes < native.ram_bytes


def _stated_range(text: str) -> tuple[float, float]:
    lo, hi = re.search(r"Range (\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\.", text).groups()
    return float(lo), float(hi)


def test_speed_factors_are_the_numbers_their_derivations_compute():
    """Why: only the factors' order was checked, so pi3 0.025 -> 0.05 survived. Recompute each chain from the
    published figures quoted in the derivation text, and hold each factor to its stated range."""
    ref_gflops = 32 * 4.0  # reference core: 32 FP32 FLOP/cycle at ~4 GHz
    pi5 = devices.get("pi5")
    assert 16 * pi5.cpu.clock_ghz / ref_gflops == pytest.approx(0.30)  # the stated upper bound
    assert pi5.speed_factor == 0.25 and "we take 0.25 of the reference core" in pi5.speed_factor_derivation
    pi4 = devices.get("pi4")
    assert pi4.speed_factor == round(0.25 / 2.5, 3) == 0.10  # Pi 5 factor / Raspberry Pi's 2-3x (middle: 2.5)
    assert "0.25/2.5 = 0.10" in pi4.speed_factor_derivation
    pi3 = devices.get("pi3")
    chain = pi4.speed_factor / 2 * 0.58 * 1.2 / 1.4  # Allan's 2x; 32-bit OS x0.58 (Linpack); 1.2 vs 1.4 GHz
    assert pi3.speed_factor == round(chain, 3) == 0.025
    assert "1.2/1.4 GHz (Pi 3 B vs 3 B+) = 0.025" in pi3.speed_factor_derivation
    assert 4 * pi3.cpu.clock_ghz / ref_gflops * 0.58 == pytest.approx(0.022, abs=5e-4)  # the stated cross-check
    for p in (pi3, pi4, pi5):
        lo, hi = _stated_range(p.speed_factor_derivation)
        assert lo <= p.speed_factor <= hi, p.name
        stated = re.search(rf"\b{p.name} (\d\.\d+)", devices.__doc__)  # "(pi3 0.025, pi4 0.10, pi5 0.25)"
        assert float(stated.group(1)) == p.speed_factor, p.name
