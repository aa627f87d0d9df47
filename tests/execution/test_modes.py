"""Tasks in each execution mode inside flows: context, concurrency, crashes, timeouts."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from auto_workflow import fan_out, flow, get_context, task
from auto_workflow._execution import _local as executors
from auto_workflow._execution._process import get_process_pool
from auto_workflow.exceptions import (
    RetryExhaustedError,
    SerializationError,
    TaskExecutionError,
    TimeoutError,
    WorkerCrashedError,
)


@task(run_in="thread")
def thread_probe(tag: str) -> tuple[Any, ...]:
    ctx = get_context()
    return tag, ctx.flow_name, ctx.task_name, ctx.attempt, threading.current_thread().name


@task(run_in="process")
def process_probe(tag: str) -> tuple[Any, ...]:
    ctx = get_context()
    return tag, ctx.flow_name, ctx.task_name, dict(ctx.params), os.getpid()


@pytest.mark.parametrize("mode", ["async", "thread", "process"])
def test_get_context_works_in_every_mode(mode: str) -> None:
    @task(name="probe", run_in=mode)
    def probe() -> tuple[Any, ...]:
        ctx = get_context()
        return ctx.flow_name, ctx.task_name, ctx.attempt, dict(ctx.params), ctx.run_id

    @flow(name="modes")
    def modes() -> Any:
        return probe(), get_context().run_id

    (flow_name, task_name, attempt, params, run_id), expected_run_id = modes.run(params={"p": 1})
    assert (flow_name, task_name, attempt, params) == ("modes", "probe", 1, {"p": 1})
    assert run_id == expected_run_id


def test_process_tasks_run_in_other_processes() -> None:
    @flow
    def f() -> Any:
        return fan_out(process_probe, ["a", "b"])

    results = f.run()
    assert {r[0] for r in results} == {"a", "b"}
    assert all(r[4] != os.getpid() for r in results)


def test_thread_pool_lets_max_concurrency_threads_run_at_once() -> None:
    @task(run_in="thread")
    def nap(_: int) -> None:
        time.sleep(0.05)

    @flow
    def naps() -> Any:
        return fan_out(nap, range(64))

    start = time.monotonic()
    naps.run(max_concurrency=32)
    elapsed = time.monotonic() - start
    # two waves of 50 ms; the interpreter's default executor (6 threads here) needs 11
    assert elapsed < 0.4


def test_thread_timeout_abandons_the_thread_and_says_so(caplog: Any) -> None:
    release = threading.Event()

    @task(run_in="thread", timeout=0.1)
    def stuck() -> None:
        release.wait(10)

    before = executors.abandoned_thread_count()
    caplog.set_level(logging.WARNING, logger="auto_workflow")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        stuck()
    assert time.monotonic() - start < 3
    assert executors.abandoned_thread_count() == before + 1
    assert any("stuck" in r.getMessage() for r in caplog.records)
    release.set()  # let the abandoned thread finish so no thread outlives the test


def _crash(how: str) -> None:
    if how == "exit":
        os._exit(3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    import ctypes

    ctypes.string_at(0)  # segfault


@pytest.mark.parametrize("how", ["exit", "kill", "segfault"])
def test_dead_worker_fails_only_its_call(how: str) -> None:
    @task(run_in="process", name="crasher")
    def crasher() -> None:
        _crash(how)

    @task(run_in="process")
    def survivor() -> str:
        time.sleep(0.3)
        return "fine"

    @flow
    def f() -> Any:
        return crasher(), survivor()

    crashed, survived = f.run(failure_policy="continue")
    assert survived == "fine"
    assert isinstance(crashed, TaskExecutionError)
    assert isinstance(crashed.original, WorkerCrashedError)
    assert "crasher" in str(crashed.original)
    assert "died" in str(crashed.original)


def test_retry_after_a_worker_death_goes_to_a_new_worker(tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt"

    @task(run_in="process", retries=1)
    def dies_once(path: str) -> int:
        if not os.path.exists(path):
            Path(path).write_text(str(os.getpid()))
            os._exit(1)
        return os.getpid()

    pid = dies_once(str(marker))
    assert pid != int(marker.read_text())


def test_worker_death_without_retries_is_reported_with_task_name() -> None:
    @task(run_in="process", retries=1, name="always_dies")
    def always_dies() -> None:
        os._exit(7)

    with pytest.raises(RetryExhaustedError) as info:
        always_dies()
    assert isinstance(info.value.original, WorkerCrashedError)
    assert "always_dies" in str(info.value.original)


def test_process_timeout_stops_the_runaway_work(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"

    @task(run_in="process", timeout=1.5)
    def runaway(path: str) -> None:
        while True:  # CPU-bound, never yields: only killing the worker stops it
            Path(path).write_text(str(time.monotonic()))
            sum(range(10_000))

    def last_beat() -> str | None:
        return beat.read_text() if beat.exists() else None

    with pytest.raises(TimeoutError):
        runaway(str(beat))
    time.sleep(0.3)
    first = last_beat()  # None only if a loaded machine never got the worker going
    time.sleep(0.5)
    assert last_beat() == first, "the timed-out work is still running"


def test_unpicklable_argument_names_task_and_type() -> None:
    @task(run_in="process", name="needs_pickle")
    def needs_pickle(value: Any) -> None:
        return None

    with pytest.raises(TaskExecutionError) as info:
        needs_pickle(threading.Lock())
    assert isinstance(info.value.original, SerializationError)
    assert "needs_pickle" in str(info.value.original)
    assert "lock" in str(info.value.original).lower()


def test_unpicklable_result_names_task_and_type() -> None:
    @task(run_in="process", name="returns_lock")
    def returns_lock() -> Any:
        return threading.Lock()

    with pytest.raises(TaskExecutionError) as info:
        returns_lock()
    assert isinstance(info.value.original, SerializationError)
    assert "returns_lock" in str(info.value.original)


def test_process_task_exceptions_keep_their_type() -> None:
    @task(run_in="process")
    def raises_value_error() -> None:
        raise ValueError("bad input")

    with pytest.raises(TaskExecutionError) as info:
        raises_value_error()
    assert isinstance(info.value.original, ValueError)
    assert str(info.value.original) == "bad input"


async def test_cancelling_run_async_cancels_running_tasks() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    @task
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @flow
    def f() -> Any:
        return long()

    run = asyncio.ensure_future(f.run_async())
    await asyncio.wait_for(started.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert cancelled.is_set()


async def test_cancelling_run_async_kills_process_workers(tmp_path: Path) -> None:
    beat = tmp_path / "beat"

    @task(run_in="process")
    def spin(path: str) -> None:
        while True:
            Path(path).write_text(str(time.monotonic()))
            sum(range(10_000))

    @flow
    def f() -> Any:
        return spin(str(beat))

    run = asyncio.ensure_future(f.run_async())
    deadline = time.monotonic() + 20
    while not beat.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - another process writes it
        await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0.3)
    first = beat.read_text()
    await asyncio.sleep(0.5)
    assert beat.read_text() == first


def test_waiting_for_a_thread_does_not_count_against_the_timeout() -> None:
    # 100 calls of 0.2 s on the run's 64 threads: 36 wait about 0.2 s for a thread first.
    # Their timeout (0.3 s) starts when they get one, so none of them times out.
    @task(run_in="thread", timeout=0.3)
    def nap_briefly(i: int) -> int:
        time.sleep(0.2)
        return i

    @flow
    def many() -> Any:
        return fan_out(nap_briefly, range(100))

    assert many.run() == list(range(100))


def test_a_cancelled_run_starts_no_queued_thread_calls() -> None:
    started: list[float] = []
    failed_at: list[float] = []

    @task(run_in="thread")
    def slow(i: int) -> int:
        started.append(time.monotonic())
        time.sleep(0.05)
        return i

    @task
    async def fail_soon() -> None:
        await asyncio.sleep(0.1)
        failed_at.append(time.monotonic())
        raise RuntimeError("stop the run")

    @flow
    def doomed() -> Any:
        return fan_out(slow, range(2000)), fail_soon()

    with pytest.raises(TaskExecutionError):
        doomed.run()
    time.sleep(0.3)  # anything wrongly started would start meanwhile
    late = [t for t in started if t > failed_at[0] + 0.01]
    # A cascade would start hundreds of the 2,000 queued calls. A few per thread may still
    # start while the loop unwinds the run on a loaded machine (the history's writer thread
    # competes for the GIL then), so the bound is two per thread of the run's 64.
    assert len(late) < 128, f"{len(late)} queued calls started after the run was cancelled"


@task(run_in="process")
def tiny_square(i: int) -> int:
    return i * i


def test_a_failed_run_with_many_queued_process_calls_leaves_the_pool_healthy() -> None:
    @task
    async def fail_soon() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("stop the run")

    @flow
    def doomed() -> Any:
        return fan_out(tiny_square, range(3000)), fail_soon()

    @flow
    def fine() -> Any:
        return fan_out(tiny_square, range(300))

    with pytest.raises(TaskExecutionError):
        doomed.run()
    assert fine.run() == [i * i for i in range(300)]
    pool = get_process_pool()
    assert len(pool.worker_pids()) <= pool.max_workers
