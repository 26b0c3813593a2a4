"""Terminal tables that fit 120 columns, one line per row: results, claims, the Pareto view. Long detail (notes,
runtime errors, definitions and caveats) goes into numbered notes under each table, and into report.json."""

from __future__ import annotations

import math
from typing import Any, Iterable

from tabulate import tabulate

from edgemodels.report.pareto import large_fp32_bytes, pareto_rows
from edgemodels.report.rows import METHODS, Claim, Row, check_speed_label
from edgemodels.study.criteria import STRICT_RATIO

def _fmt_mb(n: float | None) -> str:
    if n is None:
        return ""
    mb = n / 1e6
    return f"{mb:.1f}" if mb >= 100 else f"{mb:.2f}"


def _fmt_pct(frac: float | None) -> str:
    return "" if frac is None else f"{frac * 100:.1f}%"


def fmt_sig(x: float | None, digits: int = 3) -> str:
    """Three significant digits: 0.0512, 1.23, 215 -- throughput spans four orders of magnitude."""
    if x is None:
        return ""
    if x == 0 or not math.isfinite(x):
        return str(x)
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def _fmt_bool(b: bool | None) -> str:
    return "" if b is None else ("yes" if b else "NO")


_NOT_PRETRAINED = "†"


TABLE_WIDTH = 120
"""Terminal tables fit this many columns; wider detail (notes, runtime errors, per-row ARM figures) is in
report.json, and in numbered notes under the table."""

DELTA_HEADER = "Δ vs fp32"
SIGN_NOTE = f"{DELTA_HEADER}: accuracy points against the same model and seq in fp32; negative = loss"


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _github(headers: list[str], body: list[list[str]], maxcolwidths: list[int | None] | None = None) -> str:
    """tabulate's github table, without the 2 spaces it pads every header with (24 columns in a wide table).

    The headers go in as the first row and the |---| line is drawn under them; no cap is below its header.
    """
    text = tabulate([headers, *body], tablefmt="github", disable_numparse=True, maxcolwidths=maxcolwidths,
                    break_on_hyphens=False, break_long_words=False)
    lines = [line for line in text.splitlines() if set(line) - set("|-")]  # without headers= it rules the top
    rule = "".join(c if c == "|" else "-" for c in lines[0])
    return "\n".join([lines[0], rule, *lines[1:]])


def fit(headers: list[str], body: list[list[str]], wrap: Iterable[int], width: int = TABLE_WIDTH,
         narrowest: int = 12) -> str:
    """A github table within `width` columns, wrapping the `wrap` columns' text (widest first) as needed.

    Returns the table as wide as it must be when the columns that may not wrap alone exceed `width`.
    """
    wrap = set(wrap)
    widths = [max([len(h)] + [len(line[i]) for line in body]) for i, h in enumerate(headers)]
    caps: list[int | None] = [None] * len(headers)
    text = _github(headers, body)
    while _width(text) > width:
        over, shrunk = _width(text) - width, False
        for _ in range(over):  # one column at a time, the widest first, so the wrapped ones stay balanced
            shrinkable = [i for i in wrap if widths[i] > max(narrowest, len(headers[i]))]
            if not shrinkable:
                break
            i = max(shrinkable, key=lambda k: widths[k])
            widths[i] -= 1
            caps[i], shrunk = widths[i], True
        if not shrunk:
            break
        text = _github(headers, body, caps)
    return text


def wrap_lines(lines: Iterable[str], width: int = TABLE_WIDTH, indent: str = "    ") -> list[str]:
    import textwrap

    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(line, width=width, subsequent_indent=indent, break_long_words=True,
                             break_on_hyphens=False) or [""]
    return out


def _uniform(values: Iterable[str]) -> str | None:
    """The one value every row that has one shares, else None (then it needs a column)."""
    found = {v for v in values if v}
    return found.pop() if len(found) == 1 else None


def short_names(specs: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """(spec -> what the terminal tables call it, footnotes naming each shortened spec in full).

    A dir:/tflite: source's full path would take most of a 120-column table: the tables show its short slug
    (sources.slug_for, e.g. dir-my-model) and report.json keeps the full spec. Two sources that share a slug
    keep their full specs, so no two models look alike; registered names are shown as they are."""
    from edgemodels.build.sources import slug_for

    specs = list(dict.fromkeys(specs))
    slugs = {s: slug_for(s) for s in specs}
    taken = [slugs[s] for s in specs]
    names = {s: slugs[s] if slugs[s] != s and taken.count(slugs[s]) == 1 and slugs[s] not in specs else s
             for s in specs}
    return names, [f"{names[s]} = {s}" for s in specs if names[s] != s]


def rows_table(rows: list[Row], width: int = TABLE_WIDTH) -> str:
    if not rows:
        return "(no results)"
    names, full = short_names(r.model for r in rows)
    for r in rows:
        check_speed_label(r)
    runtimes = [" ".join(x for x in (r.runtime, r.runtime_version) if x) for r in rows]
    threads = ["" if r.threads is None else f"{r.threads} thread(s)" for r in rows]
    shared_runtime, shared_threads = _uniform(runtimes), _uniform(threads)

    # Notes (and a device runtime's refusal, which can be a paragraph) become numbered lines under the table;
    # so do runtime and threads when rows differ in them (one bench session shares both: a line under it).
    note_ids: dict[str, int] = {}
    refs: list[str] = []
    for r, rt, th in zip(rows, runtimes, threads):
        texts = list(dict.fromkeys(r.notes))  # several tests may add the same note to one row
        if r.arm_loads is False:
            texts.insert(0, f"FAILS: {' '.join(r.arm_error.split())}" if r.arm_error else "FAILS")
        ran = ", ".join(x for x in (None if shared_runtime else rt, None if shared_threads else th) if x)
        if ran:
            texts.append(f"host runtime: {ran}")
        ids = [note_ids.setdefault(" ".join(t.split()), len(note_ids) + 1) for t in texts]
        refs.append(",".join(map(str, ids)))

    cols: dict[str, list[str]] = {
        "model": [names[r.model] + (_NOT_PRETRAINED if r.pretrained is False else "") for r in rows],
        "mode": [r.mode for r in rows],
        "seq": [r.seq for r in rows],
        "size MB": [_fmt_mb(r.size_bytes) for r in rows],
        "ratio": ["" if r.ratio is None else f"{r.ratio:.1f}x" for r in rows],
        "acc": [_fmt_pct(r.accuracy) for r in rows],
        DELTA_HEADER: ["" if r.accuracy_delta_vs_fp32_pts is None else f"{r.accuracy_delta_vs_fp32_pts:+.1f}"
                       for r in rows],
        "inf/s": ["" if r.inferences_per_s is None else f"{fmt_sig(r.inferences_per_s)} ({r.method})" for r in rows],
        "p90 ms": ["" if r.p90_ms is None else f"{r.p90_ms:.1f}" for r in rows],
        "peak MB": [_fmt_mb(r.peak_rss_bytes) for r in rows],
        "fits": [_fmt_bool(r.fits) for r in rows],
        "on device": ["" if r.arm_loads is None else ("loads" if r.arm_loads else "FAILS") for r in rows],
        "notes": refs,
    }
    key = ("model", "mode", "seq")
    shown = [h for h, v in cols.items() if h in key or any(v)]

    def table(headers: list[str]) -> str:
        return fit(headers, [[cols[h][i] for h in headers] for i in range(len(rows))], width=width,
                    wrap=[i for i, h in enumerate(headers) if h == "notes"])

    text = table(shown)
    if _width(text) > width:  # too many columns for one table: what was built, then how it runs on the device
        built = [h for h in shown if h in key or h in ("size MB", "ratio", "acc", DELTA_HEADER)]
        runs = [h for h in shown if h not in built or h in key]
        text = table(built) + "\n\n" + table(runs)

    foot = list(full)  # a shortened model name -> its full spec (as report.json has it)
    if any(r.accuracy_delta_vs_fp32_pts is not None for r in rows):
        foot.append(SIGN_NOTE)
    if any(r.pretrained is False for r in rows):
        foot.append(f"{_NOT_PRETRAINED} not initialised from pretrained weights: accuracy is not "
                    f"comparable to the paper's")
    if any(r.method == "projected" for r in rows):
        foot.append("projected = estimated from another machine's timing, not measured on this device")
    if shared_runtime or shared_threads:
        foot.append("host runtime: " + ", ".join(x for x in (shared_runtime, shared_threads) if x))
    arm_methods = sorted({r.arm_method for r in rows if r.arm_method})
    if arm_methods:
        foot.append("on device = the device's own runtime loads it: " + "; ".join(arm_methods) + _arm_agreement(rows))
    foot += [f"[{n}] {t}" for t, n in note_ids.items()]
    return text + ("\n" + "\n".join(wrap_lines(foot, width)) if foot else "")


def _arm_agreement(rows: list[Row]) -> str:
    """One line for the device runtime's outputs against x86 (each row's figures are in report.json)."""
    diffs = [(r.arm_max_abs_diff, r) for r in rows if r.arm_max_abs_diff is not None]
    accs = [r for r in rows if r.arm_accuracy is not None and r.x86_accuracy_sample is not None]
    refs = sorted({r.arm_reference for r in rows if r.arm_reference})
    ref = refs[0] if len(refs) == 1 else "x86"  # each row's own is in report.json
    parts = []
    if diffs:
        worst, r = max(diffs, key=lambda d: d[0])
        parts.append(f"max abs diff {worst:.2g} vs {ref} (the largest, {r.key})")
    if accs:
        same = sum(1 for r in accs if r.arm_accuracy == r.x86_accuracy_sample)
        parts.append(f"sample accuracy equal to {'x86' if ref == 'x86' else 'the reference'}'s on {same} of {len(accs)}")
    return f"; {', '.join(parts)}" if parts else ""


_VERDICT = {True: "holds", False: "DOES NOT HOLD", None: "n/a"}


def verdict(holds: bool | None, caveat: str | None = None) -> str:
    """"holds" / "DOES NOT HOLD" / "n/a", or, when the run cannot test the claim, what was met and why not tested."""
    if holds is None or not caveat:
        return _VERDICT[holds]
    return f"{'met' if holds else 'not met'} here, claim not tested: {caveat}"


def _cut(text: str, at: tuple[str, ...], most: int) -> str:
    """`text` up to the first of `at` (its detail follows there); still longer than `most`: cut there with '…'."""
    for sep in at:
        i = text.find(sep)
        if 0 < i:
            text = text[:i]
    return text if len(text) <= most else text[:most - 1] + "…"


def _headline(ours: str) -> str:
    """The figure that leads `ours` ("161.1x", "Δ -3.03 pt", "mobilebert drq-compat: 13.0/s (projected)"); the
    rest is detail."""
    head = _cut(ours, (" (", " ["), 10**6)
    head = head if len(head) <= 30 else _cut(head, (": ",), 30)
    where = ours[len(head):].split(")", 1)[0].removeprefix(" (")
    return f"{head} ({where})" if where in METHODS else head  # where a figure was made stays beside it


def _short_verdict(holds: bool | None, caveat: str | None) -> str:
    if holds is None or not caveat:
        return _VERDICT[holds]
    return "met; untested" if holds else "not met; untested"


def _claim_lines(claims: list[dict[str, Any]], run: bool, width: int) -> str:
    """One line per claim (claim, paper, our headline figure, verdict[, run]) and a numbered note each with the
    full wording: the claim, our figure with its detail, the definition, and why a run cannot test it."""
    body, notes = [], []
    for i, c in enumerate(claims, 1):
        line = [f"[{i}]", c.get("label") or _cut(c["claim"], (), 30), _cut(c["paper"], (" (",), 16),
                c.get("figure") or _headline(c["ours"]), _short_verdict(c["holds"], c.get("caveat"))]
        body.append(line + ([c["device"]] if run else []))
        note = f"[{i}] {c['claim']}: {c['ours']}; definition: {c['definition']}"
        if c["paper"] != line[2]:
            note += f"; paper: {c['paper']}"
        if c.get("caveat"):
            note += f"; {verdict(c['holds'], c['caveat'])}"
        notes.append(note)
    headers = ["", "claim", "paper", "ours", "verdict"] + (["run"] if run else [])
    text = fit(headers, body, wrap=(1, 3), width=width)
    if run:
        runs = dict.fromkeys(f"{c['device']} {c['created'][:10]}" for c in claims)
        notes.insert(0, "runs: " + ", ".join(runs))
    return text + "\n" + "\n".join(wrap_lines(notes, width))


def claims_table(claims: Iterable[Claim], width: int = TABLE_WIDTH) -> str:
    """Paper claim vs what this run found, one line each; definitions, detail and caveats in notes under it."""
    claims = list(claims)
    if not claims:
        return "(no paper claims evaluated)"
    return _claim_lines([vars(c) for c in claims], run=False, width=width)


def merged_claims_table(merged: list[dict[str, Any]], width: int = TABLE_WIDTH) -> str:
    """The claims of several runs (`claims.merge_claims`), one line each with the device whose run it came from."""
    if not merged:
        return "(no paper claims in these reports)"
    return _claim_lines(merged, run=True, width=width)


def pareto_table(rows: list[Row], width: int = TABLE_WIDTH) -> str:
    """Size order; '*' marks the fronts; 'x BERT-L' = this run's BERT-Large fp32 .tflite bytes / the file's."""
    prs = pareto_rows(rows)
    if not prs:
        return "(no sized artifacts)"
    names, full = short_names(p.model for p in prs)
    body = [[names[p.model], p.mode, p.seq, f"{p.size_bytes / 1e6:.2f}",
             "" if p.ratio_vs_large is None else f"{p.ratio_vs_large:.1f}",
             "" if p.accuracy is None else f"{p.accuracy * 100:.1f}%" + (" *" if p.accuracy_front else ""),
             "" if p.inferences_per_s is None else f"{fmt_sig(p.inferences_per_s)} ({p.method})"
             + (" *" if p.speed_front else "")] for p in prs]
    large = large_fp32_bytes(rows)
    note = (f"* on the front (nothing smaller is as good); {STRICT_RATIO:g}x line: "
            f"{large:,} / {STRICT_RATIO:g} = {int(large / STRICT_RATIO):,} bytes" if large else
            "* on the front (nothing smaller is as good); no BERT-Large fp32 in this run: no 160x line")
    return fit(["model", "mode", "seq", "size MB", "x BERT-L", "acc", "inf/s"], body, wrap=(0, 1), width=width) \
        + "\n" + note + "".join("\n" + line for line in wrap_lines(full, width))



def gate_table(rows: list[Row], width: int = TABLE_WIDTH) -> str:
    """The speed gate per row: the verdict against the baseline (or none), the yardstick-relative ratio and its
    interval, the limit, and how it was timed (rounds, seconds, other processes' CPU while timing, priority)."""
    gated = [r for r in rows if r.throughput_gate]
    if not gated:
        return "(no throughput gate figures)"
    names, full = short_names(r.model for r in gated)
    body = []
    for r in gated:
        g, d = r.throughput_gate, r.throughput_decision or {}
        load = g.get("load") or {}
        ratio = (f"{d['ratio']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" if d and math.isfinite(d.get("ratio", math.nan))
                 else "")
        body.append([names[r.model], r.mode, r.seq, d.get("decision", "no baseline"), ratio,
                     f"{d['limit']:.3f}" if d.get("limit") is not None else "", str(g.get("rounds", "")),
                     f"{g.get('seconds', 0):.1f}", "" if load.get("others_cores") is None else f"{load['others_cores']:.2f}",
                     str(g.get("priority", ""))])
    note = ("ratio = this run's speed relative to the committed yardstick over the baseline's, 95 % interval "
            "(1 thread); regression when the interval lies below the limit, pass when above, else inconclusive; "
            "load = other processes' CPU cores busy while timing")
    return fit(["model", "mode", "seq", "throughput", "ratio [95 % CI]", "limit", "rounds", "s", "load", "priority"],
               body, wrap=(0,), width=width) + "\n" + "\n".join(wrap_lines([note, *full], width))
