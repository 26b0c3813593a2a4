"""Expected outcomes as data (edgemodels/study/expected.py): matching rules, the built-in records, the collection-time
strict xfail markers and the conftest hook that adds records (issue 11)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_plugin import _outcomes, smoke_cache  # noqa: F401  (the session's smoke-scale cache: tiny-bert built once)

from edgemodels.study import expected, matrix as suite
from edgemodels.build import modes
from edgemodels.study.expected import ANY, Expected, ExpectedError

REPO = Path(__file__).resolve().parents[1]


BUILTIN = expected.BUILTIN_OUTCOMES


# -- matching rules ------------------------------------------------------------------------------------------------

def test_any_matches_everything_and_a_set_selector_only_its_value():
    loss = Expected("loss", "measured -9 points (test)", ("test_drop_vs_fp32",), data="builtin", mode="int8")
    assert loss.matches("test_drop_vs_fp32", data="builtin", scale="ci", model="x", mode="int8", seq="128")
    assert loss.matches(None, data="builtin", mode="int8")  # None: any test
    assert not loss.matches("test_accuracy_floor", data="builtin", mode="int8")  # another test
    assert not loss.matches("test_drop_vs_fp32", data="replab", mode="int8")
    assert not loss.matches("test_drop_vs_fp32", data="builtin", mode="drq")
    # A facet the test does not have (test_strict_ratio has no model) never satisfies a set selector.
    assert not loss.matches("test_drop_vs_fp32", data="builtin")
    assert not loss.matches("test_drop_vs_fp32", data="builtin", mode=None)
    with pytest.raises(TypeError, match="unknown facet"):
        loss.matches("test_drop_vs_fp32", modee="int8")


def test_the_most_specific_record_wins_and_a_hooks_record_wins_a_tie():
    pi3 = ("tflite-runtime", "2.14.0")
    # int8 on a Pi 3: only MobileBERT's record (model-specific); drq: the mode-wide one, for any model.
    assert BUILTIN.refusal(*pi3, "int8", "mobilebert").model == "mobilebert"
    assert BUILTIN.refusal(*pi3, "int8", "minilm-l6") is None
    assert BUILTIN.refusal(*pi3, "drq", "minilm-l6").model == ANY
    assert BUILTIN.refusal(*pi3, "drq").instead == "drq-compat"  # no model given: mode-wide records only
    mine = Expected("refusal", "my board's build refuses drq (test)", mode="drq", runtime=pi3[0],
                    runtime_version=pi3[1])
    ours = expected.Outcomes(expected.check_added([mine]))
    assert ours.refusal(*pi3, "drq", "minilm-l6") is mine  # as specific as the built-in: the hook's wins
    assert ours.refusal(*pi3, "int8", "mobilebert").crash  # a more specific built-in still wins
    assert ours.added == (mine,) and BUILTIN.added == ()  # a value per session: the built-ins unchanged
    assert "FULLY_CONNECTED v12" in expected.refusal(*pi3, "drq", "minilm-l6").reason  # module level: built-ins


def test_a_record_may_name_a_conftest_source_by_its_plain_name():
    """A conftest's source 'mine' is 'dir:/models/mine' in the bench's cases: a record saying model='mine' matches
    it, in the run-time lookups as in the collection-time ones."""
    spec = "dir:/models/mine"
    recs = expected.check_added([
        Expected("refusal", "my board refuses it (test)", model="mine", mode="drq", runtime="rt"),
        Expected("loss", "mine loses 6 points (test)", ("test_drop_vs_fp32",), model="mine", mode="int8")])
    ours = expected.Outcomes(recs, aliases=((spec, "mine"),))
    assert ours.refusal("rt", "1.0", "drq", spec) is recs[0]
    assert ours.for_test("test_drop_vs_fp32", model=spec, mode="int8") is recs[1]
    assert ours.refusal("rt", "1.0", "drq", "dir:/models/other") is None
    assert expected.Outcomes(recs).refusal("rt", "1.0", "drq", spec) is None  # no alias: the spec alone
    # Named by its plain name, a record is as specific as one naming the spec: it beats a built-in for any model.
    crash = Expected("refusal", "my model crashes the Pi 3 runtime (test)", model="mine", mode="drq",
                     runtime="tflite-runtime", runtime_version="2.14.0", crash=True)
    ours = expected.Outcomes((crash,), aliases=((spec, "mine"),))
    assert ours.refusal("tflite-runtime", "2.14.0", "drq", spec) is crash
    assert ours.refusal("tflite-runtime", "2.14.0", "drq", "minilm-l6").model == ANY  # others: the built-in


def test_only_the_tests_own_assertion_is_the_expected_outcome():
    """The collection-time xfail takes an AssertionError raised in the test function, not one from a bare assert
    deeper down (a bug in the package must stay a failure)."""
    from edgemodels.bench.plugin import _assertion_in

    def _broken_helper():
        assert False, "a bug deep in the package"

    def test_drop_vs_fp32(deep: bool):
        if deep:
            _broken_helper()
        assert 1 == 2, "the measured loss"

    raises = _assertion_in("test_drop_vs_fp32")
    if isinstance(raises, type):
        pytest.skip(f"pytest {pytest.__version__} has no RaisesExc check in xfail: any AssertionError counts")
    for deep, want in ((False, True), (True, False)):
        with pytest.raises(AssertionError) as exc:
            test_drop_vs_fp32(deep)
        assert raises.matches(exc.value) is want


@pytest.mark.parametrize("kwargs, needle", [
    (dict(kind="flaky", reason="r", tests=("test_x",)), "kind 'flaky' is not one of"),
    (dict(kind="loss", reason="r"), "names the test function"),
    (dict(kind="loss", reason="r", tests="test_drop_vs_fp32"), "tuple of test function names"),
    (dict(kind="refusal", reason="r", tests=("test_compat",)), "leave tests empty"),
    (dict(kind="loss", reason="two\nlines", tests=("test_x",)), "one non-empty line"),
    (dict(kind="loss", reason="r", tests=("test_x",), mode=None), "mode must be a string"),
])
def test_malformed_records_are_refused_naming_the_fix(kwargs, needle):
    with pytest.raises(ExpectedError, match=needle):
        Expected(**kwargs)
    with pytest.raises(ExpectedError, match="return edgemodels.study.expected.Expected records"):
        expected.check_added([{"kind": "loss"}])


# -- the built-in records ------------------------------------------------------------------------------------------

def test_builtin_records_are_the_measured_ones():
    for test in ("test_accuracy_floor", "test_drop_vs_fp32"):
        rec = BUILTIN.for_test(test, data="builtin", scale="ci", model="minilm-l6", mode="int8", seq="128")
        assert rec.kind == "loss" and "-15.3 points" in rec.reason and "2026-11-24" in rec.reason
        assert BUILTIN.for_test(test, data="builtin", scale="ci", model="minilm-l6", mode="drq", seq="128") is None
    assert BUILTIN.for_test("test_drop_vs_fp32", data="replab", scale="paper", model="mpnet-base", mode="int8",
                             seq="dynamic").reason.startswith("measured -18.2 points")
    assert BUILTIN.for_test("test_artifact_size", data="builtin", scale="ci", model="minilm-l6", mode="int8") is None
    # Every refusal comes from the modes registry, one record per Refusal, the crash flag carried over.
    from_modes = [(m.name, r) for m in modes.MODES.values() for r in m.refusals]
    got = [r for r in BUILTIN.records if r.kind == "refusal"]
    assert len(got) == len(from_modes) and all(g.reason == r.reason and g.crash == r.crash
                                                for g, (_, r) in zip(got, from_modes))
    assert [(g.model, g.mode) for g in got if g.crash] == [("mobilebert", "int8")]
    # The run-time lookups (the bench session's, an export's) read the same records.
    assert "relative-position" in expected.conversion_failure(suite.Case("mpnet-base", "drq", None)).reason
    assert expected.conversion_failure(suite.Case("mpnet-base", "drq", 128)) is None
    assert "1,140 MB" in BUILTIN.memory_miss("pi3", suite.Case("bert-large", "fp32")).reason
    assert BUILTIN.memory_miss("pi3", suite.Case("mobilebert", "fp32")) is None  # compact: must fit
    assert BUILTIN.memory_miss("pi4", suite.Case("bert-large", "fp32")) is None


def test_marker_reason_is_one_line_and_says_what_to_do_when_it_stops():
    rec = BUILTIN.for_test("test_drop_vs_fp32", data="builtin", scale="ci", model="minilm-l6", mode="int8")
    why = BUILTIN.marker_reason(rec, "test_drop_vs_fp32")
    assert "\n" not in why and "-15.3" in why and "edgemodels/study/expected.py" in why
    assert "model=minilm-l6 mode=int8" in why
    # The record covers two tests: the fix for this one is to drop it from the record, not to delete the record.
    assert "drop test_drop_vs_fp32 from the tests of the record" in why and "remove the record" not in why
    ours = expected.Outcomes(expected.check_added([Expected("loss", "mine (test)", ("test_drop_vs_fp32",), model="m")]))
    mine = ours.marker_reason(ours.added[0], "test_drop_vs_fp32")
    assert "pytest_edgemodels_add_expected_outcomes" in mine and "remove the record" in mine


# -- applied at collection -----------------------------------------------------------------------------------------

_LIST_XFAILS = '''
import pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        for mark in item.iter_markers("xfail"):
            r = mark.kwargs.get("raises")  # AssertionError, or a RaisesExc checking where it was raised
            r = r if isinstance(r, type) else r.expected_exceptions[0]
            print("XFAIL-MARK", item.nodeid.split("::")[-1], mark.kwargs.get("strict"), r.__name__,
                  mark.kwargs["reason"])
'''


def _collect_marks(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    (tmp_path / "list_xfails.py").write_text(_LIST_XFAILS)
    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--collect-only", "-q",
                          "-p", "no:cacheprovider", "-p", "list_xfails", "--device=desktop", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    marks = {}
    for line in out.stdout.splitlines():
        if line.startswith("XFAIL-MARK "):
            _, test, strict, raises, reason = line.split(" ", 4)
            # Strict, except a speed record at the target within timing noise (it says so in its reason).
            assert strict == str(not reason.startswith("expected speed (not strict")) and raises == "AssertionError", line
            marks[test] = reason
    return out, marks


def test_pi3_marks_weight_only_int8_speed_as_not_strict(tmp_path):
    """On a Pi 3, w8 projects at fp32's ~1/s (float kernels): an xfail that a pass does not turn into a failure;
    the known losses stay strict, and only pi3 gets the speed record."""
    out, marks = _collect_marks(tmp_path, "--scale=ci", "--device=pi3")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert sorted(marks) == ["test_accuracy_floor[minilm-l6-int8-128]", "test_drop_vs_fp32[minilm-l6-int8-128]",
                             "test_strict_ratio", "test_throughput[minilm-l6-pruned-w8-128]",
                             "test_throughput[minilm-l6-w8-128]"]
    assert marks["test_throughput[minilm-l6-w8-128]"].startswith("expected speed (not strict")
    assert marks["test_throughput[minilm-l6-pruned-w8-128]"].startswith("expected speed (not strict")
    with pytest.raises(ExpectedError, match="only a 'speed' record"):
        Expected("loss", "r", ("test_drop_vs_fp32",), strict=False)


def test_ci_collection_marks_exactly_the_known_losses(tmp_path):
    out, marks = _collect_marks(tmp_path, "--scale=ci")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert sorted(marks) == ["test_accuracy_floor[minilm-l6-int8-128]", "test_drop_vs_fp32[minilm-l6-int8-128]",
                             "test_strict_ratio"]
    assert all("-15.3 points" in r for t, r in marks.items() if "int8" in t)
    assert "5.8 points behind" in marks["test_strict_ratio"]


def test_a_hook_record_that_is_not_an_expected_is_a_usage_error(tmp_path):
    (tmp_path / "bad_hook.py").write_text("def pytest_edgemodels_add_expected_outcomes():\n"
                                          "    return [('loss', 'tiny-bert')]\n")
    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--collect-only", "-q",
                          "-p", "no:cacheprovider", "-p", "bad_hook", "--device=desktop", "--scale=smoke"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:] + out.stderr[-2000:]
    assert "return edgemodels.study.expected.Expected records" in out.stderr and "Traceback" not in out.stderr


_HOOK = '''"""A user's expected outcomes, added through the hook, on real smoke-scale measurements."""
from types import MappingProxyType

from edgemodels.study import criteria
from edgemodels.study.expected import Expected

criteria.MODE_DROP_TOLERANCE_PTS = MappingProxyType(  # drq must beat fp32 by 100 points: the assertion fails
    {**criteria.MODE_DROP_TOLERANCE_PTS, "drq": -100.0})


def pytest_edgemodels_add_expected_outcomes():
    return [
        # Expected and happening: reported xfailed, quoting the reason and this run's figure.
        Expected("loss", "drq loses to fp32 by the stricter bar (test record)", tests=("test_drop_vs_fp32",),
                 scale="smoke", model="tiny-bert", mode="drq", seq="64"),
        # Expected but not happening (the size test passes): XPASS(strict), a failure.
        Expected("strict-miss", "said to miss (test record)", tests=("test_artifact_size",), scale="smoke",
                 model="tiny-bert", mode="fp32"),
    ]
'''


_SPEED_HOOK = '''from edgemodels.study.expected import Expected


def pytest_edgemodels_add_expected_outcomes():  # non-strict speed records: one floor out of reach, one within
    return [Expected("speed", "far below its floor (test record)", ("test_throughput",), model="tiny-bert",
                     mode="drq", strict=False, floor=1e12),
            Expected("speed", "at the target within noise (test record)", ("test_throughput",), model="tiny-bert",
                     mode="fp32", strict=False, floor=1.0)]
'''


@pytest.mark.slow
def test_a_non_strict_speed_record_still_fails_below_its_floor(tmp_path, smoke_cache):  # noqa: F811
    """A speed record at the target within noise is non-strict (a pass is no failure), but it cannot make the test
    unable to fail: below the record's floor the throughput test fails."""
    (tmp_path / "my_speed.py").write_text(_SPEED_HOOK)
    junit = tmp_path / "junit.xml"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), "-q", "-p", "no:cacheprovider", "-p", "my_speed",
         "--device=desktop", "--scale=smoke", "--modes=fp32,drq", "-k", "test_throughput and -64",
         f"--edge-cache={smoke_cache}", f"--report-dir={tmp_path / 'report'}", f"--junitxml={junit}"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-4000:] + out.stderr[-2000:]
    got = _outcomes(junit)
    kind, msg = got["test_throughput[tiny-bert-drq-64]"]
    assert kind == "failed" and "below the floor 1e+12/s of its speed record" in msg, (kind, msg)
    assert got["test_throughput[tiny-bert-fp32-64]"][0] == "passed", got  # an XPASS, not strict: no failure


@pytest.mark.slow
def test_a_conftest_record_xfails_its_test_and_one_that_passes_fails_the_run(tmp_path, smoke_cache):  # noqa: F811
    """The hook's records are strict xfail markers on the smoke bench: the failing assertion is reported xfailed
    (quoting the record and this run's figure); the record on a passing test makes the run fail (XPASS strict)."""
    (tmp_path / "my_outcomes.py").write_text(_HOOK)
    junit = tmp_path / "junit.xml"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), "-q", "-rxX", "-p", "no:cacheprovider",
         "-p", "my_outcomes", "--device=desktop", "--scale=smoke", "--modes=fp32,drq", "--benchmark-disable",
         "-k", "drop_vs_fp32 or artifact_size", f"--edge-cache={smoke_cache}",
         f"--report-dir={tmp_path / 'report'}", f"--baseline-dir={tmp_path / 'baselines'}",
         f"--junitxml={junit}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-4000:] + out.stderr[-2000:]
    got = _outcomes(junit)
    kind, msg = got["test_drop_vs_fp32[tiny-bert-drq-64]"]
    assert kind == "skipped" and "expected loss: drq loses to fp32 by the stricter bar" in msg, (kind, msg)
    assert "this run: tiny-bert-drq-64:" in msg and "points below tiny-bert-fp32-64" in msg, msg
    kind, msg = got["test_artifact_size[tiny-bert-fp32-64]"]
    assert kind == "failed" and "XPASS(strict)" in msg and "remove the record" in msg, (kind, msg)
    assert got["test_artifact_size[tiny-bert-drq-64]"][0] == "passed"  # the records match nothing else
    assert "XFAIL" in out.stdout and "pytest_edgemodels_add_expected_outcomes" in out.stdout
