"""The history file's SQL schema, its forward migrations, and opening connections to it.

Invariants:

- ``PRAGMA user_version`` is the number of migrations applied to the file: the schema at
  version *N* is what ``_MIGRATIONS[:N]`` build, in order. Migrations only move forward, and
  each upgrade runs in the one transaction that also bumps ``user_version``, so a file is
  never left half-migrated (a crash mid-upgrade rolls it all back).
- A file whose version is newer than :data:`SCHEMA_VERSION` is never written to: opening it
  raises :class:`HistorySchemaError` naming the file and both versions.
- Connections run in autocommit mode; every write goes through :func:`write_transaction`
  (``BEGIN IMMEDIATE`` ... ``COMMIT``), which retries with backoff while another process
  holds the write lock, beyond SQLite's own busy timeout.

Row encoding, chosen to keep big runs small (a 100,000-task run stays well under 20 MB):
``tasks.node`` is NULL when it equals ``<task>:<idx>`` (the engine's usual id),
``tasks.kind`` is NULL for ``"task"``, ``tasks.status`` is NULL for a task declared but not
started, ``tasks.upstream`` holds node ids joined by U+001F (NULL when none), and
``attempts`` only holds rows for tasks that failed an attempt or needed more than one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from auto_workflow._history._errors import HistorySchemaError
from auto_workflow._history._paths import create_private_file
from auto_workflow._history._records import TaskStatus

__all__ = [
    "SCHEMA_VERSION",
    "UNIT_SEPARATOR",
    "connect",
    "effective_task_status",
    "is_busy",
    "task_counts",
    "write_transaction",
]

T = TypeVar("T")

UNIT_SEPARATOR = "\x1f"
"""Joins a task's upstream node ids; node ids never contain it."""

_V1 = (
    """CREATE TABLE runs (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        flow TEXT NOT NULL,
        target TEXT,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        params TEXT,
        args TEXT,
        kwargs TEXT,
        host TEXT NOT NULL DEFAULT '',
        pid INTEGER NOT NULL DEFAULT 0,
        proc_start INTEGER,
        durable INTEGER NOT NULL DEFAULT 0,
        graph_signature TEXT,
        error_type TEXT,
        error_message TEXT,
        error_traceback TEXT
    )""",
    "CREATE INDEX runs_by_start ON runs (started_at DESC)",
    "CREATE INDEX runs_by_flow ON runs (flow, started_at DESC)",
    "CREATE INDEX runs_by_status ON runs (status, started_at DESC)",
    """CREATE TABLE tasks (
        run INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        node TEXT,
        task TEXT,
        kind TEXT,
        status TEXT,
        attempts INTEGER,
        started_at REAL,
        ended_at REAL,
        error_type TEXT,
        error_message TEXT,
        error_traceback TEXT,
        checkpoint INTEGER,
        upstream TEXT,
        fanout TEXT,
        item INTEGER,
        PRIMARY KEY (run, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE attempts (
        run INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        number INTEGER NOT NULL,
        started_at REAL,
        ended_at REAL,
        error_type TEXT,
        error_message TEXT,
        error_traceback TEXT,
        PRIMARY KEY (run, idx, number)
    ) WITHOUT ROWID""",
)


def _v1(conn: sqlite3.Connection) -> None:
    """Runs, their task calls, and the attempts worth keeping."""
    for statement in _V1:
        conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    """Per-run task counts stored on the run when it ends, so listing runs reads no tasks."""
    conn.execute("ALTER TABLE runs ADD COLUMN counts TEXT")
    ended = conn.execute("SELECT rid FROM runs WHERE status != 'running'").fetchall()
    for (rid,) in ended:
        counts = encode_counts(task_counts(conn, rid, live=False))
        conn.execute("UPDATE runs SET counts = ? WHERE rid = ?", (counts, rid))


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(_MIGRATIONS)


def effective_task_status(stored: str | None, *, live: bool) -> TaskStatus:
    """A task row's status as read: unfinished tasks of a finished run read as cancelled.

    While the run is live, a task declared but not started reads as ``running`` (the record
    contract has no "pending"; its ``started_at`` is ``None``).
    """
    if stored is None or stored == _RUNNING:
        return TaskStatus.RUNNING if live else TaskStatus.CANCELLED
    return _TASK_STATUSES[stored]  # a dict lookup: this runs once per task row read


_RUNNING = TaskStatus.RUNNING.value
_TASK_STATUSES = {status.value: status for status in TaskStatus}


def task_counts(conn: sqlite3.Connection, rid: int, *, live: bool) -> dict[str, int]:
    """Task calls of run ``rid`` per effective status (fan-out barriers not counted)."""
    rows = conn.execute(
        "SELECT status, sum(CASE WHEN kind = 'summary' THEN item ELSE 1 END) FROM tasks "
        "WHERE run = ? AND (kind IS NULL OR kind = 'summary') GROUP BY status",
        (rid,),
    ).fetchall()
    counts: dict[str, int] = {}
    for stored, n in rows:
        key = effective_task_status(stored, live=live).value
        counts[key] = counts.get(key, 0) + n
    return counts


def encode_counts(counts: dict[str, int]) -> str:
    """``counts`` as stored in ``runs.counts``: ``status=n`` pairs, comma-separated."""
    return ",".join(f"{status}={n}" for status, n in sorted(counts.items()))


def decode_counts(text: str) -> dict[str, int]:
    """The inverse of :func:`encode_counts`."""
    pairs = (item.partition("=") for item in text.split(",") if item)
    return {status: int(n) for status, _, n in pairs}


def is_busy(exc: sqlite3.Error) -> bool:
    """True if ``exc`` means another connection holds the lock (worth retrying)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def write_transaction(
    conn: sqlite3.Connection,
    work: Callable[[sqlite3.Connection], T],
    *,
    retries: int = 6,
    backoff: float = 0.05,
) -> T:
    """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, retrying while the file is busy.

    ``work`` may run more than once (after a rollback), so it must only touch the database.

    Raises:
        sqlite3.Error: The transaction failed, or stayed busy through every retry.
    """
    for attempt in range(retries + 1):
        try:
            return _transaction(conn, work)
        except sqlite3.OperationalError as exc:
            if attempt == retries or not is_busy(exc):
                raise
        time.sleep(min(backoff * 2**attempt, 1.0))
    raise AssertionError("unreachable")  # the loop either returns or raises


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _migrate_locked(conn: sqlite3.Connection, path: Path) -> None:
    version = _user_version(conn)  # again: another process may have upgraded meanwhile
    if version > SCHEMA_VERSION:
        raise HistorySchemaError(path, version, SCHEMA_VERSION)
    for step in _MIGRATIONS[version:]:
        step(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def migrate(conn: sqlite3.Connection, path: Path, *, retries: int = 6) -> None:
    """Bring the file at ``path`` up to :data:`SCHEMA_VERSION`.

    Raises:
        HistorySchemaError: The file is newer than this code.
        sqlite3.Error: It is not a usable SQLite database.
    """
    version = _user_version(conn)
    if version > SCHEMA_VERSION:
        raise HistorySchemaError(path, version, SCHEMA_VERSION)
    if version < SCHEMA_VERSION:
        write_transaction(conn, lambda c: _migrate_locked(c, path), retries=retries)


def connect(
    path: Path, *, create: bool, busy_timeout: float = 2.0, retries: int = 6
) -> sqlite3.Connection:
    """An autocommit connection to the history at ``path``, migrated to the current schema.

    Args:
        path: The history file.
        create: Create the file (0600, in a 0700 directory) if missing; if false, a missing
            file raises ``sqlite3.OperationalError`` instead of appearing empty.
        busy_timeout: Seconds SQLite itself waits for another connection's lock.
        retries: Further attempts (with backoff) when a write stays busy.

    Raises:
        HistorySchemaError: The file is newer than this code.
        sqlite3.Error: It cannot be opened or is not a SQLite database.
        OSError: It cannot be created.
    """
    if create:
        create_private_file(path)
    uri = path.absolute().as_uri() + "?mode=rw"
    conn = sqlite3.connect(
        uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _configure(conn)
        migrate(conn, path, retries=retries)
    except BaseException:
        conn.close()
        raise
    return conn


_PRAGMAS: Sequence[str] = (
    "PRAGMA journal_mode = WAL",
    # WAL + NORMAL cannot corrupt the file; a power cut may lose the last batches only.
    "PRAGMA synchronous = NORMAL",
    "PRAGMA journal_size_limit = 4194304",
    "PRAGMA temp_store = MEMORY",
)


def _configure(conn: sqlite3.Connection) -> None:
    for pragma in _PRAGMAS:
        conn.execute(pragma).fetchall()
