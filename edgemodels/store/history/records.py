"""What the history stores and reads back, without the database: a run's context, its rows checked and typed,
the dataclasses the queries return, and the throughput digests' pooling (the speed gate's).

Split from .db (the store) to keep each module small; the package (edgemodels.store.history) re-exports these names.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from edgemodels.errors import EdgeModelsError

DIGEST_FIELD = "throughput_gate"
"""The row field holding the speed gate's throughput sample digest (issue 25); stored with the rest of the row."""
DECISION_FIELD = "throughput_decision"
"""The row field holding the speed gate's decision (pass / regression / inconclusive), where the gate ran."""

_FLOATS = ("ratio", "accuracy", "macro_f1", "accuracy_delta_vs_fp32_pts", "inferences_per_s", "p50_ms", "p90_ms",
           "p99_ms", "arm_max_abs_diff", "arm_accuracy")
_INTS = ("size_bytes", "peak_rss_bytes", "memory_budget_bytes", "threads")
_BOOLS = ("fits", "pretrained", "arm_loads")
_STRS = ("method", "runtime", "runtime_version")
LIBRARIES = ("edgemodels", "tensorflow", "tf-keras", "transformers", "tokenizers", "ai-edge-litert",
             "tflite-runtime", "ai-edge-quantizer", "numpy")
"""Versions recorded with each run (read from the installed metadata: nothing is imported)."""



class HistoryError(EdgeModelsError):
    """The history database or a document given to it cannot be used (the message names it and the fix)."""


# --------------------------------------------------------------------------------------------------
# What a run is read back as
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What report.json does not say about a run: where its code came from and how it was started."""

    git_commit: str | None = None
    git_dirty: bool | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    source: str = "bench"
    host: str | None = None

    @classmethod
    def here(cls, repo: Path | None = None, **kw) -> "RunContext":
        """This process's context: the checkout's commit and dirty flag (None outside git), installed versions."""
        import edgemodels

        commit, dirty = git_state(repo or Path(edgemodels.__file__).resolve().parents[1])
        return cls(git_commit=commit, git_dirty=dirty, libraries=library_versions(), host=socket.gethostname(), **kw)


def git_state(repo: Path) -> tuple[str | None, bool | None]:
    """(HEAD, tracked files changed) of the work tree at `repo`; (None, None) outside git or without git."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), (bool(status.strip()) if status is not None else None)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass(frozen=True)
class RunInfo:
    """One recorded run (the runs table's row)."""

    id: int
    uid: str
    created: datetime
    source: str
    device: str
    method: str | None
    machine_id: str | None
    host: str | None
    git_commit: str | None
    git_dirty: bool | None
    scale: str | None
    data_spec: str | None
    data_kind: str | None
    data_fingerprint: str | None
    runtime: str | None
    runtime_version: str | None
    python: str | None
    n_rows: int
    libraries: dict | None = None
    options: dict | None = None

    @classmethod
    def of(cls, m: Mapping[str, Any]) -> "RunInfo":
        return cls(**{f.name: (_utc(m[f.name]) if f.name == "created" else m[f.name]) for f in fields(cls)})

    @property
    def commit_label(self) -> str:
        return "" if not self.git_commit else self.git_commit[:8] + ("+dirty" if self.git_dirty else "")


@dataclass(frozen=True)
class RunFilter:
    """Which runs to read; None matches anything. `last`: only the newest N (returned oldest first)."""

    device: str | None = None
    machine_id: str | None = None
    scale: str | None = None
    data_kind: str | None = None
    method: str | None = None
    model: str | None = None  # runs that have a row of this model (and `mode`, if given)
    mode: str | None = None
    last: int | None = None


@dataclass(frozen=True)
class BaselineRow:
    """One (model, mode, seq) over the last N runs: each metric's values, run by run, and the throughput digests."""

    key: tuple[str, str, str]
    run_ids: tuple[int, ...]
    values: dict[str, list[float]]
    digests: list[dict]
    pooled: Any = None


@dataclass(frozen=True)
class HistoryBaseline:
    """What a gate compares a run with: the runs used, and per row their values and pooled throughput digests."""

    runs: tuple[RunInfo, ...]
    rows: dict[tuple[str, str, str], BaselineRow]

    def describe(self) -> str:
        if not self.runs:
            return "no earlier run"
        first, last = self.runs[0], self.runs[-1]
        return (f"{len(self.runs)} run(s) (ids {', '.join(str(r.id) for r in self.runs)}) on {last.machine_id}, "
                f"{first.created:%Y-%m-%d %H:%M} .. {last.created:%Y-%m-%d %H:%M} UTC")


def throughput_digest(row: Mapping[str, Any]) -> dict | None:
    d = row.get(DIGEST_FIELD)
    return d if isinstance(d, dict) else None


def decision_of(row: Mapping[str, Any]) -> str | None:
    """The speed gate's decision recorded in a row: its own field, else the digest's "decision"."""
    d = row.get(DECISION_FIELD)
    if isinstance(d, Mapping):  # the bench's row holds the whole verdict: its ratio, interval and decision
        d = d.get("decision")
    if d is None:
        d = (throughput_digest(row) or {}).get("decision")
    return str(d) if d is not None else None


def pool_digests(digests: list[dict]) -> dict | None:
    """Several runs' speed gate digests as one (edgemodels.run.speedgate.stats.pool: the median of their medians,
    an interval spanning theirs), for a baseline of the last N runs; None without digests."""
    if not digests:
        return None
    from edgemodels.run.speedgate import Digest, stats

    return stats.pool([Digest.from_json(d, where="history digest") for d in digests]).to_json()


def load_report(path: str | os.PathLike) -> dict:
    """A report.json (or the --report-dir holding one), checked enough to be recorded or compared."""
    from edgemodels.report.rows import ReportError, read_report

    try:
        p, doc = read_report(path)
    except ReportError as exc:
        raise HistoryError(str(exc)) from None
    _check_doc(doc, str(p))
    return doc


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _check_doc(doc: Any, origin: str) -> list[dict]:
    fix = "pass a report.json written by `pytest bench/`"
    if not isinstance(doc, dict):
        raise HistoryError(f"{origin}: expected a JSON object (a bench report.json); {fix}")
    if not isinstance(doc.get("device"), str) or not doc["device"]:
        raise HistoryError(f"{origin}: no \"device\" name; {fix}")
    if not isinstance(doc.get("rows"), list):
        raise HistoryError(f"{origin}: no \"rows\" list; {fix}")
    if doc.get("machine") is not None and not isinstance(doc["machine"], dict):
        raise HistoryError(f"{origin}: \"machine\" must be an object; {fix}")
    for i, r in enumerate(doc["rows"]):
        if not isinstance(r, dict):
            raise HistoryError(f"{origin}: rows[{i}] is not an object; {fix}")
        for k in ("model", "mode", "seq"):
            if not isinstance(r.get(k), str) or not r[k]:
                raise HistoryError(f"{origin}: rows[{i}].{k} must be a non-empty string, not {r.get(k)!r}; {fix}")
    return doc["rows"]


def _typed_row(row: dict, i: int, origin: str) -> dict:
    out: dict[str, Any] = {"model": row["model"], "mode": row["mode"], "seq": row["seq"]}

    def bad(name: str, what: str) -> HistoryError:
        return HistoryError(f"{origin}: rows[{i}].{name} must be {what} or null, not {row[name]!r}")

    for name in _FLOATS + _INTS:
        v = row.get(name)
        if v is not None and not _number(v) and not (isinstance(v, float) and not math.isfinite(v)):
            raise bad(name, "a number")
        out[name] = None if v is None or not math.isfinite(v) else (float(v) if name in _FLOATS else int(v))
    for name in _BOOLS:
        if row.get(name) is not None and not isinstance(row[name], bool):
            raise bad(name, "true/false")
        out[name] = row.get(name)
    for name in _STRS:
        if row.get(name) is not None and not isinstance(row[name], str):
            raise bad(name, "a string")
        out[name] = row.get(name)
    out["decision"] = decision_of(row)
    out["data"] = _finite(row)
    return out


def _created(doc: Mapping[str, Any], origin: str) -> datetime:
    raw = doc.get("created")
    if raw is None:
        return datetime.now(timezone.utc)
    try:
        return _utc(datetime.fromisoformat(str(raw)))
    except ValueError:
        raise HistoryError(f"{origin}: created {raw!r} is not an ISO 8601 time") from None


def _utc(t: datetime) -> datetime:
    """SQLite hands timestamps back without their zone: every stored time is UTC."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: PostgreSQL's json type has no token for them (Report.to_json does the same)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _most_common(values) -> Any:
    c = Counter(v for v in values if v is not None)
    return c.most_common(1)[0][0] if c else None


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _mad(xs: list[float]) -> float:
    m = _median(xs)
    return _median([abs(x - m) for x in xs])
