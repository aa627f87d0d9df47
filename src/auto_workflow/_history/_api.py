"""The functions behind ``auto_workflow.history``: read, delete and report recorded runs.

Each reads the history file the configuration names (``history_path``, default the user's
data directory), through the process's one :class:`~._engine.SqliteHistory`, after the
writes this process has queued are committed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from auto_workflow._core._config import get_config, parse_duration
from auto_workflow._history._engine import SqliteHistory, history_for
from auto_workflow._history._records import RunRecord, RunStatus, RunSummary
from auto_workflow._history._report import write_report as _write_record
from auto_workflow.exceptions import RunNotFoundError

__all__ = ["delete_runs", "get_run", "list_runs", "write_report"]


def _history() -> SqliteHistory:
    found = history_for(get_config())
    if found is None:
        raise RunNotFoundError(
            "the run history is off (config history = 'off'); turn it on to record runs"
        )
    found.writer.flush()
    return found


def list_runs(
    flow: str | None = None, status: RunStatus | str | None = None, limit: int = 50
) -> list[RunSummary]:
    """Recorded runs, newest first, with their task counts per status.

    Args:
        flow: Only runs of this flow.
        status: Only runs with this status (``"failed"``, ``RunStatus.CRASHED``, ...).
        limit: At most this many (a positive int).
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive integer; got {limit!r}")
    wanted = None if status is None else RunStatus(status)
    return _history().store.list_runs(flow=flow, status=wanted, limit=limit)


def get_run(run_id: str) -> RunRecord:
    """The whole record of one run; a unique prefix of its id is enough.

    Raises:
        RunNotFoundError: no run has that id, or the prefix is ambiguous (it says which).
    """
    history = _history()
    full = history.store.resolve_prefix(run_id)
    record = history.store.get_run(full)
    if record is None:
        raise RunNotFoundError(f"no recorded run has the id {run_id!r}")
    return record


def delete_runs(
    older_than: float | str | dt.timedelta | None = None,
    *,
    keep_last: int | None = None,
    flow: str | None = None,
) -> int:
    """Delete recorded runs (and their checkpoints); return how many went.

    Args:
        older_than: Runs that started longer ago than this: seconds, a ``timedelta`` or a
            duration such as ``"30d"`` / ``"12h"``.
        keep_last: Keep only the newest this many runs of each flow.
        flow: Only runs of this flow.
    """
    seconds = _seconds(older_than)
    if seconds is None and keep_last is None:
        raise ValueError("delete_runs needs older_than, keep_last or both")
    return _history().store.delete_runs(older_than=seconds, keep_last=keep_last, flow=flow)


def _seconds(value: float | str | dt.timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise ValueError(
        f"older_than must be seconds, a timedelta or a duration like '30d'; got {value!r}"
    )


def write_report(run_id: str, path: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of run ``run_id``; return its path.

    Args:
        run_id: The run (a unique prefix is enough).
        path: Where to write (default: ``<run id>.html`` in the working directory).
    """
    record = get_run(run_id)
    target = Path(path) if path is not None else Path(f"{record.run_id}.html")
    return _write_record(record, target)
