"""The report's row model: one Row per (device, model, mode, seq) that the suites fill in turn, the paper-claims
lines, and report.json. Nothing here invents a figure: every speed figure must carry its method ("measured" on the
device, "projected" from another machine), and a row that has one without the other is refused, because an
unlabelled projection would read as a measurement.

Stdlib only at import (matplotlib when a plot is drawn): a device with just a TFLite runtime writes its report too.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from edgemodels.errors import EdgeModelsError
from edgemodels.report.pareto import pareto_json
from edgemodels.store.files import atomic_write_text

Method = Literal["measured", "projected"]
METHODS: tuple[str, ...] = ("measured", "projected")



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
    throughput_gate: dict | None = None
    """The speed gate's digest (edgemodels/run/speedgate): this file's speed relative to the committed yardstick at
    1 thread, its interval, rounds, seconds, and the machine's load while it was timed."""
    throughput_decision: dict | None = None
    """The gate's verdict against the baseline (pass | regression | inconclusive, ratio, interval, limit, basis)."""
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.mode} seq={self.seq}"


_SPEED_FIELDS = ("inferences_per_s", "p50_ms", "p90_ms", "p99_ms")


def check_speed_label(row: Row) -> None:
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
    label: str | None = None
    """The claim in a few words, for one-line terminal tables (the full `claim` goes in the notes under them);
    None (reports written before it): the table shortens `claim`."""
    figure: str | None = None
    """The figure that leads `ours`, with where it was made when that is a time ("160/s measured, mobilebert"),
    for the same tables; None: the table cuts `ours` short."""


def seq_key(seq: str) -> tuple[int, int, str]:
    return (0, int(seq), "") if seq.isdigit() else (1, 0, seq)


def _row_sort_key(row: Row) -> tuple[Any, ...]:
    return (row.model, row.mode, seq_key(row.seq))


class Report:
    """All rows of one bench session on one device, plus the paper-claims lines."""

    def __init__(self, device: str, machine: dict, target_per_s: float = 1.0) -> None:
        if not device:
            raise ValueError("Report needs a device name (e.g. 'desktop', 'pi3')")
        self.device = device
        self.target_per_s = target_per_s  # the device profile's speed target, drawn on the plot
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

    def to_json(self) -> dict:
        rows = []
        for r in self.rows():
            check_speed_label(r)
            rows.append(asdict(r))  # every Row field, None included, so readers see the schema
        doc = {
            "device": self.device,
            "machine": self.machine,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rows": rows,
            "claims": [asdict(c) for c in self._claims],
            "pareto": pareto_json(self.rows()),
        }
        return json_safe(doc)

    def write(self, out_dir: Path) -> list[Path]:
        """Write report.json, report.png and pareto.png into out_dir (the plots where matplotlib is installed: a
        device install has none); returns the paths written.

        Each file is written atomically, so a failure leaves each one whole (new or as it was); it is a
        ReportDirError naming the path and the fix (a full disk, a read-only directory, a file in the way).
        """
        import importlib.util

        out_dir = Path(out_dir)
        doc = self.to_json()  # validates labels before anything is written
        written: list[Path] = []
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "report.json", dumps(doc))
            written.append(out_dir / "report.json")
            if importlib.util.find_spec("matplotlib") is None:
                return written
            from edgemodels.report import plots

            plots.write_png(self.rows(), out_dir / "report.png", self.device, self.target_per_s)
            written.append(out_dir / "report.png")
            plots.write_pareto_png(self.rows(), out_dir / "pareto.png", self.device)
            written.append(out_dir / "pareto.png")
        except OSError as exc:
            raise _report_dir_error(exc, out_dir, written) from exc
        return written


class ReportDirError(EdgeModelsError):
    """--report-dir cannot take the report: a file in the way, a read-only or full directory (one line, the fix)."""


def _report_dir_error(exc: OSError, out_dir: Path, written: list[Path] | None = None) -> ReportDirError:
    """`written`: the files this write finished (None: a check before the run, which writes no report)."""
    import os

    from edgemodels.store.files import disk_full

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
    import os
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


class ReportError(EdgeModelsError, ValueError):
    """A report.json that cannot be read back (names the file and the field)."""


def read_report(path: str | Path) -> tuple[Path, dict]:
    """(the file, its JSON object) of one bench run's report.json, or of the --report-dir holding it."""
    p = Path(path)
    p = p / "report.json" if p.is_dir() else p
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{p}: no such file; pass a bench report.json or the --report-dir that holds it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{p}: not a readable report.json ({exc}); pass one written by `pytest bench/`") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{p}: expected a JSON object, got {type(doc).__name__}")
    return p, doc


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), Paths -> str, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar, without importing numpy
        return json_safe(obj.item())
    return obj


def dumps(doc: Any) -> str:
    return json.dumps(json_safe(doc), indent=2, allow_nan=False, default=str) + "\n"

