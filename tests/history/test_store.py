"""The history store: listing, fetching, resolving, deleting; schema versions; file size."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from history_helpers import T0, count, finish_tasks, record_run, start_run

from auto_workflow._history._errors import (
    AmbiguousRunIdError,
    HistoryError,
    HistorySchemaError,
    RunNotFoundError,
)
from auto_workflow._history._records import RunStatus, TaskStatus
from auto_workflow._history._schema import SCHEMA_VERSION
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._writer import HistoryWriter

MakeWriter = Callable[..., HistoryWriter]


def _record(make_writer: MakeWriter, *runs: tuple[str, str, float]) -> None:
    """Whole runs ``(run_id, flow, started_at)``, committed."""
    writer = make_writer()
    for run_id, flow, started_at in runs:
        record_run(writer, run_id, flow=flow, started_at=started_at)
    assert writer.flush()


def test_a_missing_file_reads_as_empty_and_is_not_created(
    store: HistoryStore, history_path: Path
) -> None:
    assert store.list_runs() == []
    assert store.get_run("r1") is None
    assert store.delete_runs(keep_last=1) == 0
    with pytest.raises(RunNotFoundError):
        store.resolve_prefix("r")
    assert not history_path.parent.exists()


def test_runs_list_newest_first_with_filters_and_paging(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    _record(make_writer, ("a", "etl", T0), ("b", "report", T0 + 10), ("c", "etl", T0 + 20))
    failing = make_writer()
    start_run(failing, "d", flow="etl", started_at=T0 + 30, tasks=2)
    finish_tasks(failing, "d", [0])
    finish_tasks(failing, "d", [1], status=TaskStatus.FAILED)
    failing.run_ended("d", RunStatus.FAILED, T0 + 31, None)
    assert failing.flush()
    assert [r.run_id for r in store.list_runs()] == ["d", "c", "b", "a"]
    assert [r.run_id for r in store.list_runs(flow="etl")] == ["d", "c", "a"]
    assert [r.run_id for r in store.list_runs(status="succeeded")] == ["c", "b", "a"]
    assert [r.run_id for r in store.list_runs(limit=2, offset=1)] == ["c", "b"]
    assert store.list_runs(status=RunStatus.FAILED)[0].counts == {"failed": 1, "succeeded": 1}
    summary = store.list_runs(flow="report")[0]
    assert (summary.target, summary.duration, summary.counts) == (
        "pipeline.py:etl",
        2.0,
        {"succeeded": 3},
    )


def test_a_live_run_lists_with_current_counts(make_writer: MakeWriter, store: HistoryStore) -> None:
    writer = make_writer()
    start_run(writer, "live", tasks=4)
    finish_tasks(writer, "live", [0, 1])
    assert writer.flush()
    (summary,) = store.list_runs()
    assert summary.status is RunStatus.RUNNING
    assert summary.counts == {"succeeded": 2, "running": 2}


def test_get_run_returns_the_whole_record(make_writer: MakeWriter, store: HistoryStore) -> None:
    _record(make_writer, ("r1", "etl", T0))
    run = store.get_run("r1")
    assert run is not None
    assert (run.flow, run.params, run.args, run.kwargs) == (
        "etl",
        {"day": "2024-01-01"},
        (1,),
        {"mode": "full"},
    )
    assert (run.pid, run.host) == (os.getpid(), os.uname().nodename)
    assert [t.index for t in run.tasks] == [0, 1, 2]
    assert store.graph_signature("r1") == "sig-r1"
    assert store.graph_signature("nope") is None
    found = store.find_run("r1")
    assert found is not None
    assert found.counts == {"succeeded": 3}


def test_tasks_unfinished_when_the_run_ended_read_as_cancelled(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    writer = make_writer()
    start_run(writer, "r1", tasks=3)
    finish_tasks(writer, "r1", [0])
    writer.task_started("r1", 1, T0)
    writer.run_ended("r1", RunStatus.CANCELLED, T0 + 5, None)
    assert writer.flush()
    run = store.get_run("r1")
    assert run is not None
    assert [t.status for t in run.tasks] == [
        TaskStatus.SUCCEEDED,
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
    ]
    assert store.list_runs()[0].counts == {"succeeded": 1, "cancelled": 2}


def test_resolve_prefix_finds_one_run_or_says_why_not(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    _record(make_writer, ("abc123", "etl", T0), ("abd456", "etl", T0), ("abc", "etl", T0))
    assert store.resolve_prefix("abd") == "abd456"
    assert store.resolve_prefix("abc") == "abc"  # an exact id wins over longer ones
    with pytest.raises(AmbiguousRunIdError, match=r"abc, abc123, abd456") as info:
        store.resolve_prefix("ab")
    assert isinstance(info.value, LookupError)
    with pytest.raises(RunNotFoundError, match="'zz'"):
        store.resolve_prefix("zz")


def test_delete_runs_combines_its_criteria_and_takes_tasks_along(
    make_writer: MakeWriter, store: HistoryStore, history_path: Path
) -> None:
    now = time.time()
    old, new = now - 10 * 86_400, now - 60
    _record(
        make_writer,
        ("e1", "etl", old),
        ("e2", "etl", old + 1),
        ("e3", "etl", new),
        ("r1", "report", old),
    )
    live = make_writer()
    start_run(live, "running-old", flow="etl", started_at=old - 1, tasks=1)
    assert live.flush()
    # Old, and not among its flow's newest two: only e1 (r1 is the newest of its flow).
    assert store.delete_runs(older_than=86_400, keep_last=2) == 1
    assert {r.run_id for r in store.list_runs()} == {"e2", "e3", "r1", "running-old"}
    assert store.delete_runs(flow="etl", keep_last=1) == 1  # e2; the running run stays
    assert {r.run_id for r in store.list_runs()} == {"e3", "r1", "running-old"}
    assert count(history_path, "SELECT count(*) FROM tasks") == 7
    with pytest.raises(ValueError, match="needs"):
        store.delete_runs()


def test_retention_deletes_old_and_surplus_runs_at_most_once_per_interval(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    now = time.time()
    _record(
        make_writer,
        *[(f"n{i}", "etl", now - i) for i in range(5)],
        ("ancient", "report", now - 90 * 86_400),
    )
    assert store.apply_retention(max_age_days=30, keep_last=3) == 3  # n3, n4, ancient
    assert [r.run_id for r in store.list_runs()] == ["n0", "n1", "n2"]
    assert store.apply_retention(max_age_days=30, keep_last=1) == 0  # too soon
    assert store.apply_retention(max_age_days=30, keep_last=1, min_interval=0) == 2


def test_the_writer_applies_retention_when_it_starts(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    from auto_workflow._history._writer import Retention

    now = time.time()
    _record(make_writer, ("old", "etl", now - 60 * 86_400), ("new", "etl", now))
    writer = make_writer(retention=Retention(max_age_days=30, keep_last=10, min_interval=0))
    record_run(writer, "newer", started_at=now + 1)
    assert writer.flush()
    assert [r.run_id for r in store.list_runs()] == ["newer", "new"]


# -- the file itself ---------------------------------------------------------------------------

_V1_SQL = """
CREATE TABLE runs (rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, flow TEXT NOT NULL,
    target TEXT, status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, params TEXT,
    args TEXT, kwargs TEXT, host TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,
    proc_start INTEGER, durable INTEGER NOT NULL DEFAULT 0, graph_signature TEXT,
    error_type TEXT, error_message TEXT, error_traceback TEXT);
CREATE INDEX runs_by_start ON runs (started_at DESC);
CREATE INDEX runs_by_flow ON runs (flow, started_at DESC);
CREATE INDEX runs_by_status ON runs (status, started_at DESC);
CREATE TABLE tasks (run INTEGER NOT NULL, idx INTEGER NOT NULL, node TEXT, task TEXT,
    kind TEXT, status TEXT, attempts INTEGER, started_at REAL, ended_at REAL,
    error_type TEXT, error_message TEXT, error_traceback TEXT, checkpoint INTEGER,
    upstream TEXT, fanout TEXT, item INTEGER, PRIMARY KEY (run, idx)) WITHOUT ROWID;
CREATE TABLE attempts (run INTEGER NOT NULL, idx INTEGER NOT NULL, number INTEGER NOT NULL,
    started_at REAL, ended_at REAL, error_type TEXT, error_message TEXT,
    error_traceback TEXT, PRIMARY KEY (run, idx, number)) WITHOUT ROWID;
INSERT INTO runs (rid, id, flow, status, started_at, ended_at, host, pid)
    VALUES (1, 'v1run', 'etl', 'succeeded', 100.0, 105.0, 'elsewhere', 1);
INSERT INTO tasks (run, idx, task, status, attempts, started_at, ended_at)
    VALUES (1, 0, 'load', 'succeeded', 1, 100.0, 101.0), (1, 1, 'save', 'failed', 1, 101.0, 102.0);
PRAGMA user_version = 1;
"""


def test_a_version_1_file_is_migrated_forward_keeping_its_runs(
    history_path: Path, store: HistoryStore
) -> None:
    history_path.parent.mkdir()
    conn = sqlite3.connect(history_path)
    conn.executescript(_V1_SQL)
    conn.close()
    (summary,) = store.list_runs()
    assert summary.counts == {"failed": 1, "succeeded": 1}
    assert count(history_path, "PRAGMA user_version") == SCHEMA_VERSION == 2
    assert count(history_path, "SELECT count(*) FROM runs WHERE counts IS NOT NULL") == 1
    run = store.get_run("v1run")
    assert run is not None
    assert [t.node for t in run.tasks] == ["load:0", "save:1"]


def test_a_file_from_a_newer_schema_is_refused_by_name_and_left_alone(
    make_writer: MakeWriter, history_path: Path, store: HistoryStore
) -> None:
    _record(make_writer, ("r1", "etl", T0))
    conn = sqlite3.connect(history_path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = history_path.read_bytes()
    with pytest.raises(HistorySchemaError, match="schema version 7") as info:
        store.list_runs()
    assert str(history_path) in str(info.value)
    assert f"up to {SCHEMA_VERSION}" in str(info.value)
    assert history_path.read_bytes() == before


def test_a_corrupt_file_is_a_history_error_naming_it(
    history_path: Path, store: HistoryStore
) -> None:
    history_path.parent.mkdir()
    history_path.write_bytes(os.urandom(8192))
    with pytest.raises(HistoryError, match=str(history_path)):
        store.list_runs()


def test_the_file_and_its_wal_are_owner_only(make_writer: MakeWriter, history_path: Path) -> None:
    old = os.umask(0)
    try:
        writer = make_writer()
        start_run(writer, "r1", tasks=1)
        assert writer.flush()
    finally:
        os.umask(old)
    assert os.stat(history_path.parent).st_mode & 0o777 == 0o700
    companions = [
        history_path,
        *(history_path.with_name(history_path.name + s) for s in ["-wal", "-shm"]),
    ]
    for path in companions:
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    conn = sqlite3.connect(history_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_100k_task_run_leaves_a_file_under_20_mb(
    make_writer: MakeWriter, history_path: Path
) -> None:
    n = 100_000
    writer = make_writer()
    start_run(writer, "big", tasks=n)
    for i in range(n):
        writer.task_started("big", i, T0 + i)
        writer.task_ended("big", i, TaskStatus.SUCCEEDED, 1, T0 + i + 0.5, None, False)
    writer.run_ended("big", RunStatus.SUCCEEDED, T0 + n, None)
    writer.close()
    size = history_path.stat().st_size
    wal = history_path.with_name(history_path.name + "-wal")
    size += wal.stat().st_size if wal.exists() else 0
    assert size < 20 * 2**20, f"{size / 2**20:.1f} MiB"
    assert count(history_path, "SELECT count(*) FROM tasks") == n


def _bulk_runs(path: Path, runs: int, tasks: int) -> None:
    """``runs`` finished runs of ``tasks`` tasks each, inserted with SQL (fast)."""
    store = HistoryStore(path)
    writer = HistoryWriter(path)
    record_run(writer, "seed", tasks=0)
    writer.close()
    assert store.list_runs()
    conn = sqlite3.connect(path)
    conn.executescript(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs})
        INSERT INTO runs (id, flow, status, started_at, ended_at, counts)
            SELECT printf('run-%06d', i), 'flow' || (i % 10), 'succeeded', {T0} + i, {T0} + i + 1,
                   'succeeded={tasks}' FROM n;
        WITH RECURSIVE t(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM t WHERE j < {tasks - 1})
        INSERT INTO tasks (run, idx, task, status, attempts, started_at, ended_at)
            SELECT runs.rid, j, 'enrich', 'succeeded', 1, 1.0, 2.0 FROM runs, t
            WHERE runs.id != 'seed' ORDER BY runs.rid, j;
        """
    )
    conn.close()


def test_listing_50_of_10k_runs_of_100_tasks_is_fast(history_path: Path) -> None:
    _bulk_runs(history_path, 10_000, 100)
    store = HistoryStore(history_path)
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        runs = store.list_runs(limit=50)
        best = min(best, time.perf_counter() - began)
    assert len(runs) == 50
    assert runs[0].run_id == "run-010000"
    assert runs[0].counts == {"succeeded": 100}
    assert best < 0.5 * 4  # the bench holds 0.5 s; this only catches a lost index
    began = time.perf_counter()
    assert len(store.list_runs(flow="flow3", status="succeeded", limit=50)) == 50
    assert time.perf_counter() - began < 0.5 * 4
