"""The process pool keeps a busy worker fed: fast calls queue on it, and queued calls keep
their guarantees (a crash fails only the running call, a cancelled one never starts, a
timeout starts only when the call does)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from auto_workflow._core._context import RunContext
from auto_workflow._execution._process import ProcessPool
from auto_workflow._execution._protocol import Call
from auto_workflow.exceptions import WorkerCrashedError
from procs import children_of, gone, running

# -- functions the workers run (module level, so they are pickled by name) ---------------------


def square_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def hold(path: str) -> int:
    """Wait until ``path`` exists: a call that runs as long as the test wants."""
    marker = Path(path)
    Path(f"{path}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def mark(path: str) -> int:
    Path(path).write_text("ran")
    return os.getpid()


# -- helpers ------------------------------------------------------------------------------------


def call(fn: Callable[..., Any], *args: Any, task: str = "t") -> Call:
    ctx = RunContext(run_id="run-1", flow_name="flow")
    return Call(fn, args, {}, task, ctx.for_attempt(task, f"{task}#0", 1))


def in_flight(pool: ProcessPool) -> list[int]:
    """Calls sent and not answered yet, per worker owned by a loop."""
    return [len(w.inflight) for d in pool._dispatchers.values() for w in d.owned]


def all_threads_exited(pid: int) -> bool:
    """The main thread is a zombie and no other thread is left, so the pool can reap it (a
    zombie main thread alone is not enough: its process cannot be reaped yet)."""
    try:
        return not running(pid) and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except FileNotFoundError:
        return True


async def eventually(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds}s waiting for {predicate}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    before = children_of(zombies=True)
    pool = ProcessPool(1)
    # The task "t" is learned to be fast, so calls of it may queue on a busy worker.
    await asyncio.gather(*(pool.run(call(square_pid, i)) for i in range(20)))
    yield pool
    pool.shutdown()
    assert children_of(zombies=True) <= before, "a worker process outlived its pool's shutdown"


def started_marker(release: Path) -> Path:
    return release.with_name(f"{release.name}.started")


def start_holding(pool: ProcessPool, release: Path) -> asyncio.Future[int]:
    """A call of "t" that runs until ``release`` exists. Calls queue behind it only if sent
    while it is young (see ``_STEAL_AFTER``): start them in the same loop turn."""
    return asyncio.ensure_future(pool.run(call(hold, str(release))))


async def until_started(*releases: Path) -> None:
    await eventually(lambda: all(started_marker(r).exists() for r in releases))


def holder_pid(release: Path) -> int:
    return int(started_marker(release).read_text())


# -- tests --------------------------------------------------------------------------------------


async def test_fast_calls_queue_on_a_busy_worker_and_all_come_back(
    pool: ProcessPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    holder = start_holding(pool, release)
    queued = [asyncio.ensure_future(pool.run(call(square_pid, i))) for i in range(5)]
    await until_started(release)
    await eventually(lambda: in_flight(pool) == [6])  # sent ahead, not waiting in the parent
    release.write_text("go")
    pid = await holder
    assert await asyncio.gather(*queued) == [(i * i, pid) for i in range(5)]


async def test_calls_not_measured_yet_wait_for_a_worker_of_their_own(
    pool: ProcessPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    holder = start_holding(pool, release)
    unknown = asyncio.ensure_future(pool.run(call(square_pid, 3, task="never_seen")))
    await until_started(release)
    assert in_flight(pool) == [1], "a call of unknown length was queued behind a busy one"
    release.write_text("go")
    assert (await unknown)[0] == 9
    await holder


async def test_worker_death_fails_only_the_running_call_and_requeues_the_rest(
    pool: ProcessPool, tmp_path: Path
) -> None:
    release = tmp_path / "never"
    holder = start_holding(pool, release)
    queued = [asyncio.ensure_future(pool.run(call(square_pid, i))) for i in range(4)]
    await until_started(release)
    dead = holder_pid(release)
    await eventually(lambda: in_flight(pool) == [5])
    os.kill(dead, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError, match="killed by SIGKILL"):
        await holder
    results = await asyncio.gather(*queued)
    assert [value for value, _ in results] == [0, 1, 4, 9]
    assert {pid for _, pid in results} != {dead}
    assert dead not in {pid for _, pid in results}
    assert gone(dead)


async def test_cancelled_queued_call_never_starts_and_spares_the_worker(
    pool: ProcessPool, tmp_path: Path
) -> None:
    release, ran = tmp_path / "release", tmp_path / "ran"
    holder = start_holding(pool, release)
    queued = asyncio.ensure_future(pool.run(call(mark, str(ran))))
    await until_started(release)
    await eventually(lambda: in_flight(pool) == [2])
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.write_text("go")
    pid = await holder
    assert (await pool.run(call(square_pid, 2))) == (4, pid)  # the same worker, still alive
    assert not ran.exists(), "the cancelled call ran"


async def test_queued_call_starts_its_clock_only_when_its_worker_turns_to_it(
    pool: ProcessPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    holder = start_holding(pool, release)
    started: list[float] = []
    queued = asyncio.ensure_future(
        pool.run(call(square_pid, 5), on_start=lambda: started.append(time.monotonic()))
    )
    await until_started(release)
    await eventually(lambda: in_flight(pool) == [2])
    await asyncio.sleep(0.2)
    assert started == [], "the queued call's timeout would have run while it waited"
    released = time.monotonic()
    release.write_text("go")
    await holder
    assert (await queued)[0] == 25
    assert len(started) == 1
    assert started[0] >= released


def reverse_bytes(data: bytes) -> bytes:
    return data[::-1]


async def test_large_arguments_and_results_cross_in_pieces(pool: ProcessPool) -> None:
    big = os.urandom(24 * 1024 * 1024)  # far more than a socket buffer: sent in pieces
    results = await asyncio.gather(*(pool.run(call(reverse_bytes, big)) for _ in range(2)))
    assert all(result == big[::-1] for result in results)


async def test_worker_that_died_idle_is_replaced_without_failing_a_call(
    pool: ProcessPool,
) -> None:
    [idle] = pool.worker_pids()
    os.kill(idle, signal.SIGKILL)
    await eventually(lambda: all_threads_exited(idle))
    value, pid = await pool.run(call(square_pid, 6))
    assert (value, pid != idle) == (36, True)
    assert pool.worker_pids() == [pid]
    assert gone(idle)


async def test_calls_queued_behind_an_overrunning_call_move_to_a_free_worker(
    tmp_path: Path,
) -> None:
    pool = ProcessPool(2)
    try:
        for _ in range(2):  # each worker's first call imports this module: forget that
            await asyncio.gather(*(pool.run(call(square_pid, i)) for i in range(20)))
        stuck, brief = tmp_path / "stuck", tmp_path / "brief"
        holders = [start_holding(pool, stuck), start_holding(pool, brief)]
        queued = [asyncio.ensure_future(pool.run(call(square_pid, i))) for i in range(6)]
        await until_started(stuck, brief)
        stuck_pid, brief_pid = holder_pid(stuck), holder_pid(brief)
        await eventually(lambda: sorted(in_flight(pool)) == [4, 4])  # three behind each
        brief.write_text("go")  # one worker frees up; the other's call runs on and on
        results = await asyncio.wait_for(asyncio.gather(*queued), 10)
        assert [value for value, _ in results] == [i * i for i in range(6)]
        assert {pid for _, pid in results} == {brief_pid}
        assert not holders[0].done()
        stuck.write_text("go")
        assert await holders[0] == stuck_pid
    finally:
        pool.shutdown()


def nap_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


async def _race_recalls(pool: ProcessPool, rounds: int) -> set[int]:
    pids: set[int] = set()
    for round_ in range(rounds):
        name = f"round{round_}"  # a fresh estimate each round: fast, so calls queue
        await asyncio.gather(*(pool.run(call(nap_then, 0, i, task=name)) for i in range(4)))
        long = pool.run(call(nap_then, 0.0098 + (round_ % 9) * 0.0001, -1, task=name))
        short = pool.run(call(nap_then, 0.0005, -2, task=name))
        queued = [pool.run(call(nap_then, 0, i, task=name)) for i in range(8)]
        assert await asyncio.gather(long, short, *queued) == [-1, -2, *range(8)]
        pids.update(pool.worker_pids())
    return pids


def test_recalls_racing_calls_that_finish_lose_no_call_and_no_worker() -> None:
    # Each round queues calls behind one that runs about as long as _STEAL_AFTER while the
    # other worker frees up, so the recall and the end of that call race; two pools at
    # once on two loops keep the CPUs busy, which widens the window. A SKIPPED overtaken
    # by a later reply used to be taken for a broken protocol (and the worker killed).
    pools = [ProcessPool(2), ProcessPool(2)]
    seen: list[set[int]] = []

    def race(pool: ProcessPool) -> None:
        seen.append(asyncio.run(_race_recalls(pool, 150)))

    try:
        threads = [threading.Thread(target=race, args=(pool,)) for pool in pools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert [len(pids) for pids in seen] == [2, 2], "a call failed or a worker was lost"
    finally:
        for pool in pools:
            pool.shutdown()
