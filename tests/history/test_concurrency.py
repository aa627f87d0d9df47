"""Many processes write one history file at once, and nothing is lost or refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from history_helpers import count

from auto_workflow._history._store import HistoryStore

CHILD = Path(__file__).with_name("history_child.py")
PROCESSES, RUNS, TASKS = 8, 20, 50


def test_eight_processes_record_every_run_and_task_without_lock_errors(
    history_path: Path,
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "write", str(history_path), str(p), str(RUNS), str(TASKS)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    results = [(child.wait(timeout=50), child.communicate()[1]) for child in children]
    assert results == [(0, "")] * PROCESSES  # every flush committed, no warning logged
    assert count(history_path, "SELECT count(*) FROM runs") == PROCESSES * RUNS
    assert count(history_path, "SELECT count(*) FROM tasks") == PROCESSES * RUNS * TASKS
    runs = HistoryStore(history_path).list_runs(limit=1000)
    assert {r.status.value for r in runs} == {"succeeded"}
    assert {tuple(r.counts.items()) for r in runs} == {(("succeeded", TASKS),)}
