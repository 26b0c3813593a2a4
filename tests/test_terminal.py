"""What a user's terminal shows (issue 15): usage errors for unknown names, no unlabelled host timings under a
device run, reasons on one line, and third-party start-up noise only with -v / EDGEMODELS_QUIET=0.

Real processes throughout: `pytest` with the plugin on a synthetic bench file, `python -m edgemodels`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_SEQ, run_cli_subprocess
from edgemodels import cli, quiet
from edgemodels.bench import configure
from edgemodels.options import csv_names
from edgemodels.study import matrix as suite


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}
    env.pop(quiet.ENV, None)  # each test says what it wants
    return env


# ---------------------------------------------------------------- --models / --modes


def test_unknown_model_is_a_usage_error_listing_the_valid_ones():
    """Why: `--models foo` (a typo) collected `[NOTSET]` tests and passed."""
    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--models=foo", "--collect-only",
                          "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:] + out.stderr[-2000:]
    assert "'foo'" in out.stderr and "minilm-l6" in out.stderr and "mobilebert" in out.stderr
    assert "NOTSET" not in out.stdout


@pytest.mark.parametrize("scale,models,modes,needles", [
    ("ci", None, "int4,drq", ["--modes", "'int4'", "drq-compat", "fp16"]),
    ("smoke", "minilm-l6", None, ["'minilm-l6'", "valid: tiny-bert", "--scale=ci/paper"]),
    ("smoke", None, "int8", ["'int8'", "--scale=ci/paper"]),
    ("ci", "bert-large", "fp16", ["no case of the ci scale", "bert-large-drq-128"]),
])
def test_filters_name_what_is_valid(scale, models, modes, needles):
    with pytest.raises(pytest.UsageError) as exc:
        configure.check_filters(suite.get_scale(scale), models and csv_names(models), modes and csv_names(modes))
    for n in needles:
        assert n in str(exc.value), str(exc.value)


def test_filters_accept_known_names_and_model_sources():
    ci = suite.get_scale("ci")
    configure.check_filters(ci, csv_names("minilm-l6, mobilebert"), csv_names("drq,int8"))
    configure.check_filters(ci, None, None)
    with pytest.raises(pytest.UsageError, match="not found in the Hugging Face cache"):
        configure.check_filters(ci, ("hf:org/name",), ("drq",))  # offline: only the cache, checked up front
    with pytest.raises(pytest.UsageError, match="/models/x does not exist"):
        configure.check_filters(ci, ("dir:/models/x",), ("drq",))  # parsed up front: one line, before any build


# ---------------------------------------------------------------- pytest-benchmark's table, -ra reasons

_SYNTHETIC = '''
import pytest

def test_timed(bench, benchmark):
    benchmark.pedantic(lambda: sum(range(100)), rounds=3, iterations=1)

def test_refused(bench):
    pytest.xfail("tflite-runtime 2.14.0 cannot load this model: Didn't find op\\nRegistration failed.\\n")

def test_broken(bench):
    pytest.fail("cannot load:\\nRegistration failed.")
'''


_TITLE = re.compile(r"^-* ?benchmark\b.*: \d+ tests")
"""pytest-benchmark's table title, e.g. "---- benchmark: 1 tests ----" (not its "benchmark: 5.3.1" header)."""


def _synthetic_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "test_synthetic.py").write_text(_SYNTHETIC)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "edgemodels.bench.plugin", "-p", "no:cacheprovider", "-ra",
         "test_synthetic.py", f"--edge-cache={tmp_path / 'cache'}", f"--report-dir={tmp_path / 'report'}",
         f"--benchmark-json={tmp_path / 'bench.json'}", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env(CI="1"))  # CI: untrimmed summary
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-3000:] + out.stderr[-2000:]
    return out, json.loads((tmp_path / "bench.json").read_text())


def test_projected_run_hides_host_timings_and_says_so(tmp_path):
    """Why: a --device=pi3 run printed pytest-benchmark's host OPS unlabelled above edgemodels' projection."""
    out, saved = _synthetic_bench(tmp_path, "--device=pi3")
    assert not any(_TITLE.match(line) for line in out.stdout.splitlines()) and "OPS" not in out.stdout
    assert "pytest-benchmark's table times this host, not pi3: hidden (-v shows it)" in out.stdout
    assert saved["edgemodels"]["method"] == "projected" and "HOST timings" in saved["edgemodels"]["stats_are"]
    assert saved["benchmarks"][0]["stats"]["rounds"] == 3  # hidden from the screen, not from the JSON


def test_projected_run_with_v_labels_the_host_table(tmp_path):
    out, _ = _synthetic_bench(tmp_path, "--device=pi3", "-v")
    title = next(line for line in out.stdout.splitlines() if _TITLE.match(line))
    assert "HOST timings" in title and "NOT pi3's" in title and "OPS" in out.stdout


def test_measured_run_keeps_the_table_and_reasons_stay_on_one_line(tmp_path):
    """Why: tflite-runtime's "...\\nRegistration failed." split `-ra` summary lines in two."""
    out, saved = _synthetic_bench(tmp_path, "--device=desktop")
    summary = out.stdout.split("short test summary info")[1].splitlines()
    xfail = next(line for line in summary if line.startswith("XFAIL"))
    failed = next(line for line in summary if line.startswith("FAILED"))
    assert xfail.endswith("Didn't find op Registration failed.") and failed.endswith("Registration failed.")
    assert not any(line.strip() == "Registration failed." for line in summary)
    assert re.search(r"^-+ benchmark: 1 tests -+$", out.stdout, re.MULTILINE)
    assert saved["edgemodels"]["method"] == "measured"


# ---------------------------------------------------------------- CLI: quiet unless -v


def test_cli_accepts_verbose_before_and_after_the_command():
    p = cli.parser()
    assert p.parse_args(["-v", "info"]).verbose is True
    assert p.parse_args(["info", "--verbose"]).verbose is True
    assert p.parse_args(["info"]).verbose is False


def test_evaluate_hides_the_runtime_delegate_line_unless_verbose(tiny, tiny_csv, monkeypatch):
    """Why: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every evaluate (fd 2, from C++)."""
    pytest.importorskip("ai_edge_litert")
    tflite = str(tiny.artifact("drq", TINY_SEQ).tflite)
    args = ["evaluate", "--tflite", tflite, "--data", f"csv:{tiny_csv}", "--runtime", "ai-edge-litert"]
    monkeypatch.delenv(quiet.ENV, raising=False)  # the CLI's own default, not the test session's
    plain, loud = run_cli_subprocess(*args), run_cli_subprocess("-v", *args)
    assert plain.returncode == 0 and loud.returncode == 0, plain.stderr + loud.stderr
    others = [ln for ln in plain.stderr.splitlines() if ln.strip() and not ln.startswith("edgemodels: history: run ")]
    assert "XNNPACK" not in plain.stderr and others == [], plain.stderr  # only the line saying where it was recorded
    assert "Created TensorFlow Lite XNNPACK delegate" in loud.stderr  # still there for who asks
    assert "accuracy" in plain.stdout


_TF_START = "from edgemodels.cli import common, parser; a = parser().parse_args({argv!r}); common.set_quiet(a); common.quiet_tf(a)\n" \
            "import tensorflow as tf; print(int(tf.constant(1) + 1))"
_ABSL_LINE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl::InitializeLog)", re.MULTILINE)


def test_build_starts_tensorflow_without_its_startup_lines():
    """Why: oneDNN/CUDA/absl lines on every `build` (before absl::InitializeLog: TF_CPP_MIN_LOG_LEVEL misses them)."""
    pytest.importorskip("tensorflow")
    code = _TF_START.format(argv=["build", "--model", "tiny-bert", "--quant", "drq"])
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert plain.returncode == 0 and plain.stdout.strip() == "2", plain.stderr[-2000:]
    assert not _ABSL_LINE.search(plain.stderr), plain.stderr[-2000:]
    if platform.machine() in ("x86_64", "AMD64"):  # where TensorFlow announces oneDNN: -v must still show it
        code = _TF_START.format(argv=["-v", "build", "--model", "tiny-bert", "--quant", "drq"])
        loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
        assert _ABSL_LINE.search(loud.stderr), loud.stderr[-2000:]


def test_native_stderr_replays_what_it_hid_when_the_block_fails(capfd, monkeypatch):
    monkeypatch.setenv(quiet.ENV, "1")
    log: list[str] = []
    with quiet.native_stderr(log):
        os.write(2, b"hidden start-up line\n")
    with pytest.raises(RuntimeError), quiet.native_stderr():
        os.write(2, b"the runtime's own explanation\n")
        raise RuntimeError("load failed")
    err = capfd.readouterr().err
    assert log == ["hidden start-up line\n"] and "hidden" not in err and "own explanation" in err


def test_tox_is_installed_by_the_test_extra():
    """Why: the README names `tox -e pi3`, and no extra installed tox."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"tox\b", dep) for dep in extras["test"]), extras["test"]
