"""The history writer: lazy start, batching and coalescing, redaction, and never failing."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from history_helpers import T0, count, declarations, finish_tasks, record_run, start_run

from auto_workflow._history._records import ErrorRecord, RunStatus, TaskStatus
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._values import register_secret
from auto_workflow._history._writer import HistoryWriter

MakeWriter = Callable[..., HistoryWriter]
SLOW = {"interval": 30.0}
"""Options under which nothing commits until flush(): all ops land in one batch."""


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "auto_workflow-history"]


def test_construction_starts_no_thread_and_touches_no_file(
    make_writer: MakeWriter, history_path: Path
) -> None:
    before = _writer_threads()
    writer = make_writer()
    assert _writer_threads() == before
    assert not history_path.parent.exists()
    assert writer.flush() is True  # nothing queued: nothing to start
    assert not history_path.parent.exists()


def test_first_call_starts_the_thread_and_close_stops_it(make_writer: MakeWriter) -> None:
    writer = make_writer()
    record_run(writer, "r1")
    assert len(_writer_threads()) == 1
    writer.close()
    writer.close()  # idempotent
    assert _writer_threads() == []


def test_a_call_after_close_starts_a_new_thread(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    writer = make_writer()
    record_run(writer, "r1")
    writer.close()
    record_run(writer, "r2")
    assert writer.flush()
    assert [s.run_id for s in store.list_runs()] == ["r2", "r1"]


def test_flush_commits_everything_queued_before_it(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    writer = make_writer(**SLOW)
    record_run(writer, "r1", tasks=5)
    assert writer.flush(timeout=5)
    run = store.get_run("r1")
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    assert run.counts() == {"succeeded": 5}
    assert [t.node for t in run.tasks] == [f"enrich:{i}" for i in range(5)]
    assert run.tasks[2].upstream == ("enrich:1",)


def _install_write_counter(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE writes (kind TEXT);
        CREATE TRIGGER count_inserts AFTER INSERT ON tasks
            BEGIN INSERT INTO writes VALUES ('insert'); END;
        CREATE TRIGGER count_updates AFTER UPDATE ON tasks
            BEGIN INSERT INTO writes VALUES ('update'); END;
        """
    )
    conn.close()


def test_a_task_declared_started_and_ended_in_one_batch_is_one_row_write(
    make_writer: MakeWriter, history_path: Path
) -> None:
    setup = make_writer()
    record_run(setup, "setup", tasks=0)
    setup.close()
    _install_write_counter(history_path)
    writer = make_writer(**SLOW)
    record_run(writer, "r1", tasks=10)
    assert writer.flush()
    assert count(history_path, "SELECT count(*) FROM writes WHERE kind = 'insert'") == 10
    assert count(history_path, "SELECT count(*) FROM writes WHERE kind = 'update'") == 0


def test_a_later_batch_sets_only_its_own_columns(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    writer = make_writer(**SLOW)
    start_run(writer, "r1", tasks=2)
    writer.task_started("r1", 0, T0 + 5)
    assert writer.flush()
    writer.task_ended("r1", 0, TaskStatus.SUCCEEDED, 1, T0 + 6, None, True)
    assert writer.flush()
    run = store.get_run("r1")
    assert run is not None
    first, second = run.tasks
    assert (first.node, first.task, first.started_at, first.ended_at) == (
        "enrich:0",
        "enrich",
        T0 + 5,
        T0 + 6,
    )
    assert first.checkpoint is True
    assert first.status is TaskStatus.SUCCEEDED
    assert second.status is TaskStatus.RUNNING  # declared, not started, run still live
    assert second.started_at is None


def test_attempt_rows_are_kept_only_for_failures_and_retries(
    make_writer: MakeWriter, history_path: Path, store: HistoryStore
) -> None:
    writer = make_writer()
    start_run(writer, "r1", tasks=2)
    finish_tasks(writer, "r1", [0])
    boom = ErrorRecord(type="ValueError", message="boom", traceback="Traceback ...")
    writer.task_started("r1", 1, T0)
    writer.attempt_ended("r1", 1, 1, T0, T0 + 1, boom)
    writer.attempt_ended("r1", 1, 2, T0 + 1, T0 + 2, None)
    writer.task_ended("r1", 1, TaskStatus.SUCCEEDED, 2, T0 + 2, None, False)
    writer.run_ended("r1", RunStatus.SUCCEEDED, T0 + 3, None)
    assert writer.flush()
    assert count(history_path, "SELECT count(*) FROM attempts") == 2
    run = store.get_run("r1")
    assert run is not None
    single, retried = run.tasks
    assert [a.number for a in single.attempt_log] == [1]  # rebuilt from the task row
    assert [(a.number, a.error) for a in retried.attempt_log] == [(1, boom), (2, None)]


def test_fan_out_children_declared_later_join_the_run(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    writer = make_writer()
    start_run(writer, "r1", tasks=1)
    writer.nodes_declared("r1", [(1, "fanout:1", "fanout", "fanout", ("enrich:0",), None, None)])
    children = [(2 + i, f"double:{2 + i}", "double", "task", (), "fanout:1", i) for i in range(3)]
    writer.nodes_declared("r1", children)
    finish_tasks(writer, "r1", [0, 2, 3, 4])
    writer.task_ended("r1", 1, TaskStatus.SUCCEEDED, 0, T0 + 1, None, False)
    writer.run_ended("r1", RunStatus.SUCCEEDED, T0 + 2, None)
    assert writer.flush()
    run = store.get_run("r1")
    assert run is not None
    barrier = run.tasks[1]
    assert (barrier.kind, barrier.node, barrier.upstream) == ("fanout", "fanout:1", ("enrich:0",))
    assert [(t.fanout, t.item) for t in run.tasks[2:]] == [("fanout:1", i) for i in range(3)]
    assert run.counts() == {"succeeded": 4}  # the barrier is not a task call
    assert store.list_runs()[0].counts == {"succeeded": 4}


def test_registered_secrets_are_redacted_from_everything_recorded(
    make_writer: MakeWriter, store: HistoryStore, history_path: Path
) -> None:
    secret = "s3cr3t-" + os.urandom(4).hex()
    register_secret(secret)
    writer = make_writer()
    writer.run_started(
        "r1",
        flow="etl",
        target=f"db://user:{secret}@host",
        params={"token": secret, "nested": {"k": [f"x{secret}y"]}},
        args=(secret, object()),
        kwargs={"password": secret},
        host="h",
        pid=1,
        started_at=T0,
        durable=False,
        graph_signature=None,
    )
    writer.nodes_declared("r1", declarations(1))
    error = ErrorRecord(type="E", message=f"auth {secret} refused", traceback=f"line {secret}")
    writer.task_ended("r1", 0, TaskStatus.FAILED, 1, T0 + 1, error, False)
    writer.run_ended("r1", RunStatus.FAILED, T0 + 2, error)
    assert writer.flush()
    writer.close()
    assert secret.encode() not in history_path.read_bytes()
    run = store.get_run("r1")
    assert run is not None
    assert run.params == {"token": "***", "nested": {"k": ["x***y"]}}
    assert run.args[0] == "***"
    assert run.kwargs == {"password": "***"}
    assert run.target == "db://user:***@host"
    assert run.error is not None
    assert run.error.message == "auth *** refused"
    assert run.tasks[0].error == ErrorRecord(
        type="E", message="auth *** refused", traceback="line ***"
    )


def test_values_that_are_not_json_are_recorded_as_bounded_repr(
    make_writer: MakeWriter, store: HistoryStore
) -> None:
    writer = make_writer()
    writer.run_started(
        "r1",
        flow="etl",
        target=None,
        params={"obj": {1, 2}, "big": "x" * 10_000, "ok": [1, 2.5, None, "a"]},
        args=(),
        kwargs={},
        host="h",
        pid=1,
        started_at=T0,
        durable=True,
        graph_signature=None,
    )
    assert writer.flush()
    run = store.get_run("r1")
    assert run is not None
    assert run.params["obj"] == "{1, 2}"
    assert run.params["ok"] == [1, 2.5, None, "a"]
    assert len(run.params["big"]) <= 2_000
    assert run.durable is True


# -- history never fails a run ---------------------------------------------------------------


@contextmanager
def _unprivileged(wanted: bool) -> Iterator[None]:
    """As root, permissions are not enforced: act as ``nobody`` for the duration."""
    if not wanted or os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    # Under root, the directory must be reachable by `nobody`: pytest's tmp dirs are 0700.
    base = Path(tempfile.mkdtemp()) if os.geteuid() == 0 else tmp_path
    base.chmod(0o755)
    directory = base / "ro"
    directory.mkdir(mode=0o555)
    directory.chmod(0o555)
    yield directory
    directory.chmod(0o755)
    if base != tmp_path:
        shutil.rmtree(base)


def _broken(kind: str, history_path: Path, read_only_dir: Path) -> Path:
    if kind == "read-only directory":
        return read_only_dir / "history.sqlite"
    history_path.parent.mkdir(parents=True)
    if kind == "corrupt file":
        history_path.write_bytes(os.urandom(16_384))
    elif kind == "path is a directory":
        history_path.mkdir()
    elif kind == "newer schema":
        conn = sqlite3.connect(history_path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    return history_path


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("read-only directory", "Permission denied"),
        ("corrupt file", "not a database"),
        ("path is a directory", "directory"),
        ("newer schema", "schema version 99"),
    ],
)
def test_an_unusable_file_logs_one_warning_and_the_writer_drops_writes(
    kind: str,
    cause: str,
    history_path: Path,
    read_only_dir: Path,
    make_writer: MakeWriter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _broken(kind, history_path, read_only_dir)
    writer = make_writer(path)
    with _unprivileged(kind == "read-only directory"):
        record_run(writer, "r1")
        began = time.monotonic()
        assert writer.flush(timeout=10) is False
        assert time.monotonic() - began < 3
    record_run(writer, "r2")  # still never raises
    assert writer.flush() is False
    assert writer.failed
    warnings = [r for r in caplog.records if r.name == "auto_workflow.history"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert str(path) in warnings[0].getMessage()
    assert cause in warnings[0].getMessage()


def test_a_file_locked_beyond_the_retries_gives_up_promptly(
    make_writer: MakeWriter, history_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = make_writer()
    record_run(setup, "r0")
    setup.close()
    holder = sqlite3.connect(history_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        writer = make_writer(busy_timeout=0.05, retries=2)
        record_run(writer, "r1")
        began = time.monotonic()
        assert writer.flush(timeout=10) is False
        assert time.monotonic() - began < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "auto_workflow.history"]
    assert len(messages) == 1
    assert "locked" in messages[0]


def test_a_malformed_op_costs_the_history_not_the_caller(
    make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    writer = make_writer()
    writer.nodes_declared("r1", [("not", "a", "node")])  # type: ignore[list-item]
    assert writer.flush() is False
    writer.task_started("r1", 0, T0)
    assert [r.levelno for r in caplog.records if r.name == "auto_workflow.history"] == [
        logging.WARNING
    ]
