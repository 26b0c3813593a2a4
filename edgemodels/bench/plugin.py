"""The pytest plugin behind `pytest bench/ --device=X`: options, hooks, the `bench` fixture, expected-outcome marks.

Enabled by the repository's root conftest.py (`pytest_plugins = ["edgemodels.bench.plugin"]`). The session is made
at configure time (edgemodels/bench/configure.py), the report written and gated at the end
(edgemodels/bench/reporting.py); the suites in bench/ ask the `bench` fixture and the metric modules.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from edgemodels import options
from edgemodels.bench import configure, reporting
from edgemodels.bench.outcome import one_line
from edgemodels.bench.session import BenchSession
from edgemodels.errors import EdgeModelsError
from edgemodels.study.matrix import Case

SESSION_KEY = pytest.StashKey[BenchSession]()
_DEFERRED_ERROR = pytest.StashKey[pytest.UsageError]()

_MARKERS = (
    "accuracy: accuracy of .tflite artifacts through the interpreter",
    "size: artifact sizes and size ratios",
    "throughput: inferences/s timed on the device side, against the device target",
    "memory: peak RSS of a fresh process, against the device's memory budget",
    "compat: loads and matches reference outputs on the device's runtime",
    "emulation: runs the device's ARM runtime under QEMU user-mode emulation",
    "paper: the paper's claims (size ratio, accuracy drop, speed)",
    "slow: takes more than ~15 s",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("edgemodels", "edgemodels bench suite")
    options.add_to_pytest(g, "--device", "--data", "--cache", "--scale", "--runtime", "--threads", "--models",
                          "--modes", "--tokenizer", "--labels", "--max-examples", "--history", *options.REMOTE[:-1])
    g.addoption("--artifacts", default=None, type=Path, metavar="DIR",
                help="run from an export (python -m edgemodels export --device D DIR): no build, no tokenizer, "
                     "no TensorFlow; on the device itself every figure is measured")
    reporting.add_options(g)


def pytest_addhooks(pluginmanager) -> None:
    """Hooks a user's conftest.py implements to add device profiles, model sources and expected outcomes."""
    from edgemodels.bench import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_configure(config: pytest.Config) -> None:
    """Bench options are checked only for runs that collect bench tests: `pytest tests/` with a bad $EDGEMODELS_DATA
    must still run the unit tests; a bench run fails at start-up, before collection."""
    for m in _MARKERS:
        config.addinivalue_line("markers", m)
    try:
        try:
            config.stash[SESSION_KEY] = configure.session(config)
            reporting.check_options(config)
        except EdgeModelsError as exc:
            raise pytest.UsageError(str(exc)) from None
    except pytest.UsageError as exc:
        if _bench_requested(config):
            raise
        config.stash[_DEFERRED_ERROR] = exc  # raised at collection if bench tests turn up


def _bench_requested(config: pytest.Config) -> bool:
    """Whether the command line names the bench folder, a file in it, or a folder containing it."""
    bench_dir = (Path(config.rootpath) / "bench").resolve()
    for arg in config.args:
        p = Path(str(arg).split("::")[0])
        p = (p if p.is_absolute() else Path(config.invocation_params.dir) / p).resolve()
        if p == bench_dir or bench_dir in p.parents or p in bench_dir.parents:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        s = metafunc.config.stash.get(SESSION_KEY, None)  # None: bad options, reported after collection
        cases = s.cases() if s is not None else ()
        wanted = getattr(metafunc.function, "case_filter", None)
        if wanted is not None:
            cases = tuple(c for c in cases if wanted(c))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def case_filter(predicate):
    """Decorator: parametrize a test only over the cases for which predicate(case) is true."""
    def mark(fn):
        fn.case_filter = predicate
        return fn
    return mark


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    err = config.stash.get(_DEFERRED_ERROR, None)
    if err is not None and any({"bench", "case"} & set(getattr(i, "fixturenames", ())) for i in items):
        raise err
    s = config.stash.get(SESSION_KEY, None)
    if s is not None:
        _mark_expected(s, items)


def _mark_expected(s: BenchSession, items: list) -> None:
    """Expected outcomes decidable from the test id (known losses, claim and strict misses, speed records) become
    strict xfail markers, so the bench tests simply assert. Only an assertion of the test function failing is the
    expected outcome (_assertion_in); a pytest.fail or an error stays a failure; a pass is an XPASS(strict) failure
    whose reason says to remove the record. Refusals, memory misses and conversion failures are run-time lookups."""
    from edgemodels import devices

    try:  # the profile's runtime, never the --remote's (not reached at collection)
        profile = devices.get(s.device, s.extra_devices)
    except ValueError:
        profile = None
    for item in items:
        if "bench" not in getattr(item, "fixturenames", ()):
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, compact = params.get("case"), params.get("compact")
        facets = {"data": s.data_kind, "scale": s.scale.name, "device": s.device,
                  "runtime": profile.runtime if profile else None,
                  "runtime_version": profile.runtime_version if profile else None}
        if isinstance(case, Case):
            facets.update(model=case.model, mode=case.quant, seq=case.seq_label)
        elif compact is not None:  # test_compact_vs_large: the compact model's drq at 128 vs the large fp32
            facets.update(model=compact, versus=params.get("large"), mode="drq", seq="128")
        test = getattr(item, "originalname", item.name)
        rec = s.expected.for_test(test, **facets)
        if rec is not None:
            item.add_marker(pytest.mark.xfail(strict=rec.strict, raises=_assertion_in(test),
                                              reason=s.expected.marker_reason(rec, test)))


def _assertion_in(test: str):
    """xfail's `raises` for a collection-time record: an AssertionError raised by the test function itself. A bare
    assert failing deeper (in the package, a fixture) is a bug, not the expected outcome, and stays a failure.
    pytest < 9 has no RaisesExc check in xfail: there any AssertionError counts (docs/reference.md, limitations)."""
    if int(pytest.__version__.split(".")[0]) < 9 or not hasattr(pytest, "RaisesExc"):
        return AssertionError
    return pytest.RaisesExc(AssertionError, check=lambda e: traceback.extract_tb(e.__traceback__)[-1].name == test)


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> BenchSession:
    return request.config.stash[SESSION_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash.get(SESSION_KEY, None)
    if s is None:
        return []
    from edgemodels import devices

    remote = config.getoption("--remote")
    placement = None if remote else devices.place(s.device, extra=s.extra_devices)
    off = placement is not None and not placement.on_device
    how = f"from {remote}" if remote else placement.method
    lines = [f"edgemodels: device={s.device} ({devices.get(s.device, s.extra_devices).title}); figures {how}"
             f"{' (off the device: throughput projected, memory and runtime emulated)' if off else ''}; "
             f"scale={s.scale.name}; data={s.data_spec}; {s.source.header()}"]
    if off:
        shown = "labelled HOST" if config.option.verbose > 0 else "hidden (-v shows it)"
        lines.append(f"edgemodels: pytest-benchmark's table times this host, not {s.device}: {shown}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Bench reasons on one line: a runtime's multi-line error ("...\\nRegistration failed.") broke `-ra`."""
    rep = yield
    if "bench" not in getattr(item, "fixturenames", ()):
        return rep
    if getattr(rep, "wasxfail", None):
        exc = call.excinfo.value if call.excinfo is not None else None
        if isinstance(exc, AssertionError):  # a collection-time record (_mark_expected): quote this run's figures
            rep.wasxfail = f"{rep.wasxfail}; this run: {str(exc).splitlines()[0] if str(exc) else 'assert failed'}"
        rep.wasxfail = one_line(rep.wasxfail)
    if rep.skipped and isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        path, lineno, reason = rep.longrepr
        rep.longrepr = (path, lineno, one_line(reason))
    crash = getattr(rep.longrepr, "reprcrash", None)
    if rep.failed and crash is not None and isinstance(getattr(crash, "message", None), str):
        crash.message = one_line(crash.message)  # the summary line only; the traceback keeps the original
    return rep


def pytest_sessionstart(session: pytest.Session) -> None:
    """Reach a --remote device and refuse a gate that would compare against nothing, before any build."""
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    if session.config.getoption("--remote") and not session.config.option.collectonly:
        s.side  # reach the remote and check it against --device now, not after building every artifact
    reporting.session_start(session.config, s)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None or hasattr(session.config, "workerinput"):
        return
    try:
        reporting.session_finish(session, s)
    finally:
        if "side" in s.__dict__:
            s.close()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    s = config.stash.get(SESSION_KEY, None)
    if s is not None:
        reporting.terminal_summary(terminalreporter, s)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks, group_by):
    s = config.stash.get(SESSION_KEY, None)
    return None if s is None else reporting.benchmark_groups(config, s, benchmarks, group_by)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    s = config.stash.get(SESSION_KEY, None)
    if s is not None:
        reporting.label_benchmark_json(config, s, output_json)
