"""Recording whole runs through a writer, for the history tests and their child processes."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from auto_workflow._history._records import ErrorRecord, RunStatus, TaskStatus
from auto_workflow._history._writer import HistoryWriter

T0 = 1_700_000_000.0


def start_run(
    writer: HistoryWriter,
    run_id: str,
    *,
    flow: str = "etl",
    started_at: float = T0,
    tasks: int = 0,
    pid: int | None = None,
    host: str | None = None,
) -> None:
    """Record a run's start and declare ``tasks`` nodes ``enrich:<i>``, each after the last."""
    writer.run_started(
        run_id,
        flow=flow,
        target="pipeline.py:etl",
        params={"day": "2024-01-01"},
        args=(1,),
        kwargs={"mode": "full"},
        host=socket.gethostname() if host is None else host,
        pid=os.getpid() if pid is None else pid,
        started_at=started_at,
        durable=False,
        graph_signature=f"sig-{run_id}",
    )
    writer.nodes_declared(run_id, declarations(tasks))


def declarations(
    tasks: int, start: int = 0
) -> list[tuple[int, str, str, str, tuple[str, ...], None, None]]:
    """Nodes ``enrich:<i>`` for i in [start, start + tasks), each depending on the last."""
    return [
        (i, f"enrich:{i}", "enrich", "task", (f"enrich:{i - 1}",) if i else (), None, None)
        for i in range(start, start + tasks)
    ]


def finish_tasks(
    writer: HistoryWriter,
    run_id: str,
    indexes: Sequence[int],
    *,
    status: TaskStatus = TaskStatus.SUCCEEDED,
    started_at: float = T0,
) -> None:
    """Start and end each task with one attempt."""
    error = None if status is not TaskStatus.FAILED else ErrorRecord(type="E", message="bad")
    for i in indexes:
        writer.task_started(run_id, i, started_at)
        writer.attempt_ended(run_id, i, 1, started_at, started_at + 1, error)
        writer.task_ended(run_id, i, status, 1, started_at + 1, error, False)


def record_run(
    writer: HistoryWriter,
    run_id: str,
    *,
    tasks: int = 3,
    flow: str = "etl",
    started_at: float = T0,
    status: RunStatus = RunStatus.SUCCEEDED,
) -> None:
    """A whole run whose tasks all succeed."""
    start_run(writer, run_id, flow=flow, started_at=started_at, tasks=tasks)
    finish_tasks(writer, run_id, range(tasks), started_at=started_at)
    writer.run_ended(run_id, status, started_at + 2, None)


def count(path: Path, sql: str, params: Sequence[object] = ()) -> int:
    """The single integer ``sql`` returns, read with a plain connection."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql, tuple(params)).fetchone()[0])
    finally:
        conn.close()
