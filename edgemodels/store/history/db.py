"""Every bench run remembered: an append-only history of report.json documents in a database.

Why a database and not a directory of reports: a report.json is overwritten by the next run and a baseline file by
the next --baseline-save, so nothing could say when a figure moved. Here each run is appended, never changed, and
read back by `edgemodels history` (a table and trend plot), `edgemodels compare A B` (deltas without rerunning) and
a gate's baseline from the last N runs on one machine (`baseline_from_history`).

Where: an embedded SQLite file by default (`default_path()`: the user data directory, e.g.
~/.local/share/edgemodels/history.sqlite); EDGEMODELS_HISTORY or --history takes another file path or any
SQLAlchemy database URL (postgresql://user@host/db for a team; the psycopg 3 driver is used).

Nothing half-written: one run and all its rows are one transaction, so a killed session leaves no run behind.
Concurrent writers lose nothing: SQLite runs in WAL mode, each write transaction starts with BEGIN IMMEDIATE (it
takes the write lock before reading, so it waits on the busy timeout instead of failing on a lock upgrade), and
PostgreSQL serialises only the schema's creation (an advisory lock).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from edgemodels.store.history.records import (_BOOLS, _FLOATS, _INTS, _STRS, BaselineRow, HistoryBaseline,
                                              HistoryError, RunContext, RunFilter, RunInfo, _check_doc, _created,
                                              _finite, _most_common, _number, _typed_row, pool_digests,
                                              throughput_digest)

ENV = "EDGEMODELS_HISTORY"
"""A file path or database URL for the history (the --history option wins)."""
SCHEMA_VERSION = 1
"""The tables' layout; a database written by a newer edgemodels (a higher number) is refused, never guessed at."""
BUSY_TIMEOUT_S = 60.0
"""How long a SQLite writer waits for another's transaction (a run is a few hundred rows: milliseconds)."""
_PG_SCHEMA_LOCK = 0x65646765  # pg_advisory_xact_lock key: two sessions creating the tables at once


def default_path() -> Path:
    """The default SQLite file: the user data directory, not the artifact cache (`cache clear` must not lose it)."""
    from platformdirs import user_data_path

    return user_data_path("edgemodels") / "history.sqlite"


def resolve_url(url: str | os.PathLike | None = None):
    """--history, else $EDGEMODELS_HISTORY, else the default file, as a SQLAlchemy URL.

    A value without "://" is a SQLite file path; postgresql:// without a driver means psycopg 3 (SQLAlchemy's own
    default is psycopg2, which edgemodels does not install)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = str(url or os.environ.get(ENV) or default_path())
    if "://" not in raw:
        return make_url("sqlite:///" + str(Path(raw).expanduser().resolve()))
    try:
        parsed = make_url(raw)
    except ArgumentError:
        raise HistoryError(f"--history {raw!r} is not a database URL; use a file path, sqlite:///PATH or "
                           "postgresql://USER@HOST[:PORT]/DB") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown(url) -> str:
    """The URL for messages: the password masked."""
    return url.render_as_string(hide_password=True)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _tables():
    """The schema (version SCHEMA_VERSION), built on first use so that importing this module needs no SQLAlchemy."""
    from sqlalchemy import (
        JSON,
        BigInteger,
        Boolean,
        Column,
        DateTime,
        Float,
        ForeignKey,
        Index,
        Integer,
        MetaData,
        String,
        Table,
        Text,
    )

    md = MetaData()
    meta = Table("edgemodels_meta", md, Column("key", String(64), primary_key=True),
                 Column("value", String(255), nullable=False))
    runs = Table(
        "edgemodels_runs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("uid", String(32), nullable=False, unique=True),  # the same run in another database
        Column("created", DateTime(timezone=True), nullable=False),  # when the report was made (UTC)
        Column("recorded", DateTime(timezone=True), nullable=False),
        Column("source", String(32), nullable=False),  # bench | measure | evaluate | import
        Column("device", String(64), nullable=False),
        Column("method", String(16)),  # measured | projected
        Column("machine_id", String(128)),
        Column("host", String(255)),
        Column("git_commit", String(64)),
        Column("git_dirty", Boolean),
        Column("scale", String(32)),
        Column("data_spec", Text),
        Column("data_kind", String(32)),  # builtin | replab | csv
        Column("data_fingerprint", String(128)),
        Column("runtime", String(64)),
        Column("runtime_version", String(64)),
        Column("python", String(32)),
        Column("n_rows", Integer, nullable=False),
        Column("libraries", JSON),
        Column("options", JSON),
        Column("machine", JSON),
        Column("extra", JSON),  # the document's other top-level keys: claims, pareto, whatever comes next
    )
    Index("edgemodels_runs_lookup", runs.c.machine_id, runs.c.device, runs.c.scale, runs.c.data_kind,
          runs.c.created)
    rows = Table(
        "edgemodels_rows", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", Integer, ForeignKey("edgemodels_runs.id", ondelete="CASCADE"), nullable=False,
               index=True),
        Column("model", String(255), nullable=False),
        Column("mode", String(64), nullable=False),
        Column("seq", String(16), nullable=False),
        *[Column(n, Float) for n in _FLOATS],
        *[Column(n, BigInteger) for n in _INTS],
        *[Column(n, Boolean) for n in _BOOLS],
        *[Column(n, String(128)) for n in _STRS],
        Column("decision", String(32)),  # the speed gate's, where it ran (DECISION_FIELD)
        Column("data", JSON, nullable=False),  # the whole row as the report had it, unknown fields included
    )
    return md, meta, runs, rows


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


class History:
    """One history database: `with History(url) as h: h.record_run(doc)`. Not shared between processes."""

    def __init__(self, url: str | os.PathLike | None = None) -> None:
        try:
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise HistoryError("the history needs SQLAlchemy: pip install '.[history]' (sqlalchemy>=2, "
                               "psycopg[binary]>=3 for PostgreSQL)") from None
        self.url = resolve_url(url)
        self.md, self.meta, self.runs_t, self.rows_t = _tables()
        self.engine = _engine(self.url)
        self._checked = False

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    # -- transactions and the schema -------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[Any]:
        from sqlalchemy.exc import OperationalError

        if write and self.is_sqlite and self.url.database:  # reads create nothing; the first write makes the file
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(edgemodels_write=True)
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            raise HistoryError(f"history {shown(self.url)}: {first}; check --history/{ENV} (the file's directory "
                               "must be writable; a server must be reachable)") from None

    def _version(self, conn) -> int | None:
        """The database's schema version; None: no edgemodels tables yet."""
        from sqlalchemy import inspect, select

        insp = inspect(conn)
        if not insp.has_table(self.meta.name):
            if insp.has_table(self.runs_t.name):
                raise HistoryError(f"history {shown(self.url)} has edgemodels tables but no schema version row; "
                                   f"it was not written by edgemodels: point --history/{ENV} at another database")
            return None
        raw = conn.execute(select(self.meta.c.value).where(self.meta.c.key == "schema_version")).scalar()
        try:
            version = int(raw)
        except (TypeError, ValueError):
            raise HistoryError(f"history {shown(self.url)}: schema version {raw!r} is not a number; point "
                               f"--history/{ENV} at another database") from None
        if version > SCHEMA_VERSION:
            raise HistoryError(f"history {shown(self.url)} has schema version {version}, newer than this edgemodels "
                               f"reads ({SCHEMA_VERSION}); upgrade edgemodels, or point --history/{ENV} at another "
                               "database")
        return version

    def _ensure_schema(self, conn) -> None:
        """Create the tables in this (write) transaction if absent; check the version once per History."""
        if self._checked:
            return
        if not self.is_sqlite and self.url.get_backend_name() == "postgresql":
            from sqlalchemy import text

            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
        if self._version(conn) is None:
            self.md.create_all(conn)
            conn.execute(self.meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        self._checked = True

    def _readable(self) -> bool:
        """False where nothing was recorded yet (no file, no tables): reads then return nothing, create nothing."""
        if self.is_sqlite and not Path(self.url.database or "").is_file():
            return False
        with self._connect(write=False) as conn:
            return self._version(conn) is not None

    # -- writing -----------------------------------------------------------------------------------
    def record_run(self, doc: Mapping[str, Any], context: RunContext | None = None, *,
                   origin: str = "report") -> int:
        """Append one report.json document and all its rows in ONE transaction; returns the run's id.

        origin names the document in error messages (a file path)."""
        import uuid

        context = context or RunContext()
        rows = _check_doc(doc, origin)
        machine = dict(doc.get("machine") or {})
        spec = machine.get("data")
        run = {
            "uid": uuid.uuid4().hex, "created": _created(doc, origin), "recorded": datetime.now(timezone.utc),
            "source": context.source, "device": doc["device"],
            "method": machine.get("placement") or _most_common(r.get("method") for r in rows),
            "machine_id": machine.get("machine_id"), "host": context.host, "git_commit": context.git_commit,
            "git_dirty": context.git_dirty, "scale": machine.get("scale"),
            "data_spec": spec, "data_kind": spec.split(":", 1)[0] if isinstance(spec, str) else None,
            "data_fingerprint": context.data_fingerprint or machine.get("data_fingerprint")
            or (machine.get("artifacts") or {}).get("data_fingerprint"),
            "runtime": _most_common(r.get("runtime") for r in rows),
            "runtime_version": _most_common(r.get("runtime_version") for r in rows),
            "python": machine.get("python"), "n_rows": len(rows), "libraries": context.libraries or None,
            "options": _finite(context.options) or None, "machine": _finite(machine),
            "extra": _finite({k: v for k, v in doc.items() if k not in ("device", "machine", "created", "rows")}),
        }
        typed = [_typed_row(r, i, origin) for i, r in enumerate(rows)]
        with self._connect(write=True) as conn:
            self._ensure_schema(conn)
            run_id = conn.execute(self.runs_t.insert().values(**run)).inserted_primary_key[0]
            if typed:
                conn.execute(self.rows_t.insert(), [{**t, "run_id": run_id} for t in typed])
        return int(run_id)

    # -- reading -----------------------------------------------------------------------------------
    def runs(self, filt: RunFilter | None = None) -> list[RunInfo]:
        """The runs matching `filt` (default: all), oldest first."""
        filt = filt or RunFilter()
        from sqlalchemy import exists, select

        if not self._readable():
            return []
        r, w = self.runs_t.c, self.rows_t.c
        q = select(*[r[f.name] for f in fields(RunInfo)])
        for name in ("device", "machine_id", "scale", "data_kind", "method"):
            if getattr(filt, name) is not None:
                q = q.where(r[name] == getattr(filt, name))
        if filt.model is not None or filt.mode is not None:
            sub = select(w.id).where(w.run_id == r.id)
            sub = sub.where(w.model == filt.model) if filt.model is not None else sub
            sub = sub.where(w.mode == filt.mode) if filt.mode is not None else sub
            q = q.where(exists(sub))
        q = q.order_by(r.created.desc(), r.id.desc())
        if filt.last is not None:
            q = q.limit(filt.last)
        with self._connect(write=False) as conn:
            found = [RunInfo.of(m) for m in conn.execute(q).mappings()]
        return found[::-1]

    def machines(self, run_ids: list[int]) -> dict[int, dict]:
        """The recorded machine section (report.json's) of each run."""
        from sqlalchemy import select

        if not run_ids or not self._readable():
            return {}
        with self._connect(write=False) as conn:
            found = conn.execute(select(self.runs_t.c.id, self.runs_t.c.machine)
                                 .where(self.runs_t.c.id.in_(run_ids))).all()
        return {i: (m if isinstance(m, dict) else {}) for i, m in found}

    def run(self, run_id: int) -> RunInfo:
        from sqlalchemy import select

        if self._readable():
            with self._connect(write=False) as conn:
                m = conn.execute(select(*[self.runs_t.c[f.name] for f in fields(RunInfo)])
                                 .where(self.runs_t.c.id == int(run_id))).mappings().first()
            if m is not None:
                return RunInfo.of(m)
        raise HistoryError(f"run {run_id} is not in the history {shown(self.url)}; `python -m edgemodels history` "
                           "lists the runs")

    def rows_of(self, run_id: int) -> list[dict]:
        """The run's rows as its report.json had them (every field, unknown ones included), in report order."""
        from sqlalchemy import select

        self.run(run_id)  # an unknown id is an error, not an empty run
        with self._connect(write=False) as conn:
            return [dict(d) for d in conn.execute(select(self.rows_t.c.data).where(self.rows_t.c.run_id == run_id)
                                                   .order_by(self.rows_t.c.id)).scalars()]

    def rows_of_runs(self, run_ids: list[int]) -> dict[int, list[dict]]:
        """rows_of for many runs in one query."""
        from sqlalchemy import select

        out: dict[int, list[dict]] = {i: [] for i in run_ids}
        if not run_ids:
            return out
        with self._connect(write=False) as conn:
            q = (select(self.rows_t.c.run_id, self.rows_t.c.data).where(self.rows_t.c.run_id.in_(run_ids))
                 .order_by(self.rows_t.c.run_id, self.rows_t.c.id))
            for run_id, data in conn.execute(q):
                out[run_id].append(dict(data))
        return out

    def baseline(self, machine_id: str, device: str, scale: str | None, data_kind: str | None, n: int, *,
                 method: str | None = None, accept: Callable[[dict], bool] | None = None,
                 pool: Callable[[list[dict]], Any] = pool_digests) -> HistoryBaseline:
        """The last `n` runs on `machine_id` for this device, scale and data: per row every numeric metric's values
        (oldest first) and the throughput digests, pooled by `pool` so their spread can set the gate's interval.
        accept: keep only runs whose recorded machine section it accepts (a --remote run: the same board's)."""
        if n < 1:
            raise HistoryError(f"history:{n}: the number of earlier runs must be at least 1")
        filt = RunFilter(device=device, machine_id=machine_id, scale=scale, data_kind=data_kind, method=method,
                         last=None if accept else n)
        chosen = self.runs(filt)
        if accept is not None:
            machines = self.machines([r.id for r in chosen])
            chosen = [r for r in chosen if accept(machines.get(r.id) or {})][-n:]
        by_run = self.rows_of_runs([r.id for r in chosen])
        acc: dict[tuple[str, str, str], dict[str, Any]] = {}
        for run in chosen:
            for row in by_run[run.id]:
                key = (row["model"], row["mode"], str(row["seq"]))
                a = acc.setdefault(key, {"run_ids": [], "values": {}, "digests": []})
                a["run_ids"].append(run.id)
                for name, v in row.items():
                    if _number(v):
                        a["values"].setdefault(name, []).append(float(v))
                if throughput_digest(row) is not None:
                    a["digests"].append(throughput_digest(row))
        rows = {k: BaselineRow(k, tuple(a["run_ids"]), a["values"], a["digests"], pool(a["digests"]))
                for k, a in acc.items()}
        return HistoryBaseline(tuple(chosen), rows)


# --------------------------------------------------------------------------------------------------
# The module-level API (one History per call)
# --------------------------------------------------------------------------------------------------


def record_run(url: str | os.PathLike | None, report_doc: Mapping[str, Any], *, context: RunContext | None = None,
               origin: str = "report") -> int:
    """Append one bench report (Report.to_json()'s document) as a run; returns its id."""
    with History(url) as h:
        return h.record_run(report_doc, context, origin=origin)


def runs(url: str | os.PathLike | None, filt: RunFilter | None = None) -> list[RunInfo]:
    with History(url) as h:
        return h.runs(filt)


def rows_of(url: str | os.PathLike | None, run_id: int) -> list[dict]:
    with History(url) as h:
        return h.rows_of(run_id)


def baseline_from_history(url: str | os.PathLike | None, machine_id: str, device: str, scale: str | None,
                          data_kind: str | None, n: int, **kw) -> HistoryBaseline:
    with History(url) as h:
        return h.baseline(machine_id, device, scale, data_kind, n, **kw)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _engine(url):
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import NoSuchModuleError

    if url.get_backend_name() != "sqlite":
        try:
            return create_engine(url)
        except NoSuchModuleError:
            raise HistoryError(f"--history {shown(url)}: no database kind {url.drivername!r}; use a file path, "
                               "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB") from None
        except ImportError as exc:
            raise HistoryError(f"history {shown(url)}: its driver is not installed ({exc}); for PostgreSQL: "
                               "pip install 'psycopg[binary]>=3' (the history extra)") from None
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # the "begin" listener below issues BEGIN; pysqlite's own comes too late
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        write = conn.get_execution_options().get("edgemodels_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine



