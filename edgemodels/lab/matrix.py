"""`pytest bench/ --lab PLACE[,PLACE...]`: the bench matrix on several labgrid boards at once, one merged report.

Why a pytest option rather than a new CLI command: the run is `pytest bench/` with every option a user already
passes (-k, --scale, --models, --modes, --device, --remote-python, ...), and those options reach each board
unchanged; a CLI command would have to re-declare or forward them. The option only replaces pytest's main loop
(pytest_cmdline_main in edgemodels.lab.plugin): the workstation runs, as child processes,

1. one build pass: the same bench, minus the timed, memory and on-device suites, with no place locked, so every
   artifact is built (and every accuracy memoised) once, through the cache, while no board is held idle;
2. one `pytest ... --remote labgrid://PLACE` per place, all at once: each locks its own place, so each board
   times alone, and finds the artifacts in the cache;
3. the merge: one report.json with a column per place and one claims table per place.

A place whose run fails (an unknown place, a board that is off or drops mid-run) fails its own rows: the other
children are separate processes, and the merge marks that place's cells FAILED from its junit XML.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from edgemodels.lab import places as lab
from edgemodels.report import rows as report_rows, tables
from edgemodels.store.files import atomic_write_text
from edgemodels.errors import EdgeModelsError

TAG_DEVICE = "edgemodels_device"
"""Optional place tag: the --device profile of that place's board (pi3, pi4, ...); default native (as itself)."""
BUILD_MARKS = "not throughput and not memory and not compat"
"""What the build pass leaves to the boards: timing, memory and the on-device runtime check."""
_CONSUMED = ("--lab", "--report-dir", "--junit-xml", "--junitxml")
_STOP_CODES = {2: "interrupted", 3: "internal error", 4: "usage error"}


class LabRunError(EdgeModelsError):
    """--lab cannot start: bad place list, an option it cannot combine with, no coordinator."""


@dataclass
class PlaceRun:
    place: str
    device: str
    dir: Path
    command: list[str]
    board: str | None = None  # "address:port" from the NetworkService, or None when the place cannot be used
    error: str | None = None  # why the place did not run, or how its run ended
    exit: int | None = None
    seconds: float | None = None
    proc: Any = None

    @property
    def log(self) -> Path:
        return self.dir / "pytest.log"


def places_of(value: str) -> list[str]:
    names = list(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    if not names:
        raise LabRunError(f"--lab {value!r}: name one or more labgrid places, e.g. --lab pi3-lab1,pi4-lab1")
    for n in names:
        lab.PlaceURL.parse(f"{lab.SCHEME}{n}")
    return names


def child_args(args: Sequence[str]) -> list[str]:
    """The user's pytest arguments without the ones --lab sets per child (--lab, --report-dir, --junit-xml)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in _CONSUMED:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def _has(args: Sequence[str], *names: str) -> bool:
    return any(a.split("=", 1)[0] in names for a in args)


def _marks(args: Sequence[str]) -> list[str]:
    """The build pass's -m: the user's expression (if any) and BUILD_MARKS; the user's -m removed from args."""
    user = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-m"] + [a[3:] for a in args if a.startswith("-m=")]
    return ["-m", f"({user[-1]}) and {BUILD_MARKS}" if user else BUILD_MARKS]


def _without_marks(args: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "-m":
            skip = True
        elif not a.startswith("-m="):
            out.append(a)
    return out


def run(config) -> int:
    """Entry point from the pytest hook: returns the exit code."""
    try:
        return _run(config)
    except EdgeModelsError as exc:
        print(f"ERROR: --lab: {exc}", file=sys.stderr, flush=True)
        return 4


def _run(config) -> int:
    opt = config.getoption
    names = places_of(opt("--lab"))
    args = child_args(config.invocation_params.args)
    for bad, why in (("--remote", "each place is its own --remote"), ("--artifacts", "boards are fed from the cache"),
                     ("--baseline-save", "one device baseline per place would overwrite each other"),
                     ("--numprocesses", "each place is one process (its board times alone)")):
        if _has(args, bad) or (bad == "--numprocesses" and any(re.match(r"^-n\S*$", a) for a in args)):
            raise LabRunError(f"{bad if _has(args, bad) else '-n'} cannot be combined with --lab: {why}")
    out = Path(opt("--report-dir"))
    coordinator = lab.coordinator_address(opt("--lg-coordinator", None))
    runs = _preflight(names, coordinator, args, out)
    say = lambda line: print(f"edgemodels lab: {line}", flush=True)  # noqa: E731
    say(f"{len(runs)} place(s) on {coordinator}: "
        + "; ".join(f"{r.place} ({r.board or 'unusable'}, --device={r.device})" for r in runs))
    for r in runs:
        if r.error:
            say(f"{r.place}: not run: {r.error}")
    started = time.monotonic()
    say(f"building every artifact once (no place locked; log {out / 'build.log'})")
    build = _child([*_without_marks(args), *_marks(args), "--report-dir", str(out / "build")], out / "build.log",
                   config)
    try:
        with _forwarding_sigterm([build]) as stopped:
            rc = build.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C
        stopped = {"signal": "SIGINT"}
    if stopped:
        build.wait()
        say("interrupted during the build pass: no place was locked")
        return 2
    say(f"build: {_summary(out / 'build.log')} (exit {rc}, {time.monotonic() - started:.0f} s)")
    rc = 0 if rc == 5 else rc  # 5: the selection has nothing to build here (e.g. -k throughput): the boards build
    if rc in _STOP_CODES:
        say(f"build pass stopped ({_STOP_CODES[rc]}): {_first_error(out / 'build.log') or 'see the log'}")
        return rc
    ready = [r for r in runs if not r.error]
    for r in ready:
        r.dir.mkdir(parents=True, exist_ok=True)
        r.proc, r.seconds = _child(r.command, r.log, config), time.monotonic()
        say(f"{r.place}: started (log {r.log})")
    pending = list(ready)
    with _forwarding_sigterm([r.proc for r in ready]) as stopped:
        while pending:
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:  # the children got the same Ctrl-C: they release their places; wait for them
                stopped["signal"] = "SIGINT"
            pending = _reap(pending, say)
    interrupted = bool(stopped)
    merged = merge(out, runs, coordinator, list(config.invocation_params.args))
    print(merged_text(merged), flush=True)
    say(f"wrote {out / 'report.json'}")
    if interrupted:
        return 2
    return 0 if rc == 0 and all(r.exit == 0 for r in runs) else 1


def _reap(pending: list[PlaceRun], say) -> list[PlaceRun]:
    """The runs still going; each one that ended gets its exit status, time and first error, and a line."""
    left = []
    for r in pending:
        if r.proc.poll() is None:
            left.append(r)
            continue
        r.exit, r.seconds = r.proc.returncode, time.monotonic() - r.seconds
        if r.exit != 0:
            r.error = _first_error(r.log) or f"exit {r.exit}"
        say(f"{r.place}: {_summary(r.log)} (exit {r.exit}, {r.seconds:.0f} s)")
    return left


@contextlib.contextmanager
def _forwarding_sigterm(procs: list[subprocess.Popen]):
    """A SIGTERM to this process (a cancelled CI job) goes on to the children, which release their places; the
    yielded dict records it, and the caller waits for the children as for a Ctrl-C (which a terminal sends to the
    children itself)."""
    stopped: dict[str, str] = {}
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def forward(signum, frame):
        stopped["signal"] = "SIGTERM"
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGTERM, old)


def _preflight(names: list[str], coordinator: str, args: list[str], out: Path) -> list[PlaceRun]:
    """Each place's board and device, before anything is built: a coordinator that is down stops the run; a place
    that is unknown or has no NetworkService is marked, and the others run."""
    coord = lab.Coordinator(coordinator)
    runs = []
    try:
        for name in names:
            device = "native"
            try:
                board = coord.board(lab.PlaceURL(name))
                device = board.tags.get(TAG_DEVICE, device)
                where, error = board.host, None
            except lab.LabError as exc:
                where, error = None, str(exc)
            cmd = [*args, "--remote", f"{lab.SCHEME}{name}", "--report-dir", str(out / "places" / name),
                   "--junit-xml", str(out / "places" / name / "junit.xml")]
            if not _has(args, "--device"):
                cmd.append(f"--device={device}")
            else:
                device = next(a.split("=", 1)[1] if "=" in a else args[i + 1]
                              for i, a in enumerate(args) if a.split("=", 1)[0] == "--device")
            runs.append(PlaceRun(name, device, out / "places" / name, cmd, where, error))
    finally:
        coord.close()
    return runs


def _child(args: list[str], log: Path, config) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"],
                                cwd=config.invocation_params.dir, stdout=fh, stderr=subprocess.STDOUT)


def _tail(log: Path) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _summary(log: Path) -> str:
    """pytest's last line, e.g. '20 passed, 6 skipped in 41.02s'."""
    for line in reversed(_tail(log)):
        m = re.match(r"^=+ (.*?) =+$", line.strip())
        if m and re.search(r"\b(passed|failed|error|skipped|deselected|no tests ran)\b", m.group(1)):
            return m.group(1)
    return "no pytest summary"


def _first_error(log: Path) -> str | None:
    """The line that says why a run stopped: pytest.exit's message, a usage error, or the first failed test."""
    lines = _tail(log)
    for line in lines:
        m = re.search(r"!+ (?:_pytest\.outcomes\.)?Exit: (.*?) !+$", line.strip())
        if m:
            return m.group(1)
    for line in lines:
        if line.startswith("ERROR: ") or line.startswith("pytest: error:"):
            return line
        m = re.search(r"!+ KeyboardInterrupt(?:: (.*?))? !+$", line.strip())
        if m:
            return f"interrupted ({m.group(1) or 'Ctrl-C'})"
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    if failed:
        return failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
    return None


# --------------------------------------------------------------------------------------------------
# The merged report


def _failed_cases(junit: Path) -> dict[str, str]:
    """{case id: first line of the failure} of the tests that failed or errored in one place's run."""
    try:
        root = ET.parse(junit).getroot()
    except (FileNotFoundError, ET.ParseError):
        return {}
    out: dict[str, str] = {}
    for tc in root.iter("testcase"):
        bad = next((c for c in tc if c.tag in ("failure", "error")), None)
        m = re.search(r"\[(.*)\]$", tc.get("name", ""))
        if bad is not None and m:
            out.setdefault(m.group(1), (bad.get("message") or bad.tag).splitlines()[0][:300])
    return out


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


_PLACE_FIELDS = ("inferences_per_s", "p50_ms", "p90_ms", "p99_ms", "method", "threads", "peak_rss_bytes",
                 "memory_budget_bytes", "fits", "runtime", "runtime_version", "arm_loads", "arm_error",
                 "arm_max_abs_diff", "arm_method", "notes")


def merge(out: Path, runs: list[PlaceRun], coordinator: str, command: list[str]) -> dict:
    """report.json of the whole lab run: the build's rows with one cell per place, each place's claims and lock."""
    from edgemodels.build.sources import slug_for

    build = _load(out / "build" / "report.json") or {}
    reports = {r.place: _load(r.dir / "report.json") for r in runs}
    keys: dict[tuple, dict] = {}
    for doc in [build, *[d for d in reports.values() if d]]:
        for row in doc.get("rows", []):
            k = (row["model"], row["mode"], row["seq"])
            base = keys.setdefault(k, {"model": row["model"], "mode": row["mode"], "seq": row["seq"],
                                       "size_bytes": None, "accuracy": None, "pretrained": None, "places": {}})
            for f in ("size_bytes", "accuracy", "pretrained"):
                base[f] = base[f] if base[f] is not None else row.get(f)
    places: dict[str, Any] = {}
    for r in runs:
        doc = reports[r.place]
        failed = _failed_cases(r.dir / "junit.xml")
        rows = {(x["model"], x["mode"], x["seq"]): x for x in (doc or {}).get("rows", [])}
        for k, merged_row in keys.items():
            case_id = f"{slug_for(k[0])}-{k[1]}-{k[2]}"
            got = rows.get(k)
            if case_id in failed:
                cell = {"status": "failed", "error": failed[case_id]}
            elif r.exit != 0 and got is None:
                cell = {"status": "failed", "error": r.error or f"exit {r.exit}"}
            elif got is None:
                cell = {"status": "not run"}
            else:
                cell = {"status": "measured" if got.get("method") == "measured" else "recorded"}
            if got is not None:
                cell.update({f: got.get(f) for f in _PLACE_FIELDS})
            merged_row["places"][r.place] = cell
        machine = (doc or {}).get("machine", {})
        places[r.place] = {
            "device": r.device, "board_address": r.board, "exit": r.exit, "seconds": r.seconds, "error": r.error,
            "label": machine.get("remote", {}).get("label"), "board": machine.get("remote", {}).get("board"),
            "lock": machine.get("lab"), "report": str(r.dir / "report.json") if doc else None, "log": str(r.log),
            "failed_tests": len(failed), "claims": (doc or {}).get("claims", []),
            "command": [sys.executable, "-m", "pytest", *r.command]}
    merged = {
        "kind": "edgemodels lab run", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "coordinator": coordinator, "command": command, "columns": [r.place for r in runs],
        "build": {"report": str(out / "build" / "report.json") if build else None, "log": str(out / "build.log"),
                  "machine": build.get("machine")},
        "places": places, "rows": [keys[k] for k in sorted(keys)],
    }
    atomic_write_text(out / "report.json", json.dumps(report_rows.json_safe(merged), indent=2) + "\n")
    return merged


def _cell(cell: dict | None, field: str, fmt) -> str:
    if not cell:
        return "-"
    if cell["status"] == "failed":
        return "FAILED"
    v = cell.get(field)
    return "-" if v is None else fmt(v)


def merged_text(doc: dict) -> str:
    """The terminal view: one table with a column pair per place, a legend, one claims table per place."""
    from tabulate import tabulate

    cols = doc["columns"]
    headers = ["model", "mode", "seq", "size MB", "acc"] + [h for p in cols for h in (f"{p} inf/s", f"{p} peak MB")]
    body = []
    for row in doc["rows"]:
        body.append([row["model"], row["mode"], row["seq"], tables._fmt_mb(row["size_bytes"]),
                     tables._fmt_pct(row["accuracy"])]
                    + [c for p in cols for c in (_cell(row["places"].get(p), "inferences_per_s", lambda v: f"{v:.0f}"),
                                                 _cell(row["places"].get(p), "peak_rss_bytes", tables._fmt_mb))])
    lines = ["", "=" * 20 + " edgemodels lab report: " + ", ".join(cols) + " " + "=" * 20, "",
             tabulate(body, headers, tablefmt="github", disable_numparse=True) if body else "(no rows)", ""]
    for p in cols:
        info = doc["places"][p]
        lock = info.get("lock") or {}
        held = (f"; held by {lock['holder']} {_clock(lock['acquired_at'])}-{_clock(lock.get('released_at'))} UTC"
                if lock.get("acquired_at") else "")
        what = info.get("label") or f"--device={info['device']}"
        lines.append(f"{p}: {what}{held}" + (f"; FAILED: {info['error']}" if info.get("error") else ""))
    for p in cols:
        info = doc["places"][p]
        claims = [report_rows.Claim(**c) for c in info["claims"]]
        lines += ["", f"Paper claims: {p}",
                  tables.claims_table(claims) if info["report"] else "(no report: the run stopped before a row)"]
    return "\n".join(lines)


def _clock(iso: str | None) -> str:
    return "?" if not iso else datetime.fromisoformat(iso).strftime("%H:%M:%S.%f")[:-4]

