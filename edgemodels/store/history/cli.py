"""`python -m edgemodels history` (a table and a trend plot of recorded runs) and `compare A B` (deltas, decisions).

Registered into edgemodels/cli/__init__.py by `add_parsers`; the work is in .db (the store) and .compare (deltas and the
pluggable decision).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemodels.store.history.records import HistoryError, RunInfo, _number, decision_of
from edgemodels.store.history.compare import (DEFAULT_DECIDE, GATED, MARKS, Results, _clip, _key_order, compare,
                                              delta_json, fmt, fmt_delta, format_compare, key_label, metric_name,
                                              numeric_metrics, results_of_file, results_of_run, row_key, rule_name,
                                              unit)

WIDTH = 120
"""The widest line a table may print (the report's own tables use the same)."""


def _emit(args, obj: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=2, default=str), file=getattr(args, "emit_to", sys.stdout))
    else:
        print(human)


def _metrics(values: list[str] | None) -> list[str]:
    names = [metric_name(v.strip()) for raw in values or [] for v in raw.split(",") if v.strip()]
    return names or list(GATED)


# --------------------------------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------------------------------


def cmd_history(args) -> int:
    from edgemodels.store.history import History, RunContext, RunFilter, load_report, shown

    metrics = _metrics(args.metric)
    with History(args.history) as h:
        url = shown(h.url)
        added = [h.record_run(load_report(p), RunContext(source="import"), origin=str(p)) for p in args.add or []]
        found = h.runs(RunFilter(device=args.device, machine_id=args.machine, scale=args.scale, model=args.model,
                                 mode=args.mode, last=args.last))
        by_run = h.rows_of_runs([r.id for r in found])
    for run_id, rows in by_run.items():
        by_run[run_id] = [r for r in rows if (args.model is None or r["model"] == args.model)
                          and (args.mode is None or r["mode"] == args.mode)]
    known = numeric_metrics([r for rows in by_run.values() for r in rows])
    unknown = [m for m in metrics if m not in known and m not in GATED]
    if found and unknown:
        raise HistoryError(f"--metric {', '.join(unknown)}: not a metric of these runs' rows; they have: "
                           f"{', '.join(known)} (or accuracy, size, throughput, p90, memory)")
    out: dict[str, Any] = {"history": url, "added": added, "runs": [asdict(r) for r in found],
                           "rows": {str(k): v for k, v in by_run.items()}, "plot": None}
    if not found:
        _emit(args, out, f"history {url}: no runs" + (" match the filters" if _filtered(args) else " recorded yet")
              + ("; nothing to plot" if args.plot else ""))
        return 1 if args.plot else 0
    lines = [f"history {url}: {len(found)} run(s)" + (f" (the last {args.last})" if args.last else ""), "",
             runs_table(found)]
    for m in metrics:
        lines += ["", metric_table(found, by_run, m)]
    lines += ["", "marks (the speed gate's decision, where the run recorded one): ! regression, ? inconclusive, "
              "~ not compared"]
    if added:
        lines.insert(0, f"added run(s) {', '.join(map(str, added))}")
    if args.plot:
        write_trend_png(found, by_run, metrics, args.plot)
        out["plot"] = str(args.plot)
        lines.append(f"wrote {args.plot}")
    _emit(args, out, "\n".join(lines))
    return 0


def _filtered(args) -> bool:
    return any(getattr(args, k) is not None for k in ("device", "machine", "scale", "model", "mode"))


def runs_table(found: list[RunInfo]) -> str:
    from tabulate import tabulate

    body = [[r.id, f"{r.created:%Y-%m-%d %H:%M}", r.device, r.method or "", r.scale or "", _clip(r.data_spec or "", 14),
             r.machine_id or "", (r.git_commit or "")[:8] + ("+" if r.git_dirty else ""), r.n_rows] for r in found]
    return tabulate(body, headers=["run", "created (UTC)", "device", "method", "scale", "data", "machine",
                                   "commit", "rows"], tablefmt="github", disable_numparse=True) + \
        "\ncommit: + = uncommitted changes to tracked files"


def metric_table(found: list[RunInfo], by_run: dict[int, list[dict]], metric: str, width: int = WIDTH) -> str:
    """One line per model/mode/seq, one column per run (the newest that fit in `width`), the change oldest->newest."""
    from tabulate import tabulate

    keys = sorted({row_key(r) for rows in by_run.values() for r in rows}, key=_key_order)
    cells = {(run.id, row_key(r)): r for run in found for r in by_run[run.id]}
    title = f"{metric}" + (f" ({unit(metric)})" if unit(metric) else "")
    values = {(run.id, k): cells.get((run.id, k), {}).get(metric) for run in found for k in keys}
    text_of = {}
    for (run_id, k), v in values.items():
        mark = MARKS.get(decision_of(cells.get((run_id, k), {})) or "", "") if metric == "inferences_per_s" else ""
        text_of[run_id, k] = fmt(metric, v) + mark if _number(v) else ""
    labels = [_clip(key_label(k), 34) for k in keys]
    # github format: "| cell |" per column; the newest runs that fit, the label and a change column always shown
    used = max([len(title), *map(len, labels)]) + 4 + len("first→last") + 3 + 1
    shown_runs: list[RunInfo] = []
    for run in reversed(found):
        col = max([len(f"#{run.id}"), *(len(text_of[run.id, k]) for k in keys)]) + 3
        if shown_runs and used + col > width:
            break
        used += col
        shown_runs.insert(0, run)
    while True:  # the estimate above is close; tabulate's padding decides
        body = []
        for k, label in zip(keys, labels):
            nums = [values[run.id, k] for run in shown_runs if _number(values[run.id, k])]
            change = fmt_delta(metric, nums[0], nums[-1]) if len(nums) >= 2 else ""
            body.append([label, *[text_of[run.id, k] for run in shown_runs], change])
        text = tabulate(body, headers=[title, *[f"#{r.id}" for r in shown_runs], "first→last"], tablefmt="github",
                        disable_numparse=True)
        if len(shown_runs) == 1 or max(map(len, text.splitlines())) <= width:
            break
        shown_runs = shown_runs[1:]
    left = len(found) - len(shown_runs)
    return text + (f"\n({left} older run(s) left out to fit {width} columns; --plot shows all)" if left else "")


def write_trend_png(found: list[RunInfo], by_run: dict[int, list[dict]], metrics: list[str], path: Path) -> None:
    """One panel per metric, one line per model/mode/seq over the runs; the speed gate's decisions marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        raise HistoryError("--plot needs matplotlib: pip install matplotlib (the bench extra has it)") from None
    import io

    from edgemodels.store.files import atomic_write_bytes

    keys = sorted({row_key(r) for rows in by_run.values() for r in rows}, key=_key_order)
    cells = {(run.id, row_key(r)): r for run in found for r in by_run[run.id]}
    xs = list(range(len(found)))
    wide = min(16.0, max(7.0, 0.4 * len(found) + 5))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(wide, 2.8 * len(metrics) + 0.6), sharex=True, squeeze=False)
    style = {"regression": dict(marker="v", color="red", s=90), "inconclusive": dict(marker="D", color="orange", s=60),
             "pass": dict(marker="o", facecolors="none", edgecolors="green", s=70),
             "not compared": dict(marker="s", facecolors="none", edgecolors="grey", s=60)}
    seen: set[str] = set()
    for ax, metric in zip(axes[:, 0], metrics):
        scale = 100.0 if unit(metric) == "%" else (1e-6 if unit(metric) == "MB" else 1.0)
        for k in keys:
            ys = [cells.get((run.id, k), {}).get(metric) for run in found]
            ys = [float(y) * scale if isinstance(y, (int, float)) and not isinstance(y, bool) else math.nan
                  for y in ys]
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot(xs, ys, marker="." if len(found) <= 60 else None, label=key_label(k))
            if metric == "inferences_per_s":
                for x, run in zip(xs, found):
                    d = decision_of(cells.get((run.id, k), {}))
                    if d in style and not math.isnan(ys[x]):
                        ax.scatter([x], [ys[x]], zorder=3, **style[d])
                        seen.add(d)
        ax.set_ylabel(f"{metric}\n({unit(metric)})" if unit(metric) else metric, fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for d in sorted(seen):
        s = style[d]
        handles.append(Line2D([], [], linestyle="", marker=s["marker"], markersize=8,
                              color=s.get("color", "none"), markeredgecolor=s.get("edgecolors", s.get("color"))))
        labels.append(f"speed gate: {d}")
    if handles:  # beside the panels (savefig's tight box takes it in): a CI matrix has ~20 lines
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    ax = axes[-1, 0]
    step = max(1, math.ceil(len(found) / 16))  # at most ~16 labelled runs: a long history stays readable
    ticks = xs[::-1][::step][::-1]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"#{found[x].id}\n{found[x].created:%m-%d %H:%M}" for x in ticks], fontsize=7)
    ax.set_xlabel("run (UTC)")
    devices = sorted({r.device for r in found})
    machines = sorted({r.machine_id or "?" for r in found})
    fig.suptitle(f"edgemodels history: {', '.join(devices)} on {', '.join(machines)}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    from edgemodels.store.history import History

    sides: list[Results | None] = [None, None]
    ids: list[tuple[int, int]] = []
    for i, spec in enumerate((args.a, args.b)):
        if Path(spec).exists():
            sides[i] = results_of_file(Path(spec))
        elif spec.removeprefix("#").isdigit():
            ids.append((i, int(spec.removeprefix("#"))))
        else:
            raise HistoryError(f"compare: {spec!r} is neither a report.json (or the directory holding one) nor a run "
                               "id (`python -m edgemodels history` lists them)")
    if ids:
        with History(args.history) as h:
            for i, run_id in ids:
                sides[i] = results_of_run(h.run(run_id), h.rows_of(run_id), h.machines([run_id]).get(run_id))
    a, b = sides
    assert a is not None and b is not None
    deltas = compare(a, b, metrics=_metrics(args.metric) if args.metric else None)
    out = {"a": {"label": a.label, "summary": a.summary}, "b": {"label": b.label, "summary": b.summary},
           "rule": rule_name(DEFAULT_DECIDE), "deltas": [delta_json(d) for d in deltas]}
    _emit(args, out, format_compare(a, b, deltas, width=WIDTH))
    return 1 if any(d.decision is not None and d.decision.verdict == "regression" for d in deltas) else 0


# --------------------------------------------------------------------------------------------------
# Registration (edgemodels/cli/__init__.py calls this)
# --------------------------------------------------------------------------------------------------


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    from edgemodels import options

    h = sub.add_parser("history", parents=[common], help="the recorded runs: a table per metric and a trend plot")
    options.add_to_parser(h, "--history")
    h.add_argument("--device", help="only runs for this device (desktop, pi3, ...)")
    h.add_argument("--model", help="only this model's rows")
    h.add_argument("--mode", metavar="Q", help="only this quantization mode's rows (drq, fp32, w4, ...)")
    h.add_argument("--machine", metavar="ID", help="only runs on this machine id (report.json's machine.machine_id)")
    h.add_argument("--scale", help="only runs at this bench scale (smoke, ci, paper)")
    h.add_argument("--metric", action="append", metavar="M",
                   help="a row metric to show (repeatable or comma-separated): accuracy, size, throughput, p90, "
                        "memory, or any numeric report.json row field (default accuracy,size,throughput)")
    h.add_argument("--last", type=_positive, default=50, metavar="N", help="the newest N runs (default 50)")
    h.add_argument("--plot", type=Path, metavar="FILE", help="write the trend plot (PNG) here")
    h.add_argument("--add", nargs="+", type=Path, metavar="REPORT",
                   help="first append these report.json files (or report dirs) as runs, e.g. reports made before "
                        "the history existed")
    h.set_defaults(func=cmd_history)

    c = sub.add_parser("compare", parents=[common],
                       help="every row and metric of two runs (history ids or report.json files): deltas and decisions")
    c.add_argument("a", metavar="A", help="the baseline side: a run id from `history`, or a report.json / report dir")
    c.add_argument("b", metavar="B", help="the side compared with it, likewise")
    options.add_to_parser(c, "--history")
    c.add_argument("--metric", action="append", metavar="M", help="only these metrics (default: every numeric one)")
    c.set_defaults(func=cmd_compare)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return n
