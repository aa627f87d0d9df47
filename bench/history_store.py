"""Benchmark the run-history store: ``python bench/history_store.py [--check]``.

Measures, on a fresh file in a temporary directory:

- the hot path: nanoseconds per writer call as the engine makes them (``task_started``,
  ``attempt_ended``, ``task_ended``), with the writer thread idle (what the caller pays)
  and while it commits (what the caller sees with the thread competing for the GIL), next
  to a no-op method with the same signature (what any Python call costs here);
- how long the thread takes to commit those ops (its cost per op, off the caller's thread);
- the file size a 100,000-task run leaves (target: under 20 MB);
- recording 10,000 runs x 100 tasks, then ``list_runs`` of 50 of them (target: < 0.5 s),
  unfiltered, by flow, by status, and a later page; ``get_run`` of a 100-task run.

``--check`` exits 1 if a target is missed. ``--runs``/``--tasks`` shrink the big history.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from auto_workflow._history._records import RunStatus, TaskStatus
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._writer import HistoryWriter, WriterOptions

T0 = 1_700_000_000.0
LIST_TARGET_S = 0.5
SIZE_TARGET_BYTES = 20 * 2**20


class _NoOp:
    """A method with ``task_ended``'s signature that does nothing: the cost of a call."""

    __slots__ = ()

    def task_ended(
        self,
        run_id: str,
        index: int,
        status: TaskStatus,
        attempts: int,
        ended_at: float,
        error: None,
        checkpoint: bool,
    ) -> None:
        """Nothing."""


def _start(writer: HistoryWriter, run_id: str, tasks: int, *, flow: str, at: float) -> None:
    writer.run_started(
        run_id,
        flow=flow,
        target="bench.py:flow",
        params={"n": tasks},
        args=(),
        kwargs={},
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=at,
        durable=False,
        graph_signature="sig",
    )
    nodes = [
        (i, f"enrich:{i}", "enrich", "task", (f"enrich:{i - 1}",) if i else (), None, None)
        for i in range(tasks)
    ]
    writer.nodes_declared(run_id, nodes)


CHUNK = 10_000
"""Calls timed between two flushes: the queue stays as short as the engine keeps it."""


def _loop_noop(target: _NoOp, base: int) -> int:
    ok = TaskStatus.SUCCEEDED  # an enum attribute lookup costs ~100 ns: not ours to time
    began = time.perf_counter_ns()
    for i in range(base, base + CHUNK):
        target.task_ended("r", i, ok, 1, T0, None, False)
    return time.perf_counter_ns() - began


def _loop_started(writer: HistoryWriter, base: int) -> int:
    began = time.perf_counter_ns()
    for i in range(base, base + CHUNK):
        writer.task_started("r", i, T0)
    return time.perf_counter_ns() - began


def _loop_attempt(writer: HistoryWriter, base: int) -> int:
    began = time.perf_counter_ns()
    for i in range(base, base + CHUNK):
        writer.attempt_ended("r", i, 1, T0, T0, None)
    return time.perf_counter_ns() - began


def _loop_ended(writer: HistoryWriter, base: int) -> int:
    ok = TaskStatus.SUCCEEDED
    began = time.perf_counter_ns()
    for i in range(base, base + CHUNK):
        writer.task_ended("r", i, ok, 1, T0, None, False)
    return time.perf_counter_ns() - began


Loop = Callable[[HistoryWriter, int], int]


def _chunked(writer: HistoryWriter, loop: Loop, n: int, *, flush: bool) -> tuple[float, float]:
    """(ns per call, ns the thread took per op to commit when flushing between chunks)."""
    spent = committed = 0
    for base in range(0, n, CHUNK):
        spent += loop(writer, base)
        if flush:
            began = time.perf_counter_ns()
            assert writer.flush(timeout=60)
            committed += time.perf_counter_ns() - began
    return spent / n, committed / n


def _hot_path(directory: Path, n: int) -> dict[str, float]:
    """ns per call with the writer thread idle and while it commits, and a no-op baseline."""
    noop = _NoOp()
    out = {"no-op method call (baseline)": sum(_loop_noop(noop, b) for b in range(0, n, CHUNK)) / n}
    idle = HistoryWriter(directory / "idle.sqlite", WriterOptions(interval=3600))
    _start(idle, "r", n, flow="hot", at=T0)
    assert idle.flush()
    cases: list[tuple[str, Loop]] = [
        ("task_started", _loop_started),
        ("attempt_ended", _loop_attempt),
        ("task_ended", _loop_ended),
    ]
    for name, loop in cases:
        caller, thread = _chunked(idle, loop, n, flush=True)
        out[f"{name} (thread idle)"] = caller
        out[f"  {name}: the thread's commit, per op"] = thread
    idle.close()
    busy = HistoryWriter(directory / "busy.sqlite")
    _start(busy, "r", n, flow="hot", at=T0)
    for name, loop in cases:
        out[f"{name} (thread committing)"] = _chunked(busy, loop, n, flush=False)[0]
    busy.close()
    return out


def _record_run(writer: HistoryWriter, run_id: str, tasks: int, *, flow: str, at: float) -> None:
    _start(writer, run_id, tasks, flow=flow, at=at)
    for i in range(tasks):
        writer.task_started(run_id, i, at + i)
        writer.attempt_ended(run_id, i, 1, at + i, at + i + 0.5, None)
        writer.task_ended(run_id, i, TaskStatus.SUCCEEDED, 1, at + i + 0.5, None, False)
    writer.run_ended(run_id, RunStatus.SUCCEEDED, at + tasks, None)


def _file_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _big_run_size(directory: Path, tasks: int) -> tuple[int, float]:
    path = directory / "big.sqlite"
    writer = HistoryWriter(path)
    began = time.perf_counter()
    _record_run(writer, "big", tasks, flow="big", at=T0)
    writer.close()
    elapsed = time.perf_counter() - began
    return _file_size(path), elapsed


def _best(call: Callable[[], object], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best


def _many_runs(directory: Path, runs: int, tasks: int) -> tuple[float, dict[str, float], int]:
    path = directory / "many.sqlite"
    writer = HistoryWriter(path)
    began = time.perf_counter()
    for r in range(runs):
        _record_run(writer, f"run-{r:06d}", tasks, flow=f"flow{r % 10}", at=T0 + r * 1000)
    assert writer.flush(timeout=600)
    writer.close()
    recorded = time.perf_counter() - began
    store = HistoryStore(path)
    assert len(store.list_runs(limit=50)) == min(50, runs)
    timings = {
        "list_runs(limit=50)": _best(lambda: store.list_runs(limit=50)),
        "list_runs(flow=..., limit=50)": _best(lambda: store.list_runs(flow="flow3")),
        "list_runs(status=..., limit=50)": _best(lambda: store.list_runs(status="succeeded")),
        "list_runs(limit=50, offset=5000)": _best(lambda: store.list_runs(offset=runs // 2)),
        f"get_run (one run, {tasks} tasks)": _best(lambda: store.get_run("run-000007")),
    }
    timings["auto-workflow runs (whole process)"] = _best(lambda: _cli_runs(path), 3)
    timings["python -c pass (process start)"] = _best(_bare_python, 3)
    return recorded, timings, _file_size(path)


def _cli_runs(path: Path) -> None:
    env = {**os.environ, "AUTO_WORKFLOW_HISTORY_PATH": str(path), "TTY_INTERACTIVE": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "auto_workflow", "runs"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "run-009999" in out.stdout or "run-" in out.stdout, out.stdout[:500]


def _bare_python() -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--hot", type=int, default=100_000, help="calls per hot-path case")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    options = parser.parse_args(argv)
    failures: list[str] = []
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print("\nhot path (ns per call)")
        for name, ns in _hot_path(directory, options.hot).items():
            print(f"  {name:<36} {ns:8.0f}")
        size, elapsed = _big_run_size(directory, 100_000)
        print(f"\n100,000-task run: file {size / 2**20:.2f} MiB, recorded in {elapsed:.2f} s")
        if size >= SIZE_TARGET_BYTES:
            failures.append("100k-task file size")
        recorded, timings, many_size = _many_runs(directory, options.runs, options.tasks)
        total = options.runs * options.tasks
        print(
            f"\n{options.runs:,} runs x {options.tasks} tasks: recorded in {recorded:.1f} s "
            f"({total / recorded:,.0f} tasks/s), file {many_size / 2**20:.1f} MiB"
        )
        for name, seconds in timings.items():
            print(f"  {name:<36} {seconds * 1000:8.2f} ms")
            if name.startswith(("list_runs", "auto-workflow")) and seconds >= LIST_TARGET_S:
                failures.append(name)
    if failures:
        print(f"\nmissed: {', '.join(failures)}")
    return 1 if options.check and failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
