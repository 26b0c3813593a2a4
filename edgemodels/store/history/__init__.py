"""The results history (issue 26): every bench run appended to a database and read back by `edgemodels history`,
`edgemodels compare A B` and a gate's baseline from the last N runs (docs/history.md).

The store is .db, what a run and a row are .records, deltas and the pluggable decision .compare, the commands .cli.
The API is here: `from edgemodels.store import history; history.record_run(url, report.to_json())`. Importing it
needs no SQLAlchemy (only opening a database does).
"""

from edgemodels.store.history.db import (BUSY_TIMEOUT_S, ENV, SCHEMA_VERSION, History, baseline_from_history,
                                         default_path, record_run, resolve_url, rows_of, runs, shown)
from edgemodels.store.history.records import (DECISION_FIELD, DIGEST_FIELD, LIBRARIES, BaselineRow, HistoryBaseline,
                                              HistoryError, RunContext, RunFilter, RunInfo, decision_of, git_state,
                                              library_versions, load_report, pool_digests,
                                              throughput_digest)

__all__ = ["BUSY_TIMEOUT_S", "ENV", "SCHEMA_VERSION", "DECISION_FIELD", "DIGEST_FIELD", "LIBRARIES", "History",
           "HistoryError", "RunContext", "RunFilter", "RunInfo", "BaselineRow", "HistoryBaseline", "record_run", "runs",
           "rows_of", "baseline_from_history", "load_report", "resolve_url", "default_path", "shown", "git_state",
           "library_versions", "throughput_digest", "decision_of", "pool_digests"]
