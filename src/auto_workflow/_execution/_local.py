"""How one attempt runs in this process: on the event loop, or in a thread of the run's pool.

* :class:`AsyncExecutor` calls the function on the event loop thread and awaits its result
  when that is awaitable.
* :class:`ThreadExecutor` runs calls on daemon threads of its own, started on demand up to
  ``max_workers`` and reused while idle, much like ``asyncio.to_thread``.

Invariants:

* A thread is never killed. A thread call cancelled while it runs is *abandoned*: counted,
  logged, its outcome dropped; its thread leaves the pool and exits when the call returns.
  Threads are daemons, so an abandoned call never keeps the interpreter from exiting.
* Nothing happens at import: threads start on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auto_workflow._core._context import use_context
from auto_workflow._execution._protocol import Call, OnStart, call_to_completion, check_max_workers

__all__ = ["AsyncExecutor", "OnBlocking", "ThreadExecutor", "abandoned_thread_count"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT = 5.0
"""Bound on joining an idle thread at shutdown (it exits at once; this guards a bug)."""

# -- on the loop ------------------------------------------------------------------------------


OnBlocking = Callable[[Call, float], None]
"""Told when calling a function held the event loop too long: the call, and its seconds."""


def _not_told(call: Call, seconds: float) -> None:
    """The :data:`OnBlocking` of an executor that reports nothing (its limit is infinite)."""


class AsyncExecutor:
    """Runs a call on the event loop thread; an awaitable result is awaited there.

    ``blocking_limit``: calling the function (not awaiting what it returns) that holds the
    loop this many seconds or more is reported to ``on_blocking``.
    """

    __slots__ = ("_limit", "_on_blocking")

    def __init__(
        self, blocking_limit: float = math.inf, on_blocking: OnBlocking | None = None
    ) -> None:
        self._limit = blocking_limit if on_blocking is not None else math.inf
        self._on_blocking: OnBlocking = on_blocking or _not_told

    async def run(self, call: Call, on_start: OnStart = None) -> Any:
        """Call ``call.fn`` with ``call.context`` current and await its result if awaitable."""
        if on_start is not None:
            on_start()
        with use_context(call.context):
            start = time.perf_counter()
            try:
                result = call.fn(*call.args, **call.kwargs)
            finally:
                held = time.perf_counter() - start
                if held >= self._limit:
                    self._on_blocking(call, held)
            if inspect.isawaitable(result):
                result = await result
        return result


# -- in a thread ------------------------------------------------------------------------------

_abandoned_lock = threading.Lock()
_abandoned_total = 0
_thread_ids = itertools.count(1)


def abandoned_thread_count() -> int:
    """How many thread calls in this process were abandoned on cancellation, in total."""
    with _abandoned_lock:
        return _abandoned_total


def _count_abandoned() -> None:
    global _abandoned_total
    with _abandoned_lock:
        _abandoned_total += 1


class _JobState(enum.Enum):
    QUEUED = enum.auto()
    RUNNING = enum.auto()
    DONE = enum.auto()
    CANCELLED = enum.auto()  # withdrawn before a thread took it: never ran
    ABANDONED = enum.auto()  # cancelled while running: its thread finishes it, then exits


@dataclass(eq=False, slots=True)
class _ThreadJob:
    call: Call
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    on_start: OnStart = None
    state: _JobState = _JobState.QUEUED
    thread: threading.Thread | None = None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Complete ``future`` (on its loop) unless its awaiter gave up already."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, StopIteration):
        # A future cannot hold StopIteration; asyncio turns it into RuntimeError the same way.
        wrapped = RuntimeError(f"task raised StopIteration: {error}")
        wrapped.__cause__ = error
        future.set_exception(wrapped)
    else:
        future.set_exception(error)


def _deliver(job: _ThreadJob, result: Any, error: BaseException | None) -> None:
    """Hand a job's outcome to its loop from any thread; never raises."""
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)
    except RuntimeError:  # the loop is closed: nobody can receive the outcome any more
        logger.debug("dropped the outcome of task %r: its loop is closed", job.call.task_name)


class ThreadExecutor:
    """Runs calls on up to ``max_workers`` daemon threads of its own.

    Like ``asyncio.to_thread``, each call runs in a copy of the caller's context variables,
    and a coroutine function runs to completion with ``asyncio.run`` in its thread. Threads
    start on demand and idle ones are reused. A call cancelled while it runs cannot be
    stopped: it is abandoned (see :attr:`abandoned`) and its thread exits when it returns.

    Attributes:
        max_workers: The most calls that run at once.
        abandoned: How many of this executor's calls were abandoned on cancellation.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = check_max_workers(max_workers)
        self.abandoned = 0
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_ThreadJob] = deque()
        self._threads: set[threading.Thread] = set()  # live threads that are still ours
        self._busy: set[threading.Thread] = set()
        self._idle = 0  # threads waiting for a job
        self._closed = False

    async def run(self, call: Call, on_start: OnStart = None) -> Any:
        """Run ``call`` on a pool thread and return its result.

        Raises:
            RuntimeError: if the executor was shut down.
            asyncio.CancelledError: when cancelled; a running call is abandoned, not awaited.
        """
        loop = asyncio.get_running_loop()
        job = _ThreadJob(call, contextvars.copy_context(), loop, loop.create_future(), on_start)
        self._submit(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    def shutdown(self) -> None:
        """Stop idle threads and join them; idempotent.

        Busy and abandoned threads finish their call and then exit (they are daemons).
        Calls still queued fail with ``RuntimeError``, and so does any later :meth:`run`.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            for job in queued:
                job.state = _JobState.CANCELLED
            idle = self._threads - self._busy
            self._cond.notify_all()
        for job in queued:
            message = f"task {job.call.task_name!r} did not start: the thread pool was shut down"
            _deliver(job, None, RuntimeError(message))
        for thread in idle:
            thread.join(_JOIN_TIMEOUT)

    def _submit(self, job: _ThreadJob) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("this ThreadExecutor was shut down")
            self._queue.append(job)
            try:
                self._grow_locked()
            except RuntimeError:  # the OS refused a thread: do not leave the job behind
                self._queue.remove(job)
                raise
            self._cond.notify()

    def _grow_locked(self) -> None:
        """Start a thread when queued jobs outnumber idle threads and the cap allows."""
        if len(self._queue) <= self._idle or len(self._threads) >= self.max_workers:
            return
        name = f"auto_workflow-thread-{next(_thread_ids)}"
        thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:
            self._threads.discard(thread)
            raise

    def _withdraw(self, job: _ThreadJob) -> None:
        """The awaiting task was cancelled: drop a queued job, or abandon a running one."""
        with self._cond:
            if job.state is _JobState.QUEUED:
                self._queue.remove(job)
                job.state = _JobState.CANCELLED
                return
            if job.state is not _JobState.RUNNING:
                return
            job.state = _JobState.ABANDONED
            thread = job.thread
            if thread is not None:  # always set while RUNNING
                self._threads.discard(thread)
                self._busy.discard(thread)
            self.abandoned += 1
        # Replace the thread on the next loop turn, not now: when a whole run is being
        # cancelled, the queued jobs' own cancellations are still pending, and a thread
        # started now would pick one up and run it after the run was told to stop.
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to serve
            job.loop.call_soon(self._replace_abandoned)
        _count_abandoned()
        logger.warning(
            "task %r was stopped (it timed out or its run was cancelled) while running in "
            "thread %r; a thread cannot be stopped, so the call is abandoned and its thread "
            "exits when it returns",
            job.call.task_name,
            thread.name if thread is not None else "?",
        )

    def _replace_abandoned(self) -> None:
        """Start a thread for jobs still queued in place of an abandoned one, if needed."""
        with self._cond:
            if self._closed:
                return
            try:
                self._grow_locked()
            except RuntimeError:  # the OS refused a thread; the remaining threads still serve
                logger.warning(
                    "could not start a thread to replace an abandoned one", exc_info=True
                )
                return
            self._cond.notify()

    def _work(self) -> None:
        """A pool thread: run jobs until shut down or until its job is abandoned."""
        while self._serve_next():
            pass

    def _serve_next(self) -> bool:
        job = self._next_job()
        return job is not None and self._run_job(job)

    def _next_job(self) -> _ThreadJob | None:
        me = threading.current_thread()
        with self._cond:
            while not self._queue and not self._closed:
                self._idle += 1
                self._cond.wait()
                self._idle -= 1
            if self._closed:
                self._threads.discard(me)
                return None
            job = self._queue.popleft()
            job.state = _JobState.RUNNING
            job.thread = me
            self._busy.add(me)
        if job.on_start is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                job.loop.call_soon_threadsafe(job.on_start)
        return job

    def _run_job(self, job: _ThreadJob) -> bool:
        """Run ``job`` and deliver its outcome; False when it was abandoned meanwhile."""
        result: Any = None
        error: BaseException | None = None
        try:
            result = job.context.run(call_to_completion, job.call)
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the awaiting task
            error = exc
        with self._cond:
            self._busy.discard(threading.current_thread())
            abandoned = job.state is _JobState.ABANDONED
            job.state = _JobState.DONE
        if abandoned:
            logger.debug("abandoned task %r returned; its thread exits", job.call.task_name)
            return False
        _deliver(job, result, error)
        return True
