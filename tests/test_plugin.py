"""The bench plugin end to end on the smoke scale (tiny-bert trained from scratch, seconds per build).

Runs `pytest bench/` in a subprocess, as a user would, with a private cache, report dir and baselines.
"""

import json
import os
import subprocess
import xml.etree.ElementTree as ET
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    """One artifact cache for every smoke-scale run of the session (tests/test_expected.py imports this fixture):
    tiny-bert is built once."""
    path = tmp_path_factory.getbasetemp() / "smoke-cache"
    path.mkdir(exist_ok=True)
    return path


def _bench(tmp_path: Path, *args: str, cache: Path | None = None, modes: str = "fp32",
           benchmark: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "-q", "-p", "no:cacheprovider",
           "--device=desktop", "--scale=smoke", f"--modes={modes}",
           f"--edge-cache={cache or tmp_path / 'cache'}", f"--report-dir={tmp_path / 'report'}",
           f"--baseline-dir={tmp_path / 'baselines'}", *([] if benchmark else ["--benchmark-disable"]), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=None if env is None else {**os.environ, **env})


def _collect(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--collect-only", "-q",
                           "-p", "no:cacheprovider", "--device=desktop", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_unknown_device_fails_at_startup_listing_valid_ones():
    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--device=pi9", "--collect-only"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "pi9" in out.stderr and "pi3" in out.stderr and "desktop" in out.stderr


def test_unknown_data_spec_fails_at_startup():
    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--data=hub:foo", "--collect-only"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "builtin" in out.stderr and "replab:DIR" in out.stderr


def test_baseline_compare_without_a_baseline_fails_before_running(tmp_path):
    """Why: a missing baseline was a note, so --baseline-compare gated on nothing and exited 0."""
    out = _collect("--scale=smoke", "--baseline-compare", f"--baseline-dir={tmp_path}")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:] + out.stderr[-2000:]
    assert str(tmp_path / "builtin" / "smoke" / "desktop.json") in out.stderr and "--baseline-save" in out.stderr


def test_default_baseline_dir_is_the_rootdirs_not_the_working_directorys(tmp_path):
    """Why: bench/baselines was relative to the working directory, so a run from elsewhere compared nothing."""
    found = _collect("--scale=ci", "--baseline-compare", cwd=tmp_path)
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]  # bench/baselines/builtin/ci
    missing = _collect("--scale=smoke", "--baseline-compare", cwd=tmp_path)  # no smoke baseline is committed
    assert missing.returncode == pytest.ExitCode.USAGE_ERROR
    assert str(REPO / "bench" / "baselines" / "builtin" / "smoke" / "desktop.json") in missing.stderr


def test_baseline_gate_refuses_xdist_and_misspelt_metrics():
    """Why: under pytest-xdist the controller holds no report rows, so the gate was silently off."""
    out = _collect("--scale=ci", "--baseline-compare", "-n", "2")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR and "xdist" in out.stderr, out.stderr[-2000:]
    out = _collect("--scale=ci", "--baseline-compare", "--baseline-metrics=acuracy")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR and "acuracy" in out.stderr, out.stderr[-2000:]


_STRICTER = '''"""Stricter bars for the fail-path run: real measurements, held to targets no model can meet."""
import dataclasses
from types import MappingProxyType

from edgemodels.study import criteria
from edgemodels import devices
from edgemodels.study import matrix as suite
from edgemodels.study.expected import Expected

_desktop = devices._PROFILES["desktop"]
devices._PROFILES["desktop"] = dataclasses.replace(  # 1e9 inferences/s in 12 MiB (tiny-bert: ~41 MiB)
    _desktop, target_inferences_per_s=1e9, ram_bytes=16 << 20)
criteria.MODE_DROP_TOLERANCE_PTS = MappingProxyType(  # drq must beat fp32 by 100 points
    {**criteria.MODE_DROP_TOLERANCE_PTS, "drq": -100.0})


def pytest_edgemodels_add_expected_outcomes():  # this runtime is said to refuse drq; it loads it
    return [Expected("refusal", "said to refuse (test)", mode="drq", runtime="ai-edge-litert",
                     runtime_version="2.3.0")]
'''


def _outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """test id -> (passed | failed | skipped | error, message) from pytest's own JUnit XML."""
    out = {}
    for tc in ET.parse(junit).getroot().iter("testcase"):
        kind, msg = "passed", ""
        for child in tc:
            if child.tag in ("failure", "skipped", "error"):
                kind, msg = child.tag, (child.get("message") or "") + (child.text or "")
        out[tc.get("name")] = ("failed" if kind == "failure" else kind, msg)
    return out


@pytest.mark.slow
def test_gates_fail_on_real_measurements_held_to_stricter_bars(tmp_path, smoke_cache):
    """Throughput, memory, compat and drop-vs-fp32 each fail (exit 1) when the bar is out of reach."""
    (tmp_path / "stricter_bars.py").write_text(_STRICTER)
    out = _bench(tmp_path, "-p", "stricter_bars", f"--junitxml={tmp_path / 'junit.xml'}", "-k",
                 "throughput or memory_fits or device_runtime or drop_vs_fp32", cache=smoke_cache,
                 modes="fp32,drq", benchmark=True, env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-4000:] + out.stderr[-2000:]
    got = _outcomes(tmp_path / "junit.xml")
    expect = {
        "test_throughput[tiny-bert-drq-64]": ("failed", "< target 1000000000.0/s"),
        "test_throughput[tiny-bert-fp32-64]": ("skipped", "not a deployment candidate"),  # xfail
        "test_memory_fits[tiny-bert-drq-64]": ("failed", "does not fit"),
        "test_device_runtime[tiny-bert-drq-64]": ("failed", "expects to refuse it"),
        "test_device_runtime[tiny-bert-fp32-64]": ("passed", ""),
        "test_drop_vs_fp32[tiny-bert-drq-64]": ("failed", "tolerance -100.0 points"),
    }
    for test, (kind, text) in expect.items():
        assert got[test][0] == kind and text in got[test][1], (test, got.get(test))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    row = next(r for r in report["rows"] if r["mode"] == "drq" and r["seq"] == "64")
    assert row["fits"] is False and row["inferences_per_s"] > 0 and row["accuracy_delta_vs_fp32_pts"] is not None


@pytest.mark.slow
def test_worse_model_fails_baseline_compare(tmp_path, smoke_cache):
    """Save a baseline, then a shrunk training budget must fail --baseline-compare, readably."""
    keep = ["-k", "accuracy_floor or artifact_size"]
    first = _bench(tmp_path, *keep, "--baseline-save", cache=smoke_cache)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    saved = json.loads((tmp_path / "baselines" / "builtin" / "smoke" / "desktop.json").read_text())
    assert "tiny-bert" in json.dumps(saved)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["rows"] and all(r["device"] == "desktop" for r in report["rows"])
    assert (tmp_path / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    same = _bench(tmp_path, *keep, "--baseline-compare", cache=smoke_cache)
    assert same.returncode == 0, same.stdout[-3000:]

    skipped = _bench(tmp_path, "-k", "artifact_size", "--baseline-compare", cache=smoke_cache)
    assert skipped.returncode == 1, skipped.stdout[-3000:]  # accuracy in the baseline, not measured: fails
    assert "accuracy is in the baseline" in skipped.stdout and "did not measure it" in skipped.stdout
    assert _bench(tmp_path, "-k", "artifact_size", "--baseline-compare", "--baseline-metrics=size",
                  cache=smoke_cache).returncode == 0

    worse = _bench(tmp_path, *keep, "--baseline-compare", "--max-examples=32", cache=smoke_cache)
    assert worse.returncode == 1, worse.stdout[-3000:]
    assert "regression" in worse.stdout and "accuracy" in worse.stdout
    assert "tiny-bert/fp32" in worse.stdout


def test_options_show_in_pytest_help():
    out = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for opt in ("--device", "--data", "--edge-cache", "--scale", "--runtime", "--baseline-compare",
                "--baseline-save", "--report-dir"):
        assert opt in out.stdout


def test_expected_conversion_failure_xfails_without_reconverting(monkeypatch):
    """Why: MPNet at dynamic length cannot become TFLite builtins; each test paying a failed conversion is minutes."""
    import types

    from edgemodels.build import pipeline
    from edgemodels.bench import plugin
    from edgemodels.report import rows as report
    from edgemodels.study import matrix as suite
    from edgemodels.build.convert import ConversionError

    s = object.__new__(plugin.BenchSession)
    s._artifacts, s._conversion_failures = {}, {}
    s.config = types.SimpleNamespace(getoption=lambda name: None)
    s.__dict__.update(scale=suite.get_scale("paper"), data_spec="builtin", cache=None,
                      report=report.Report("desktop", {}))
    calls = []

    def build(req, cache):
        calls.append(req)
        raise ConversionError("sm: conversion to fp32 failed: 'tf.Log' op is neither a custom op nor a flex op\n...")

    monkeypatch.setattr(pipeline, "build", build)
    dynamic = suite.Case("mpnet-base", "fp32", None)
    for _ in range(2):
        with pytest.raises(pytest.xfail.Exception, match="relative-position buckets"):
            s.artifact(dynamic)
    assert len(calls) == 1
    assert "does not convert" in s.report.row("mpnet-base", "fp32", "dynamic").notes[0]
    with pytest.raises(ConversionError):  # not expected: a real error
        s.artifact(suite.Case("minilm-l6", "fp32", None))
    monkeypatch.setattr(pipeline, "build", lambda req, cache: types.SimpleNamespace(size_bytes=1, pretrained=True))
    with pytest.raises(pytest.fail.Exception, match="converts now"):
        s.artifact(suite.Case("mpnet-base", "drq", None))


# -- BenchSession pieces against real caches and reports (stubs only where a model would be built) -----------

def _session(tmp_path, device: str = "desktop", scale: str = "smoke"):
    """A BenchSession without pytest's config: real cache, report and placement; no artifacts built."""
    import types

    from edgemodels import devices
    from edgemodels.store import cache
    from edgemodels.bench import plugin
    from edgemodels.report import rows as report
    from edgemodels.study import matrix as suite

    s = object.__new__(plugin.BenchSession)
    s.config = types.SimpleNamespace(getoption=lambda name: None)
    s._artifacts, s._conversion_failures, s._device_runs, s._accuracy = {}, {}, {}, {}
    s.device, s.data_spec = device, "builtin"
    s.cache = cache.ArtifactCache(tmp_path / "cache")
    placement = devices.place(device, tmp_path / "no-device-tree")
    s.__dict__.update(scale=suite.get_scale(scale), report=report.Report(device, {}), placement=placement,
                      threads=2, host_runtime=("ai-edge-litert", ""))
    return s


def _fake_artifact(tmp_path):
    import types

    return types.SimpleNamespace(manifest={"key": {"digest": "a" * 64}, "max_length": 64, "pad_id": 0},
                                 tflite=tmp_path / "model.tflite", tokenizer_dir=tmp_path, size_bytes=1000)


def test_memoised_accuracy_is_not_served_to_other_code(tmp_path, monkeypatch):
    """Why: with a warm cache, evaluate() mutated to predict one label still reported the old accuracy."""
    import types

    from edgemodels.run import evaluate
    from edgemodels.bench import plugin
    from edgemodels.study import matrix as suite

    s = _session(tmp_path)
    s.artifact = lambda case: _fake_artifact(tmp_path)
    s.__dict__["eval_set"] = types.SimpleNamespace(fingerprint="eval-fp")
    calls = []

    def fake_evaluate(*args, **kw):
        calls.append(kw)
        acc = 0.7 if len(calls) == 1 else 0.3
        return evaluate.Accuracy(accuracy=acc, macro_f1=acc, n=10, majority_accuracy=0.5, runtime="ai-edge-litert",
                                 runtime_version="2.3.0", confusion=((1, 0, 0), (0, 1, 0), (0, 0, 1)))

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    case = suite.Case("tiny-bert", "fp32", 64)
    assert s.accuracy(case).accuracy == 0.7
    s._accuracy.clear()  # a later session on the same warm cache, same code: served from the cache
    assert s.accuracy(case).accuracy == 0.7 and len(calls) == 1
    real = plugin._module_source
    monkeypatch.setattr(plugin, "_module_source",
                        lambda name: real(name) + (b"# mutated" if name == "evaluate" else b""))
    plugin.code_identity.cache_clear()
    s._accuracy.clear()
    try:
        assert s.accuracy(case).accuracy == 0.3 and len(calls) == 2  # other code: computed again
    finally:
        monkeypatch.undo()
        plugin.code_identity.cache_clear()


def test_arm_outputs_are_compared_with_the_same_files_x86_outputs(tmp_path, monkeypatch):
    """Why: quantized ARM outputs were compared with the x86 *fp32* file's, so the tolerance had to absorb the
    quantization error (int8: 4.0) and ARM kernel drift could not be seen."""
    import types

    import numpy as np

    from edgemodels.run import qemu as emulation
    from edgemodels.bench import plugin
    from edgemodels.study import matrix as suite

    s = _session(tmp_path, device="pi4")
    s.artifact = lambda case: _fake_artifact(tmp_path)
    s.feeds = lambda case, n=None: [{"input_ids": np.zeros((1, 64), np.int32)}] * 2
    s.__dict__["eval_set"] = types.SimpleNamespace(
        fingerprint="eval-fp", examples=[0, 1],
        sample=lambda n: types.SimpleNamespace(label_ids=lambda: np.array([0, 1])))
    x86 = {"fp32": np.array([[2.0, 0.0, -2.0], [0.0, 2.0, 0.0]], np.float32),
           "drq": np.array([[1.5, 0.2, -2.0], [0.1, 2.4, 0.0]], np.float32)}  # quantization error ~0.5
    s._host_outputs = lambda case, feeds: x86[case.quant]
    monkeypatch.setattr(emulation, "availability", lambda: (True, "qemu (test)"))
    monkeypatch.setattr(emulation, "ensure_rootfs", lambda target, root: tmp_path)
    emulated = []
    monkeypatch.setattr(emulation, "run_model", lambda *a, **kw: emulated.append(1) or types.SimpleNamespace(
        loads=True, error=None, runtime_version="2.3.0", arch="aarch64", outputs=x86["drq"] + 1e-6))
    run = s.device_run(suite.Case("tiny-bert", "drq", 64))
    s._device_runs.clear()  # same code, warm cache: not emulated again
    s.device_run(suite.Case("tiny-bert", "drq", 64))
    real = plugin._module_source
    monkeypatch.setattr(plugin, "_module_source",
                        lambda name: real(name) + (b"# changed" if name == "arm_worker" else b""))
    plugin.code_identity.cache_clear()
    s._device_runs.clear()  # other worker code: its memoised verdict is not served
    s.device_run(suite.Case("tiny-bert", "drq", 64))
    monkeypatch.setattr(plugin, "_module_source", real)
    plugin.code_identity.cache_clear()
    assert len(emulated) == 2
    assert run.max_abs_diff == pytest.approx(1e-6, abs=1e-7) and run.x86_max_abs == pytest.approx(2.4)
    assert s.report.row("tiny-bert", "drq", "64").arm_max_abs_diff == run.max_abs_diff

    desktop = _session(tmp_path, device="desktop")  # the host's own run: nothing to compare, no figure
    desktop.artifact, desktop.feeds, desktop._host_outputs = s.artifact, s.feeds, s._host_outputs
    desktop.__dict__["eval_set"] = s.eval_set
    monkeypatch.setattr(plugin.BenchSession, "_host_outputs", lambda self, case, feeds: x86[case.quant])
    import edgemodels.run.runtime as rt_mod

    monkeypatch.setattr(rt_mod, "load", lambda *a, **kw: types.SimpleNamespace(
        run=lambda f: x86["drq"][:1], runtime_name="ai-edge-litert", runtime_version="2.3.0"))
    assert desktop.device_run(suite.Case("tiny-bert", "drq", 64)).max_abs_diff is None


def test_speed_claim_fails_below_the_device_target(tmp_path):
    from edgemodels.report import claims

    s = _session(tmp_path, device="pi3")
    fp32 = s.report.row("minilm-l6", "fp32")
    fp32.inferences_per_s, fp32.method = 50.0, "projected"  # not a deployment candidate: never counted
    drq = s.report.row("minilm-l6", "drq")
    drq.inferences_per_s, drq.method, drq.threads, drq.runtime, drq.runtime_version = 0.9, "projected", 2, "x", "1"
    claim = claims.speed(s.report.rows(), s.device, s.profile.target_inferences_per_s)
    assert claim.holds is False and "minilm-l6 drq: 0.9/s" in claim.ours
    drq.inferences_per_s = 1.0
    assert claims.speed(s.report.rows(), s.device, s.profile.target_inferences_per_s).holds is True


@pytest.mark.parametrize("device, factor", [("pi4", 0.10), ("pi3", 0.025), ("desktop", None)])
def test_record_throughput_projects_with_the_profile_factor(tmp_path, device, factor):
    import types

    from edgemodels.run import stats as measure
    from edgemodels.study import matrix as suite

    s = _session(tmp_path, device=device)
    s._last_runtime = types.SimpleNamespace(name="ai-edge-litert", version="2.3.0")
    stats = measure.LatencyStats.from_samples([0.01, 0.01, 0.01, 0.02])  # mean 12.5 ms: 80/s on the host
    extra: dict = {}
    proj = s.record_throughput(suite.Case("tiny-bert", "drq", 64), stats, extra)
    row = s.report.row("tiny-bert", "drq", "64")
    f = 1.0 if factor is None else factor
    assert row.inferences_per_s == pytest.approx(80.0 * f) == proj.value == extra["inferences_per_s"]
    assert extra["host_inferences_per_s"] == pytest.approx(80.0)
    assert row.p50_ms == pytest.approx(10.0 / f) and row.p99_ms == pytest.approx(1e3 * stats.p99_s / f)
    assert row.method == ("measured" if factor is None else "projected")
    assert row.threads == 2 == extra["threads"]  # issue 9: the thread count every throughput row was timed at


def _on_a_pi3(tmp_path):
    """A session whose placement is ON a Pi 3 (the device-tree model file says so): figures are measured."""
    from edgemodels import devices

    tree = tmp_path / "model"
    tree.write_bytes(b"Raspberry Pi 3 Model B Rev 1.2\x00")
    s = _session(tmp_path, device="pi3")
    s.__dict__["placement"] = devices.place("pi3", tree)
    assert s.placement.on_device
    return s


@pytest.mark.parametrize("spec, outcome", [(("bert-large", "fp32", 128), "xfail"), (("tiny-bert", "fp32", 64), "fail")])
def test_a_model_larger_than_the_budget_is_never_loaded_on_the_device(tmp_path, monkeypatch, spec, outcome):
    """Issue 9: the CI matrix loaded BERT-Large fp32 (1.3 GB) in-process on a 1 GB Pi 3. Now it is reported as
    does-not-fit (expected for a large model on a Pi 3: xfail; a compact one not fitting fails) and never loaded."""
    import types

    from edgemodels.run import stats as measure, runtime
    from edgemodels.study import matrix as suite

    s = _on_a_pi3(tmp_path)
    big = types.SimpleNamespace(**vars(_fake_artifact(tmp_path)))
    big.size_bytes = 1_337_968_828
    s.artifact = lambda c: big

    def never(*a, **kw):
        raise AssertionError("loaded a model that cannot fit the device")

    monkeypatch.setattr(runtime, "load", never)
    monkeypatch.setattr(measure, "peak_rss_of_run", never)
    c = suite.Case(*spec)
    for ask in (s.memory, s.throughput_runner, s.device_run):
        with pytest.raises((pytest.xfail.Exception, pytest.fail.Exception)) as err:
            ask(c)
        assert isinstance(err.value, pytest.xfail.Exception) == (outcome == "xfail")
        assert "does not fit" in str(err.value) and "1276 MiB" in str(err.value) and "not loaded" in str(err.value)
    row = s.report.row(c.model, c.quant, c.seq_label)
    assert row.fits is False and row.memory_budget_bytes == s.profile.memory_budget_bytes


def test_compat_on_the_device_without_an_export_compares_with_nothing(tmp_path, monkeypatch):
    """Issue 9: on the Pi, the Pi's own run was compared with itself and that side labelled "x86"."""
    import types

    import numpy as np

    from edgemodels.run import runtime
    from edgemodels.study import matrix as suite

    s = _on_a_pi3(tmp_path)
    s.artifact = lambda c: _fake_artifact(tmp_path)
    s.feeds = lambda c, n=None: [{"input_ids": np.zeros((1, 64), np.int32)}] * 2
    s.__dict__["eval_set"] = types.SimpleNamespace(
        examples=[0, 1], sample=lambda n: types.SimpleNamespace(label_ids=lambda: np.array([0, 1])))
    s.__dict__["host_runtime"] = ("tflite-runtime", "")
    monkeypatch.setattr(runtime, "load", lambda *a, **kw: types.SimpleNamespace(
        run=lambda f: np.array([[1.0, 0.0, 0.0]], np.float32), runtime_name="tflite-runtime", runtime_version="2.14.0"))
    run = s.device_run(suite.Case("tiny-bert", "drq-compat", 64))
    row = s.report.row("tiny-bert", "drq-compat", "64")
    assert run.loads and run.method.startswith("measured here") and row.arm_method == run.method
    assert run.max_abs_diff is None and row.arm_reference is None and row.x86_accuracy_sample is None
    assert row.arm_accuracy == 0.5


def test_bad_bench_options_do_not_stop_the_unit_tests_but_still_stop_the_bench(tmp_path):
    """Issue 10: EDGEMODELS_DATA=replab:/nonexistent aborted `pytest tests/` at start-up."""
    env = {**os.environ, "EDGEMODELS_DATA": "replab:/nonexistent"}
    unit = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "tests" / "test_suite.py"), "-q",
                           "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert unit.returncode == 0, unit.stdout[-2000:] + unit.stderr[-2000:]
    bench = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--collect-only", "-q",
                            "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert bench.returncode == pytest.ExitCode.USAGE_ERROR and "/nonexistent does not exist" in bench.stderr


def test_edge_cache_naming_a_file_is_a_usage_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    out = _collect(f"--edge-cache={f}")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out.stderr
    assert f"{f}: is a file, not a directory" in out.stderr


def test_an_invoke_failure_is_the_refusal_only_where_one_is_expected(tmp_path, monkeypatch):
    """tflite-runtime 2.14 loads w4 and fails at the first invoke with a plain RuntimeError: for a case the
    registry expects it to refuse that is the refusal (xfail quoting it); for any other case it stays an error."""
    from edgemodels.bench import plugin
    from edgemodels.study import matrix as suite

    s = _session(tmp_path, device="pi3")
    monkeypatch.setattr(plugin, "_installed_version", lambda rt: "2.14.0")  # the Pi 3's runtime, not installed here
    invoke = RuntimeError("Type not currently supported. Node number 5 (EMBEDDING_LOOKUP) failed to invoke.")
    with pytest.raises(pytest.xfail.Exception, match="loads it, then fails to run it .expected: tflite-runtime 2.14"):
        s.runtime_refused(suite.Case("minilm-l6", "w4"), "tflite-runtime", invoke)
    with pytest.raises(RuntimeError, match="Type not currently supported"):
        s.runtime_refused(suite.Case("minilm-l6", "w8"), "tflite-runtime", invoke)


def test_crashing_refusals_are_known_as_such():
    """MobileBERT int8's Pi 3 refusal is a SIGSEGV: the bench runs it in a child first (BenchSession.crash_guard).
    The record's `crash` flag says so (it was guessed from "SIGSEGV"/"crash" in the reason's text)."""
    from edgemodels.study import expected

    assert expected.refusal("tflite-runtime", "2.14.0", "int8", "mobilebert").crash
    assert not expected.refusal("tflite-runtime", "2.14.0", "drq", "mobilebert").crash
    assert expected.refusal("tflite-runtime", "2.14.0", "int8", "minilm-l6") is None  # MiniLM int8 runs there


def test_modes_help_lists_every_registered_mode():
    """--modes's own help line names exactly modes.MODES, in order (not just each name somewhere in the help:
    'drq' is inside 'drq-compat' and 'pruned-drq')."""
    import re

    from edgemodels.build import modes

    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "1000"})  # argparse wraps at hyphens: one line each
    assert out.returncode == 0, out.stderr[-2000:]
    line = re.search(r"^\s*--modes=\S+\s+comma-separated quantization modes to keep: (.+?) \(", out.stdout, re.M)
    assert line, out.stdout[-3000:]
    assert line.group(1).split(", ") == list(modes.MODES)
    for opt in ("--tokenizer=DIR", "--labels=A,B,..."):
        assert re.search(rf"^\s*{re.escape(opt)}\s", out.stdout, re.M), opt


def test_benchmark_disable_skips_throughput_saying_why(tmp_path, smoke_cache):
    """`pytest bench/ --benchmark-disable` errored in test_throughput (benchmark.stats is None): now each case runs
    once and skips, naming the option. --max-examples=32: the short build test_worse_model_fails_baseline_compare
    also makes (same cache)."""
    out = _bench(tmp_path, "-k", "test_throughput or test_evaluation_throughput", "--max-examples=32",
                 f"--junitxml={tmp_path / 'junit.xml'}", cache=smoke_cache)  # _bench passes --benchmark-disable
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    got = {k: v for k, v in _outcomes(tmp_path / "junit.xml").items() if k.startswith("test_throughput[")}
    assert list(got) == ["test_throughput[tiny-bert-fp32-64]"], got
    kind, msg = got["test_throughput[tiny-bert-fp32-64]"]
    assert kind == "skipped" and "--benchmark-disable: the model loaded and ran once, untimed" in msg, (kind, msg)
    # bench/test_eval_speed.py the same (it read benchmark.stats too): evaluated once, untimed, skipped.
    kind, msg = _outcomes(tmp_path / "junit.xml")["test_evaluation_throughput[tiny-bert-fp32-64]"]
    assert kind == "skipped" and "--benchmark-disable: evaluated once" in msg, (kind, msg)
