"""A child process for the history tests: ``python history_child.py MODE PATH ...``.

``crash PATH RUN_ID``: start a run, finish one task, flush, print ``ready``, then hang
(the test SIGKILLs it). ``write PATH PROC RUNS TASKS``: record RUNS whole runs of TASKS
tasks each, flushing after each; exit 1 if any flush fails. Warnings go to stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from history_helpers import finish_tasks, record_run, start_run

from auto_workflow._history._writer import HistoryWriter


def crash(path: Path, run_id: str) -> int:
    writer = HistoryWriter(path)
    start_run(writer, run_id, tasks=3)
    finish_tasks(writer, run_id, [0])
    writer.task_started(run_id, 1, time.time())
    if not writer.flush():
        return 1
    print("ready", flush=True)
    time.sleep(60)
    return 0


def write(path: Path, proc: int, runs: int, tasks: int) -> int:
    writer = HistoryWriter(path)
    ok = True
    for n in range(runs):
        record_run(writer, f"p{proc}-r{n}", tasks=tasks, flow=f"flow{proc % 2}")
        ok = writer.flush(timeout=30) and ok
    writer.close()
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    mode, path = argv[0], Path(argv[1])
    if mode == "crash":
        return crash(path, argv[2])
    return write(path, int(argv[2]), int(argv[3]), int(argv[4]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
