"""The throughput gate (edgemodels.run.speedgate): its interval, its decision, its timing loop on a real interpreter.

The decision's error rates are simulated with the noise measured on this project's 2-core VM
(tests/fixtures/speedgate-noise.json: real per-round relative speeds and the spread between processes, from
scripts/speed-study); the figures are printed and asserted against the targets of issue 25.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgemodels.run import runtime, speedgate
from edgemodels.run.speedgate import (INCONCLUSIVE, PASS, REGRESSION, Digest, DigestError, Estimate, Incomparable,
                                  Settings, compare, decided, gate, stats, timer, yardstick)

NOISE = json.loads((Path(__file__).parent / "fixtures" / "speedgate-noise.json").read_text())


# --- the interval of the median -----------------------------------------------------------------


@pytest.mark.parametrize("n, j", [(6, 1), (10, 2), (30, 10), (100, 40), (101, 41), (1000, 469)])
def test_order_statistic_rank_matches_binomial_tables(n, j):
    # The textbook ranks (e.g. Conover, Practical Nonparametric Statistics: n=10 -> x(2)..x(9), n=100 -> x(40)..x(61)).
    assert stats.order_statistic_rank(n) == j


@pytest.mark.parametrize("n", [6, 7, 10, 31, 100, 1000])
def test_median_interval_equals_scipys_quantile_test(n):
    scipy_stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(n).lognormal(size=n)
    ci = scipy_stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(0.95)
    e = Estimate.of(x)
    assert (e.low, e.high) == (ci.low, ci.high)
    assert e.median == float(np.median(x))


def test_too_few_rounds_have_no_interval():
    e = Estimate.of([1.0, 1.1, 0.9, 1.05, 0.95])  # 5 samples: [min, max] covers the median only 94 % of the time
    assert math.isinf(e.half_width) and e.low == -math.inf
    j = _digest(np.array([1.0, 1.1, 0.9, 1.05, 0.95])).to_json()
    assert j["relative"]["low"] is None and "Infinity" not in json.dumps(j, allow_nan=False)
    assert math.isinf(Digest.from_json(j).relative.half_width)


def _rounds(rng, ratio: float, n: int, run: np.ndarray, process_sd: float) -> np.ndarray:
    """n rounds like a real run on this VM: resampled from a measured run's shape (smoothed by 0.1 %, so no two
    rounds tie), times one process's offset drawn from the measured process-to-process spread."""
    return ratio * math.exp(rng.normal(0.0, process_sd)) * rng.choice(run, size=n) * np.exp(rng.normal(0, 1e-3, n))


def _runs() -> list[np.ndarray]:
    return [np.asarray(r) / np.median(r) for r in NOISE["relative_rounds"]]


@pytest.mark.parametrize("n", [20, 60, 300])
def test_ratio_interval_covers_the_true_ratio(n):
    """Two independent runs of the measured shape: the 95 % interval of their ratio covers the truth >= 93 %."""
    rng = np.random.default_rng(n)
    runs = _runs()
    trials, hits = 2000, 0
    for _ in range(trials):
        a = _rounds(rng, 0.9, n, runs[rng.integers(len(runs))], 0.0)
        b = _rounds(rng, 1.0, n, runs[rng.integers(len(runs))], 0.0)
        _, lo, hi = stats.ratio_interval(Estimate.of(a), Estimate.of(b))
        hits += lo <= 0.9 <= hi  # every measured run is normalised to median 1
    coverage = hits / trials
    print(f"\n  coverage of the ratio interval at n={n}: {coverage:.1%} (nominal 95 %)")
    assert coverage >= 0.93


def test_ratio_interval_known_case():
    cur, base = Estimate(0.9, 0.9 / 1.02, 0.9 * 1.02, 0.0, 50), Estimate(1.0, 1 / 1.03, 1.03, 0.0, 50)
    r, lo, hi = stats.ratio_interval(cur, base)
    assert r == pytest.approx(0.9)
    assert hi == pytest.approx(0.9 * math.exp(math.hypot(math.log(1.02), math.log(1.03))))
    assert lo == pytest.approx(0.9 / math.exp(math.hypot(math.log(1.02), math.log(1.03))))


# --- the decision ------------------------------------------------------------------------------


def _digest(rel: np.ndarray, stopped: str = "target", sha: str = "y" * 64, threads: int = 2) -> Digest:
    return stats.digest(1.0 / rel, np.ones_like(rel), rel, seconds=0.0, threads=threads, stopped=stopped,
                        yardstick_sha256=sha)


def _estimate(median: float, hw: float) -> Estimate:
    return Estimate(median, median / (1 + hw), median * (1 + hw), 0.0, 100)


@pytest.mark.parametrize("current, decision", [(0.95, PASS), (0.85, REGRESSION), (0.90, INCONCLUSIVE),
                                               (0.89, INCONCLUSIVE), (0.8, REGRESSION)])
def test_decision_against_the_limit(current, decision):
    base = _digest(np.array([1.0]))
    base = replace(base, relative=_estimate(1.0, 0.01))
    cur = replace(base, relative=_estimate(current, 0.01))
    v = compare(cur, base, threshold=0.10)
    assert v.decision == decision, v.describe()
    assert v.limit == pytest.approx(0.9) and v.basis == "same machine"


def test_cross_machine_lowers_the_limit_and_says_so():
    base = replace(_digest(np.array([1.0])), relative=_estimate(1.0, 0.01))
    cur = replace(base, relative=_estimate(0.85, 0.01))
    assert compare(cur, base).decision == REGRESSION
    v = compare(cur, base, same_machine=False, cross_machine_spread=0.15)
    assert v.limit == pytest.approx(0.9 * 0.85) and v.decision == PASS
    assert "cross-machine" in v.basis and "15%" in v.basis
    with pytest.raises(ValueError, match="cross_machine_spread"):
        compare(cur, base, same_machine=False)


def test_cross_machine_spread_per_mode_says_what_it_rests_on():
    assert speedgate.cross_machine_spread("drq") == (0.25, "drq's shift between two x86 CPU types, rounded up")
    spread, basis = speedgate.cross_machine_spread("w4")
    assert spread == speedgate.UNMEASURED_SPREAD >= max(speedgate.CROSS_MACHINE_SPREAD.values())
    assert basis == "w4: the float and int8 files' shift between two x86 CPU types, rounded up"


def test_other_yardstick_or_thread_count_is_refused():
    base = _digest(np.array([1.0, 1.1]))
    with pytest.raises(Incomparable, match="another yardstick"):
        compare(replace(base, yardstick_sha256="z" * 64), base)
    with pytest.raises(Incomparable, match="at 2 thread"):
        compare(replace(base, threads=1), base)


def _simulated_gate(rng, ratio: float, baseline: Digest | None, settings: Settings, n_cap: int,
                    process_sd: float, threshold: float = 0.10) -> Digest:
    """The timer's look schedule and stop rule (timer.next_look / stop_reason) on rounds drawn like real ones."""
    runs = _runs()
    x = _rounds(rng, ratio, n_cap, runs[rng.integers(len(runs))], process_sd)
    stop = decided(baseline, threshold=threshold)
    n = settings.min_rounds
    while True:
        d = _digest(x[:n], "")
        why = timer.stop_reason(d, settings, stop, n >= n_cap)
        if why:
            return replace(d, stopped=why)
        n = min(n_cap, timer.next_look(n, settings))


def simulate(process_sd: float, threshold: float = 0.10, slowdown: float = 0.85, trials: int = 1000,
             seed: int = 25, n_cap: int | None = None) -> dict[float, dict[str, int]]:
    """Verdict counts for an unchanged file (1.0) and a slower one, each against a fresh baseline, `trials` times;
    n_cap: the rounds the time cap allows (default: what the CI cap allowed when the noise was measured)."""
    rng = np.random.default_rng(seed)
    settings = timer.settings_for(NOISE["scale"])
    n_cap = n_cap or NOISE["rounds_in_cap"]
    counts = {r: dict.fromkeys((PASS, REGRESSION, INCONCLUSIVE), 0) for r in (1.0, slowdown)}
    for _ in range(trials):
        base = _simulated_gate(rng, 1.0, None, settings, n_cap, process_sd, threshold)
        for ratio in counts:
            cur = _simulated_gate(rng, ratio, base, settings, n_cap, process_sd, threshold)
            counts[ratio][compare(cur, base, threshold=threshold).decision] += 1
    return counts


@pytest.mark.parametrize("noise", ["quiet", "hog", "hog x3"])
def test_false_alarms_at_most_1pct_and_detection_of_15pct_slowdown_at_least_95pct(noise):
    """Baseline, then the same file (a false alarm if 'regression') and one 15 % slower (0.85x inf/s), 1,000 times
    each, with the per-round noise and the process-to-process spread measured on this VM, quiet and with one core
    hogged; 'hog x3' triples that spread, to show the margin (false alarms must still stay <= 1 %)."""
    sd = NOISE["process_sd"][noise.split()[0]] * (3 if noise.endswith("x3") else 1)
    counts = simulate(sd)
    trials = sum(counts[1.0].values())
    false_alarms, detection = counts[1.0][REGRESSION] / trials, counts[0.85][REGRESSION] / trials
    print(f"\n  {noise}: false alarms {false_alarms:.1%} (unchanged: {counts[1.0]}); detection of a 15 % slowdown "
          f"{detection:.1%} ({counts[0.85]}); process-to-process sd {sd:.2%}, {NOISE['rounds_in_cap']} rounds at "
          "the cap")
    assert false_alarms <= 0.01
    if not noise.endswith("x3"):
        assert detection >= 0.95


@pytest.mark.parametrize("threshold, slowdown", [(0.05, 0.925), (0.03, 0.955)])
@pytest.mark.parametrize("noise", ["quiet", "hog"])
def test_smaller_thresholds_are_bounded_by_the_process_spread_not_by_rounds(threshold, slowdown, noise):
    """A smaller --throughput-threshold never raises false alarms, but its detection is bounded by the spread between
    processes (each digest is one process), which more rounds do not shrink: 4x the CI cap's rounds detect no more.
    Printed, the figures docs/gating.md quotes (a slowdown 1.5x the threshold; 400 trials each)."""
    sd = NOISE["process_sd"][noise]
    seen = {}
    for n_cap in (NOISE["rounds_in_cap"], 4 * NOISE["rounds_in_cap"]):
        counts = simulate(sd, threshold, slowdown, trials=400, n_cap=n_cap)
        n = sum(counts[1.0].values())
        seen[n_cap] = (counts[1.0][REGRESSION] / n, counts[slowdown][REGRESSION] / n, counts[slowdown][INCONCLUSIVE] / n)
        print(f"\n  {noise}, threshold {threshold:.0%}, {1 - slowdown:.1%} slower, cap {n_cap} rounds: false alarms "
              f"{seen[n_cap][0]:.1%}, detection {seen[n_cap][1]:.1%}, inconclusive {seen[n_cap][2]:.1%}")
    assert all(fa <= 0.01 for fa, _, _ in seen.values())
    short, long_ = seen.values()
    assert long_[1] < short[1] + 0.05  # more rounds do not buy detection: the floor is between processes
    if noise == "quiet":
        assert short[1] >= 0.95


# --- digests in JSON ----------------------------------------------------------------------------


def test_digest_round_trips_through_json():
    d = _digest(np.linspace(0.9, 1.1, 41) * (1 + 1e-9))
    j = json.loads(json.dumps(d.to_json()))
    back = Digest.from_json(j)
    assert back.to_json() == j and back.relative.median == pytest.approx(d.relative.median, rel=1e-6)
    assert len(d.relative_quantiles) == 21 and d.relative_quantiles[0] == pytest.approx(0.9)


@pytest.mark.parametrize("mutate, field", [
    (lambda j: j.pop("relative"), "digest.relative"),
    (lambda j: j.update(schema=99), "digest.schema"),
    (lambda j: j.pop("yardstick_sha256"), "digest"),
])
def test_malformed_digest_names_the_field(mutate, field):
    j = _digest(np.array([1.0, 1.1])).to_json()
    mutate(j)
    with pytest.raises(DigestError, match=field.replace(".", r"\.")):
        Digest.from_json(j)


# --- the yardstick ------------------------------------------------------------------------------


def test_committed_yardstick_matches_its_pin_and_runs():
    assert yardstick.check() == yardstick.SHA256
    y = yardstick.load(num_threads=1)
    y.run()
    assert y.sha256 == yardstick.SHA256 and y.threads == 1


def test_changed_yardstick_is_refused(tmp_path):
    copy = tmp_path / "yardstick.tflite"
    data = bytearray(yardstick.PATH.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(yardstick.YardstickChanged, match="not the pinned"):
        yardstick.load(num_threads=1, path=copy)


# --- the timing loop on a real interpreter -------------------------------------------------------


def _slowed(run, factor: float):
    """Each inference takes exactly 1/factor of its own time (the rest a busy wait): a known slowdown."""
    def slow():
        t0 = time.perf_counter()
        run()
        end = t0 + (time.perf_counter() - t0) / factor
        while time.perf_counter() < end:
            pass
    return slow


def test_real_interpreter_unchanged_passes_and_injected_slowdown_is_detected():
    yard = yardstick.load(num_threads=1)
    model = runtime.load(yardstick.PATH, num_threads=1)  # a second interpreter: the case's own timing loop
    feeds = model.dummy_feeds()
    run = lambda: model.run(feeds)  # noqa: E731
    settings = Settings(target=0.03, cap_s=2.0)
    baseline, none = gate(run, yard, threads=1, settings=settings)
    assert none is None and baseline.stopped in ("target", "cap") and baseline.rounds >= settings.min_rounds
    assert baseline.relative.median == pytest.approx(1.0, rel=0.1)  # the same file on both sides
    _, same = gate(run, yard, threads=1, settings=settings, baseline=baseline)
    slow_digest, slow = gate(_slowed(run, 0.7), yard, threads=1, settings=settings, baseline=baseline)
    print(f"\n  unchanged: {same.describe()}\n  0.7x: {slow.describe()} in {slow_digest.seconds:.2f} s")
    assert same.decision == PASS
    assert slow.decision == REGRESSION and slow.ratio == pytest.approx(0.7, abs=0.05)
    assert slow_digest.load is not None and slow_digest.load.cores == os.cpu_count()
    with pytest.raises(Incomparable, match="thread"):
        gate(run, yard, threads=2, settings=settings, baseline=baseline)


def test_a_case_slower_than_the_cap_still_gets_min_rounds():
    # CI 2026-12-06: BERT-Large fp32 stopped by the cap at 8 rounds read 1.011 [0.852, 1.201] unchanged: inconclusive.
    settings = Settings(target=0.001, cap_s=0.05, min_rounds=10)
    assert timer.stop_reason(_digest(np.full(8, 1.0)), settings, None, over_cap=True) is None
    assert timer.stop_reason(_digest(np.full(10, 1.0) + np.arange(10) * 0.01), settings, None, over_cap=True) == "cap"
    yard = yardstick.load(num_threads=1)
    d = timer.time_case(_slowed(yard.run, 0.05), yard.run, yardstick_sha256=yard.sha256, threads=1,
                        settings=settings, load=False)
    assert d.rounds == settings.min_rounds and d.stopped == "cap" and d.seconds > settings.cap_s


@pytest.mark.parametrize("budget, rest_s", [((950_000, 1_000_000), 2 * 0.05 * 0.05 / 0.95), ((-1, 1_000_000), 0.0),
                                             ((None, None), 0.0), ((1_000_000, 1_000_000), 0.0)])
def test_the_loop_rests_under_the_kernels_real_time_budget(monkeypatch, budget, rest_s):
    monkeypatch.setattr(timer, "_rt_budget", lambda: budget)
    rest = timer.RtRest(True, every_s=0.05)
    assert rest.rest_s == pytest.approx(rest_s)
    assert timer.RtRest(False, every_s=0.05).rest_s == 0.0  # not at real-time priority: nothing to stay under
    t0 = time.perf_counter()
    rest.between_rounds()  # not yet due
    assert time.perf_counter() - t0 < 0.004
    time.sleep(0.05)
    t0 = time.perf_counter()
    rest.between_rounds()
    assert time.perf_counter() - t0 >= rest_s


def test_the_kernels_real_time_budget_is_read_where_linux_has_one():
    runtime, period = timer._rt_budget()
    if not Path("/proc/sys/kernel/sched_rt_period_us").exists():
        pytest.skip("no /proc/sys/kernel/sched_rt_*: not Linux, or no real-time group scheduling")
    assert period > 0 and (runtime == -1 or 0 < runtime <= period)


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="no SCHED_RR on this system")
def test_realtime_priority_is_restored_or_refused_with_a_reason():
    with timer.realtime_priority() as prio:
        inside = {os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}
    after = {os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}
    assert after == {os.SCHED_OTHER}
    if prio == "realtime":
        assert inside == {os.SCHED_RR}
    else:
        assert prio.startswith("normal (SCHED_RR refused") and inside == {os.SCHED_OTHER}


@pytest.mark.skipif(shutil.which("setpriv") is None or not hasattr(os, "sched_setscheduler") or os.geteuid() != 0,
                    reason="needs root and util-linux's setpriv to start a process without CAP_SYS_NICE")
def test_process_without_the_capability_times_at_normal_priority_and_says_why():
    code = "from edgemodels.run.speedgate import timer\nwith timer.realtime_priority() as p: print(p)"
    out = subprocess.run(["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "normal (SCHED_RR refused: Operation not permitted; needs root or CAP_SYS_NICE)"


def test_load_monitor_leaves_out_this_process():
    mon = timer.LoadMonitor()
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < 0.3:
        pass
    others = mon.window()
    own = (time.process_time() - c0) / (time.perf_counter() - t0)
    assert 0.0 <= others <= mon.cores and others + own <= mon.cores + 0.15
    load = mon.summary(before=None)
    assert load.windows == 1 and load.others_cores == pytest.approx(others, abs=1e-3)


# --- the study script ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["speed-study"])
def test_the_scripts_package_imports_resolve(script):
    """The scripts import lazily, inside the command that needs them: a moved name fails only at the end of a long
    study (speed-study's --out did, after the redesign). Every `from edgemodels... import name` must resolve."""
    import ast
    import importlib
    import importlib.util

    tree = ast.parse((Path(__file__).resolve().parents[1] / "scripts" / script).read_text())
    found = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgemodels"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"scripts/{script}: from {node.module} import {alias.name} does not resolve"
                found += 1
    assert found, f"scripts/{script} imports nothing from edgemodels: this test checks nothing there"


def test_resave_baselines_refuses_what_it_cannot_resave_in_one_line():
    """scripts/resave-baselines re-saves only the devices already committed for a data kind and scale: a call without
    a scale, or for a folder with no baselines, exits 2 saying which folder, before any bench run."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "resave-baselines"
    bare = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "usage: scripts/resave-baselines ci|paper" in bare.stderr, bare.stderr
    none = subprocess.run([str(script), "paper", "csv:/nowhere/tweets.csv"], capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and "no committed baselines in bench/baselines/csv/paper" in none.stderr, none.stderr
    assert "==" not in none.stdout  # no device was run


def test_a_dynamic_length_model_is_gated_on_its_median_length_tweet():
    from edgemodels.run.targets import GateRequest
    from edgemodels.run.worker import median_length_feed

    feeds = [{"input_ids": np.zeros((1, n), np.int32), "attention_mask": np.ones((1, n), np.int32)}
             for n in (40, 12, 33, 57, 21)]
    assert median_length_feed(feeds)["input_ids"].shape == (1, 33)
    assert GateRequest(yardstick.PATH, 1, {}, one_length=True).request()["one_length"] is True


def test_a_dynamic_length_case_has_its_limit_lowered_by_the_spread_between_processes():
    base = _digest(np.linspace(0.99, 1.01, 40))
    cur = _digest(0.85 * np.linspace(0.99, 1.01, 40))
    plain = compare(cur, base, **speedgate.compare_args())
    dynamic = compare(cur, base, **speedgate.compare_args(dynamic=True))
    assert plain.decision == REGRESSION and plain.limit == pytest.approx(0.90)
    assert dynamic.decision == PASS and dynamic.limit == pytest.approx(0.90 * (1 - speedgate.DYNAMIC_PROCESS_SPREAD))
    assert "between processes" in dynamic.basis
    assert compare(_digest(0.7 * np.linspace(0.99, 1.01, 40)), base,
                   **speedgate.compare_args(dynamic=True)).decision == REGRESSION
