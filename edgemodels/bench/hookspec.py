"""Hooks a user's conftest.py implements to extend the bench suite without forking edgemodels.

The plugin registers these specs (`pytest_addhooks`) and calls them once per bench run, at configure time;
every implementation's answer is merged (a name given twice is a usage error naming both). Example::

    # conftest.py
    from edgemodels.devices import CPU, DeviceProfile

    def pytest_edgemodels_add_devices():
        return [DeviceProfile(name="jetson", title="Jetson Nano 4 GB", cpu=CPU(4, 1.43, "Cortex-A57"),
                              ram_bytes=4 << 30, app_memory_share=0.5, arch="aarch64", os_bits=64,
                              runtime="ai-edge-litert", runtime_version="2.3.0", numpy_constraint="",
                              speed_factor=0.08, speed_factor_derivation="my measurement ...")]

    def pytest_edgemodels_add_model_sources():
        return {"my-classifier": "dir:/models/my-classifier"}

    def pytest_edgemodels_add_expected_outcomes():
        from edgemodels.study.expected import Expected

        return [Expected("loss", "measured -6.1 points on mine.csv (2026-12-02): int8 of my-classifier",
                         tests=("test_drop_vs_fp32",), data="csv", model="my-classifier", mode="int8")]

then ``pytest bench/ --device=jetson --models my-classifier --data csv:mine.csv``: the matching test is a strict
xfail quoting the reason, and turns into a failure (XPASS strict) once the loss stops, so the record gets removed.
"""

from __future__ import annotations

import pytest

hookspec = pytest.hookspec
# The names start with pytest_ because pytest only collects undecorated conftest.py functions with that prefix
# (as pytest-benchmark's pytest_benchmark_* hooks do); a user's conftest needs no decorator.


@hookspec
def pytest_edgemodels_add_devices():
    """Return device profiles (`edgemodels.devices.DeviceProfile`) to add to --device's choices.

    A profile with a speed_factor is projected from this host's timing; one without (None) describes the
    machine the suite runs on and is measured here. Names must not clash with the built-in profiles."""


@hookspec
def pytest_edgemodels_add_model_sources():
    """Return a mapping name -> model spec ('dir:PATH', 'hf:ORG/NAME', 'tflite:PATH', or a
    `edgemodels.build.sources.ModelSource`) that --models may then name, e.g. {"mine": "dir:/models/mine"}."""


@hookspec
def pytest_edgemodels_add_expected_outcomes():
    """Return `edgemodels.study.expected.Expected` records, merged with the built-in ones (edgemodels/study/expected.py).

    Records of kind "loss", "claim-miss" or "strict-miss" name their test function(s) in `tests` and become strict
    xfail markers on the bench tests they match at collection (only a failing assertion is the expected outcome);
    "refusal", "memory" and "conversion" records apply at run time wherever the case is met. A hook's record wins
    over a built-in one that matches as specifically. A value that is not an Expected is a usage error."""
