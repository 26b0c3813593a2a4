"""The results history (edgemodels.store.history) and its commands (`history`, `compare`), on SQLite and on a real
PostgreSQL server this file starts (initdb + pg_ctl in a temp dir on a free port; as the `postgres` OS user when
run as root, which initdb refuses). Concurrency and kills use real processes: two writers at once, and a writer
killed with SIGKILL inside its transaction.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, missing
from edgemodels import cli
from edgemodels.report.rows import Report

try:
    import sqlalchemy  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # scripts/setup installs the history extra
        raise
    pytest.skip("the history needs SQLAlchemy: pip install '.[history]' (scripts/setup does it)",
                allow_module_level=True)
from edgemodels.store import history as H  # noqa: E402
from edgemodels.report.gate import decide as gate_decide  # noqa: E402
from edgemodels.store.history.compare import Results, Side, compare  # noqa: E402

MACHINE = "x86_64-2c-24g-testmach"


def gate_digest(relative: float, spread: float = 0.01, n: int = 40) -> dict:
    """A real speed gate digest (edgemodels.run.speedgate.stats.digest) of a file `relative` times the yardstick's
    speed, its rounds spread by `spread`: what a bench row records."""
    import numpy as np

    from edgemodels.run.speedgate import stats, yardstick

    rng = np.random.default_rng(int(relative * 1000))
    yard = np.full(n, 0.005)
    case = yard / (relative * (1 + spread * rng.standard_normal(n)))
    return stats.digest(case, yard, seconds=1.0, threads=1, stopped="target",
                        yardstick_sha256=yardstick.SHA256).to_json()


def report_doc(ips: float = 1000.0, *, device: str = "desktop", machine_id: str = MACHINE, scale: str = "smoke",
               accuracy: float = 0.75, size: int = 1_000_000, **extra_fields) -> dict:
    """A report.json document made by the real Report class (two rows, with the speed gate's digests of a file as
    fast as `ips` / 1000 times the yardstick), plus any extra row fields."""
    rep = Report(device, {"machine_id": machine_id, "scale": scale, "data": "builtin", "placement": "measured",
                          "python": "3.11.7"})
    for mode, factor in (("drq", 1.0), ("fp32", 0.8)):
        r = rep.row("tiny-bert", mode, "64")
        r.size_bytes, r.accuracy, r.macro_f1 = int(size / factor), accuracy, 0.5
        r.inferences_per_s, r.p90_ms, r.method, r.threads = ips * factor, 1000 / ips, "measured", 2
        r.runtime, r.runtime_version, r.fits = "ai-edge-litert", "2.3.0", True
        r.throughput_gate = gate_digest(ips * factor / 1000)
    doc = rep.to_json()
    for r in doc["rows"]:
        r.update(extra_fields)
    return doc


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------------------------------
# A real PostgreSQL server
# --------------------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return debian[-1].parent if debian else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """postgresql://edgemodels@127.0.0.1:PORT: a throwaway cluster, trust auth on loopback, stopped at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("PostgreSQL tests need psycopg 3: pip install '.[history]' (scripts/setup does it)")
    bindir = _pg_bindir()
    if bindir is None:
        missing("needs a PostgreSQL server: sudo apt-get install postgresql (scripts/setup does it)")
    root = Path(tempfile.mkdtemp(prefix="edgemodels-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user the package creates
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            missing("as root, PostgreSQL must run as the 'postgres' user: sudo apt-get install postgresql creates it")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    init = subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "edgemodels", "-A", "trust",
                           "-E", "UTF8", "--locale=C", "--no-sync"], capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr[-800:]}")
    pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    start = subprocess.run([*pg_ctl, "-l", str(root / "log"), "-w", "-t", "60", "-o",
                            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                           capture_output=True, text=True, timeout=90)
    if start.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {start.stdout[-300:]} {start.stderr[-300:]} {log[-800:]}")
    try:
        yield f"postgresql://edgemodels@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _new_pg_database(server: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    """A fresh, empty history: a SQLite file, or a new database on the test's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return _new_pg_database(request.getfixturevalue("pg_server"))


def _count(url: str, table: str) -> int:
    from sqlalchemy import text

    with H.History(url) as h, h.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()


# --------------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------------


def test_runs_and_rows_read_back_as_recorded(url):
    ctx = H.RunContext(git_commit="abc123", git_dirty=True, libraries={"numpy": "2.0"},
                       options={"scale": "smoke"}, source="bench")
    docs = [report_doc(1000 + i, future_metric=i + 0.5) for i in range(3)]
    ids = [H.record_run(url, d, context=ctx) for d in docs]
    assert ids == sorted(ids) and len(set(ids)) == 3
    got = H.runs(url)
    assert [r.id for r in got] == ids
    r = got[0]
    assert (r.device, r.method, r.machine_id, r.scale, r.data_spec, r.data_kind, r.n_rows) == \
        ("desktop", "measured", MACHINE, "smoke", "builtin", "builtin", 2)
    assert (r.git_commit, r.git_dirty, r.libraries, r.options, r.runtime) == \
        ("abc123", True, {"numpy": "2.0"}, {"scale": "smoke"}, "ai-edge-litert")
    assert r.created.tzinfo is not None
    for run_id, doc in zip(ids, docs):  # every field, the unknown ones (a new metric, the digest) included
        assert H.rows_of(url, run_id) == doc["rows"]
    assert _count(url, "edgemodels_rows") == 6


def test_filters_and_last(url):
    H.record_run(url, report_doc(device="pi4"))
    for i in range(3):
        H.record_run(url, report_doc(100 + i))
    assert [r.device for r in H.runs(url, H.RunFilter(device="pi4"))] == ["pi4"]
    last2 = H.runs(url, H.RunFilter(device="desktop", last=2))
    assert len(last2) == 2 and last2[0].id < last2[1].id == H.runs(url)[-1].id
    assert H.runs(url, H.RunFilter(model="no-such-model")) == []
    assert len(H.runs(url, H.RunFilter(model="tiny-bert", mode="fp32"))) == 4


def test_baseline_from_history_takes_the_last_n_runs_on_this_machine(url):
    for ips in (900.0, 1000.0, 1100.0):
        H.record_run(url, report_doc(ips))
    H.record_run(url, report_doc(5000.0, machine_id="another-machine"))
    H.record_run(url, report_doc(7000.0, scale="ci"))
    b = H.baseline_from_history(url, MACHINE, "desktop", "smoke", "builtin", 2)
    assert [r.machine_id for r in b.runs] == [MACHINE, MACHINE] and len(b.runs) == 2
    row = b.rows[("tiny-bert", "drq", "64")]
    assert row.values["inferences_per_s"] == [1000.0, 1100.0] and row.run_ids == tuple(r.id for r in b.runs)
    assert row.values["accuracy"] == [0.75, 0.75]
    pooled = row.pooled  # the two runs' digests as one: the median of medians, an interval spanning both
    assert pooled["relative"]["n"] == 80 and pooled["rounds"] == 80 and pooled["stopped"] == "pooled over 2 runs"
    assert pooled["relative"]["low"] < 1.0 < 1.1 < pooled["relative"]["high"]
    assert "2 run(s)" in b.describe()
    assert H.baseline_from_history(url, "nowhere", "desktop", "smoke", "builtin", 5).runs == ()


def test_a_remote_boards_history_baseline_pools_only_that_boards_runs(url):
    """--remote runs are recorded under the workstation's machine id, but their speed is the board's: a history
    baseline for one board pools its own runs only, labelled as that board, so it is compared as the same machine."""
    from edgemodels.report.gate import gate_machine_id, history_baseline

    boards = {name: {"board": f"Raspberry Pi 4 Model B ({name})", "cpu_model": "Cortex-A72", "cores": 4,
                     "arch": "aarch64"} for name in ("a", "b")}
    for ips, board in ((1000.0, "a"), (3000.0, "b"), (1100.0, "a"), (None, "b")):
        doc = report_doc(ips or 3100.0)
        doc["machine"]["remote"] = boards[board]
        H.record_run(url, doc)
    H.record_run(url, report_doc(9000.0))  # the workstation's own run
    board_a = gate_machine_id({"machine_id": MACHINE, "remote": boards["a"]})
    rows, what = history_baseline(url, MACHINE, "desktop", "smoke", "builtin", 5, figures_id=board_a)
    row = rows[("tiny-bert", "drq", "64")]
    assert row["inferences_per_s"] == 1050.0 and row["throughput_gate_machine_id"] == board_a and "2 run(s)" in what
    own, _ = history_baseline(url, MACHINE, "desktop", "smoke", "builtin", 1)
    assert own[("tiny-bert", "drq", "64")]["inferences_per_s"] == 9000.0
    assert own[("tiny-bert", "drq", "64")]["throughput_gate_machine_id"] == MACHINE


def test_a_bad_document_writes_nothing(tmp_path):
    url = str(tmp_path / "h.sqlite")
    doc = report_doc()
    doc["rows"][1]["accuracy"] = "high"
    with pytest.raises(H.HistoryError, match=r"report: rows\[1\]\.accuracy must be a number or null, not 'high'"):
        H.record_run(url, doc)
    with pytest.raises(H.HistoryError, match=r"rows\[0\]\.model must be a non-empty string"):
        H.record_run(url, {"device": "desktop", "rows": [{"mode": "drq", "seq": "64"}]})
    assert H.runs(url) == []


def test_a_newer_schema_is_refused_with_the_url_and_the_fix(url):
    from sqlalchemy import text

    H.record_run(url, report_doc())
    with H.History(url) as h, h.engine.begin() as conn:
        conn.execute(text("UPDATE edgemodels_meta SET value = '99' WHERE key = 'schema_version'"))
        shown = H.shown(h.url)
    for call in (lambda: H.runs(url), lambda: H.record_run(url, report_doc())):
        with pytest.raises(H.HistoryError) as exc:
            call()
        msg = str(exc.value)
        assert "\n" not in msg and shown in msg and "schema version 99" in msg and "upgrade edgemodels" in msg
    rc, out, err = _run(["history", "--history", url])
    assert rc == 2 and err.startswith("edgemodels: error: history ") and err.count("\n") == 1


def test_urls(tmp_path, monkeypatch):
    monkeypatch.delenv(H.ENV, raising=False)
    assert str(H.resolve_url(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    assert H.resolve_url(None).database == str(H.default_path())
    monkeypatch.setenv(H.ENV, str(tmp_path / "env.db"))
    assert H.resolve_url(None).database == str(tmp_path / "env.db")
    assert H.resolve_url("postgresql://u:secret@db.example/h").drivername == "postgresql+psycopg"
    assert "secret" not in H.shown(H.resolve_url("postgresql://u:secret@db.example/h"))
    with pytest.raises(H.HistoryError, match="not a database URL"):
        H.resolve_url("a b://c")
    with pytest.raises(H.HistoryError, match="no database kind 'nosuchscheme'"):
        H.History("nosuchscheme://host/db")


def test_reading_an_absent_history_creates_nothing(tmp_path):
    url = tmp_path / "sub" / "never.sqlite"
    assert H.runs(str(url)) == []
    assert not url.parent.exists()
    rc, out, _ = _run(["history", "--history", str(url)])
    assert rc == 0 and "no runs recorded yet" in out and not url.parent.exists()
    H.record_run(str(url), report_doc())  # the first write makes the directory and the file
    assert len(H.runs(str(url))) == 1


# --------------------------------------------------------------------------------------------------
# Processes: two writers, a killed writer
# --------------------------------------------------------------------------------------------------

_WRITER = r"""
import json, sys, time
from pathlib import Path
from sqlalchemy import event
from edgemodels.store import history as H
url, doc_path, start, n, tag = sys.argv[1:6]
doc = json.loads(Path(doc_path).read_text())
h = H.History(url)

@event.listens_for(h.engine, "commit")
def hold(conn):  # hold each transaction open a little, so the other writer must wait for it
    time.sleep(0.02)

Path(start + "." + tag).touch()  # imported and ready
while not Path(start).exists():
    time.sleep(0.002)
began = time.time()
for i in range(int(n)):
    for r in doc["rows"]:
        r["writer"] = f"{tag}-{i}"
    h.record_run(doc)
print(json.dumps([began, time.time()]))
"""

_STALLED = r"""
import json, sys, time
from pathlib import Path
from sqlalchemy import event, text
from edgemodels.store import history as H
url, doc_path, marker = sys.argv[1:4]
h = H.History(url)

@event.listens_for(h.engine, "commit")
def stall(conn):  # every row inserted, COMMIT not yet sent
    n = conn.execute(text("SELECT count(*) FROM edgemodels_rows")).scalar()
    Path(marker).write_text(f"rows seen inside the transaction: {n}")
    time.sleep(600)

h.record_run(json.loads(Path(doc_path).read_text()))
"""


def _child(code: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_writers_at_once_lose_nothing(url, tmp_path):
    doc_path, start, n = tmp_path / "doc.json", tmp_path / "go", 12
    doc_path.write_text(json.dumps(report_doc()))
    procs = [_child(_WRITER, url, doc_path, start, n, tag) for tag in ("a", "b")]  # the schema does not exist yet
    deadline = time.monotonic() + 60
    while not all(Path(f"{start}.{t}").exists() for t in "ab"):  # both interpreters up and waiting
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-1000:] for p in procs]
        assert time.monotonic() < deadline, "the writers did not start"
        time.sleep(0.01)
    start.touch()
    spans = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        spans.append(json.loads(out))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the writers did not overlap in time (nothing concurrent was tested): {spans}"
    found = H.runs(url)
    assert len(found) == 2 * n and all(r.n_rows == 2 for r in found)
    order = [H.rows_of(url, r.id)[0]["writer"] for r in found]
    assert set(order) == {f"{t}-{i}" for t in "ab" for i in range(n)}
    assert _count(url, "edgemodels_rows") == 4 * n


def test_a_writer_killed_inside_its_transaction_leaves_no_run(url, tmp_path):
    kept = H.record_run(url, report_doc(1.0))
    doc_path, marker = tmp_path / "doc.json", tmp_path / "in-transaction"
    doc_path.write_text(json.dumps(report_doc(2.0)))
    proc = _child(_STALLED, url, doc_path, marker)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the writer never reached its COMMIT"
            time.sleep(0.05)
        assert marker.read_text() == "rows seen inside the transaction: 4"  # its own 2 rows were written
        assert [r.id for r in H.runs(url)] == [kept]  # a reader meanwhile: not blocked, sees no half run
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert [r.id for r in H.runs(url)] == [kept]
    assert _count(url, "edgemodels_rows") == 2 and _count(url, "edgemodels_runs") == 1
    t = time.monotonic()
    after = H.record_run(url, report_doc(3.0))  # the dead writer's lock is gone
    assert time.monotonic() - t < 20
    assert [r.id for r in H.runs(url)] == [kept, after]


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def test_history_table_marks_and_plot(url, tmp_path):
    for ips, decision in ((1000.0, "pass"), (990.0, "inconclusive"), (600.0, "regression")):
        # as the bench writes it: the whole verdict (ratio, interval, basis...), not only its word
        verdict = {"decision": decision, "ratio": ips / 1000, "low": ips / 1100, "high": ips / 900, "limit": 0.9,
                   "basis": "same machine: " + "x" * 200, "confidence": 0.99, "notes": []}
        H.record_run(url, report_doc(ips, throughput_decision=verdict))
    H.record_run(url, report_doc(1500.0, device="pi4"))
    png = tmp_path / "trend.png"
    rc, out, err = _run(["history", "--history", url, "--device", "desktop", "--plot", str(png)])
    assert rc == 0, err
    assert "3 run(s)" in out and max(len(line) for line in out.splitlines()) <= 120
    line = next(ln for ln in out.splitlines() if ln.startswith("| tiny-bert/drq seq=64") and "!" in ln)
    assert "1000 " in line and "990?" in line and "600!" in line and "-40.0%" in line
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    rc, out, _ = _run(["history", "--history", url, "--mode", "fp32", "--metric", "p90", "--json"])
    doc = json.loads(out)
    assert rc == 0 and len(doc["runs"]) == 4 and all(r["mode"] == "fp32" for rows in doc["rows"].values()
                                                     for r in rows)
    rc, _, err = _run(["history", "--history", url, "--metric", "speeed"])
    assert rc == 2 and "--metric speeed" in err and "inferences_per_s" in err


def test_history_fits_many_runs_in_120_columns(tmp_path):
    url = str(tmp_path / "h.sqlite")
    for i in range(15):
        H.record_run(url, report_doc(1000.0 + i))
    rc, out, _ = _run(["history", "--history", url, "--metric", "throughput"])
    assert rc == 0 and max(len(line) for line in out.splitlines()) <= 120
    assert "older run(s) left out to fit 120 columns" in out


def test_compare_runs_and_files(url, tmp_path):
    a = H.record_run(url, report_doc(1000.0))
    b = H.record_run(url, report_doc(500.0, accuracy=0.70))
    rc, out, err = _run(["compare", str(a), str(b), "--history", url])
    assert rc == 1, err  # a regression: like diff, a script can branch on it
    assert max(len(line) for line in out.splitlines()) <= 120
    row = next(ln for ln in out.splitlines() if "tiny-bert/drq seq=64" in ln and "inferences_per_s" in ln)
    assert "1000" in row and "500" in row and "-50.0%" in row and "regression" in row
    row = next(ln for ln in out.splitlines() if "tiny-bert/drq seq=64" in ln and "| accuracy " in ln)
    assert "75.00" in row and "70.00" in row and "-5.00 pt" in row and "regression" in row
    assert "speed gate" in out
    ra, rb = tmp_path / "a.json", tmp_path / "b" / "report.json"
    rb.parent.mkdir()
    ra.write_text(json.dumps(report_doc(1000.0)))
    rb.write_text(json.dumps(report_doc(1020.0)))
    rc, out, _ = _run(["compare", str(ra), str(rb.parent), "--history", str(tmp_path / "unused.sqlite"), "--json"])
    doc = json.loads(out)
    assert rc == 0 and not (tmp_path / "unused.sqlite").exists()
    ips = [d for d in doc["deltas"] if d["metric"] == "inferences_per_s"]
    assert len(ips) == 2 and all(d["decision"]["verdict"] == "pass" for d in ips)
    assert ips[0]["delta"] == pytest.approx(20.0)
    rc, _, err = _run(["compare", str(a), "999", "--history", url])
    assert rc == 2 and "run 999 is not in the history" in err and err.count("\n") == 1
    rc, _, err = _run(["compare", str(ra), "nonsense", "--history", url])
    assert rc == 2 and "'nonsense' is neither a report.json" in err


def test_history_add_records_report_files(tmp_path):
    url, rep = str(tmp_path / "h.sqlite"), tmp_path / "report.json"
    rep.write_text(json.dumps(report_doc()))
    rc, out, err = _run(["history", "--history", url, "--add", str(rep), str(rep)])
    assert rc == 0, err
    assert out.startswith("added run(s) 1, 2")
    assert [r.source for r in H.runs(url)] == ["import", "import"]
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    rc, _, err = _run(["history", "--history", url, "--add", str(bad)])
    assert rc == 2 and str(bad) in err and "not a readable report.json" in err


def test_the_decision_is_pluggable():
    a = Results("a", "", MACHINE, "measured", report_doc(1000.0)["rows"])
    b = Results("b", "", MACHINE, "measured", report_doc(950.0)["rows"])
    seen = []

    def strict(metric, base: Side, cur: Side):
        seen.append((metric, base.values, cur.values))
        return gate_decide(metric, base, cur) if metric != "inferences_per_s" else \
            type(gate_decide(metric, base, cur))("inconclusive", "a stand-in rule")

    deltas = compare(a, b, decide=strict)
    assert {d.decision.verdict for d in deltas if d.metric == "inferences_per_s"} == {"inconclusive"}
    assert ("inferences_per_s", (1000.0,), (950.0,)) in seen
    assert {d.decision.verdict for d in compare(a, b) if d.metric == "inferences_per_s"} == {"pass"}  # -5 %
    other = Results("c", "", "other-machine", "measured", b.rows)  # across machines: the wider, labelled limit
    cross = [d.decision for d in compare(a, other) if d.metric == "inferences_per_s"]
    assert {c.verdict for c in cross} == {"pass"} and all("cross-machine" in c.why for c in cross)
