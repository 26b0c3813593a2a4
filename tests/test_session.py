"""The bench session's pieces against real caches, reports and profiles (edgemodels/bench/): a stand-in only where a
model would be built or a worker started, and each says so."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from edgemodels import devices
from edgemodels.bench import outcome
from edgemodels.bench.artifacts import BuiltArtifacts, NotConverted
from edgemodels.bench.device import HostSide
from edgemodels.bench.session import BenchSession
from edgemodels.report.rows import Report
from edgemodels.run.targets import Identity, Target, WorkerResult
from edgemodels.store.cache import ArtifactCache
from edgemodels.report.machine import machine_info
from edgemodels.study.expected import BUILTIN_OUTCOMES
from edgemodels.study.matrix import Case, get_scale


def _session(tmp_path: Path, device: str = "desktop", scale: str = "smoke", tree: Path | None = None) -> BenchSession:
    """A session without pytest's config: a real cache, report and placement (the device tree file decides whether
    this host is the device); no artifact built until one is asked for."""
    store = ArtifactCache(tmp_path / "cache")
    placement = devices.place(device, tree or tmp_path / "no-device-tree")
    side = HostSide(placement, threads=2, runtime=None, cache_root=store.root, emulate=True)
    return BenchSession(device=device, scale=get_scale(scale), source=BuiltArtifacts(store, get_scale(scale), "builtin"),
                        make_side=lambda: side, expected=BUILTIN_OUTCOMES, make_report=lambda s: Report(device, machine_info()),
                        keep_models=set(), keep_modes=set())


def _on_a_pi3(tmp_path: Path) -> BenchSession:
    """A session ON a Pi 3 (the device-tree model file says so): figures are measured, big files never loaded."""
    tree = tmp_path / "model"
    tree.write_bytes(b"Raspberry Pi 3 Model B Rev 1.2\x00")
    s = _session(tmp_path, device="pi3", tree=tree)
    assert s.side.on_device and s.side.measured_on_device
    return s


def _fake_artifact(tmp_path: Path, size: int = 1000):
    """Stands in for a built .tflite (its manifest fields the suites read); never loaded by these tests."""
    (tmp_path / "model.tflite").write_bytes(b"\0\0\0\0TFL3")
    return types.SimpleNamespace(manifest={"key": {"digest": "a" * 64}, "max_length": 64, "pad_id": 0,
                                           "trained": True}, tflite=tmp_path / "model.tflite", tokenizer_dir=tmp_path,
                                 size_bytes=size, pretrained=True)


def _ident(**kw) -> Identity:
    base = dict(via="here", hostname="h", board=None, cpu_model="cpu", cpu_part=None, cores=2, arch="x86_64",
                os_bits=64, python="3.11", runtime="ai-edge-litert", runtime_version="2.3.0", emulated=False)
    return Identity(**{**base, **kw})


def _result(**kw) -> WorkerResult:
    base = dict(loads=True, error=None, outputs=None, latency_s=(), peak_rss_bytes=None, threads=2,
                identity=_ident(), wall_s=0.1)
    return WorkerResult(**{**base, **kw})


class Scripted(Target):
    """A target that answers from a script instead of starting a worker: for the arithmetic around a run."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def _run(self, tflite, request, feeds, timeout_s, memory_limit_bytes):
        self.calls.append(request)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_an_expected_conversion_failure_xfails_once_without_reconverting(tmp_path, monkeypatch):
    """MPNet at dynamic length cannot become TFLite builtins; each test paying a failed conversion is minutes."""
    from edgemodels.build import pipeline
    from edgemodels.build.convert import ConversionError

    s = _session(tmp_path, scale="paper")
    calls = []

    def build(req, cache):
        calls.append(req)
        raise ConversionError("sm: conversion to fp32 failed: 'tf.Log' op is neither a custom op nor a flex op\n...")

    monkeypatch.setattr(pipeline, "build", build)
    dynamic = Case("mpnet-base", "fp32", None)
    for _ in range(2):
        with pytest.raises(pytest.xfail.Exception, match="relative-position buckets"):
            s.artifact(dynamic)
    assert len(calls) == 1
    assert "does not convert" in s.row(dynamic).notes[0]
    with pytest.raises(NotConverted):  # not expected: a real error
        s.artifact(Case("minilm-l6", "fp32", None))
    monkeypatch.setattr(pipeline, "build", lambda req, cache: _fake_artifact(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="converts now"):
        s.artifact(Case("mpnet-base", "drq", None))


def test_memoised_accuracy_is_not_served_to_other_code(tmp_path, monkeypatch):
    """Why: with a warm cache, evaluate() mutated to predict one label still reported the old accuracy."""
    from edgemodels.run import evaluate
    from edgemodels.store import keys

    s = _session(tmp_path)
    s.source.artifact = lambda case: _fake_artifact(tmp_path)
    s.source.__dict__["eval_set"] = types.SimpleNamespace(fingerprint="eval-fp")
    calls = []

    def fake_evaluate(*args, **kw):
        calls.append(kw)
        acc = 0.7 if len(calls) == 1 else 0.3
        return evaluate.Accuracy(accuracy=acc, macro_f1=acc, n=10, majority_accuracy=0.5, runtime="ai-edge-litert",
                                 runtime_version="2.3.0", confusion=((1, 0, 0), (0, 1, 0), (0, 0, 1)))

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    case = Case("tiny-bert", "fp32", 64)
    checked = []
    accuracy = lambda: s.source.accuracy(case, "ai-edge-litert", "2.3.0", lambda: checked.append(1))  # noqa: E731
    assert accuracy().accuracy == 0.7
    assert accuracy().accuracy == 0.7 and len(calls) == 1 and len(checked) == 1  # same code: served, not checked
    real = keys.module_source
    monkeypatch.setattr(keys, "module_source",
                        lambda name: real(name) + (b"# mutated" if name == "edgemodels.run.evaluate" else b""))
    keys.code_identity.cache_clear()
    try:
        assert accuracy().accuracy == 0.3 and len(calls) == 2  # other code: computed again
    finally:
        monkeypatch.undo()
        keys.code_identity.cache_clear()


def test_arm_outputs_are_compared_with_the_same_files_x86_outputs(tmp_path, monkeypatch):
    """Why: quantized ARM outputs were compared with the x86 *fp32* file's, so the tolerance had to absorb the
    quantization error (int8: 4.0) and ARM kernel drift could not be seen. Emulated verdicts are memoised by the
    code that made them."""
    from edgemodels.bench.metrics import compat
    from edgemodels.run import qemu, rootfs
    from edgemodels.store import keys

    x86 = {"fp32": np.array([[2.0, 0.0, -2.0], [0.0, 2.0, 0.0]], np.float32),
           "drq": np.array([[1.5, 0.2, -2.0], [0.1, 2.4, 0.0]], np.float32)}  # quantization error ~0.5
    s = _session(tmp_path, device="pi4")
    s.artifact = lambda case: _fake_artifact(tmp_path)
    s.feeds = lambda case, n=None: [{"input_ids": np.zeros((1, 64), np.int32)}] * 2
    s.source.labels = lambda case, n=None: np.array([0, 1])
    s.here = Scripted(_result(outputs=x86["drq"]))  # the same file on this host: the x86 side
    monkeypatch.setattr(qemu, "availability", lambda: (True, "qemu (test)"))
    monkeypatch.setattr(rootfs, "ensure_rootfs", lambda profile, root: tmp_path)
    emulated = []
    monkeypatch.setattr(qemu.QemuTarget, "run", lambda self, *a, **kw: emulated.append(1) or _result(
        outputs=x86["drq"] + 1e-6, identity=_ident(arch="aarch64", emulated=True)))
    case = Case("tiny-bert", "drq", 64)
    run = compat.device_run(s, case)
    s.device_runs.clear()  # same code, warm cache: not emulated again
    compat.device_run(s, case)
    real = keys.module_source
    monkeypatch.setattr(keys, "module_source",
                        lambda name: real(name) + (b"# changed" if name == "edgemodels.run.worker" else b""))
    keys.code_identity.cache_clear()
    s.device_runs.clear()  # other worker code: its memoised verdict is not served
    compat.device_run(s, case)
    monkeypatch.setattr(keys, "module_source", real)
    keys.code_identity.cache_clear()
    assert len(emulated) == 2
    assert run.max_abs_diff == pytest.approx(1e-6, abs=1e-7) and run.x86_max_abs == pytest.approx(2.4)
    assert s.row(case).arm_max_abs_diff == run.max_abs_diff and "x86 on this host" in s.row(case).arm_reference


def test_compat_on_the_device_without_an_export_compares_with_nothing(tmp_path):
    """On the Pi, the Pi's own run was compared with itself and that side labelled "x86"."""
    from edgemodels.bench.metrics import compat

    s = _on_a_pi3(tmp_path)
    s.artifact = lambda c: _fake_artifact(tmp_path)
    s.feeds = lambda c, n=None: [{"input_ids": np.zeros((1, 64), np.int32)}] * 2
    s.source.labels = lambda case, n=None: np.array([0, 1])
    s.here = Scripted(_result(outputs=np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32),
                              identity=_ident(runtime="tflite-runtime", runtime_version="2.14.0", arch="armv7l")))
    case = Case("tiny-bert", "drq-compat", 64)
    run = compat.device_run(s, case)
    row = s.row(case)
    assert run.loads and run.method.startswith("measured here") and row.arm_method == run.method
    assert run.max_abs_diff is None and row.arm_reference is None and row.x86_accuracy_sample is None
    assert row.arm_accuracy == 0.5


@pytest.mark.parametrize("spec, expect", [(("bert-large", "fp32", 128), "xfail"), (("tiny-bert", "fp32", 64), "fail")])
def test_a_model_larger_than_the_budget_is_never_loaded_on_the_device(tmp_path, spec, expect):
    """The CI matrix once loaded BERT-Large fp32 (1.3 GB) on a 1 GB Pi 3. Now it is reported as does-not-fit
    (expected for a large model there: xfail; a compact one not fitting fails), and no worker ever starts."""
    from edgemodels.bench.metrics import compat, memory, speed

    s = _on_a_pi3(tmp_path)
    s.artifact = lambda c: _fake_artifact(tmp_path, size=1_337_968_828)
    never = Scripted(AssertionError("loaded a model that cannot fit the device"))
    s.side.timing = s.here = never
    bench = types.SimpleNamespace(disabled=False, extra_info={})
    c = Case(*spec)
    for ask in (lambda: memory.memory(s, c), lambda: speed.throughput(s, c, bench), lambda: compat.device_run(s, c),
                lambda: s.accuracy(c)):
        with pytest.raises((pytest.xfail.Exception, pytest.fail.Exception)) as err:
            ask()
        assert isinstance(err.value, pytest.xfail.Exception) == (expect == "xfail")
        assert "does not fit" in str(err.value) and "1276 MiB" in str(err.value) and "not loaded" in str(err.value)
    assert never.calls == []
    row = s.row(c)
    assert row.fits is False and row.memory_budget_bytes == s.profile.memory_budget_bytes


@pytest.mark.parametrize("device, factor", [("pi4", 0.10), ("pi3", 0.025), ("desktop", None)])
def test_throughput_rows_are_the_workers_samples_projected_with_the_profile_factor(tmp_path, device, factor):
    """The row, pytest-benchmark's extra_info and the returned projection all come from the worker's own samples."""
    from edgemodels.bench.metrics import speed

    s = _session(tmp_path, device=device)
    s.artifact = lambda c: _fake_artifact(tmp_path)
    s.feeds = lambda c, n=None: [{"input_ids": np.zeros((1, 64), np.int32)}]
    s.side.runtime_note = ""  # this test is about the arithmetic, not which runtime the host has
    s.side.timing = Scripted(_result(latency_s=(0.01, 0.01, 0.01, 0.02)))  # mean 12.5 ms: 80/s on the host
    recorded = []
    bench = types.SimpleNamespace(disabled=False, extra_info={}, _mode=None,
                                  _make_stats=lambda n: types.SimpleNamespace(update=recorded.append))
    proj = speed.throughput(s, Case("tiny-bert", "drq", 64), bench)
    row, extra = s.row(Case("tiny-bert", "drq", 64)), bench.extra_info
    f = 1.0 if factor is None else factor
    assert row.inferences_per_s == pytest.approx(80.0 * f) == proj.value == extra["inferences_per_s"]
    assert extra["host_inferences_per_s"] == pytest.approx(80.0) and recorded == [0.01, 0.01, 0.01, 0.02]
    assert row.p50_ms == pytest.approx(10.0 / f)
    assert row.method == ("measured" if factor is None else "projected")
    assert row.threads == 2 == extra["threads"]


def test_record_samples_feeds_the_installed_pytest_benchmark(tmp_path):
    """edgemodels hands the worker's samples to pytest-benchmark through its fixture's stats: this checks that the
    installed pytest-benchmark still takes them (its table, --benchmark-json and compare read the same figures)."""
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text(
        "from edgemodels.bench.metrics.speed import record_samples\n"
        "def test_t(benchmark):\n"
        "    record_samples(benchmark, [0.01, 0.02, 0.03])\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py",
                          f"--benchmark-json={tmp_path / 'b.json'}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
    import json

    stats = json.loads((tmp_path / "b.json").read_text())["benchmarks"][0]["stats"]
    assert stats["rounds"] == 3 and stats["min"] == 0.01 and stats["max"] == 0.03


def test_an_invoke_failure_is_the_refusal_only_where_one_is_expected():
    """tflite-runtime 2.14 loads w4 and fails at the first invoke: for a case the registry expects it to refuse,
    that is the refusal (xfail quoting it); for any other case it fails."""
    invoke = "Type not currently supported. Node number 5 (EMBEDDING_LOOKUP) failed to invoke."
    w4 = BUILTIN_OUTCOMES.refusal("tflite-runtime", "2.14.0", "w4", "minilm-l6")
    with pytest.raises(pytest.xfail.Exception, match="loads it, then fails to run it .expected: tflite-runtime 2.14"):
        outcome.runtime_refused(w4, "minilm-l6-w4-128", "tflite-runtime 2.14.0", loaded=True, error=invoke)
    w8 = BUILTIN_OUTCOMES.refusal("tflite-runtime", "2.14.0", "w8", "minilm-l6")
    assert w8 is None
    with pytest.raises(pytest.fail.Exception, match="Type not currently supported"):
        outcome.runtime_refused(w8, "minilm-l6-w8-128", "tflite-runtime 2.14.0", loaded=True, error=invoke)


def test_without_qemu_the_pi3s_runtime_check_is_skipped_saying_why(tmp_path, monkeypatch):
    """Why: with no QEMU here, `pytest bench/ --device=pi3` checked the drq files on this host's ai-edge-litert, which
    loads what the Pi 3's tflite-runtime 2.14 refuses, and failed 'expects to refuse it'. Another runtime's verdict is
    not the device's: skipped, naming both runtimes and how to get the emulation."""
    from edgemodels.bench.metrics import compat
    from edgemodels.run import qemu, runtime

    monkeypatch.setattr(qemu, "availability", lambda: (False, "qemu-user-static/debootstrap not installed (test)"))
    monkeypatch.setattr(runtime, "available", lambda: [types.SimpleNamespace(name="ai-edge-litert", version="2.3.0")])
    s = _session(tmp_path, device="pi3")
    assert s.side.runtime == "ai-edge-litert" and s.side.runtime_note
    s.artifact = lambda case: pytest.fail("nothing is run for a check that cannot be made")
    with pytest.raises(pytest.skip.Exception, match=r"tflite-runtime 2\.14\.0.*not installed \(test\)"):
        compat.check(s, Case("tiny-bert", "drq", 64))
    assert "compat: not checked" in " ".join(s.row(Case("tiny-bert", "drq", 64)).notes)
    monkeypatch.setattr(qemu, "availability", lambda: (True, "qemu (test)"))
    assert _session(tmp_path / "emulated", device="pi3").side.unchecked_runtime() is None
