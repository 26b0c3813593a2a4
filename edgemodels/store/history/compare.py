"""Two results side by side, metric by metric, with a gate's decision: `edgemodels compare A B` and the history view.

A and B are runs from the history or report.json files; nothing is rerun. The decision is a callable
(`Decide`): the bench gate's own rules (edgemodels.report.gate.decide), the speed gate's for throughput.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from edgemodels.store.history.records import (DECISION_FIELD, HistoryError, RunInfo, _number, _utc,
                                              decision_of, load_report, throughput_digest)

ROW_FIELDS = ("size_bytes", "ratio", "accuracy", "macro_f1", "accuracy_delta_vs_fp32_pts", "inferences_per_s",
              "p50_ms", "p90_ms", "p99_ms", "threads", "peak_rss_bytes", "memory_budget_bytes", "arm_max_abs_diff",
              "arm_accuracy", "x86_accuracy_sample")
"""The report's numeric row fields in its own order; fields it gains later follow, sorted by name."""
ALIASES = {"size": "size_bytes", "throughput": "inferences_per_s", "speed": "inferences_per_s",
           "memory": "peak_rss_bytes", "p50": "p50_ms", "p90": "p90_ms", "p99": "p99_ms", "f1": "macro_f1"}
"""Short names --metric accepts beside the row fields' own."""
GATED = ("accuracy", "size_bytes", "inferences_per_s")
FRACTIONS = frozenset({"accuracy", "macro_f1", "arm_accuracy", "x86_accuracy_sample"})
BYTES = frozenset({"size_bytes", "peak_rss_bytes", "memory_budget_bytes"})
LOWER_IS_BETTER = frozenset({"size_bytes", "peak_rss_bytes", "p50_ms", "p90_ms", "p99_ms", "arm_max_abs_diff"})
MARKS = {"regression": "!", "inconclusive": "?", "not compared": "~"}
"""How a decision shows beside a value in a table (a pass shows nothing)."""
_IDENTITY = frozenset({"model", "mode", "seq", "device", DECISION_FIELD})


# --------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a comparison for one row and metric: a value per run (one for a report, N for a history
    baseline), the throughput digests those runs recorded, and where they were measured."""

    values: tuple[float, ...]
    digests: tuple[dict, ...] = ()
    machine_id: str | None = None
    method: str | None = None
    mode: str | None = None  # the row's quantization mode: across machines, its cross-CPU spread widens the limit
    seq: str | None = None  # "dynamic": the spread between processes widens it too


@dataclass(frozen=True)
class Decision:
    verdict: str
    """pass | regression | inconclusive | not compared"""
    why: str = ""


Decide = Callable[[str, Side, Side], "Decision | None"]
"""(metric, baseline, current) -> a Decision, or None for a metric the gate does not judge."""


def _gate_decide(metric: str, base: Side, cur: Side) -> "Decision | None":
    from edgemodels.report.gate import decide

    return decide(metric, base, cur)


_gate_decide.label = ("the bench gate's rules: accuracy -0.5 pt (-5 pt across machines), size +2 %, throughput by the "
                      "speed gate's interval on the runs' pooled digests (edgemodels/report/gate.py decide)")

DEFAULT_DECIDE: Decide = _gate_decide
"""What `compare` and `history` decide with: the bench gate's rules, throughput by the speed gate on the digests."""


# --------------------------------------------------------------------------------------------------
# What is compared
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """One side of `compare`: a recorded run or a report.json file."""

    label: str
    """How the side is named in the output, e.g. "run 3" or the file path."""
    summary: str
    machine_id: str | None
    method: str | None
    rows: list[dict] = field(default_factory=list)
    figures_machine_id: str | None = None
    """Whose speed its throughput digests are, where not machine_id's (a --remote board's: report.gate_machine_id)."""

    @property
    def figures_id(self) -> str | None:
        return self.figures_machine_id or self.machine_id


def results_of_run(info: RunInfo, rows: list[dict], machine: dict | None = None) -> Results:
    """A recorded run; machine: its recorded machine section, which names a --remote board's figures."""
    return Results(f"run {info.id}", run_summary(info), info.machine_id, info.method, rows,
                   _figures_id({"machine_id": info.machine_id, **(machine or {})}))


def _figures_id(machine: dict) -> str | None:
    """Whose speed the throughput digests are where not this machine_id's: a --remote board's (gate_machine_id)."""
    if not (machine.get("remote") and machine.get("machine_id")):
        return None
    from edgemodels.report.gate import gate_machine_id

    return gate_machine_id(machine)


def results_of_file(path: Path) -> Results:
    doc = load_report(path)
    m = doc.get("machine") or {}
    made = str(doc.get("created") or "?")
    with contextlib.suppress(ValueError):
        made = f"{_utc(datetime.fromisoformat(made)):%Y-%m-%d %H:%M} UTC"
    summary = (f"{doc['device']} {m.get('placement') or ''}, {m.get('scale') or '?'}, {m.get('data') or '?'}, "
               f"{m.get('machine_id') or '?'}, {made}")
    return Results(str(path), summary, m.get("machine_id"), m.get("placement"), doc["rows"], _figures_id(m))


def run_summary(info: RunInfo) -> str:
    return (f"{info.device} {info.method or ''}, {info.scale or '?'}, {info.data_spec or '?'}, "
            f"{info.machine_id or '?'}, {info.created:%Y-%m-%d %H:%M} UTC, commit {info.commit_label or '?'}")


def metric_name(name: str) -> str:
    return ALIASES.get(name, name)


def numeric_metrics(rows: list[dict]) -> list[str]:
    found = {k for r in rows for k, v in r.items() if k not in _IDENTITY and _number(v)}
    return [m for m in ROW_FIELDS if m in found] + sorted(found - set(ROW_FIELDS))


@dataclass(frozen=True)
class Delta:
    key: tuple[str, str, str]
    metric: str
    a: float | None
    b: float | None
    decision: Decision | None


def row_key(row: dict) -> tuple[str, str, str]:
    return (str(row["model"]), str(row["mode"]), str(row["seq"]))


def key_label(key: tuple[str, str, str]) -> str:
    return f"{key[0]}/{key[1]} seq={key[2]}"


def compare(a: Results, b: Results, *, metrics: list[str] | None = None,
            decide: Decide = DEFAULT_DECIDE) -> list[Delta]:
    """Every row and metric of A against B (A is the baseline side); rows only one side has get None on the other."""
    rows_a, rows_b = {row_key(r): r for r in a.rows}, {row_key(r): r for r in b.rows}
    wanted = [metric_name(m) for m in metrics] if metrics else numeric_metrics(a.rows + b.rows)
    out = []
    for key in sorted(set(rows_a) | set(rows_b), key=_key_order):
        ra, rb = rows_a.get(key, {}), rows_b.get(key, {})
        for m in wanted:
            va, vb = ra.get(m), rb.get(m)
            va, vb = (float(va) if _number(va) else None), (float(vb) if _number(vb) else None)
            if va is None and vb is None:
                continue
            decision = None
            if va is not None and vb is not None:
                decision = decide(m, _side(va, ra, a, m), _side(vb, rb, b, m))
            out.append(Delta(key, m, va, vb, decision))
    return out


def _side(value: float, row: dict, res: Results, metric: str) -> Side:
    digest = throughput_digest(row) if metric == "inferences_per_s" else None
    return Side((value,), (digest,) if digest else (), res.figures_id if digest else res.machine_id,
                row.get("method") or res.method, row.get("mode"), str(row.get("seq")))


def _key_order(key: tuple[str, str, str]) -> tuple:
    seq = key[2]
    return (key[0], key[1], (0, int(seq), "") if seq.isdigit() else (1, 0, seq))


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def unit(metric: str) -> str:
    if metric in FRACTIONS:
        return "%"
    if metric in BYTES:
        return "MB"
    return {"inferences_per_s": "inf/s", "accuracy_delta_vs_fp32_pts": "pt"}.get(
        metric, "ms" if metric.endswith("_ms") else "")


def fmt(metric: str, v: float | None) -> str:
    if v is None:
        return ""
    if metric in FRACTIONS:
        return f"{v * 100:.2f}"
    if metric in BYTES:
        return f"{v / 1e6:.3f}"
    if v == 0 or not math.isfinite(v) or (float(v).is_integer() and abs(v) < 1e6):
        return f"{v:g}"
    digits = max(0, 3 - int(math.floor(math.log10(abs(v)))))
    return f"{v:.{min(digits, 4)}f}" if abs(v) < 1e4 else f"{v:.0f}"


def fmt_delta(metric: str, a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "only in A" if b is None and a is not None else ("only in B" if a is None and b is not None else "")
    if metric in FRACTIONS:
        return f"{(b - a) * 100:+.2f} pt"
    if unit(metric) == "pt":
        return f"{b - a:+.2f} pt"
    if a == 0:
        return f"{b - a:+g}"
    return f"{(b - a) / abs(a):+.1%}"


def verdict_text(d: Decision | None) -> str:
    return "" if d is None else d.verdict


def format_compare(a: Results, b: Results, deltas: list[Delta], *, decide: Decide = DEFAULT_DECIDE,
                   width: int = 120) -> str:
    from tabulate import tabulate

    body = [[_clip(key_label(d.key), 34), _clip(d.metric, 26), fmt(d.metric, d.a), fmt(d.metric, d.b),
             fmt_delta(d.metric, d.a, d.b), verdict_text(d.decision)] for d in deltas]
    lines = [_clip(f"A: {a.label}: {a.summary}", width), _clip(f"B: {b.label}: {b.summary}", width), ""]
    lines.append(tabulate(body, headers=["row", "metric", "A", "B", "Δ (B vs A)", "decision"], tablefmt="github",
                          disable_numparse=True) if body else "no rows in either side")
    lines.append(f"units: % (fractions, Δ in points), MB (bytes), inf/s, ms; decided: {', '.join(GATED)}")
    why = [f"{key_label(d.key)} {d.metric}: {d.decision.verdict} ({d.decision.why})" for d in deltas
           if d.decision is not None and d.decision.verdict != "pass"]
    lines += [_clip(w, width) for w in why]
    n = Counter(d.decision.verdict for d in deltas if d.decision is not None)
    lines.append("decisions: " + (", ".join(f"{v} {k}" for k, v in sorted(n.items())) or "none (no gated metric on "
                                  "both sides)"))
    lines.append(_clip(f"rule: {rule_name(decide)}", width))
    return "\n".join(lines)


def rule_name(decide: Decide) -> str:
    """A decision function's `label` attribute (one line for the output), else its name."""
    return str(getattr(decide, "label", decide.__name__))


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def delta_json(d: Delta) -> dict[str, Any]:
    return {"row": {"model": d.key[0], "mode": d.key[1], "seq": d.key[2]}, "metric": d.metric, "a": d.a, "b": d.b,
            "delta": None if d.a is None or d.b is None else d.b - d.a,
            "decision": None if d.decision is None else {"verdict": d.decision.verdict, "why": d.decision.why}}


__all__ = ["Side", "Decision", "Decide", "DEFAULT_DECIDE", "Results", "compare", "Delta",
           "format_compare", "results_of_run", "results_of_file", "decision_of", "HistoryError"]
