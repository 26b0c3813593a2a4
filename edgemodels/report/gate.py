"""Baselines and the regression gate: a run's figures against the device's committed (or saved) baseline.

Baselines live in <baseline-dir>/<data kind>/<scale>/<device>.json. A gated metric fails when worse than its
threshold (edgemodels.study.criteria.Thresholds), when the baseline holds it and this run did not measure it, and when
this run measured it for a row the baseline does not know: the gate cannot pass on nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from edgemodels.errors import EdgeModelsError
from edgemodels.report.rows import Report, ReportError, check_speed_label, dumps, seq_key
from edgemodels.report.tables import fmt_sig
from edgemodels.store.files import atomic_write_text
from edgemodels.study.criteria import Thresholds

_BASELINE_SCHEMA = 2  # 2: accuracy per machine id (accuracy_by_machine); schema-1 files still read

GATE_METRICS: tuple[str, ...] = ("accuracy", "size", "throughput")
"""What --baseline-compare can gate on."""


class BaselineMissing(EdgeModelsError):
    """--baseline-compare found no baseline file: comparing against nothing must not pass."""


@dataclass(frozen=True)
class Regression:
    """A gated metric that got worse, or that cannot be compared (baseline or measurement missing)."""

    model: str
    mode: str
    seq: str
    metric: str
    baseline: float | None  # None: this run measured it, the baseline holds no value for it
    current: float | None  # None: the baseline holds it, this run did not measure it
    limit: str

    def __str__(self) -> str:
        where = f"{self.model}/{self.mode} seq={self.seq}"
        if self.current is None:
            return (f"{where}: {self.metric} is in the baseline ({_fmt_metric(self.metric, self.baseline)}) "
                    "but this run did not measure it (a skipped, deselected or failed test)")
        if self.baseline is None:
            why = "" if self.limit == "no baseline" else f" ({self.limit})"
            return (f"{where}: {self.metric} {_fmt_metric(self.metric, self.current)} has no baseline to compare "
                    f"with{why}; re-save the baseline (--baseline-save) or leave the metric out of "
                    "--baseline-metrics")
        if self.metric == "accuracy":
            delta = f"{(self.current - self.baseline) * 100:+.2f} pt"
            vals = f"{self.baseline:.4f} -> {self.current:.4f}"
        elif self.metric == "size":
            delta = f"{_rel(self.current, self.baseline):+.2%}"
            vals = f"{self.baseline / 1e6:.3f} MB -> {self.current / 1e6:.3f} MB"
        else:
            delta = f"{_rel(self.current, self.baseline):+.2%}"
            vals = f"{fmt_sig(self.baseline)} -> {fmt_sig(self.current)} inf/s"
        return f"{where}: {self.metric} {vals} ({delta}; limit {self.limit})"


def _fmt_metric(metric: str, v: float | None) -> str:
    if metric == "accuracy":
        return f"{v:.4f}"
    return f"{v / 1e6:.3f} MB" if metric == "size" else f"{fmt_sig(v)} inf/s"


def _rel(current: float, baseline: float) -> float:
    return (current - baseline) / baseline if baseline else math.inf


def baseline_path(baseline_dir: Path, device: str) -> Path:
    return Path(baseline_dir) / f"{device}.json"


def _row_id(model: str, mode: str, seq: str) -> tuple[str, str, str]:
    return (model, mode, str(seq))


def _load_baseline(path: Path, device: str) -> dict[tuple[str, str, str], dict]:
    """Parse a baseline file; a broken one is an error naming the file and the fix, not a pass."""
    fix = f"fix or delete {path} and re-create it with save_baseline on the reference machine"
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"baseline {path} is not valid JSON ({e}); {fix}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ReportError(f"baseline {path}: expected an object with a 'rows' list; {fix}")
    if doc.get("device") not in (None, device):
        raise ReportError(f"baseline {path} is for device {doc.get('device')!r}, not {device!r}; {fix}")
    out: dict[tuple[str, str, str], dict] = {}
    # Schema 1 kept one accuracy per row, saved in one run: a row without a throughput (no machine_id)
    # was measured on the machine its file's other rows name.
    ids = [r.get("machine_id") for r in doc["rows"] if isinstance(r, dict) and r.get("machine_id")]
    file_machine = max(set(ids), key=ids.count) if ids else "unknown"
    for i, r in enumerate(doc["rows"]):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("model", "mode", "seq")):
            raise ReportError(f"baseline {path}: rows[{i}] lacks string fields model/mode/seq; {fix}")
        if "accuracy_by_machine" not in r and r.get("accuracy") is not None:
            r = {**r, "accuracy_by_machine": {r.get("machine_id") or file_machine: r["accuracy"]}}
        out[_row_id(r["model"], r["mode"], r["seq"])] = r
    return out


def baseline_accuracies(row: dict) -> dict[str, float]:
    """A baseline row's accuracy per machine id.

    Why per machine: training is bit-identical across runs only on the same CPU; another CPU's float
    kernels train another model (docs/measurements.md#cross-cpu-accuracy). Rows written before this (one
    "accuracy") count as their machine_id's.
    """
    if isinstance(row.get("accuracy_by_machine"), dict):
        return {str(k): float(v) for k, v in row["accuracy_by_machine"].items() if v is not None}
    if row.get("accuracy") is not None:
        return {str(row.get("machine_id") or "unknown"): float(row["accuracy"])}
    return {}


def save_baseline(report: Report, baseline_dir: Path, machine_id: str) -> Path:
    """Record this run's figures as the device's baseline, merged into the existing file.

    Rows not in this run are kept; a field this run did not measure keeps its old value (the
    throughput together with its method and machine_id, so a figure never gets another host's id).
    """
    path = baseline_path(baseline_dir, report.device)
    old = _load_baseline(path, report.device) if path.exists() else {}
    merged = dict(old)
    for r in report.rows():
        check_speed_label(r)
        prev = old.get(_row_id(r.model, r.mode, r.seq), {})
        accs = baseline_accuracies(prev)
        if r.accuracy is not None:
            accs[machine_id] = r.accuracy
        entry = {
            "model": r.model, "mode": r.mode, "seq": r.seq,
            "accuracy_by_machine": dict(sorted(accs.items())) or None,
            "size_bytes": r.size_bytes if r.size_bytes is not None else prev.get("size_bytes"),
        }
        if r.inferences_per_s is not None:
            entry.update(inferences_per_s=r.inferences_per_s, method=r.method, machine_id=machine_id)
        else:
            entry.update(inferences_per_s=prev.get("inferences_per_s"), method=prev.get("method"),
                         machine_id=prev.get("machine_id"))
        if r.throughput_gate is not None:  # the gate's digest: what a later run's throughput is decided against
            entry.update(throughput_gate=r.throughput_gate, throughput_gate_machine_id=gate_machine_id(report.machine))
        elif prev.get("throughput_gate") is not None:
            entry.update(throughput_gate=prev["throughput_gate"],
                         throughput_gate_machine_id=prev.get("throughput_gate_machine_id"))
        if all(entry[k] is None for k in ("accuracy_by_machine", "size_bytes", "inferences_per_s")):
            continue  # nothing measured for this row: do not record an empty baseline
        merged[_row_id(r.model, r.mode, r.seq)] = entry
    doc = {
        "schema": _BASELINE_SCHEMA,
        "device": report.device,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": [merged[k] for k in sorted(merged, key=lambda k: (k[0], k[1], seq_key(k[2])))],
    }
    atomic_write_text(path, dumps(doc))
    return path


def check_gate_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    """The metrics to gate on, validated: a misspelt name must not switch its gate off."""
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in GATE_METRICS]
    if bad or not metrics:
        raise ReportError(f"--baseline-metrics: {', '.join(bad) or '(empty)'} not a gated metric; "
                         f"valid: {', '.join(GATE_METRICS)} (comma-separated)")
    return metrics


def require_baseline(baseline_dir: Path, device: str) -> Path:
    """The baseline file --baseline-compare will read; missing is an error naming the path and the fix."""
    path = baseline_path(baseline_dir, device)
    if not path.is_file():
        raise BaselineMissing(
            f"--baseline-compare: no baseline for device {device!r} at {path}; create it on the reference "
            "machine with --baseline-save (same --device, --data and --scale) and commit it, or point "
            "--baseline-dir at the directory that holds it")
    return path


def compare_baseline(report: Report, baseline_dir: Path | None, machine_id: str,
                     thresholds: Thresholds = Thresholds(),
                     metrics: Iterable[str] = GATE_METRICS,
                     pass_inconclusive: bool = False, base: dict | None = None) -> tuple[list[Regression], list[str]]:
    """Regressions of the gated metrics, plus notes on everything else that could not be compared.

    Gated metrics fail when worse than the thresholds, when measured for a row the baseline holds no
    value for, and when the baseline holds a value this run did not measure. Throughput is the speed gate's
    verdict each row carries (decided while it was timed, edgemodels/bench/metrics/speed.py): a regression fails,
    and so does an inconclusive one unless pass_inconclusive. Metrics outside `metrics` and baseline rows this run
    did not touch (filtered out) are notes. No baseline file: BaselineMissing. base: the baseline's rows as
    _load_baseline gives them (a history baseline, history_baseline()), instead of the device's file.
    """
    gated = set(check_gate_metrics(metrics))
    if base is None:
        base = _load_baseline(require_baseline(baseline_dir, report.device), report.device)
    regs: list[Regression] = []
    notes: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    cross: list[str] = []  # rows whose accuracy was recorded only on other machines
    eps = 1e-9  # a value exactly on the limit passes despite float rounding
    for r in report.rows():
        rid = _row_id(r.model, r.mode, r.seq)
        seen.add(rid)
        b = base.get(rid) or {}
        accs = baseline_accuracies(b)
        b_acc = accs.get(machine_id, next(iter(accs.values()), None))
        b_size, b_ips = b.get("size_bytes"), b.get("inferences_per_s")
        if accs and r.accuracy is not None and machine_id not in accs:
            lowest = min(accs.values())
            cross.append(r.key)
            if r.accuracy < lowest - thresholds.cross_machine_accuracy_pts / 100 - eps:
                regs.append(Regression(r.model, r.mode, r.seq, "accuracy", lowest, r.accuracy,
                                       f"-{thresholds.cross_machine_accuracy_pts:g} pt across machines: recorded "
                                       f"only on {', '.join(sorted(accs))}; this run is on {machine_id}"))
        elif b_acc is not None and r.accuracy is not None:
            if r.accuracy < b_acc - thresholds.accuracy_drop_pts / 100 - eps:
                regs.append(Regression(r.model, r.mode, r.seq, "accuracy", b_acc, r.accuracy,
                                       f"-{thresholds.accuracy_drop_pts:g} pt"))
        if b_size is not None and r.size_bytes is not None:
            if r.size_bytes > b_size * (1 + thresholds.size_increase) + eps:
                regs.append(Regression(r.model, r.mode, r.seq, "size", float(b_size),
                                       float(r.size_bytes), f"+{thresholds.size_increase:.1%}"))
        verdict = r.throughput_decision or {}
        if verdict.get("decision") in ("regression", "incomparable") or (verdict.get("decision") == "inconclusive"
                                                                         and not pass_inconclusive):
            regs.append(Regression(r.model, r.mode, r.seq, "throughput", b_ips, r.inferences_per_s,
                                   _gate_limit(verdict)))
        elif verdict.get("decision") == "inconclusive":
            notes.append(f"{r.key}: throughput inconclusive, passed by --throughput-inconclusive=pass: "
                         f"{_gate_limit(verdict)}")
        b_gate = (b_ips or 0.0) if b.get("throughput_gate") is not None else None  # a digest to decide against
        c_gate = (r.inferences_per_s or 0.0) if r.throughput_gate is not None else None
        for name, bv, cv in (("accuracy", b_acc, r.accuracy), ("size", b_size, r.size_bytes),
                             ("throughput", b_gate, c_gate)):
            if bv is not None and cv is None:
                regs.append(Regression(r.model, r.mode, r.seq, name, float(bv), None, "not measured"))
            elif bv is None and cv is not None:
                regs.append(Regression(r.model, r.mode, r.seq, name, None, float(cv), "no baseline"))
    if cross and "accuracy" in gated:
        notes.append(f"accuracy of {len(cross)} row(s) (e.g. {cross[0]}) has no baseline from this machine "
                     f"({machine_id}; training is bit-identical only on the same CPU): compared with the "
                     f"lowest recorded machine at -{thresholds.cross_machine_accuracy_pts:g} pt instead of "
                     f"-{thresholds.accuracy_drop_pts:g} pt; --baseline-save here to gate it exactly")
    notes += [f"not gated (--baseline-metrics): {g}" for g in regs if g.metric not in gated]
    regs = [g for g in regs if g.metric in gated]
    missing = sorted(set(base) - seen)
    if missing:
        notes.append(f"{len(missing)} baseline row(s) not run this session (e.g. "
                     f"{missing[0][0]}/{missing[0][1]} seq={missing[0][2]})")
    return regs, notes


def _gate_limit(verdict: dict) -> str:
    """The speed gate's verdict as a Regression's limit: decision, ratio and its interval, the limit, the basis."""
    if verdict["decision"] == "incomparable":
        return (f"incomparable with the baseline: {verdict['basis']}; re-save the baseline (--baseline-save) with "
                "this version")
    return (f"{verdict['decision']}: relative speed {verdict['ratio']:.3f}x of the baseline, {verdict['confidence']:.0%} "
            f"interval [{verdict['low']:.3f}, {verdict['high']:.3f}] vs limit {verdict['limit']:.3f} ({verdict['basis']})")


def gate_machine_id(machine: dict) -> str:
    """Whose speed a row's gate digest is: this host's machine id, or a --remote device's own (its board, CPU, cores,
    arch): a Pi's digests are compared as the same machine only with that Pi's."""
    remote = machine.get("remote")
    if not remote:
        return machine["machine_id"]
    import hashlib

    what = "|".join(str(remote.get(k)) for k in ("board", "cpu_model", "cores", "arch"))
    return f"remote-{remote.get('arch')}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"


def load_rows(path: Path, device: str) -> dict[tuple[str, str, str], dict]:
    """The baseline file's rows by (model, mode, seq)."""
    return _load_baseline(path, device)


def format_regressions(regs: list[Regression]) -> str:
    if not regs:
        return "No regressions against the baseline."
    lines = [f"{len(regs)} regression(s) against the baseline:"]
    lines += [f"  - {r}" for r in regs]
    return "\n".join(lines)



def history_baseline(url, machine_id: str, device: str, scale: str | None, data_kind: str | None,
                     n: int, figures_id: str | None = None) -> tuple[dict, str]:
    """(the last `n` recorded runs of this device, scale and data on this machine, as baseline rows; what they are).
    Each row's value is the median of its runs' (accuracy per this machine, size, inferences/s), and its gate digest
    is the runs' digests pooled (speedgate.stats.pool: the spread between them widens the interval).
    figures_id: whose speed the run's digests are (gate_machine_id; a --remote board's own): only runs timed on that
    machine are pooled, and the pool is labelled with it, so a board is compared as the same machine only with itself."""
    import statistics

    from edgemodels.run.speedgate import Digest, stats
    from edgemodels.store.history import baseline_from_history

    figures_id = figures_id or machine_id
    accept = None if figures_id == machine_id else (
        lambda m: gate_machine_id({"machine_id": machine_id, **m}) == figures_id)
    hb = baseline_from_history(url, machine_id, device, scale, data_kind, n, accept=accept)
    if not hb.runs:
        raise BaselineMissing(f"--baseline-compare history: no recorded run of --device={device} --scale={scale} "
                              f"(data {data_kind}) on this machine ({machine_id}) in the history; run the bench once "
                              "(every run is recorded), or compare with the committed baselines (--baseline-compare)")
    rows = {}
    for key, br in hb.rows.items():
        def med(metric):
            vals = [v for v in br.values.get(metric, []) if v is not None]
            return statistics.median(vals) if vals else None

        entry = {"model": key[0], "mode": key[1], "seq": key[2], "size_bytes": med("size_bytes"),
                 "inferences_per_s": med("inferences_per_s"),
                 "accuracy_by_machine": {machine_id: med("accuracy")} if med("accuracy") is not None else None}
        if br.digests:
            pooled = stats.pool([Digest.from_json(d, where=f"history {key}") for d in br.digests])
            entry.update(throughput_gate=pooled.to_json(), throughput_gate_machine_id=figures_id)
        rows[_row_id(*key)] = entry
    return rows, f"history: {hb.describe()}"


def decide(metric: str, base, cur, thresholds: Thresholds = Thresholds()):
    """`edgemodels compare` and `history`'s decision for one row and metric (store.history.compare.Side on each
    side): the gate's own rules, with throughput decided by the speed gate on the sides' pooled digests."""
    import statistics

    from edgemodels.run import speedgate
    from edgemodels.store.history.compare import Decision

    if not base.values or not cur.values:
        return None
    b, c = statistics.median(base.values), statistics.median(cur.values)
    eps = 1e-9
    if metric == "accuracy":
        pts = thresholds.accuracy_drop_pts if base.machine_id == cur.machine_id else thresholds.cross_machine_accuracy_pts
        worse = c < b - pts / 100 - eps
        return Decision("regression" if worse else "pass", f"-{pts:g} pt"
                        + ("" if base.machine_id == cur.machine_id else " across machines"))
    if metric == "size_bytes":
        worse = c > b * (1 + thresholds.size_increase) + eps
        return Decision("regression" if worse else "pass", f"+{thresholds.size_increase:.0%}")
    if metric != "inferences_per_s":
        return None
    if not base.digests or not cur.digests:
        return Decision("not compared", "no speed gate digest on both sides (recorded before the gate existed)")
    try:
        bd = speedgate.stats.pool([speedgate.Digest.from_json(d) for d in base.digests])
        cd = speedgate.stats.pool([speedgate.Digest.from_json(d) for d in cur.digests])
        v = speedgate.compare(cd, bd, **speedgate.compare_args(
            threshold=thresholds.throughput_drop, same_machine=base.machine_id == cur.machine_id, mode=cur.mode,
            dynamic=cur.seq == "dynamic"))
    except (speedgate.Incomparable, speedgate.DigestError) as exc:
        return Decision("not compared", str(exc))
    return Decision(v.decision, v.describe())
