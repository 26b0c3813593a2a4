"""The end of a bench run: the report written (report.json, report.png, pareto.png), the claims, the regression
gate against the device's baseline, the terminal summary, and pytest-benchmark's table labelled for what it times.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from edgemodels.report import gate, tables
from edgemodels.report.claims import speed as speed_claim
from edgemodels.options import fraction as _fraction
from edgemodels.report.rows import ReportDirError
from edgemodels.study.criteria import Thresholds

BASELINE_DIR = Path("bench") / "baselines"
HISTORY_RUNS = 5
"""--baseline-compare=history: how many of the last recorded runs on this machine the baseline pools."""


def add_options(g) -> None:
    g.addoption("--report-dir", default=Path("bench-report"), type=Path, metavar="DIR",
                help="where report.json, report.png and pareto.png go (default bench-report/)")
    g.addoption("--baseline-dir", default=None, type=Path, metavar="DIR",
                help="per-device baselines directory (default bench/baselines under the rootdir)")
    g.addoption("--baseline-compare", nargs="?", const="file", default=None, type=_baseline_source,
                metavar="history[:N]",
                help="fail on regressions vs the device's baseline file (accuracy -0.5 pt, size +2 %%, throughput by "
                     "the speed gate's interval); =history:N compares with the last N recorded runs on this machine "
                     "instead (default N 5; --history names the database)")
    g.addoption("--baseline-metrics", default="accuracy,size,throughput", metavar="A,B",
                help="metrics --baseline-compare gates on (default all three)")
    g.addoption("--baseline-save", action="store_true", help="write this run's results as the device's baseline")
    g.addoption("--throughput-threshold", type=_fraction, default=Thresholds().throughput_drop, metavar="F",
                help="the speed gate's threshold: a regression when the 95 %% interval of this run's yardstick-relative "
                     "speed over the baseline's lies wholly below 1 - F (default %(default)s)")
    g.addoption("--throughput-inconclusive", choices=("fail", "pass"), default="fail",
                help="what an inconclusive speed verdict (the interval straddles the limit after the time cap) does "
                     "to the gate (default fail: a slowdown near the threshold is not waved through)")


def _baseline_source(value: str) -> str:
    """--baseline-compare's value: the committed file (no value), or history[:N]."""
    import argparse

    name, _, n = value.partition(":")
    if value == "file" or (name == "history" and (not n or (n.isdigit() and int(n) >= 1))):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: give no value (the baseline file) or history[:N] (N >= 1), as "
                                     "--baseline-compare=history:5; test paths go before the option")


def gated_metrics(config: pytest.Config) -> tuple[str, ...]:
    return gate.check_gate_metrics(sorted(v.strip() for v in config.getoption("--baseline-metrics").split(",")
                                          if v.strip()))


def check_options(config: pytest.Config) -> None:
    """The gate's options, checked at configure time (a misspelt metric must not switch its gate off)."""
    gated_metrics(config)


def baseline_dir(config: pytest.Config, s) -> Path:
    """Baselines are per data kind and scale; the default is the rootdir's, never the working directory's."""
    named = config.getoption("--baseline-dir")
    root = Path(named) if named is not None else Path(config.rootpath) / BASELINE_DIR
    return root / s.data_kind / s.scale.name


def session_start(config: pytest.Config, s) -> None:
    """Refuse, before hours of building, a baseline gate that would compare against nothing."""
    compare, save = config.getoption("--baseline-compare"), config.getoption("--baseline-save")
    if not (compare or save):
        return
    if getattr(config.option, "dist", "no") != "no" or hasattr(config, "workerinput"):
        raise pytest.UsageError(
            "--baseline-compare/--baseline-save cannot run under pytest-xdist (-n/--dist): each worker holds only "
            "its own tests' report rows and the controller none, so the gate would see nothing; run the bench "
            "without -n")
    if compare:
        from edgemodels.errors import EdgeModelsError

        try:
            if compare.startswith("history"):
                from edgemodels.report.machine import machine_id

                n = int(compare.partition(":")[2] or HISTORY_RUNS)
                s.history_base, s.history_base_what = gate.history_baseline(
                    config.getoption("--history"), machine_id(), s.device, s.scale.name, s.data_kind, n,
                    figures_id=gate.gate_machine_id(s.report.machine))
                rows = s.history_base
            else:
                rows = gate.load_rows(gate.require_baseline(baseline_dir(config, s), s.device), s.device)
            if "throughput" in gated_metrics(config):  # the speed gate decides while it times (it may stop early)
                s.gate_baselines = {rid: (b["throughput_gate"], b.get("throughput_gate_machine_id"))
                                    for rid, b in rows.items() if b.get("throughput_gate") is not None}
        except EdgeModelsError as exc:
            raise pytest.UsageError(str(exc)) from None
    s.gate_threshold = config.getoption("--throughput-threshold")


def _used(s) -> bool:
    return "report" in s.__dict__ and bool(s.report.rows())


def session_finish(session: pytest.Session, s) -> None:
    config = session.config
    compare = config.getoption("--baseline-compare")
    s.regressions, s.baseline_notes, s.baseline_error, s.report_paths = [], [], None, []
    if not _used(s):
        if compare and session.exitstatus == 0 and not config.option.collectonly:  # passed, no row
            s.baseline_error = "--baseline-compare: this run measured nothing, so nothing was compared"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if "side" in s.__dict__:
        locked = s.side.release()
        if locked is not None:
            s.report.machine["lab"] = locked
    claim = speed_claim(s.report.rows(), s.device, s.profile.target_inferences_per_s)
    if claim is not None:
        s.report.add_claim(claim)
    try:
        s.report_paths = s.report.write(config.getoption("--report-dir"))
    except ReportDirError as exc:  # the table is still printed; no file is half-written
        s.report_error = str(exc)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _record_history(config, s, session)
    base_dir = baseline_dir(config, s)
    mid = s.report.machine["machine_id"]
    if compare:
        try:
            s.regressions, s.baseline_notes = gate.compare_baseline(
                s.report, base_dir, mid, metrics=gated_metrics(config),
                pass_inconclusive=config.getoption("--throughput-inconclusive") == "pass",
                base=getattr(s, "history_base", None))
            if getattr(s, "history_base", None) is not None:
                s.baseline_notes.insert(0, f"compared with {s.history_base_what}")
        except (ValueError, gate.BaselineMissing) as exc:  # e.g. deleted or corrupted during the run
            s.baseline_error = str(exc)
        if (s.regressions or s.baseline_error) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if config.getoption("--baseline-save"):
        s.baseline_notes.append(f"baseline saved: {gate.save_baseline(s.report, base_dir, mid)}")


def _record_history(config: pytest.Config, s, session: pytest.Session) -> None:
    """Append this run to the results history (edgemodels/store/history): on by default, never losing a run unsaid."""
    from edgemodels.errors import EdgeModelsError
    from edgemodels.store.history import auto

    opts = {name: config.getoption(name) for name in ("--device", "--scale", "--models", "--modes", "--threads",
                                                       "--runtime", "--max-examples", "--remote", "--artifacts")}
    try:
        s.history_run, s.history_note = auto.record(
            config.getoption("--history"), s.report.to_json(), options={k: v for k, v in opts.items() if v},
            data_fingerprint=s.source.fingerprint)
    except EdgeModelsError as exc:  # the history was named and cannot be written: the run is not recorded
        s.history_run, s.history_note = None, f"history NOT written: {exc}"
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def terminal_summary(tr, s) -> None:
    error = getattr(s, "baseline_error", None)
    if not _used(s):
        if error:
            tr.write_line(f"baseline gate FAILED: {error}", red=True, bold=True)
        return
    tr.section(f"edgemodels report: {s.device} ({s.side.method}; scale {s.scale.name}; data {s.data_spec})")
    tr.write_line(tables.rows_table(s.report.rows()))
    if s.report.claims:
        tr.write_line("")
        tr.write_line("Paper claims")
        tr.write_line(tables.claims_table(s.report.claims))
    if any(r.throughput_gate for r in s.report.rows()):
        tr.write_line("")
        tr.write_line("Throughput gate (yardstick-relative, 1 thread)")
        tr.write_line(tables.gate_table(s.report.rows()))
    if any(r.size_bytes for r in s.report.rows()):
        tr.write_line("")
        tr.write_line("Pareto: bytes against accuracy and speed")
        tr.write_line(tables.pareto_table(s.report.rows()))
    for p in getattr(s, "report_paths", []):
        tr.write_line(f"wrote {p}")
    if getattr(s, "report_error", None):
        tr.write_line(f"report NOT written: {s.report_error}", red=True, bold=True)
    if getattr(s, "history_note", None):
        tr.write_line(s.history_note, red=s.history_run is None and "NOT" in s.history_note)
    for note in getattr(s, "baseline_notes", []):
        tr.write_line(f"baseline: {note}")
    if getattr(s, "regressions", None):
        tr.write_line(gate.format_regressions(s.regressions), red=True, bold=True)
    if error:
        tr.write_line(f"baseline gate FAILED: {error}", red=True, bold=True)


def _on_device(config: pytest.Config, s) -> bool:
    """Whether pytest-benchmark's timings are the device's: this host is the device, or a --remote timed them."""
    if config.getoption("--remote"):
        return True
    from edgemodels import devices

    return devices.place(s.device, extra=s.extra_devices).on_device


def _host_timing_label(s) -> str:
    return (f"HOST timings ({platform.machine() or 'unknown arch'}), NOT {s.device}'s: projected {s.device} figures "
            "in the edgemodels report")


def benchmark_groups(config: pytest.Config, s, benchmarks, group_by):
    """Off the device pytest-benchmark's samples are this host's: hide its table (like --benchmark-quiet), or label
    it (-v). Hidden, not dropped: --benchmark-compare-fail still gates, and --benchmark-json keeps the stats."""
    if _on_device(config, s):
        return None  # pytest-benchmark's own grouping: its figures are the device's
    from pytest_benchmark.plugin import pytest_benchmark_group_stats as default_groups

    groups = default_groups(config=config, benchmarks=benchmarks, group_by=group_by)
    bs = getattr(config, "_benchmarksession", None)
    if config.option.verbose < 1 and bs is not None:
        bs.quiet = True  # what --benchmark-quiet sets: display() skips the table but still checks regressions
    label = _host_timing_label(s)
    return [(f"{label}; {name}" if name else label, group) for name, group in groups]


def label_benchmark_json(config: pytest.Config, s, output_json: dict) -> None:
    """Say in pytest-benchmark's JSON whose timings its stats are; device figures are in each extra_info."""
    from edgemodels import devices

    on_device = _on_device(config, s)
    method = s.side.method if "side" in s.__dict__ else devices.place(s.device, extra=s.extra_devices).method
    output_json["edgemodels"] = {
        "device": s.device, "method": method,
        "stats_are": f"{s.device} timings (measured)" if on_device else _host_timing_label(s),
        "device_figures": "benchmarks[].extra_info: inferences_per_s, p50_ms, p90_ms, p99_ms, method, basis",
    }
