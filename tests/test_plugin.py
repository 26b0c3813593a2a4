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


@pytest.mark.slow
def test_speed_gate_here_saves_a_digest_passes_the_same_file_and_shares_it_only_when_told(tmp_path, smoke_cache):
    """Throughput gated on this host: the baseline keeps the 1-thread digest, the same file passes against it; a
    digest is reused (and said to be) only by runs sharing EDGEMODELS_GATE_SHARE, never otherwise."""
    args = ("-k", "throughput and 64", "--baseline-metrics=throughput", "--history=off")
    saved = _bench(tmp_path, *args, "--baseline-save", cache=smoke_cache, benchmark=True)
    assert saved.returncode == 0, saved.stdout[-3000:]
    base = json.loads((tmp_path / "baselines" / "builtin" / "smoke" / "desktop.json").read_text())
    assert "throughput_gate" in json.dumps(base)

    def row(run) -> dict:
        assert run.returncode == 0, run.stdout[-3000:]
        return json.loads((tmp_path / "report" / "report.json").read_text())["rows"][0]

    share = {"EDGEMODELS_GATE_SHARE": f"test-{tmp_path.name}"}
    first = row(_bench(tmp_path, *args, "--baseline-compare", cache=smoke_cache, benchmark=True, env=share))
    assert first["throughput_decision"]["decision"] == "pass", first["throughput_decision"]
    assert not any("reused" in n for n in first["notes"]), first["notes"]
    again = row(_bench(tmp_path, *args, "--baseline-compare", cache=smoke_cache, benchmark=True, env=share))
    assert again["throughput_gate"] == first["throughput_gate"]
    assert any("reused" in n and share["EDGEMODELS_GATE_SHARE"] in n for n in again["notes"]), again["notes"]
    unshared = row(_bench(tmp_path, *args, "--baseline-compare", cache=smoke_cache, benchmark=True))
    assert unshared["throughput_gate"] != first["throughput_gate"]
    assert not any("reused" in n for n in unshared["notes"]), unshared["notes"]


def test_options_show_in_pytest_help():
    out = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for opt in ("--device", "--data", "--edge-cache", "--scale", "--runtime", "--baseline-compare",
                "--baseline-save", "--report-dir"):
        assert opt in out.stdout


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
