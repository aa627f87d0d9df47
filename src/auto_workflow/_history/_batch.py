"""One batch of queued history ops, coalesced into as few row writes as possible.

The writer thread drains its queue into a :class:`Batch` (pure Python, no I/O), then calls
:meth:`Batch.apply` inside one transaction. Invariants:

- Each task row the batch touches is written once: its declaration, start and end (any
  that arrived in this batch) merge into one ``INSERT ... ON CONFLICT DO UPDATE`` that sets
  exactly those columns, so a row written by an earlier batch keeps the rest.
- The rows of one run and shape go to SQLite in one statement (a JSON array read with
  ``json_each``), so the writer thread takes the GIL back once per statement, not once per
  row. Text SQLite's JSON would alter (a NUL, a lone surrogate) goes row by row instead,
  a lone surrogate written as its backslash escape; the rows are the same either way.
- ``apply`` only reads the batch and writes the database, so it can run again after a
  rollback (the writer retries a busy transaction).
- A run's stored ``counts`` are computed when it ends, after this batch's task rows.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from typing import Any

from auto_workflow._history._liveness import process_start_time, this_host
from auto_workflow._history._schema import UNIT_SEPARATOR, encode_counts, task_counts
from auto_workflow._history._values import redacted_error

__all__ = [
    "ATTEMPT",
    "FLUSH",
    "NODES",
    "RUN_ENDED",
    "RUN_STARTED",
    "TASK_ENDED",
    "TASK_STARTED",
    "Batch",
    "FlushMarker",
]

# Op codes: the first item of each queued tuple (plain tuples keep the hot path cheap).
RUN_STARTED, NODES, TASK_STARTED, ATTEMPT, TASK_ENDED, RUN_ENDED, FLUSH = range(7)

_DECL = ("node", "task", "kind", "upstream", "fanout", "item")
_START = ("started_at", "status")
_END = ("status", "attempts", "ended_at", "checkpoint")
_ERROR = ("error_type", "error_message", "error_traceback")
_RUNNING = "running"

_RUN_UPSERT = """
    INSERT INTO runs (id, flow, target, params, args, kwargs, host, pid, started_at,
                      durable, graph_signature, proc_start, status)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')
    ON CONFLICT (id) DO UPDATE SET
        flow = excluded.flow, target = excluded.target, params = excluded.params,
        args = excluded.args, kwargs = excluded.kwargs, host = excluded.host,
        pid = excluded.pid, started_at = excluded.started_at, durable = excluded.durable,
        graph_signature = excluded.graph_signature, proc_start = excluded.proc_start,
        status = 'running', ended_at = NULL, counts = NULL, error_type = NULL,
        error_message = NULL, error_traceback = NULL
"""
_RUN_END = """
    UPDATE runs SET status = ?, ended_at = ?, error_type = ?, error_message = ?,
                    error_traceback = ?, counts = ?
    WHERE rid = ?
"""
_ATTEMPT_UPSERT = "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


class FlushMarker:
    """Queued by ``flush()``; resolved once every op queued before it is committed."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False

    def resolve(self, ok: bool) -> None:
        """Record the outcome and wake the waiter."""
        self.ok = ok
        self.done.set()


def _bulk_upsert(columns: tuple[str, ...], nulls: tuple[str, ...], same: frozenset[int]) -> str:
    """One statement writing a whole JSON array of rows of run ``?1`` (``?2``), setting
    ``columns`` and NULL into the ``nulls`` columns. The columns in ``same`` have one value
    for every row, bound once each (``?3``, ``?4``, ... in column order); each JSON row holds
    the index and then the other columns' values, in order.

    One statement per batch, not ``executemany``: the sqlite3 module binds each row's
    values holding the GIL and takes the GIL back after each row, while the scheduler's
    thread wants it; in bulk the writer thread holds it only to ``json.dumps`` the rows,
    and SQLite does the rest in C, where each value read out of a JSON row costs about as
    much as writing the row (hence ``same``). ``WHERE true`` keeps ``ON CONFLICT`` from
    parsing as a join's ``ON``.
    """
    values, position, bound = [], 1, 3
    for i in range(len(columns)):
        if i in same:
            values.append(f"?{bound}")
            bound += 1
        else:
            values.append(f"value ->> {position}")
            position += 1
    names = ", ".join((*columns, *nulls))
    values += ["NULL"] * len(nulls)
    return (
        f"INSERT INTO tasks (run, idx, {names}) SELECT ?1, value ->> 0, {', '.join(values)} "
        f"FROM json_each(?2) WHERE true {_on_conflict((*columns, *nulls))}"
    )


def _single_upsert(columns: tuple[str, ...], nulls: tuple[str, ...]) -> str:
    """The statement writing one row ``(run, idx, *columns)`` (the fallback of
    :func:`_json_safe`)."""
    names = ", ".join((*columns, *nulls))
    marks = ", ".join(("?",) * (len(columns) + 2) + ("NULL",) * len(nulls))
    return (
        f"INSERT INTO tasks (run, idx, {names}) VALUES ({marks}) {_on_conflict((*columns, *nulls))}"
    )


def _on_conflict(columns: tuple[str, ...]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    return f"ON CONFLICT (run, idx) DO UPDATE SET {updates}"


_UNSAFE = re.compile(
    r"\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)
"""What SQLite's JSON would not carry through as it is, in ``json.dumps`` output: a NUL
(SQLite ends the text there) or a lone surrogate (it would store text that is not UTF-8)."""


def _json_safe(text: str) -> bool:
    """True if ``text`` (from ``json.dumps``) holds no string SQLite's JSON would alter."""
    return "\\u" not in text or _UNSAFE.search(text) is None


def _valid_text(value: Any) -> Any:
    """``value``, with a lone surrogate in a string written as its backslash escape (the
    only text SQLite cannot store as UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


Shape = tuple[bool, bool, int]
"""Which parts of a task row a batch has: declared, started, ended (0: no; 1: without an
error; 2: with one)."""


def _shape_columns(shape: Shape) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(columns, nulls)``: the columns a row of ``shape`` sets, and those it clears."""
    decl, start, end = shape
    cols: tuple[str, ...] = _DECL if decl else ()
    if start:
        cols += ("started_at",) if end else _START
    if end:
        cols += _END + (_ERROR if end == 2 else ())
    return cols, (_ERROR if end == 1 else ())


_COLUMNS = {
    (d, s, e): _shape_columns((d, s, e))
    for d in (False, True)
    for s in (False, True)
    for e in (0, 1, 2)
    if d or s or e
}
_SINGLE = {shape: _single_upsert(*columns) for shape, columns in _COLUMNS.items()}
_BULK: dict[tuple[Shape, frozenset[int]], str] = {}
"""Bulk statements made so far, by shape and which columns are the same in every row."""


def _declared_row(node: tuple[Any, ...]) -> tuple[int, tuple[Any, ...]]:
    """``(index, declared columns)`` of one ``nodes_declared`` entry."""
    index, node_id, task, kind, upstream, fanout, item = node
    compact_node = None if node_id == f"{task}:{index}" else node_id
    compact_kind = None if kind == "task" else kind
    joined = UNIT_SEPARATOR.join(upstream) if upstream else None
    return index, (compact_node, task, compact_kind, joined, fanout, item)


class Batch:
    """Ops drained from the queue, merged per run and per task row (see module docstring)."""

    __slots__ = ("attempts", "declared", "ended", "markers", "run_ends", "run_starts", "started")

    def __init__(self) -> None:
        self.run_starts: dict[str, tuple[Any, ...]] = {}
        self.declared: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.started: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.ended: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.attempts: list[tuple[str, tuple[Any, ...]]] = []
        self.run_ends: dict[str, tuple[Any, ...]] = {}
        self.markers: list[FlushMarker] = []

    @property
    def has_writes(self) -> bool:
        """False for a batch of flush markers only."""
        parts = (self.run_starts, self.declared, self.started, self.ended, self.attempts)
        return any(parts) or bool(self.run_ends)

    def add(self, op: tuple[Any, ...]) -> None:
        """Merge one queued op into the batch."""
        code = op[0]
        if code == TASK_STARTED:
            self.started[(op[1], op[2])] = (op[3], _RUNNING)
        elif code == TASK_ENDED:
            self._add_end(op)
        elif code == ATTEMPT:
            self._add_attempt(op)
        elif code == NODES:
            for node in op[2]:
                index, row = _declared_row(node)
                self.declared[(op[1], index)] = row
        elif code == RUN_STARTED:
            self.run_ends.pop(op[1], None)  # a run restarted under the same id runs again
            self.run_starts[op[1]] = op[2]
        elif code == RUN_ENDED:
            _, run_id, status, ended_at, error = op
            self.run_ends[run_id] = (str(status), ended_at, *redacted_error(error))
        elif code == FLUSH:
            self.markers.append(op[1])

    def _add_end(self, op: tuple[Any, ...]) -> None:
        _, run_id, index, status, attempts, ended_at, error, checkpoint = op
        row: tuple[Any, ...] = (str(status), attempts, ended_at, checkpoint)
        if error is not None:
            row += redacted_error(error)
        self.ended[(run_id, index)] = row

    def _add_attempt(self, op: tuple[Any, ...]) -> None:
        _, run_id, index, number, started_at, ended_at, error = op
        # A single attempt that succeeded is the task row itself: no attempt row needed.
        if error is not None or number > 1:
            row = (index, number, started_at, ended_at, *redacted_error(error))
            self.attempts.append((run_id, row))

    def resolve(self, ok: bool) -> None:
        """Wake every ``flush()`` waiting on this batch."""
        for marker in self.markers:
            marker.resolve(ok)

    def apply(self, conn: sqlite3.Connection) -> None:
        """Write the batch (inside the caller's transaction)."""
        host = this_host()
        for run_id, row in self.run_starts.items():
            proc_start = process_start_time(row[6]) if row[5] == host else None
            conn.execute(_RUN_UPSERT, (run_id, *row, proc_start))
        rids: dict[str, int] = {}
        self._apply_tasks(conn, rids)
        rows = [(_rid(conn, rids, run_id), *row) for run_id, row in self.attempts]
        conn.executemany(_ATTEMPT_UPSERT, rows)
        for run_id, (status, *rest) in self.run_ends.items():
            rid = _rid(conn, rids, run_id)
            counts = encode_counts(task_counts(conn, rid, live=status == _RUNNING))
            conn.execute(_RUN_END, (status, *rest, counts, rid))

    def _apply_tasks(self, conn: sqlite3.Connection, rids: dict[str, int]) -> None:
        groups: dict[tuple[str, Shape], list[tuple[Any, ...]]] = {}
        declared, started, ended = self.declared, self.started, self.ended
        # Key order is (run, build index): B-tree appends fill pages and keep the file small.
        for key in sorted(declared.keys() | started.keys() | ended.keys()):
            d, s, e = declared.get(key), started.get(key), ended.get(key)
            values = (d or ()) + ((s[:1] if e else s) if s else ()) + (e or ())
            shape = (d is not None, s is not None, 0 if e is None else 1 if len(e) == 4 else 2)
            groups.setdefault((key[0], shape), []).append((key[1], *values))
        for (run_id, shape), rows in groups.items():
            _write_rows(conn, shape, _rid(conn, rids, run_id), rows)


def _write_rows(
    conn: sqlite3.Connection, shape: Shape, rid: int, rows: list[tuple[Any, ...]]
) -> None:
    """Write task rows ``(idx, *columns)`` of one run and shape: in bulk, each column that
    is the same in every row bound once, or (rarely: text with a NUL or a lone surrogate)
    row by row."""
    index, *columns = zip(*rows, strict=True)
    same = frozenset(i for i, column in enumerate(columns) if _all_same(column))
    varying = [column for i, column in enumerate(columns) if i not in same]
    text = json.dumps(list(zip(index, *varying, strict=True)))
    if not _json_safe(text):
        conn.executemany(_SINGLE[shape], ((rid, *map(_valid_text, row)) for row in rows))
        return
    statement = _BULK.get((shape, same))
    if statement is None:
        statement = _BULK[(shape, same)] = _bulk_upsert(*_COLUMNS[shape], same)
    bound = [_valid_text(column[0]) for i, column in enumerate(columns) if i in same]
    conn.execute(statement, (rid, text, *bound))


def _all_same(values: tuple[Any, ...]) -> bool:
    """True if every value equals the first and has its type (1, 1.0 and True are equal,
    but SQLite stores them differently)."""
    first = values[0]
    return values.count(first) == len(values) and len(set(map(type, values))) == 1


def _rid(conn: sqlite3.Connection, rids: dict[str, int], run_id: str) -> int:
    """The row id of run ``run_id``; a placeholder run row if its start was never recorded."""
    rid = rids.get(run_id)
    if rid is not None:
        return rid
    row = conn.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        cursor = conn.execute(
            "INSERT INTO runs (id, flow, status, started_at) VALUES (?, '', 'running', 0)",
            (run_id,),
        )
        rid = cursor.lastrowid
        assert rid is not None  # an INSERT into a rowid table always sets it
    else:
        rid = int(row[0])
    rids[run_id] = rid
    return rid
