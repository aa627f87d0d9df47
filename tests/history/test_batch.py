"""A batch's bulk write: the rows it leaves are those that writing each op on its own in
queue order leaves, and running it again after a rollback writes them once."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from history_helpers import T0, count, start_run
from hypothesis import given, settings
from hypothesis import strategies as st

from auto_workflow._history import _batch
from auto_workflow._history._batch import Batch
from auto_workflow._history._records import ErrorRecord, RunStatus, TaskStatus
from auto_workflow._history._schema import connect, write_transaction
from auto_workflow._history._values import redacted_error
from auto_workflow._history._writer import HistoryWriter

Op = tuple[Any, ...]
RUNS = ("r1", "r2")


def _one_by_one(conn: sqlite3.Connection, op: Op) -> None:
    """What one op means on its own: an upsert of exactly its columns (the reference)."""
    code, run_id = op[0], op[1]
    rid = conn.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    if code == _batch.NODES:
        for node in op[2]:
            index, row = _batch._declared_row(node)
            conn.execute(
                "INSERT INTO tasks (run, idx, node, task, kind, upstream, fanout, item) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, idx) DO UPDATE SET "
                "node = excluded.node, task = excluded.task, kind = excluded.kind, "
                "upstream = excluded.upstream, fanout = excluded.fanout, item = excluded.item",
                (rid, index, *row),
            )
    elif code == _batch.TASK_STARTED:
        conn.execute(
            "INSERT INTO tasks (run, idx, started_at, status) VALUES (?, ?, ?, 'running') "
            "ON CONFLICT (run, idx) DO UPDATE SET started_at = excluded.started_at, "
            "status = excluded.status",
            (rid, op[2], op[3]),
        )
    elif code == _batch.TASK_ENDED:
        _, _, index, status, attempts, ended_at, error, checkpoint = op
        conn.execute(
            "INSERT INTO tasks (run, idx, status, attempts, ended_at, error_type, "
            "error_message, error_traceback, checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run, idx) DO UPDATE SET status = excluded.status, "
            "attempts = excluded.attempts, ended_at = excluded.ended_at, "
            "error_type = excluded.error_type, error_message = excluded.error_message, "
            "error_traceback = excluded.error_traceback, checkpoint = excluded.checkpoint",
            (rid, index, status, attempts, ended_at, *redacted_error(error), checkpoint),
        )


def _fresh(path: Path) -> sqlite3.Connection:
    conn = connect(path, create=True)
    for run_id in RUNS:
        conn.execute(
            "INSERT INTO runs (id, flow, status, started_at) VALUES (?, 'f', 'running', 0)",
            (run_id,),
        )
    return conn


def _tasks(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT runs.id, tasks.* FROM tasks JOIN runs ON runs.rid = tasks.run "
        "ORDER BY runs.id, tasks.idx"
    ).fetchall()


_names = st.sampled_from(["enrich", "load", "fan_out(load)", "fanout"])
_text = st.text(max_size=12) | st.just("nul \x00 inside")  # NUL: the row-by-row fallback
_error = st.none() | st.builds(ErrorRecord, type=_text, message=_text, traceback=_text)
_time = st.floats(min_value=0, max_value=2e9, allow_nan=False) | st.just(T0 + 0.1)


@st.composite
def _phase(draw: st.DrawFn) -> list[Op]:
    """Ops as the engine queues them in one run: per task row, declared, started, ended
    (each maybe missing), rows of two runs interleaved."""
    per_row: list[list[Op]] = []
    for run_id in RUNS:
        indexes = draw(st.sets(st.integers(0, 6), max_size=5))
        per_row.extend(draw(_lifecycle(run_id, index)) for index in indexes)
    return _interleave(per_row, draw(st.randoms(use_true_random=False)))


@st.composite
def _lifecycle(draw: st.DrawFn, run_id: str, index: int) -> list[Op]:
    ops: list[Op] = []
    if draw(st.booleans()):
        task, kind = draw(_names), draw(st.sampled_from(["task", "fanout", "summary"]))
        node_id = draw(st.sampled_from([f"{task}:{index}", f"fanout:{index}", "x"]))
        upstream = tuple(draw(st.lists(st.sampled_from(["a:0", "b:1"]), max_size=2)))
        fanout = draw(st.none() | st.just("fanout:1"))
        item = draw(st.none() | st.integers(0, 9))
        decl = (index, node_id, task, kind, upstream, fanout, item)
        ops.append((_batch.NODES, run_id, (decl,)))
    if draw(st.booleans()):
        ops.append((_batch.TASK_STARTED, run_id, index, draw(_time)))
    if draw(st.booleans()):
        status = draw(st.sampled_from([s.value for s in TaskStatus]))
        attempts, at, error = draw(st.integers(0, 3)), draw(_time), draw(_error)
        ops.append(
            (_batch.TASK_ENDED, run_id, index, status, attempts, at, error, draw(st.booleans()))
        )
    return ops


def _interleave(rows: list[list[Op]], rng: Any) -> list[Op]:
    """All ops, each row's in its order, rows shuffled into one another."""
    slots = [i for i, ops in enumerate(rows) for _ in ops]
    rng.shuffle(slots)
    position = [0] * len(rows)
    merged = []
    for i in slots:
        merged.append(rows[i][position[i]])
        position[i] += 1
    return merged


def _batches(ops: list[Op], cuts: list[int]) -> list[list[Op]]:
    bounds = [0, *sorted(c for c in cuts if c < len(ops)), len(ops)]
    return [ops[start:stop] for start, stop in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(
    first=_phase(),
    again=_phase(),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    later_cuts=st.lists(st.integers(0, 40), max_size=4),
)
def test_the_bulk_write_leaves_the_rows_that_writing_op_by_op_leaves(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[Op],
    again: list[Op],
    cuts: list[int],
    later_cuts: list[int],
) -> None:
    """Cut into batches anywhere; ``again`` is the same rows recorded once more (as a
    resumed run records them), in batches of its own."""
    home = tmp_path_factory.mktemp("bulk")
    bulk, reference = _fresh(home / "bulk.sqlite"), _fresh(home / "reference.sqlite")
    for ops in (*_batches(first, cuts), *_batches(again, later_cuts)):
        batch = Batch()
        for op in ops:
            batch.add(op)
        write_transaction(bulk, batch.apply)
    for op in (*first, *again):
        write_transaction(reference, lambda conn, op=op: _one_by_one(conn, op))
    assert _tasks(bulk) == _tasks(reference)
    bulk.close()
    reference.close()


def _a_batch_of(run_id: str, tasks: int) -> Batch:
    batch = Batch()
    batch.add((_batch.RUN_STARTED, run_id, ("f", None, "{}", "[]", "{}", "h", 1, T0, False, None)))
    for i in range(tasks):
        decl = (i, f"enrich:{i}", "enrich", "task", (), None, None)
        batch.add((_batch.NODES, run_id, (decl,)))
        batch.add((_batch.TASK_STARTED, run_id, i, T0 + i))
        error = ErrorRecord(type="E", message="bad") if i % 7 == 3 else None
        status = "failed" if error else "succeeded"
        batch.add((_batch.TASK_ENDED, run_id, i, status, 1, T0 + i + 0.5, error, False))
    batch.add((_batch.RUN_ENDED, run_id, RunStatus.FAILED, T0 + tasks, None))
    return batch


def test_a_batch_applied_again_after_a_rollback_writes_its_rows_once(tmp_path: Path) -> None:
    conn = connect(tmp_path / "h.sqlite", create=True)
    batch = _a_batch_of("r1", 50)
    conn.execute("BEGIN IMMEDIATE")
    batch.apply(conn)
    conn.execute("ROLLBACK")  # as after a failed commit; the writer then tries again
    write_transaction(conn, batch.apply)
    once = _fresh(tmp_path / "once.sqlite")
    write_transaction(once, _a_batch_of("r1", 50).apply)
    assert _tasks(conn) == _tasks(once)
    assert count(tmp_path / "h.sqlite", "SELECT count(*) FROM tasks") == 50
    runs = "SELECT id, status, counts FROM runs"
    assert conn.execute(runs).fetchall() == [("r1", "failed", "failed=7,succeeded=43")]
    conn.close()
    once.close()


def test_a_commit_retried_while_another_process_holds_the_file_writes_once(
    make_writer: Callable[..., HistoryWriter], history_path: Path
) -> None:
    setup = make_writer()
    start_run(setup, "setup")
    setup.close()
    holder = sqlite3.connect(history_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
    release = threading.Timer(0.4, lambda: holder.execute("ROLLBACK"))
    writer = make_writer(busy_timeout=0.05, retries=8)
    began = time.monotonic()
    start_run(writer, "r1", tasks=40)
    for i in range(40):
        writer.task_started("r1", i, T0 + i)
        writer.task_ended("r1", i, TaskStatus.SUCCEEDED, 1, T0 + i + 1, None, False)
    writer.run_ended("r1", RunStatus.SUCCEEDED, T0 + 50, None)
    release.start()
    try:
        assert writer.flush(timeout=10)
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - began >= 0.3  # it did wait for the lock, retrying
    assert count(history_path, "SELECT count(*) FROM tasks") == 40
    assert count(history_path, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") == 40


def test_a_lone_surrogate_in_an_error_is_recorded_escaped_and_the_history_goes_on(
    make_writer: Callable[..., HistoryWriter], history_path: Path
) -> None:
    # e.g. a file name decoded with surrogateescape, quoted in an error message
    writer = make_writer()
    start_run(writer, "r1", tasks=2)
    bad = ErrorRecord(type="FileNotFoundError", message="no /data/\udcff.csv", traceback="")
    writer.task_started("r1", 0, T0)
    writer.task_ended("r1", 0, TaskStatus.FAILED, 1, T0 + 1, bad, False)
    writer.task_started("r1", 1, T0)
    writer.task_ended("r1", 1, TaskStatus.SUCCEEDED, 1, T0 + 1, None, False)
    writer.run_ended("r1", RunStatus.FAILED, T0 + 2, None)
    assert writer.flush()
    assert not writer.failed
    conn = sqlite3.connect(history_path)
    rows = conn.execute("SELECT idx, status, error_message FROM tasks ORDER BY idx").fetchall()
    conn.close()
    assert rows == [(0, "failed", "no /data/\\udcff.csv"), (1, "succeeded", None)]


def test_values_equal_across_rows_but_of_other_types_are_not_bound_as_one(
    tmp_path: Path,
) -> None:
    # A column the same in every row is bound once for all rows; 1 == 1.0 == True are
    # equal in Python but a TEXT column stores them as '1', '1.0' and '1'.
    ops: list[Op] = [
        (_batch.NODES, "r1", ((i, f"t:{i}", "t", "task", (), fanout, None),))
        for i, fanout in enumerate((1, 1.0, True))
    ]
    bulk, reference = _fresh(tmp_path / "bulk.sqlite"), _fresh(tmp_path / "reference.sqlite")
    batch = Batch()
    for op in ops:
        batch.add(op)
        write_transaction(reference, lambda conn, op=op: _one_by_one(conn, op))
    write_transaction(bulk, batch.apply)
    assert [row[15] for row in _tasks(bulk)] == ["1", "1.0", "1"]  # the fanout column
    assert _tasks(bulk) == _tasks(reference)
    bulk.close()
    reference.close()
