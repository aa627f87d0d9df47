"""Benchmark the runs list of ``auto-workflow ui``: ``python bench/ui.py [--check]``.

Records ``--runs`` runs (default 10,000, of 10 flows, ``--tasks`` tasks each, one in ten
failed) in a fresh history file, starts the UI server on a free port in a thread, and
times whole HTTP requests for one page of the runs list (50 runs, rendered HTML), over a
real socket with ``urllib``: the newest page, a middle page, the last page, filtered by
flow, by status, both; best of ``--repeats`` and the slowest too. Target: every page in
under 0.5 s. ``--check`` exits 1 if one misses it.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from auto_workflow._history._records import RunStatus, TaskStatus
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._ui import PAGE_SIZE, UIServer
from auto_workflow._history._writer import HistoryWriter

T0 = 1_700_000_000.0
TARGET_S = 0.5


def _record(writer: HistoryWriter, number: int, tasks: int) -> None:
    run_id, at = f"run-{number:06d}", T0 + number * 60
    failed = number % 10 == 3
    writer.run_started(
        run_id,
        flow=f"flow{number % 10}",
        target="bench.py:flow",
        params={"n": number},
        args=(),
        kwargs={},
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=at,
        durable=False,
        graph_signature="sig",
    )
    writer.nodes_declared(
        run_id, [(i, f"step:{i}", "step", "task", (), None, None) for i in range(tasks)]
    )
    for i in range(tasks):
        status = TaskStatus.FAILED if failed and i == 0 else TaskStatus.SUCCEEDED
        writer.task_started(run_id, i, at + i)
        writer.task_ended(run_id, i, status, 1, at + i + 0.5, None, False)
    end = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
    writer.run_ended(run_id, end, at + tasks, None)


def _history(path: Path, runs: int, tasks: int) -> float:
    writer = HistoryWriter(path)
    began = time.perf_counter()
    for number in range(runs):
        _record(writer, number, tasks)
    assert writer.flush(timeout=600)
    writer.close()
    return time.perf_counter() - began


def _fetch(url: str) -> int:
    """Fetch a page; return how many runs it lists."""
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return len(re.findall(rb"<tr data-run=", response.read()))


def _timed(url: str, repeats: int, expected: int) -> tuple[float, float]:
    spent = []
    for _ in range(repeats):
        began = time.perf_counter()
        listed = _fetch(url)
        spent.append(time.perf_counter() - began)
        assert listed == expected, (url, listed, expected)
    return min(spent), max(spent)


def _cases(runs: int) -> dict[str, tuple[str, int]]:
    """Query string and how many rows it must list, per case."""
    last = max(1, -(-runs // PAGE_SIZE))
    middle = max(1, last // 2)
    per_flow = runs // 10
    return {
        "newest page": ("/", min(PAGE_SIZE, runs)),
        f"page {middle:,} of {last:,}": (f"/?page={middle}", min(PAGE_SIZE, runs)),
        f"last page ({last:,})": (f"/?page={last}", runs - (last - 1) * PAGE_SIZE),
        "flow=flow3": ("/?flow=flow3", min(PAGE_SIZE, per_flow)),
        "status=failed": ("/?status=failed", min(PAGE_SIZE, per_flow)),
        "flow=flow3&status=failed, page 2": (
            "/?flow=flow3&status=failed&page=2",
            max(0, min(PAGE_SIZE, per_flow - PAGE_SIZE)),
        ),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    options = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), load {os.getloadavg()}")
    missed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite"
        recorded = _history(path, options.runs, options.tasks)
        print(f"{options.runs:,} runs x {options.tasks} tasks recorded in {recorded:.1f} s")
        server = UIServer(HistoryStore(path), "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, name="ui-bench")
        thread.start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            print(
                f"\nGET one page of the runs list ({PAGE_SIZE} runs), best / slowest of "
                f"{options.repeats}"
            )
            for name, (query, rows) in _cases(options.runs).items():
                best, worst = _timed(base + query, options.repeats, rows)
                print(f"  {name:<36} {best * 1000:8.1f} ms  {worst * 1000:8.1f} ms")
                if worst >= TARGET_S:
                    missed.append(name)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
    print(
        f"\ntarget: every page < {TARGET_S * 1000:.0f} ms"
        + (f"; missed: {', '.join(missed)}" if missed else ": met")
    )
    return 1 if options.check and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
