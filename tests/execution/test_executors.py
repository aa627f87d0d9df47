"""How one call runs: on the loop, in a pool thread, in a pool worker process."""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import importlib
import logging
import operator
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auto_workflow._core._context import RunContext, get_context
from auto_workflow._execution._local import AsyncExecutor, ThreadExecutor, abandoned_thread_count
from auto_workflow._execution._process import (
    ProcessExecutor,
    ProcessPool,
    get_process_pool,
    shutdown_process_pool,
)
from auto_workflow._execution._protocol import Call
from auto_workflow.exceptions import RemoteTaskError, SerializationError, WorkerCrashedError
from procs import children_of, gone, running

CALLER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("caller_var", default="unset")


def make_call(fn: Any, *args: Any, task: str = "t", **kwargs: Any) -> Call:
    ctx = RunContext(run_id="run-1", flow_name="flow", params={"p": 1})
    return Call(fn, args, kwargs, task, ctx.for_attempt(task, f"{task}#0", 1))


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def text_of(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def eventually(predicate: Any, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up after {seconds}s waiting for {predicate}")


async def wait_for_text(path: Path) -> str:
    await eventually(lambda: text_of(path))
    return text_of(path)


@pytest.fixture
def pool() -> Iterator[ProcessPool]:
    before = children_of(zombies=True)
    fds_before = len(os.listdir("/proc/self/fd"))
    pool = ProcessPool(2)
    yield pool
    pool.shutdown()
    assert children_of(zombies=True) <= before, "a worker process outlived its pool's shutdown"
    assert len(os.listdir("/proc/self/fd")) <= fds_before, "the pool leaked file descriptors"


@pytest.fixture
def threads() -> Iterator[ThreadExecutor]:
    executor = ThreadExecutor(4)
    yield executor
    executor.shutdown()


# -- functions the tests run (module level, so worker processes import them) -------------------


def report(x: int) -> tuple[Any, ...]:
    ctx = get_context()
    return os.getpid(), x * 2, ctx.task_name, ctx.run_id, ctx.attempt, dict(ctx.params)


async def async_report(x: int) -> tuple[Any, ...]:
    await asyncio.sleep(0)
    return threading.current_thread().name, x, get_context().task_name


def read_caller_var() -> tuple[str, str, str]:
    seen = CALLER_VAR.get()
    CALLER_VAR.set("changed in the thread")
    return seen, get_context().task_name or "", threading.current_thread().name


def where() -> tuple[str, str | None, bool]:
    return __name__, __file__, sys.modules[__name__].report is report


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def nap_after_marker(path: str, seconds: float) -> int:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def thread_nap(seconds: float, lock: threading.Lock, running: list[int], peak: list[int]) -> str:
    with lock:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
    time.sleep(seconds)
    with lock:
        running[0] -= 1
    return threading.current_thread().name


def block(started: threading.Event, release: threading.Event) -> str:
    started.set()
    release.wait(10)
    return "released"


def die(how: str, path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the working tree
    ctypes.string_at(0)  # segfault


def spin(path: str) -> None:
    with open(path, "a") as beat:
        beat.write(f"{os.getpid()}\n")
        beat.flush()
        while True:  # CPU-bound, never returns: only killing the worker stops it
            sum(range(20_000))
            beat.write(".")
            beat.flush()


class CustomError(Exception):
    pass


class TwoArgError(Exception):
    """Pickles fine but cannot be rebuilt: unpickling calls TwoArgError(message)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


class LockedError(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def fail_with(kind: str) -> None:
    if kind == "custom":
        raise CustomError("custom failure")
    if kind == "two_arg":
        raise TwoArgError("left", "right")
    raise LockedError()


def returns_lock() -> Any:
    return threading.Lock()


def takes(value: Any, lock: Any = None) -> None:
    return None


# -- AsyncExecutor -----------------------------------------------------------------------------


async def test_async_executor_awaits_coroutines_with_the_run_context() -> None:
    loop_thread = threading.current_thread().name
    name, x, task_name = await AsyncExecutor().run(make_call(async_report, 5, task="on-loop"))
    assert (name, x, task_name) == (loop_thread, 5, "on-loop")


async def test_async_executor_returns_plain_results() -> None:
    assert await AsyncExecutor().run(make_call(operator.add, 2, 3)) == 5


# -- ThreadExecutor ----------------------------------------------------------------------------


async def test_thread_call_runs_in_a_copy_of_the_callers_context(
    threads: ThreadExecutor,
) -> None:
    token = CALLER_VAR.set("set by the caller")
    try:
        seen, task_name, thread = await threads.run(make_call(read_caller_var, task="ctx"))
        assert CALLER_VAR.get() == "set by the caller"  # the thread's change stayed there
    finally:
        CALLER_VAR.reset(token)
    assert (seen, task_name) == ("set by the caller", "ctx")
    assert thread != threading.current_thread().name


async def test_thread_calls_run_concurrently_up_to_max_workers() -> None:
    executor = ThreadExecutor(32)
    lock, now, peak = threading.Lock(), [0], [0]
    calls = [make_call(thread_nap, 0.05, lock, now, peak) for _ in range(64)]
    start = time.monotonic()
    try:
        names = await asyncio.gather(*(executor.run(c) for c in calls))
    finally:
        executor.shutdown()
    elapsed = time.monotonic() - start
    assert elapsed < 0.5, f"64 x 50 ms on 32 threads took {elapsed:.2f}s"
    assert 16 <= peak[0] <= 32
    assert len(set(names)) <= 32


async def test_idle_threads_are_reused() -> None:
    # Sequential calls on a pool of 16 threads: reused, they stay on one or two threads (a
    # thread marks itself idle just after its result is handed back, so under load the
    # next call can start one more); without reuse they would spread over 16.
    threads = ThreadExecutor(16)
    try:
        names = [
            await threads.run(make_call(lambda: threading.current_thread().name)) for _ in range(32)
        ]
    finally:
        threads.shutdown()
    assert len(set(names)) <= 3, sorted(set(names))


async def test_async_function_runs_to_completion_in_its_thread(threads: ThreadExecutor) -> None:
    name, x, task_name = await threads.run(make_call(async_report, 7, task="async-in-thread"))
    assert name.startswith("auto_workflow-thread-")
    assert (x, task_name) == (7, "async-in-thread")


async def test_thread_call_exceptions_come_back_unchanged(threads: ThreadExecutor) -> None:
    with pytest.raises(CustomError, match="custom failure"):
        await threads.run(make_call(fail_with, "custom"))


async def test_cancelled_thread_call_is_abandoned_not_awaited(
    threads: ThreadExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = threading.Event(), threading.Event()
    before = abandoned_thread_count()
    caplog.set_level(logging.WARNING, logger="auto_workflow._execution._local")
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await threads.run(make_call(block, started, release, task="stuck"))
        assert time.monotonic() - start < 2.0, "cancellation waited for the thread"
        assert started.is_set()
        assert threads.abandoned == 1
        assert abandoned_thread_count() == before + 1
        assert any(
            "stuck" in r.getMessage() and "abandon" in r.getMessage() for r in caplog.records
        )
        # The pool still has a full complement of threads for new calls.
        assert await threads.run(make_call(operator.mul, 6, 7)) == 42
    finally:
        release.set()


async def test_call_cancelled_while_queued_never_runs_and_is_not_abandoned() -> None:
    executor = ThreadExecutor(1)
    started, release, second = threading.Event(), threading.Event(), threading.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(executor.run(make_call(block, started, release)))
            await eventually(started.is_set)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await executor.run(make_call(second.set))
            release.set()
        assert first.result() == "released"
        assert not second.is_set()
        assert executor.abandoned == 0
    finally:
        release.set()
        executor.shutdown()


def test_abandoned_thread_ending_after_its_loop_closed_is_silent(
    capfd: pytest.CaptureFixture[str],
) -> None:
    executor = ThreadExecutor(1)
    started, release = threading.Event(), threading.Event()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await executor.run(make_call(block, started, release))

    before = set(threading.enumerate())
    asyncio.run(main())  # the loop is closed from here on
    abandoned = [t for t in threading.enumerate() if t not in before]
    assert len(abandoned) == 1
    release.set()
    abandoned[0].join(5)
    assert not abandoned[0].is_alive()
    executor.shutdown()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "Exception" not in err


async def test_shutdown_stops_idle_threads_and_refuses_new_calls() -> None:
    executor = ThreadExecutor(4)
    lock, now, peak = threading.Lock(), [0], [0]
    names = set(
        await asyncio.gather(
            *(executor.run(make_call(thread_nap, 0.02, lock, now, peak)) for _ in range(4))
        )
    )
    assert names <= thread_names()
    executor.shutdown()
    executor.shutdown()  # idempotent
    assert not names & thread_names()
    with pytest.raises(RuntimeError, match="shut down"):
        await executor.run(make_call(operator.add, 1, 1))


# -- ProcessPool -------------------------------------------------------------------------------


async def test_process_call_round_trips_result_and_run_context(pool: ProcessPool) -> None:
    pid, doubled, task_name, run_id, attempt, params = await pool.run(
        make_call(report, 21, task="remote")
    )
    assert pid != os.getpid()
    assert (doubled, task_name, run_id, attempt, params) == (42, "remote", "run-1", 1, {"p": 1})
    assert await ProcessExecutor(pool).run(make_call(nap, 0)) == pid  # the worker is reused


async def test_function_from_the_test_module_is_imported_in_the_worker(
    pool: ProcessPool,
) -> None:
    assert await pool.run(make_call(where)) == (__name__, __file__, True)
    offset = 100
    assert await pool.run(make_call(lambda x: x + offset, 1)) == 101  # by value


async def test_running_worker_follows_later_sys_path_changes(
    pool: ProcessPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await pool.run(make_call(nap, 0))
    (tmp_path / "late_module_for_executors.py").write_text(
        "import os\n\ndef late_pid():\n    return os.getpid()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    late = importlib.import_module("late_module_for_executors")  # so pickled by reference
    try:
        assert await pool.run(make_call(late.late_pid)) == pid  # same worker
    finally:
        del sys.modules["late_module_for_executors"]


async def test_async_function_runs_in_the_worker(pool: ProcessPool) -> None:
    name, x, task_name = await pool.run(make_call(async_report, 3, task="async-remote"))
    assert (name, x, task_name) == ("MainThread", 3, "async-remote")


async def test_worker_exception_keeps_its_type_and_remote_traceback(pool: ProcessPool) -> None:
    with pytest.raises(CustomError, match="custom failure") as info:
        await pool.run(make_call(fail_with, "custom", task="failing"))
    notes = "\n".join(info.value.__notes__)
    assert "Remote traceback (task 'failing', worker pid" in notes
    assert "in fail_with" in notes


@pytest.mark.parametrize(
    ("kind", "type_name", "message"),
    [("two_arg", "TwoArgError", "left/right"), ("locked", "LockedError", "holds a lock")],
)
async def test_exception_that_cannot_cross_comes_back_as_remote_task_error(
    pool: ProcessPool, kind: str, type_name: str, message: str
) -> None:
    with pytest.raises(RemoteTaskError) as info:
        await pool.run(make_call(fail_with, kind))
    error = info.value
    assert isinstance(error, RuntimeError)
    assert error.type_name == f"{__name__}.{type_name}"
    assert error.remote_message == message
    assert "in fail_with" in error.remote_traceback
    assert str(error) == f"{__name__}.{type_name}: {message}"


@pytest.mark.parametrize(
    ("how", "expected"),
    [("exit", "exit code 3"), ("sigkill", "killed by SIGKILL"), ("segfault", "killed by SIGSEGV")],
)
async def test_worker_death_fails_only_its_call(
    pool: ProcessPool, tmp_path: Path, how: str, expected: str
) -> None:
    marker = tmp_path / "dead-pid"
    outcomes: tuple[Any, Any] = await asyncio.gather(
        pool.run(make_call(die, how, str(marker), task="doomed")),
        pool.run(make_call(nap, 0.5, task="bystander")),
        return_exceptions=True,
    )
    crashed, survived = outcomes
    dead = int(marker.read_text())
    assert isinstance(crashed, WorkerCrashedError)
    message = str(crashed)
    assert "'doomed'" in message
    assert f"worker process (pid {dead}) died" in message
    assert expected in message
    assert isinstance(survived, int)
    assert survived != dead
    assert gone(dead), "the dead worker was not reaped"
    # Two calls at once need two workers: the survivor's and a new one for the dead one.
    pids = await asyncio.gather(*(pool.run(make_call(nap, 0.2)) for _ in range(2)))
    assert len(set(pids)) == 2
    assert survived in pids
    assert dead not in pids


async def test_timeout_kills_the_worker_and_stops_the_work(
    pool: ProcessPool, tmp_path: Path
) -> None:
    beat = tmp_path / "beat"
    warm = await pool.run(make_call(nap, 0))  # the timeout below covers only the call
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await pool.run(make_call(spin, str(beat)))
    pid = int(beat.read_text().splitlines()[0])
    assert pid == warm
    assert gone(pid), "the worker was not killed and reaped"
    size = beat.stat().st_size
    assert size > len(f"{pid}\n") + 5, "the busy loop never ran"
    await asyncio.sleep(0.3)
    assert beat.stat().st_size == size, "the timed-out work is still running"
    assert pid not in pool.worker_pids()
    assert await pool.run(make_call(nap, 0)) != pid


async def test_unpicklable_arguments_name_task_argument_and_type(pool: ProcessPool) -> None:
    with pytest.raises(SerializationError) as info:
        await pool.run(make_call(takes, 1, lock=threading.Lock(), task="locky"))
    message = str(info.value)
    assert "'locky'" in message
    assert "argument 'lock' of type _thread.lock" in message
    with pytest.raises(SerializationError, match=r"argument 'value' of type _thread\.RLock"):
        await pool.run(make_call(takes, threading.RLock()))
    assert pool.worker_pids() == []  # refused before any worker was needed


async def test_unpicklable_result_names_task_and_type(pool: ProcessPool) -> None:
    with pytest.raises(SerializationError) as info:
        await pool.run(make_call(returns_lock, task="gives_lock"))
    message = str(info.value)
    assert "'gives_lock'" in message
    assert "_thread.lock" in message
    assert len(pool.worker_pids()) == 1  # the worker survives and is kept
    assert await pool.run(make_call(operator.add, 1, 1)) == 2


async def test_workers_ignore_sigint(pool: ProcessPool, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    async with asyncio.TaskGroup() as tg:
        call = tg.create_task(pool.run(make_call(nap_after_marker, str(marker), 0.3)))
        pid = int(await wait_for_text(marker))
        os.kill(pid, signal.SIGINT)
    assert call.result() == pid


async def test_cancelled_waiter_gives_back_its_turn(tmp_path: Path) -> None:
    pool = ProcessPool(1)
    try:
        async with asyncio.TaskGroup() as tg:
            busy = tg.create_task(pool.run(make_call(nap, 0.5)))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await pool.run(make_call(nap, 0))
        assert await pool.run(make_call(nap, 0)) == busy.result()
    finally:
        pool.shutdown()


def test_one_pool_serves_several_event_loops() -> None:
    pool = ProcessPool(1)
    results: list[int] = []

    def in_own_loop() -> None:
        results.append(asyncio.run(pool.run(make_call(nap, 0.2))))

    try:
        workers = [threading.Thread(target=in_own_loop) for _ in range(2)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(20)
        # One worker, handed from one loop to the other.
        assert len(results) == 2
        assert results[0] == results[1]
    finally:
        pool.shutdown()


async def test_resize_lets_a_waiting_call_start_a_worker(pool: ProcessPool) -> None:
    pool.resize(1)
    async with asyncio.TaskGroup() as tg:
        first = tg.create_task(pool.run(make_call(nap, 0.6)))
        await asyncio.sleep(0.1)
        second = tg.create_task(pool.run(make_call(nap, 0)))
        await asyncio.sleep(0.1)
        pool.resize(2)
    assert first.result() != second.result()


async def test_shutdown_reaps_every_worker_and_refuses_new_calls(tmp_path: Path) -> None:
    children, fds, names = (
        children_of(zombies=True),
        len(os.listdir("/proc/self/fd")),
        thread_names(),
    )
    pool = ProcessPool(3)
    marker = tmp_path / "busy"
    idle = await asyncio.gather(*(pool.run(make_call(nap, 0.1)) for _ in range(2)))

    async def shut_down_while_busy() -> int:
        busy_pid = int(await wait_for_text(marker))
        assert set(pool.worker_pids()) == {*idle, busy_pid}
        pool.shutdown()
        return busy_pid

    outcomes: tuple[Any, Any] = await asyncio.gather(
        pool.run(make_call(nap_after_marker, str(marker), 30)),
        shut_down_while_busy(),
        return_exceptions=True,
    )
    crashed, busy_pid = outcomes
    assert isinstance(crashed, WorkerCrashedError)
    assert "SIGKILL" in str(crashed)
    pool.shutdown()  # idempotent
    for pid in (*idle, busy_pid):
        assert gone(pid)
    assert children_of(zombies=True) == children
    assert len(os.listdir("/proc/self/fd")) == fds
    assert thread_names() == names
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.run(make_call(nap, 0))


async def test_shared_pool_is_created_once_and_restarts_after_shutdown() -> None:
    try:
        shared = get_process_pool(2)
        assert get_process_pool() is shared
        pid = await ProcessExecutor().run(make_call(nap, 0))
        assert shared.worker_pids() == [pid]
        shutdown_process_pool()
        shutdown_process_pool()  # idempotent
        assert gone(pid)
        assert get_process_pool() is not shared
    finally:
        shutdown_process_pool()


def test_worker_exits_when_its_parent_dies(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, time
        from auto_workflow._core._context import RunContext
        from auto_workflow._execution._process import ProcessPool
        from auto_workflow._execution._protocol import Call

        def spin(path):
            with open(path, "a") as beat:
                beat.write(f"{{os.getpid()}}\\n")
                beat.flush()
                while True:
                    sum(range(20_000))
                    beat.write(".")
                    beat.flush()

        async def main():
            pool = ProcessPool(1)
            ctx = RunContext(run_id="r", flow_name=None)
            call = Call(spin, ({str(beat)!r},), {{}}, "spin", ctx)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pool.run(call))
                while not os.path.exists({str(beat)!r}):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=30, check=False)
    assert done.returncode == -signal.SIGKILL
    pid = int(beat.read_text().splitlines()[0])
    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert not running(pid), "the orphaned worker kept running"
    finally:
        if running(pid):  # do not leave a spinning orphan behind a failed test
            os.kill(pid, signal.SIGKILL)
