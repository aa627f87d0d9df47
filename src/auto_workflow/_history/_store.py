"""Reading the run history: listing, fetching and resolving runs; deleting and retention.

A :class:`HistoryStore` holds no connection between calls: each call opens one (cheap,
and safe from any thread), reads in one transaction, and closes it. Nothing is opened at
construction; a missing file reads as an empty history and is not created.

Invariants:

- Runs list newest first (by ``started_at``, then by insertion).
- Listing, fetching and deleting first mark this host's dead ``running`` runs ``crashed``
  (see ``_maintenance``; one indexed query, and a pid check per running run); if the file
  cannot be written, they still *read* as crashed. Runs of other hosts stay ``running``:
  their processes cannot be checked from here.
- A finished run's task counts are stored on its row, so listing reads no task rows; a
  live run's are counted from its task rows (a range scan of their primary key).
- A task that had not ended when its run finished (or crashed) reads as ``cancelled``;
  while the run is live, a task declared but not started reads as ``running`` with
  ``started_at`` ``None``.
- A task with a single successful attempt has no stored attempt row; its ``attempt_log``
  is built from the task row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from auto_workflow._history._errors import AmbiguousRunIdError, HistoryError, RunNotFoundError
from auto_workflow._history._maintenance import (
    apply_retention,
    delete_where,
    keep_last_clause,
    prune_checkpoints,
    sweep_crashed,
)
from auto_workflow._history._records import (
    AttemptRecord,
    ErrorRecord,
    RunRecord,
    RunStatus,
    RunSummary,
    TaskRecord,
)
from auto_workflow._history._schema import (
    UNIT_SEPARATOR,
    connect,
    decode_counts,
    effective_task_status,
    task_counts,
)

__all__ = ["HistoryStore"]

_SUMMARY_COLUMNS = "rid, id, flow, status, started_at, ended_at, target, durable, counts"
_RUN_COLUMNS = (
    f"{_SUMMARY_COLUMNS}, params, args, kwargs, host, pid, error_type, error_message,"
    " error_traceback"
)
_TASK_COLUMNS = (
    "idx, node, task, kind, status, attempts, started_at, ended_at, error_type,"
    " error_message, error_traceback, checkpoint, upstream, fanout, item"
)
_ATTEMPT_COLUMNS = "idx, number, started_at, ended_at, error_type, error_message, error_traceback"
_SHOWN_CANDIDATES = 10


_JUST_NOW = 60.0
"""An explicit delete leaves a checkpoint directory younger than this (a run just started
elsewhere whose row is not committed yet); retention removes it later."""


def _error(type_: str | None, message: str | None, traceback: str | None) -> ErrorRecord | None:
    if type_ is None:
        return None
    return ErrorRecord(type=type_, message=message or "", traceback=traceback or "")


def _run_status(stored: str, rid: int, crashed: frozenset[int]) -> RunStatus:
    if stored == RunStatus.RUNNING and rid in crashed:
        return RunStatus.CRASHED
    return RunStatus(stored)


class HistoryStore:
    """The run history in the SQLite file at ``path``, for reading and pruning.

    Args:
        path: The history file. It need not exist.
        busy_timeout: Seconds to wait for another process's lock on each statement.

    Raises (from each method):
        HistoryError: The file is not a usable history (corrupt, unreadable, a directory).
        HistorySchemaError: It was written by a newer version of auto_workflow.
    """

    __slots__ = ("_busy_timeout", "_path")

    def __init__(self, path: Path, *, busy_timeout: float = 2.0) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout

    @property
    def path(self) -> Path:
        """The history file."""
        return self._path

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """A migrated connection (``None`` if there is no file), crashed runs swept."""
        if not self._path.exists():
            yield None
            return
        try:
            conn = connect(self._path, create=False, busy_timeout=self._busy_timeout)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open run history {self._path}: {exc}") from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot read run history {self._path}: {exc}") from exc
        finally:
            conn.close()

    def list_runs(
        self,
        flow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunSummary]:
        """Recorded runs, newest first, with task counts per status.

        Args:
            flow: Only runs of this flow.
            status: Only runs with this status (``"crashed"`` includes newly detected ones).
            limit: At most this many runs.
            offset: Skip this many of the newest first (for paging).
        """
        with self._reading() as conn:
            if conn is None:
                return []
            crashed = sweep_crashed(conn)
            where, params = _run_filter(
                flow, None if status is None else RunStatus(status), crashed
            )
            sql = (
                f"SELECT {_SUMMARY_COLUMNS} FROM runs WHERE {where}"
                " ORDER BY started_at DESC, rid DESC LIMIT ? OFFSET ?"
            )
            conn.execute("BEGIN")
            rows = conn.execute(sql, (*params, limit, offset)).fetchall()
            summaries = [_summary(conn, row, crashed) for row in rows]
            conn.execute("COMMIT")
            return summaries

    def count_runs(self, flow: str | None = None, status: RunStatus | str | None = None) -> int:
        """How many runs :meth:`list_runs` would list with these filters and no limit."""
        with self._reading() as conn:
            if conn is None:
                return 0
            crashed = sweep_crashed(conn)
            wanted = None if status is None else RunStatus(status)
            where, params = _run_filter(flow, wanted, crashed)
            row = conn.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchone()
            return int(row[0])

    def flows(self) -> list[str]:
        """The names of the flows that have recorded runs, sorted (a scan of their index)."""
        with self._reading() as conn:
            if conn is None:
                return []
            return [row[0] for row in conn.execute("SELECT DISTINCT flow FROM runs ORDER BY flow")]

    def find_run(self, run_id: str) -> RunSummary | None:
        """The summary of run ``run_id`` (exact id), or ``None``."""
        with self._reading() as conn:
            if conn is None:
                return None
            crashed = sweep_crashed(conn)
            sql = f"SELECT {_SUMMARY_COLUMNS} FROM runs WHERE id = ?"
            row = conn.execute(sql, (run_id,)).fetchone()
            return None if row is None else _summary(conn, row, crashed)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The whole record of run ``run_id`` (exact id): tasks in build order, attempts.

        Returns:
            The run, or ``None`` if no run has this id (see :meth:`resolve_prefix`).
        """
        with self._reading() as conn:
            if conn is None:
                return None
            crashed = sweep_crashed(conn)
            conn.execute("BEGIN")  # one snapshot for the run, its tasks and attempts
            try:
                row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
                found = row.fetchone()
                return None if found is None else _record(conn, found, crashed)
            finally:
                conn.execute("COMMIT")

    def graph_signature(self, run_id: str) -> str | None:
        """The graph signature recorded for run ``run_id``, or ``None``."""
        with self._reading() as conn:
            if conn is None:
                return None
            sql = "SELECT graph_signature FROM runs WHERE id = ?"
            row = conn.execute(sql, (run_id,)).fetchone()
            return None if row is None else row[0]

    def resolve_prefix(self, prefix: str) -> str:
        """The full id of the one run whose id is, or starts with, ``prefix``.

        Raises:
            RunNotFoundError: No run matches.
            AmbiguousRunIdError: Several runs start with ``prefix`` (none equals it).
        """
        with self._reading() as conn:
            matches = [] if conn is None else _prefix_matches(conn, prefix)
        if prefix in matches or len(matches) == 1:
            return prefix if prefix in matches else matches[0]
        if not matches:
            raise RunNotFoundError(f"no recorded run id starts with {prefix!r} in {self._path}")
        shown = matches[:_SHOWN_CANDIDATES]
        raise AmbiguousRunIdError(prefix, shown, more=len(matches) - len(shown))

    def delete_runs(
        self,
        *,
        older_than: float | None = None,
        keep_last: int | None = None,
        flow: str | None = None,
    ) -> int:
        """Delete finished runs (with their tasks) matching *all* the given criteria.

        Args:
            older_than: Only runs that started more than this many seconds ago.
            keep_last: Spare the newest ``keep_last`` runs of each flow.
            flow: Only runs of this flow.

        Returns:
            How many runs were deleted. Running runs are never deleted.

        Raises:
            ValueError: No criterion was given, or one is negative.
        """
        where, params = _delete_filter(older_than, keep_last, flow)
        with self._reading() as conn:
            if conn is None:
                return 0
            sweep_crashed(conn)
            deleted = delete_where(conn, where, params)
            if deleted:  # the checkpoints of the runs just deleted go with them
                prune_checkpoints(conn, self._path, min_age=_JUST_NOW)
            return deleted

    def apply_retention(
        self, max_age_days: float = 30, keep_last: int = 1000, *, min_interval: float = 600.0
    ) -> int:
        """Delete runs older than ``max_age_days`` *or* beyond the newest ``keep_last`` per flow.

        Cheap, and meant for start-up: it runs at most once per process per
        ``min_interval`` seconds for this file, otherwise returning 0 at once.

        Returns:
            How many runs were deleted.
        """
        with self._reading() as conn:
            if conn is None:
                return 0
            return apply_retention(
                conn,
                self._path,
                max_age_days=max_age_days,
                keep_last=keep_last,
                min_interval=min_interval,
            )


def _run_filter(
    flow: str | None, status: RunStatus | None, crashed: frozenset[int]
) -> tuple[str, list[Any]]:
    """SQL over ``runs`` selecting ``flow`` and ``status`` (crashed-but-unmarked included)."""
    clauses, params = ["1"], list[Any]()
    if flow is not None:
        clauses.append("flow = ?")
        params.append(flow)
    marks = ", ".join("?" for _ in crashed)
    if status is RunStatus.CRASHED and crashed:
        clauses.append(f"(status = 'crashed' OR rid IN ({marks}))")
        params.extend(crashed)
    elif status is RunStatus.RUNNING and crashed:
        clauses.append(f"status = 'running' AND rid NOT IN ({marks})")
        params.extend(crashed)
    elif status is not None:
        clauses.append("status = ?")
        params.append(status.value)
    return " AND ".join(clauses), params


def _delete_filter(
    older_than: float | None, keep_last: int | None, flow: str | None
) -> tuple[str, list[Any]]:
    if older_than is None and keep_last is None and flow is None:
        raise ValueError("delete_runs needs older_than, keep_last or flow")
    if (older_than is not None and older_than < 0) or (keep_last is not None and keep_last < 0):
        raise ValueError("older_than and keep_last must not be negative")
    clauses, params = ["1"], list[Any]()
    if flow is not None:
        clauses.append("flow = ?")
        params.append(flow)
    if older_than is not None:
        clauses.append("started_at < ?")
        params.append(time.time() - older_than)
    if keep_last is not None:
        clause, extra = keep_last_clause(keep_last)
        clauses.append(clause)
        params.extend(extra)
    return " AND ".join(clauses), params


def _prefix_matches(conn: sqlite3.Connection, prefix: str) -> list[str]:
    """Run ids starting with ``prefix``, sorted (a range scan of the unique id index)."""
    if not prefix:
        rows = conn.execute("SELECT id FROM runs ORDER BY id").fetchall()
    else:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        sql = "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id"
        rows = conn.execute(sql, (prefix, upper)).fetchall()
    return [row[0] for row in rows]


def _summary(conn: sqlite3.Connection, row: tuple[Any, ...], crashed: frozenset[int]) -> RunSummary:
    rid, run_id, flow, stored, started_at, ended_at, target, durable, counts = row[:9]
    status = _run_status(stored, rid, crashed)
    if counts is None:  # still running (or unmarked crash): count its tasks now
        live = status is RunStatus.RUNNING
        counted = task_counts(conn, rid, live=live)
    else:
        counted = decode_counts(counts)
    return RunSummary(
        run_id=run_id,
        flow=flow,
        status=status,
        started_at=started_at,
        ended_at=ended_at,
        target=target,
        durable=bool(durable),
        counts=counted,
    )


def _record(conn: sqlite3.Connection, row: tuple[Any, ...], crashed: frozenset[int]) -> RunRecord:
    summary = _summary(conn, row, crashed)
    params, args, kwargs, host, pid, *error = row[9:]
    tasks = _tasks(conn, row[0], live=summary.status is RunStatus.RUNNING)
    return RunRecord(
        run_id=summary.run_id,
        flow=summary.flow,
        status=summary.status,
        started_at=summary.started_at,
        ended_at=summary.ended_at,
        target=summary.target,
        params=json.loads(params) if params else {},
        args=tuple(json.loads(args)) if args else (),
        kwargs=json.loads(kwargs) if kwargs else {},
        host=host,
        pid=pid,
        durable=summary.durable,
        error=_error(*error),
        tasks=tasks,
    )


def _attempt_logs(conn: sqlite3.Connection, rid: int) -> dict[int, list[AttemptRecord]]:
    sql = f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE run = ? ORDER BY idx, number"
    logs: dict[int, list[AttemptRecord]] = {}
    for idx, number, started_at, ended_at, *error in conn.execute(sql, (rid,)):
        attempt = AttemptRecord(
            number=number, started_at=started_at, ended_at=ended_at, error=_error(*error)
        )
        logs.setdefault(idx, []).append(attempt)
    return logs


def _tasks(conn: sqlite3.Connection, rid: int, *, live: bool) -> tuple[TaskRecord, ...]:
    logs = _attempt_logs(conn, rid)
    sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run = ? ORDER BY idx"
    return tuple(_task(row, logs, live) for row in conn.execute(sql, (rid,)))


def _task(row: tuple[Any, ...], logs: dict[int, list[AttemptRecord]], live: bool) -> TaskRecord:
    idx, node, task, kind, status, attempts, started_at, ended_at = row[:8]
    error = _error(*row[8:11])
    checkpoint, upstream, fanout, item = row[11:]
    log: tuple[AttemptRecord, ...] = tuple(logs.get(idx, ()))
    if not log and attempts == 1 and started_at is not None:
        log = (AttemptRecord(number=1, started_at=started_at, ended_at=ended_at, error=error),)
    task = task or ""
    return TaskRecord(
        node=node if node is not None else f"{task}:{idx}",
        task=task,
        index=idx,
        status=effective_task_status(status, live=live),
        attempts=attempts or 0,
        started_at=started_at,
        ended_at=ended_at,
        error=error,
        checkpoint=bool(checkpoint),
        kind=kind or "task",
        upstream=tuple(upstream.split(UNIT_SEPARATOR)) if upstream else (),
        fanout=fanout,
        item=item,
        attempt_log=log,
    )
