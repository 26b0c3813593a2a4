"""Recording every run by default without getting in the way: a bench session, `measure` and `evaluate` each append
one run. Off with `--history off` (or EDGEMODELS_HISTORY=off). Where the history was not asked for by name and
cannot be written (no SQLAlchemy on a device install, a read-only home), the run is not lost: it says so in one line
and goes on; where it was named (--history URL or the variable) a failed write is an error."""

from __future__ import annotations

import os
from typing import Any, Mapping

OFF = ("off", "none", "no", "0")


def wanted(url: str | None) -> bool:
    return str(url or os.environ.get("EDGEMODELS_HISTORY") or "").strip().lower() not in OFF


def named(url: str | None) -> bool:
    """Whether the user named a history (then failing to write it is an error, not a note)."""
    return bool(url or os.environ.get("EDGEMODELS_HISTORY"))


def record(url: str | None, doc: Mapping[str, Any], **context: Any) -> tuple[int | None, str]:
    """(the run's id, a line to show); raises HistoryError only where the history was named and cannot be written."""
    import importlib.util

    from edgemodels.errors import EdgeModelsError
    from edgemodels.store.history import RunContext, record_run, resolve_url, shown

    if not wanted(url):
        return None, "history: off (--history off / EDGEMODELS_HISTORY=off)"
    if importlib.util.find_spec("sqlalchemy") is None and not named(url):
        return None, "history: not recorded: SQLAlchemy is not installed here (pip install '.[history]')"
    try:
        run_id = record_run(url, doc, context=RunContext.here(**context))
    except EdgeModelsError as exc:
        if named(url):
            raise
        return None, f"history: not recorded: {exc}"
    return run_id, f"history: run {run_id} recorded in {shown(resolve_url(url))}"
