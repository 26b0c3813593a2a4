"""Collect bench results into one report: a terminal table, report.json, report.png, baselines.

The bench tests each fill a few fields of a shared `Row` per (device, model, mode, seq); this module
only formats, plots, stores and compares what they measured. Nothing here invents a figure: every
speed figure must carry its method ("measured" on the device, "projected" from another machine), and
a row that has one without the other is refused, because an unlabelled projection would read as a
measurement.

Only the stdlib and tabulate are imported at module import (psutil when host info is asked for); matplotlib is imported
inside `write_png` so that a device with just a TFLite runtime can still print the table.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal

from tabulate import tabulate

from edgemodels.cache import atomic_write_bytes, atomic_write_text, disk_full
from edgemodels.errors import EdgeModelsError
from edgemodels.suite import STRICT_RATIO

Method = Literal["measured", "projected"]
METHODS: tuple[str, ...] = ("measured", "projected")
THROUGHPUT_TARGET_PER_S = 1.0
"""The paper's bar for "usable on the device": at least one classification per second."""

_BASELINE_SCHEMA = 2  # 2: accuracy per machine id (accuracy_by_machine); schema-1 files still read


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One (device, model, mode, seq) result line; mutable because several tests fill it in turn.

    None means "not measured in this run", never zero.
    """

    device: str
    model: str
    mode: str
    seq: str = "128"
    size_bytes: int | None = None
    ratio: float | None = None
    """Size ratio vs the reference (largest fp32) artifact, e.g. 51.3."""
    accuracy: float | None = None
    """Fraction 0..1."""
    macro_f1: float | None = None
    accuracy_delta_vs_fp32_pts: float | None = None
    """Accuracy minus the same model's fp32 accuracy, in percentage points: negative = loss ("Δ vs fp32").

    Reports before this field had `accuracy_drop` with the opposite sign (positive = loss)."""
    inferences_per_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    method: str | None = None
    """"measured" | "projected"; required whenever a speed figure is set."""
    threads: int | None = None
    peak_rss_bytes: int | None = None
    memory_budget_bytes: int | None = None
    fits: bool | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    pretrained: bool | None = None
    arm_loads: bool | None = None
    arm_error: str | None = None
    arm_max_abs_diff: float | None = None
    arm_accuracy: float | None = None
    x86_accuracy_sample: float | None = None
    arm_method: str | None = None
    """How ARM was exercised, e.g. "emulated ARM (qemu, cortex-a72)"."""
    arm_reference: str | None = None
    """What arm_max_abs_diff / x86_accuracy_sample compare with, e.g. "x86 reference exported from ws (x86_64, ...)";
    None: nothing was compared (on the device without an export there is no x86 side)."""
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.mode} seq={self.seq}"


_SPEED_FIELDS = ("inferences_per_s", "p50_ms", "p90_ms", "p99_ms")


def _check_speed_label(row: Row) -> None:
    """Refuse a speed figure that does not say whether it was measured or projected."""
    set_fields = [f for f in _SPEED_FIELDS if getattr(row, f) is not None]
    if row.method is None and set_fields:
        raise ValueError(
            f"speed figure without measured/projected label: row {row.device} {row.key} has "
            f"{', '.join(set_fields)} set but method=None; set row.method to 'measured' (timed on "
            f"this device) or 'projected' (derived from another machine)"
        )
    if row.method is not None and row.method not in METHODS:
        raise ValueError(
            f"row {row.device} {row.key}: method={row.method!r} is not one of {METHODS}; "
            f"set it to 'measured' or 'projected'"
        )


@dataclass(frozen=True)
class Claim:
    """One line of the paper-claims table; holds=None means not measurable here (`ours` says why)."""

    claim: str
    paper: str
    ours: str
    definition: str
    holds: bool | None
    caveat: str | None = None
    """Why this run cannot test the claim (budget, data, an under-trained reference); the verdict then says so
    instead of "holds" (issue 12 item 6). None: the run can test it."""


def _seq_key(seq: str) -> tuple[int, int, str]:
    return (0, int(seq), "") if seq.isdigit() else (1, 0, seq)


def _row_sort_key(row: Row) -> tuple[Any, ...]:
    return (row.model, row.mode, _seq_key(row.seq))


class Report:
    """All rows of one bench session on one device, plus the paper-claims lines."""

    def __init__(self, device: str, machine: dict) -> None:
        if not device:
            raise ValueError("Report needs a device name (e.g. 'desktop', 'pi3')")
        self.device = device
        self.machine = dict(machine)
        self._rows: dict[tuple[str, str, str], Row] = {}
        self._claims: list[Claim] = []

    def row(self, model: str, mode: str, seq: str = "128") -> Row:
        """Get-or-create, so independent tests can fill different fields of the same line."""
        seq = str(seq)
        for name, value in (("model", model), ("mode", mode), ("seq", seq)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"Report.row: {name} must be a non-empty string, got {value!r}")
        key = (model, mode, seq)
        if key not in self._rows:
            self._rows[key] = Row(device=self.device, model=model, mode=mode, seq=seq)
        return self._rows[key]

    def rows(self) -> list[Row]:
        return sorted(self._rows.values(), key=_row_sort_key)

    def add_claim(self, claim: Claim) -> None:
        self._claims.append(claim)

    @property
    def claims(self) -> list[Claim]:
        return list(self._claims)

    def table(self) -> str:
        """Human-readable results table; columns nobody filled are left out."""
        return _rows_table(self.rows())

    def to_json(self) -> dict:
        rows = []
        for r in self.rows():
            _check_speed_label(r)
            rows.append(asdict(r))  # every Row field, None included, so readers see the schema
        doc = {
            "device": self.device,
            "machine": self.machine,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rows": rows,
            "claims": [asdict(c) for c in self._claims],
            "pareto": pareto_json(self.rows()),
        }
        return _json_safe(doc)

    def write(self, out_dir: Path) -> list[Path]:
        """Write report.json and report.png into out_dir; returns the paths written.

        Each file is written atomically, so a failure leaves each one whole (new or as it was); it is a
        ReportDirError naming the path and the fix (a full disk, a read-only directory, a file in the way).
        """
        import importlib.util

        out_dir = Path(out_dir)
        doc = self.to_json()  # validates labels before anything is written
        written: list[Path] = []
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "report.json", _dumps(doc))
            written.append(out_dir / "report.json")
            if importlib.util.find_spec("matplotlib") is None:  # a device install (`.[device]`) has no matplotlib
                return written
            write_png(self.rows(), out_dir / "report.png", self.device)
            written.append(out_dir / "report.png")
            write_pareto_png(self.rows(), out_dir / "pareto.png", self.device)
            written.append(out_dir / "pareto.png")
        except OSError as exc:
            raise _report_dir_error(exc, out_dir, written) from exc
        return written


class ReportDirError(EdgeModelsError):
    """--report-dir cannot take the report: a file in the way, a read-only or full directory (one line, the fix)."""


def _report_dir_error(exc: OSError, out_dir: Path, written: Iterable[Path] | None = None) -> ReportDirError:
    """`written`: the files this write finished (None: a check before the run, which writes no report)."""
    name = os.fsdecode(exc.filename) if exc.filename else None
    where = str(out_dir) if not name or Path(name).name.startswith(".") else name  # not our temp file's name
    done = [p.name for p in written or ()]
    state = ("" if written is None else f" ({', '.join(done)} written; each file is whole, new or as it was)" if done
             else " (nothing written; an earlier report there is as it was)")
    if disk_full(exc):
        return ReportDirError(f"{where}: no space left on device for the bench report{state}: free space there or "
                              "pass another --report-dir")
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), where)
        return ReportDirError(f"{blocker}: a file is in the way of the report directory {out_dir}: move it or pass "
                              "another --report-dir")
    return ReportDirError(f"{where}: cannot write the bench report there: {exc.strerror or exc}{state}; make it "
                          "writable or pass another --report-dir")


def check_report_dir(path: Path) -> Path:
    """Check, before a run, that --report-dir can be created and written: a file in the way, a read-only or full
    directory is a ReportDirError now rather than a lost report at the end. Creates the directory (the run would);
    the probe file it writes is removed."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".edgemodels-probe-")
        try:
            os.write(fd, b"x")  # a byte, not an empty file: a full disk still has inodes
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise _report_dir_error(exc, path) from exc
    return path


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def _fmt_mb(n: float | None) -> str:
    if n is None:
        return ""
    mb = n / 1e6
    return f"{mb:.1f}" if mb >= 100 else f"{mb:.2f}"


def _fmt_pct(frac: float | None) -> str:
    return "" if frac is None else f"{frac * 100:.1f}%"


def _fmt_sig(x: float | None, digits: int = 3) -> str:
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


def _fit(headers: list[str], body: list[list[str]], wrap: Iterable[int], width: int = TABLE_WIDTH,
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


def _wrap_lines(lines: Iterable[str], width: int = TABLE_WIDTH, indent: str = "    ") -> list[str]:
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


def _short_names(specs: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """(spec -> what the terminal tables call it, footnotes naming each shortened spec in full).

    A dir:/tflite: source's full path would take most of a 120-column table: the tables show its short slug
    (sources.slug_for, e.g. dir-my-model) and report.json keeps the full spec. Two sources that share a slug
    keep their full specs, so no two models look alike; registered names are shown as they are."""
    from edgemodels.sources import slug_for

    specs = list(dict.fromkeys(specs))
    slugs = {s: slug_for(s) for s in specs}
    taken = [slugs[s] for s in specs]
    names = {s: slugs[s] if slugs[s] != s and taken.count(slugs[s]) == 1 and slugs[s] not in specs else s
             for s in specs}
    return names, [f"{names[s]} = {s}" for s in specs if names[s] != s]


def _rows_table(rows: list[Row], width: int = TABLE_WIDTH) -> str:
    if not rows:
        return "(no results)"
    names, full = _short_names(r.model for r in rows)
    for r in rows:
        _check_speed_label(r)
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
        "inf/s": ["" if r.inferences_per_s is None else f"{_fmt_sig(r.inferences_per_s)} ({r.method})" for r in rows],
        "p90 ms": ["" if r.p90_ms is None else f"{r.p90_ms:.1f}" for r in rows],
        "peak MB": [_fmt_mb(r.peak_rss_bytes) for r in rows],
        "fits": [_fmt_bool(r.fits) for r in rows],
        "on device": ["" if r.arm_loads is None else ("loads" if r.arm_loads else "FAILS") for r in rows],
        "notes": refs,
    }
    key = ("model", "mode", "seq")
    shown = [h for h, v in cols.items() if h in key or any(v)]

    def table(headers: list[str]) -> str:
        return _fit(headers, [[cols[h][i] for h in headers] for i in range(len(rows))], width=width,
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
    return text + ("\n" + "\n".join(_wrap_lines(foot, width)) if foot else "")


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


def claims_table(claims: Iterable[Claim], width: int = TABLE_WIDTH) -> str:
    """Paper claim vs what this run found, with how 'ours' was defined (long cells wrap to fit `width`)."""
    claims = list(claims)
    if not claims:
        return "(no paper claims evaluated)"
    return _fit(["claim", "paper", "ours", "verdict", "definition"],
                [[c.claim, c.paper, c.ours, verdict(c.holds, c.caveat), c.definition] for c in claims],
                wrap=(0, 1, 2, 3, 4), width=width)


class ReportError(EdgeModelsError, ValueError):
    """A report.json that cannot be read back (names the file and the field)."""


def load_claims(path: Path) -> tuple[str, str, list[Claim]]:
    """(device, created, claims) of one bench run's report.json (or of the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (give a bench --report-dir or its report.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable report.json: {exc}") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    for name, kind in (("device", str), ("created", str), ("claims", list)):
        if not isinstance(doc.get(name), kind):
            raise ReportError(f"{path}: field {name!r} missing or not a {kind.__name__}")
    claims = []
    wanted = [f.name for f in Claim.__dataclass_fields__.values()]
    optional = {"caveat"}  # reports written before issue 12 lack it
    for i, c in enumerate(doc["claims"]):
        missing = [k for k in wanted if k not in optional and (not isinstance(c, dict) or k not in c)]
        if missing:
            raise ReportError(f"{path}: claims[{i}] lacks field(s) {', '.join(missing)}")
        claims.append(Claim(**{k: c[k] for k in wanted if k in c}))
    return doc["device"], doc["created"], claims


def merge_claims(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The claims of several runs (one per device), each with the run it came from; repeats dropped."""
    out, seen = [], set()
    for p in paths:
        device, created, claims = load_claims(p)
        for c in claims:
            key = (c.claim, c.ours, c.definition)
            if key in seen:  # the size and accuracy claims repeat in every device's run
                continue
            seen.add(key)
            out.append({**asdict(c), "device": device, "created": created})
    return out


def merged_claims_table(merged: list[dict[str, Any]]) -> str:
    if not merged:
        return "(no paper claims in these reports)"
    return _fit(["claim", "paper", "our measurement", "definition", "holds?", "run"],
                [[c["claim"], c["paper"], c["ours"], c["definition"], verdict(c["holds"], c.get("caveat")),
                  f"{c['device']}, {c['created'][:10]}"] for c in merged],
                wrap=(0, 1, 2, 3, 5))


# --------------------------------------------------------------------------------------------------
# JSON / atomic files
# --------------------------------------------------------------------------------------------------


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), Paths -> str, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar, without importing numpy
        return _json_safe(obj.item())
    return obj


def _dumps(doc: Any) -> str:
    return json.dumps(_json_safe(doc), indent=2, allow_nan=False, default=str) + "\n"


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------


def write_png(rows: list[Row], path: Path, device: str) -> None:
    """Accuracy-vs-size and throughput panels; a panel without data says "no data" instead."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: not needed on a device
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for r in rows:
        _check_speed_label(r)
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_spd = fig.subplots(1, 2)
    fig.suptitle(f"edgemodels bench: {device}")
    markers = "osD^v<>ph*"

    # Panel 1: accuracy vs size, one series per mode, points labelled by model.
    pts = [r for r in rows if r.size_bytes and r.accuracy is not None]
    ax_acc.set_title("accuracy vs size")
    if pts:
        modes = sorted({r.mode for r in pts})
        for i, mode in enumerate(modes):
            sel = [r for r in pts if r.mode == mode]
            ax_acc.scatter([r.size_bytes / 1e6 for r in sel], [r.accuracy * 100 for r in sel],
                           marker=markers[i % len(markers)], s=50, label=mode)
            for r in sel:
                label = r.model if r.seq == "128" else f"{r.model} seq={r.seq}"
                ax_acc.annotate(label, (r.size_bytes / 1e6, r.accuracy * 100),
                                textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax_acc.set_xscale("log")
        ax_acc.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_acc.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax_acc.xaxis.set_minor_formatter(NullFormatter())
        ax_acc.margins(x=0.12, y=0.12)  # room for the point labels
        ax_acc.set_xlabel("size (MB, log scale)")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.grid(True, which="both", alpha=0.3)
        ax_acc.legend(title="mode", fontsize=8)
    else:
        _no_data(ax_acc)

    # Panel 2: throughput bars, hatched when projected.
    spd = [r for r in rows if r.inferences_per_s is not None]
    ax_spd.set_title(f"throughput on {device}")
    if spd:
        many_seq = len({r.seq for r in spd}) > 1
        labels = [f"{r.model}/{r.mode}" + (f"@{r.seq}" if many_seq else "") for r in spd]
        values = [r.inferences_per_s for r in spd]
        x = list(range(len(spd)))
        bars = ax_spd.bar(x, values, color=["tab:orange" if r.method == "projected" else "tab:blue"
                                            for r in spd])
        for bar, r in zip(bars, spd):
            if r.method == "projected":
                bar.set_hatch("//")
            ax_spd.annotate(f"{_fmt_sig(r.inferences_per_s)}\n{r.method}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        target = ax_spd.axhline(THROUGHPUT_TARGET_PER_S, color="red", linestyle="--", linewidth=1)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive + [THROUGHPUT_TARGET_PER_S]) > 50:
            ax_spd.set_yscale("log")
        ax_spd.margins(y=0.15)  # room for the value labels above the tallest bar
        ax_spd.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax_spd.set_ylabel("inferences / s")
        ax_spd.legend(handles=[
            Patch(facecolor="tab:blue", label="measured"),
            Patch(facecolor="tab:orange", hatch="//", label="projected"),
            target,
        ], labels=["measured", "projected", f"target {THROUGHPUT_TARGET_PER_S:g}/s"], fontsize=8)
    else:
        _no_data(ax_spd)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(Path(path), buf.getvalue())


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=14,
            color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------------------------------
# Host identity
# --------------------------------------------------------------------------------------------------


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """x86 says "model name"; a Raspberry Pi's aarch64 kernel often only says "Model"/"Hardware"."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.MULTILINE)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def _total_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def machine_id() -> str:
    """Stable id for "same hardware": throughput is only compared between runs with equal ids."""
    arch = platform.machine() or "unknown"
    cores = os.cpu_count() or 0
    ram_gib = round(_total_ram_bytes() / 2**30)
    digest = hashlib.sha256(f"{arch}|{_cpu_model()}|{cores}|{ram_gib}".encode()).hexdigest()[:8]
    return f"{arch}-{cores}c-{ram_gib}g-{digest}"


def machine_info() -> dict:
    """Host facts recorded into report.json so a reader knows where the figures came from."""
    import psutil

    return {
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_bytes": _total_ram_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "arch": platform.machine(),
        "machine_id": machine_id(),
    }


# --------------------------------------------------------------------------------------------------
# Baselines and regression gating
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    accuracy_drop_pts: float = 0.5
    # A machine with no accuracy of its own in the baseline (a new CI runner's CPU) is compared with the
    # lowest recorded machine at this looser tolerance. Measured spread between the two CPUs CI has run on
    # (2026-11, CI scale, builtin): MiniLM-L6 identical, MPNet-base 73.0 % (Xeon) vs 68.7 % (EPYC), 4.3 pt.
    cross_machine_accuracy_pts: float = 5.0
    size_increase: float = 0.02
    throughput_drop: float = 0.10


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
            vals = f"{_fmt_sig(self.baseline)} -> {_fmt_sig(self.current)} inf/s"
        return f"{where}: {self.metric} {vals} ({delta}; limit {self.limit})"


def _fmt_metric(metric: str, v: float | None) -> str:
    if metric == "accuracy":
        return f"{v:.4f}"
    return f"{v / 1e6:.3f} MB" if metric == "size" else f"{_fmt_sig(v)} inf/s"


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
    kernels train another model (measured: MPNet-base at CI scale 73.0 % on a Xeon, 68.7 % on an EPYC;
    MiniLM-L6 within 0.5 pt). Rows written before this (one "accuracy") count as their machine_id's.
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
        _check_speed_label(r)
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
        if all(entry[k] is None for k in ("accuracy_by_machine", "size_bytes", "inferences_per_s")):
            continue  # nothing measured for this row: do not record an empty baseline
        merged[_row_id(r.model, r.mode, r.seq)] = entry
    doc = {
        "schema": _BASELINE_SCHEMA,
        "device": report.device,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": [merged[k] for k in sorted(merged, key=lambda k: (k[0], k[1], _seq_key(k[2])))],
    }
    atomic_write_text(path, _dumps(doc))
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


def compare_baseline(report: Report, baseline_dir: Path, machine_id: str,
                     thresholds: Thresholds = Thresholds(),
                     metrics: Iterable[str] = GATE_METRICS) -> tuple[list[Regression], list[str]]:
    """Regressions of the gated metrics, plus notes on everything else that could not be compared.

    Gated metrics fail when worse than the thresholds, when measured for a row the baseline holds no
    value for, and when the baseline holds a value this run did not measure. Metrics outside `metrics`
    and baseline rows this run did not touch (filtered out) are notes. No baseline file: BaselineMissing.
    """
    gated = set(check_gate_metrics(metrics))
    path = require_baseline(baseline_dir, report.device)
    base = _load_baseline(path, report.device)
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
        if b_ips is not None and r.inferences_per_s is not None:
            b_mid, b_method = b.get("machine_id"), b.get("method")
            if b_mid != machine_id:
                notes.append(f"{r.key}: throughput not compared: baseline is from machine {b_mid}, "
                             f"this run is on {machine_id}")
            elif b_method != r.method:
                notes.append(f"{r.key}: throughput not compared: baseline is {b_method}, "
                             f"this run is {r.method}")
            elif r.inferences_per_s < b_ips * (1 - thresholds.throughput_drop) - eps:
                regs.append(Regression(r.model, r.mode, r.seq, "throughput", float(b_ips),
                                       float(r.inferences_per_s), f"-{thresholds.throughput_drop:.1%}"))
        for name, bv, cv in (("accuracy", b_acc, r.accuracy), ("size", b_size, r.size_bytes),
                             ("throughput", b_ips, r.inferences_per_s)):
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


def format_regressions(regs: list[Regression]) -> str:
    if not regs:
        return "No regressions against the baseline."
    lines = [f"{len(regs)} regression(s) against the baseline:"]
    lines += [f"  - {r}" for r in regs]
    return "\n".join(lines)


__all__ = [
    "Method", "METHODS", "THROUGHPUT_TARGET_PER_S", "Row", "Report", "Claim", "claims_table",
    "write_png", "Thresholds", "Regression", "baseline_path", "save_baseline", "compare_baseline",
    "GATE_METRICS", "BaselineMissing", "check_gate_metrics", "require_baseline",
    "format_regressions", "machine_id", "machine_info", "baseline_accuracies",
]


# --------------------------------------------------------------------------------------------------
# Pareto: what each artifact costs in bytes against what it gives (issue 12)
# --------------------------------------------------------------------------------------------------



def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, value) points, True where no other point costs at most as much and gives at least as much,
    strictly better in one (equal points are all on the front)."""
    return [not any(c2 <= c and v2 >= v and (c2 < c or v2 > v) for j, (c2, v2) in enumerate(points) if j != i)
            for i, (c, v) in enumerate(points)]


@dataclass(frozen=True)
class ParetoRow:
    model: str
    mode: str
    seq: str
    size_bytes: int
    accuracy: float | None
    inferences_per_s: float | None
    method: str | None  # of the speed figure
    ratio_vs_large: float | None  # BERT-Large fp32 .tflite bytes (this run's) / size_bytes
    accuracy_front: bool  # on the accuracy-vs-bytes front
    speed_front: bool  # on the inferences/s-vs-bytes front


def large_fp32_bytes(rows: list[Row]) -> int | None:
    """This run's BERT-Large fp32 .tflite at seq 128 (the strict ratio's numerator), if it built one."""
    return next((r.size_bytes for r in rows if r.model == "bert-large" and r.mode == "fp32" and r.seq == "128"
                 and r.size_bytes), None)


def pareto_rows(rows: list[Row]) -> list[ParetoRow]:
    """Every row with a size; front flags over the rows that have the figure (accuracy, speed)."""
    sized = [r for r in rows if r.size_bytes]
    large = large_fp32_bytes(rows)
    acc = [r for r in sized if r.accuracy is not None]
    spd = [r for r in sized if r.inferences_per_s is not None]
    acc_front = {id(r) for r, f in zip(acc, pareto_front([(r.size_bytes, r.accuracy) for r in acc])) if f}
    spd_front: set[int] = set()  # one front per method: a projected figure never pushes a measured one off it
    for method in {r.method for r in spd}:
        same = [r for r in spd if r.method == method]
        spd_front |= {id(r) for r, f in zip(same, pareto_front([(r.size_bytes, r.inferences_per_s) for r in same])) if f}
    return [ParetoRow(r.model, r.mode, r.seq, int(r.size_bytes), r.accuracy, r.inferences_per_s, r.method,
                      large / r.size_bytes if large else None, id(r) in acc_front, id(r) in spd_front)
            for r in sorted(sized, key=lambda r: r.size_bytes)]


def pareto_json(rows: list[Row]) -> dict[str, Any]:
    large = large_fp32_bytes(rows)
    return {"large_fp32_bytes": large, "target_ratio": STRICT_RATIO,
            "budget_bytes": int(large / STRICT_RATIO) if large else None,
            "rows": [asdict(p) for p in pareto_rows(rows)]}


def pareto_table(rows: list[Row], width: int = TABLE_WIDTH) -> str:
    """Size order; '*' marks the fronts; 'x BERT-L' = this run's BERT-Large fp32 .tflite bytes / the file's."""
    prs = pareto_rows(rows)
    if not prs:
        return "(no sized artifacts)"
    names, full = _short_names(p.model for p in prs)
    body = [[names[p.model], p.mode, p.seq, f"{p.size_bytes / 1e6:.2f}",
             "" if p.ratio_vs_large is None else f"{p.ratio_vs_large:.1f}",
             "" if p.accuracy is None else f"{p.accuracy * 100:.1f}%" + (" *" if p.accuracy_front else ""),
             "" if p.inferences_per_s is None else f"{_fmt_sig(p.inferences_per_s)} ({p.method})"
             + (" *" if p.speed_front else "")] for p in prs]
    large = large_fp32_bytes(rows)
    note = (f"* on the front (nothing smaller is as good); {STRICT_RATIO:g}x line: "
            f"{large:,} / {STRICT_RATIO:g} = {int(large / STRICT_RATIO):,} bytes" if large else
            "* on the front (nothing smaller is as good); no BERT-Large fp32 in this run: no 160x line")
    return _fit(["model", "mode", "seq", "size MB", "x BERT-L", "acc", "inf/s"], body, wrap=(0, 1), width=width) \
        + "\n" + note + "".join("\n" + line for line in _wrap_lines(full, width))


def write_pareto_png(rows: list[Row], path: Path, device: str) -> None:
    """Accuracy vs bytes and inferences/s vs bytes (log x), the fronts joined, the 160x budget drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prs = pareto_rows(rows)
    large = large_fp32_bytes(rows)
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    fig.suptitle(f"edgemodels Pareto: {device}")
    for ax, field_, front, label in ((axes[0], "accuracy", "accuracy_front", "accuracy (%)"),
                                     (axes[1], "inferences_per_s", "speed_front", "inferences/s")):
        pts = [p for p in prs if getattr(p, field_) is not None]
        ax.set_title(f"{label} vs bytes")
        if not pts:
            _no_data(ax)
            continue
        scale = 100 if field_ == "accuracy" else 1
        ax.scatter([p.size_bytes for p in pts], [getattr(p, field_) * scale for p in pts], color="grey", s=30)
        fr = sorted((p for p in pts if getattr(p, front)), key=lambda p: p.size_bytes)
        ax.plot([p.size_bytes for p in fr], [getattr(p, field_) * scale for p in fr], "-o", color="tab:red",
                label="front")
        for p in pts:
            ax.annotate(f"{p.model}/{p.mode}" + ("" if p.seq == "128" else f"@{p.seq}"),
                        (p.size_bytes, getattr(p, field_) * scale), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        if large:
            ax.axvline(large / STRICT_RATIO, color="tab:green", linestyle="--",
                       label=f"{STRICT_RATIO:g}x smaller than BERT-Large fp32")
        ax.set_xscale("log")
        ax.set_xlabel("bytes (log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(Path(path), buf.getvalue())
