"""A run whose process died reads as crashed; runs of live processes and other hosts do not."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from history_helpers import start_run

from auto_workflow._history._records import RunStatus, TaskStatus
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._writer import HistoryWriter

MakeWriter = Callable[..., HistoryWriter]
CHILD = Path(__file__).with_name("history_child.py")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _run_and_kill(history_path: Path, run_id: str) -> None:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "crash", str(history_path), run_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_a_sigkilled_run_reads_as_crashed_and_is_marked_so(
    history_path: Path, store: HistoryStore
) -> None:
    _run_and_kill(history_path, "doomed")
    (summary,) = store.list_runs(status="crashed")
    assert summary.run_id == "doomed"
    assert summary.counts == {"succeeded": 1, "cancelled": 2}
    assert summary.ended_at is not None
    run = store.get_run("doomed")
    assert run is not None
    assert run.status is RunStatus.CRASHED
    assert [t.status for t in run.tasks] == [
        TaskStatus.SUCCEEDED,
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
    ]
    conn = sqlite3.connect(history_path)
    (stored,) = conn.execute("SELECT status FROM runs WHERE id = 'doomed'").fetchone()
    conn.close()
    assert stored == "crashed"  # marked in the file, so other readers agree


def test_a_crashed_run_reads_as_crashed_even_when_the_file_cannot_be_written(
    history_path: Path,
) -> None:
    _run_and_kill(history_path, "doomed")
    # A reader that cannot write (here: another connection holds the write lock).
    holder = sqlite3.connect(history_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        slow = HistoryStore(history_path, busy_timeout=0.01)
        assert [s.status for s in slow.list_runs()] == [RunStatus.CRASHED]
        assert [s.run_id for s in slow.list_runs(status="running")] == []
        assert [s.run_id for s in slow.list_runs(status="crashed")] == ["doomed"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@linux_only
def test_a_reused_pid_is_told_apart_by_its_start_time(
    make_writer: MakeWriter, history_path: Path, store: HistoryStore
) -> None:
    writer = make_writer()
    start_run(writer, "alive", tasks=1)
    start_run(writer, "reused", tasks=1)
    assert writer.flush()
    conn = sqlite3.connect(history_path)
    conn.execute("UPDATE runs SET proc_start = proc_start - 1 WHERE id = 'reused'")
    conn.commit()
    conn.close()
    statuses = {s.run_id: s.status for s in store.list_runs()}
    assert statuses == {"alive": RunStatus.RUNNING, "reused": RunStatus.CRASHED}


def test_runs_of_other_hosts_are_left_running(make_writer: MakeWriter, store: HistoryStore) -> None:
    writer = make_writer()
    start_run(writer, "remote", tasks=1, host="some-other-host", pid=999_999_999)
    assert writer.flush()
    assert [s.status for s in store.list_runs()] == [RunStatus.RUNNING]
