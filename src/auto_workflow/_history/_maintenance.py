"""Keeping the history true and bounded: crashed-run detection, deletion, retention.

Invariants:

- A run is marked ``crashed`` only if it is ``running``, was recorded on this host, and
  its process is gone (or its pid now belongs to a process that started at another time).
  Runs from other hosts are left ``running``: their processes cannot be checked from here.
- A crashed run's ``ended_at`` becomes the last time any of its tasks recorded (its start
  if none did), and its counts read unfinished tasks as cancelled.
- Deleting never touches a ``running`` run (it may still be writing); a run's attempts and
  tasks are deleted in the same transaction as the run.
- Retention runs at most once per process per ``min_interval`` seconds for a given file.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from auto_workflow._history._liveness import Liveness, is_alive, this_host
from auto_workflow._history._paths import checkpoint_dir
from auto_workflow._history._schema import encode_counts, task_counts, write_transaction

__all__ = ["apply_retention", "delete_where", "keep_last_clause", "sweep_crashed"]

logger = logging.getLogger("auto_workflow.history")

_retention_lock = threading.Lock()
_last_retention: dict[Path, float] = {}
"""Monotonic time of this process's last retention pass, per resolved history path."""

_DEAD_CANDIDATES = """
    SELECT rid, pid, proc_start FROM runs WHERE status = 'running' AND host = ?
"""
_LAST_ACTIVITY = """
    SELECT max(coalesce(max(ended_at), 0), coalesce(max(started_at), 0)) FROM tasks
    WHERE run = ?
"""
_MARK_CRASHED = """
    UPDATE runs SET status = 'crashed', ended_at = max(started_at, ?), counts = ?
    WHERE rid = ? AND status = 'running'
"""


def _dead_runs(conn: sqlite3.Connection) -> list[int]:
    rows = conn.execute(_DEAD_CANDIDATES, (this_host(),)).fetchall()
    return [rid for rid, pid, start in rows if is_alive(pid, start) is Liveness.DEAD]


def _mark_crashed(conn: sqlite3.Connection, rids: Sequence[int]) -> None:
    for rid in rids:
        (last,) = conn.execute(_LAST_ACTIVITY, (rid,)).fetchone()
        counts = encode_counts(task_counts(conn, rid, live=False))
        conn.execute(_MARK_CRASHED, (last, counts, rid))


def sweep_crashed(conn: sqlite3.Connection) -> frozenset[int]:
    """Mark this host's dead ``running`` runs ``crashed`` in the file, where it can.

    Returns:
        Row ids of crashed runs that could *not* be marked (the file is read-only or busy),
        so that readers can still report them as crashed; usually empty.
    """
    dead = _dead_runs(conn)
    if not dead:
        return frozenset()
    try:
        write_transaction(conn, lambda c: _mark_crashed(c, dead), retries=1)
    except sqlite3.OperationalError as exc:
        logger.debug("could not mark %d crashed run(s): %s", len(dead), exc)
        return frozenset(dead)
    return frozenset()


def keep_last_clause(keep_last: int) -> tuple[str, tuple[int]]:
    """SQL (and its parameter) true for runs beyond the newest ``keep_last`` of their flow."""
    ranked = (
        "SELECT rid, row_number() OVER (PARTITION BY flow ORDER BY started_at DESC, rid DESC)"
        " AS n FROM runs"
    )
    return f"rid IN (SELECT rid FROM ({ranked}) WHERE n > ?)", (keep_last,)


def _delete_doomed(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (rid INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.doomed")
    conn.execute(
        f"INSERT INTO temp.doomed SELECT rid FROM runs WHERE status != 'running' AND ({where})",
        tuple(params),
    )
    for table, column in (("attempts", "run"), ("tasks", "run"), ("runs", "rid")):
        conn.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT rid FROM temp.doomed)")
    (count,) = conn.execute("SELECT count(*) FROM temp.doomed").fetchone()
    return int(count)


def delete_where(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
    """Delete the non-running runs matching ``where`` (SQL over ``runs``), tasks included.

    Returns:
        How many runs were deleted.
    """
    return write_transaction(conn, lambda c: _delete_doomed(c, where, params))


def apply_retention(
    conn: sqlite3.Connection,
    path: Path,
    *,
    max_age_days: float,
    keep_last: int,
    min_interval: float,
) -> int:
    """Delete runs older than ``max_age_days`` or beyond the newest ``keep_last`` per flow.

    Skipped (returning 0) if this process already did so for ``path`` within
    ``min_interval`` seconds.

    Returns:
        How many runs were deleted.
    """
    key = path.absolute()
    now = time.monotonic()
    with _retention_lock:
        last = _last_retention.get(key)
        if last is not None and now - last < min_interval:
            return 0
        _last_retention[key] = now
    sweep_crashed(conn)
    cutoff = time.time() - max_age_days * 86_400
    ranked, ranked_params = keep_last_clause(keep_last)
    deleted = delete_where(conn, f"started_at < ? OR {ranked}", (cutoff, *ranked_params))
    if deleted:
        prune_checkpoints(conn, path, min_age=_RECENT)
    return deleted


_RECENT = 3600.0
"""A checkpoint directory younger than this may belong to a run whose row another process
has not committed yet: retention leaves it alone."""


def prune_checkpoints(conn: sqlite3.Connection, history_path: Path, *, min_age: float) -> int:
    """Remove the checkpoint directories of runs the history no longer holds.

    Directories modified less than ``min_age`` seconds ago are kept (a durable run just
    started elsewhere may not have its row committed yet).

    Returns:
        How many directories were removed.
    """
    try:
        entries = list(os.scandir(checkpoint_dir(history_path)))
    except OSError:
        return 0
    cutoff = time.time() - min_age
    removed = 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or entry.stat().st_mtime > cutoff:
            continue
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (entry.name,)).fetchone() is None:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed
