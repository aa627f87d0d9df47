"""How one attempt runs in a worker process of a shared, healing pool.

* :class:`ProcessExecutor` sends calls, pickled with ``cloudpickle``, to a
  :class:`ProcessPool` of worker processes (:mod:`._worker`); one pool is shared by every
  run (:func:`get_process_pool`, :func:`shutdown_process_pool`).

Each event loop that uses the pool has a dispatcher (:mod:`._dispatch`). It queues the
loop's calls, sends them in batches (all the frames for one worker in one ``sendmsg``, once
per loop turn) and reads replies as they stream back, from the loop's own selector: no
thread of ours in the parent. A worker is owned by one dispatcher while it has calls in
flight and goes back to the pool when it drains. This module holds what loops share.

Invariants:

* A worker runs one call at a time, in the order they were sent, and the parent knows which
  one runs: the oldest one not yet answered. Calls wait queued on a busy worker only while
  the pool is at its cap and only as much as fits a small budget of expected work
  (``BUDGET``, learned per task name from how long its calls took); a task not yet
  measured, or slow, waits for a worker of its own. When an estimate was wrong (a call runs
  on past ``_STEAL_AFTER`` with calls queued behind it) and a worker is free, the queued
  calls are recalled (``RECALL``: the worker gives back those not started) and run there.
* A worker that dies fails only the call it was running (:class:`WorkerCrashedError`); the
  calls queued behind it never started and go to another worker. Dead workers are replaced
  on demand. Every worker the pool starts is reaped (no zombies), its socket closed.
* Cancelling a call (a timeout, a cancelled run, Ctrl-C) that runs kills its worker; one
  still queued on a worker is told not to start (the worker decides under its own lock, so
  it either never starts or its process stops). A call's timeout starts when it becomes the
  one its worker runs (``on_start``), never while it waits.
* Pool bookkeeping (idle workers, slot count, waiting dispatchers) sits behind one
  ``threading.Lock``, so one pool serves any number of event loops in any threads; a
  dispatcher waiting on another loop is handed its worker with ``call_soon_threadsafe``. A
  dispatcher stops feeding its workers while another loop waits for one, so loops take turns.
* Log records written in a worker reach this process's logging (:mod:`._logs`).
* Nothing happens at import: processes and the ``atexit`` hook start on first use.

Why a pool of our own rather than ``pebble.ProcessPool``: both pass the same reliability
scenarios (``bench/process_pools.py``), but on 2,000 tiny calls this pool alone takes 0.7-0.8x
the time of pebble's per-call futures, it fresh-starts its workers instead of
forking a parent that runs threads, ships closures with cloudpickle, forwards log records
and adds no dependency. Figures in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._execution import _wire
from auto_workflow._execution._dispatch import (
    BUDGET,
    Dispatcher,
    Job,
    Worker,
    call_soon,
    closed_error,
    describe_exit,
    kill_and_reap,
    reap,
    running_loop,
    start_worker,
)
from auto_workflow._execution._protocol import (
    Call,
    OnStart,
    check_max_workers,
    safe_str,
    type_name,
)
from auto_workflow.exceptions import RemoteTaskError, SerializationError

__all__ = ["ProcessExecutor", "ProcessPool", "get_process_pool", "shutdown_process_pool"]

logger = logging.getLogger(__name__)


# -- pickling a call and unpacking its reply ----------------------------------------------------


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and odd callables have no signature
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds]


def _call_parts(call: Call) -> Iterator[tuple[str, object]]:
    """Each part of a call that gets pickled, with a label for error messages."""
    names = _positional_names(call.fn)
    for index, value in enumerate(call.args):
        label = f"argument {names[index]!r}" if index < len(names) else f"argument #{index}"
        yield label, value
    for key, value in call.kwargs.items():
        yield f"argument {key!r}", value
    yield f"the function {getattr(call.fn, '__qualname__', '?')!r}", call.fn
    yield "the run context (its params)", call.context


def _pickles(value: object) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:  # noqa: BLE001 - probing which part of a call cannot be pickled
        return False
    return True


def _dump_call(call: Call) -> bytes:
    try:
        data = _wire.encode_call(call)
    except Exception as exc:  # user __reduce__ code may raise anything
        culprits = (
            f"{label} of type {type_name(v)}" for label, v in _call_parts(call) if not _pickles(v)
        )
        raise SerializationError(
            f"task {call.task_name!r}: {next(culprits, 'its call')} cannot be pickled to send "
            f"it to a worker process ({type_name(exc)}: {safe_str(exc)}); pass a picklable "
            "value or run the task in a thread"
        ) from exc
    return data


def _load_exception(payload: bytes | None, type_name: str, message: str, tb: str) -> BaseException:
    try:
        error = None if payload is None else cloudpickle.loads(payload)
    except Exception:  # an exception that cannot be rebuilt here is substituted
        logger.debug("could not unpickle a remote %s", type_name, exc_info=True)
        error = None
    return error if isinstance(error, BaseException) else RemoteTaskError(type_name, message, tb)


def _add_note(error: BaseException, note: str) -> None:
    try:
        error.add_note(note)
    except TypeError:  # __notes__ was replaced by something that is not a list
        logger.debug("could not attach the remote traceback to a %s", type_name(error))


def _unpack_reply(reply: tuple[Any, ...], task_name: str, pid: int) -> Any:
    """Return the call's result, or raise what the worker reported."""
    kind, payload, type_name, message, remote_tb, _ = reply
    if kind == "ok":
        try:
            return cloudpickle.loads(payload)
        except Exception as exc:  # unpickling runs arbitrary code
            raise SerializationError(
                f"task {task_name!r}: its result of type {type_name} could not be unpickled "
                f"in the parent process ({type_name(exc)}: {safe_str(exc)})"
            ) from exc
    if kind == "result_unpicklable":
        raise SerializationError(
            f"task {task_name!r} returned a value of type {type_name} that cannot be pickled "
            f"to send it back from its worker process ({message})"
        )
    error = _load_exception(payload, type_name, message, remote_tb)
    _add_note(error, f"Remote traceback (task {task_name!r}, worker pid {pid}):\n{remote_tb}")
    if kind == "load_failed":
        raise SerializationError(
            f"task {task_name!r}: its worker process could not unpickle the call "
            f"({type_name}: {message})"
        ) from error
    raise error


# -- the pool ------------------------------------------------------------------------------------


class ProcessPool:
    """Worker processes that run pickled calls, streamed to each worker in order.

    Workers start on demand (up to ``max_workers``), are reused and replaced when one dies.
    One pool can serve several event loops in several threads.

    Attributes:
        max_workers: The most worker processes alive at once.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = check_max_workers(
            max_workers if max_workers is not None else (os.cpu_count() or 1)
        )
        self.closed = False
        self._lock = threading.Lock()
        self._workers: set[Worker] = set()  # every live worker, idle or owned
        self._idle: list[Worker] = []
        self._count = 0  # worker slots taken: live workers + being started
        self._waiters: deque[Dispatcher] = deque()
        self._dispatchers: dict[asyncio.AbstractEventLoop, Dispatcher] = {}
        self._estimates: dict[str, float] = {}
        self._ids = itertools.count(1)

    async def run(self, call: Call, on_start: OnStart = None) -> Any:
        """Run ``call`` in a worker process and return its result.

        Raises:
            SerializationError: an argument, the result or the call cannot be pickled.
            WorkerCrashedError: the worker died while running the call.
            RuntimeError: the pool was shut down.
            asyncio.CancelledError: when cancelled; a worker running the call is killed.
            BaseException: what the function raised, as the same type when it pickles (with
                the remote traceback in a note), else as :class:`RemoteTaskError`.
        """
        data = _dump_call(call)
        loop = asyncio.get_running_loop()
        dispatcher = self._dispatcher(loop)
        future: asyncio.Future[tuple[tuple[Any, ...], int]] = loop.create_future()
        job = Job(next(self._ids), call.task_name, call.context, data, future, on_start)
        dispatcher.submit(job)
        try:
            reply, pid = await job.future
        except asyncio.CancelledError:
            dispatcher.withdraw(job)
            raise
        return _unpack_reply(reply, call.task_name, pid)

    def worker_pids(self) -> list[int]:
        """The process ids of the workers alive now (idle or busy)."""
        with self._lock:
            return sorted(w.pid for w in self._workers)

    def resize(self, max_workers: int) -> None:
        """Change :attr:`max_workers`: waiting calls may start workers at once when it grows;
        idle workers above the new cap stop now, busy ones when their calls end."""
        check_max_workers(max_workers)
        with self._lock:
            self.max_workers = max_workers
            grants = min(max(0, max_workers - self._count), len(self._waiters))
            self._count += grants
            surplus = self._idle[: max(0, self._count - max_workers)]
            del self._idle[: len(surplus)]
            self._count -= len(surplus)
            self._workers.difference_update(surplus)
        for _ in range(grants):
            self.pass_on(None)
        for worker in surplus:
            kill_and_reap(worker)

    def shutdown(self) -> None:
        """Stop every worker and wait for it to exit; idempotent.

        Idle workers exit when their socket closes; busy ones are killed, so their running
        calls fail with :class:`WorkerCrashedError`; the others fail with ``RuntimeError``.
        """
        with self._lock:
            self.closed = True
            workers, idle = list(self._workers), self._idle[:]
            dispatchers = [*self._dispatchers.values(), *self._waiters]
            self._idle.clear()
            self._waiters.clear()
            self._dispatchers.clear()
        here = running_loop()
        for dispatcher in dict.fromkeys(dispatchers):
            if dispatcher.loop is here:
                dispatcher.close()
            else:
                call_soon(dispatcher.loop, dispatcher.close)
        for worker in workers:
            if worker not in idle and worker.proc.poll() is None:
                name = worker.task_name
                logger.info("killing process worker pid %d running %r", worker.pid, name)
                worker.proc.kill()  # its loop sees EOF and closes the socket
        for worker in idle:
            worker.sock.close()  # EOF: the worker exits by itself
        for worker in workers:
            reap(worker.proc)

    # -- for dispatchers (on their loop) ------------------------------------------------------

    def _dispatcher(self, loop: asyncio.AbstractEventLoop) -> Dispatcher:
        dispatcher = self._dispatchers.get(loop)
        if dispatcher is None or self.closed:
            with self._lock:
                if self.closed:
                    raise closed_error()
                dispatcher = self._dispatchers.setdefault(loop, Dispatcher(self, loop))
        return dispatcher

    def forget(self, dispatcher: Dispatcher) -> None:
        """``dispatcher`` owns no worker now; drop it unless it still has work queued."""
        with self._lock:
            if dispatcher.pending or dispatcher.waiting or dispatcher.owned:
                return
            if self._dispatchers.get(dispatcher.loop) is dispatcher:
                del self._dispatchers[dispatcher.loop]

    def estimate(self, task_name: str) -> float:
        """Expected seconds of a call of ``task_name``; the whole budget if never measured."""
        return self._estimates.get(task_name, BUDGET)

    def learn(self, task_name: str, seconds: float) -> None:
        """Fold a call's duration into its task's estimate: up at once (a slow call must not
        have others queued behind the next one), down by half the gap per call (a first call
        that imported modules is soon forgotten)."""
        known = self._estimates.get(task_name)
        if known is None or seconds > known:
            self._estimates[task_name] = seconds
        else:
            self._estimates[task_name] = (known + seconds) / 2

    def has_free(self) -> bool:
        """Whether an idle worker or a free slot is there for the taking (a hint)."""
        return bool(self._idle) or self._count < self.max_workers

    def others_wait(self, dispatcher: Dispatcher) -> bool:
        """Whether another loop waits for a worker (then ours should drain and pass on)."""
        waiting = len(self._waiters)
        return waiting > 1 or (waiting == 1 and not dispatcher.waiting)

    def take(self) -> Worker | None:
        """An idle worker, or a new one below the cap; ``None`` at the cap.

        Raises:
            OSError: no worker process could be started.
        """
        if self._count >= self.max_workers and not self._idle:
            return None  # the common case when busy, without the lock
        while True:
            with self._lock:
                if self.closed:
                    return None
                if self._idle:
                    worker = self._idle.pop()
                elif self._count < self.max_workers:
                    self._count += 1
                    break
                else:
                    return None
            if worker.proc.poll() is None:
                return worker
            how = describe_exit(worker.proc.returncode)
            logger.warning("process worker pid %d died while idle (%s)", worker.pid, how)
            self.drop(worker)
        return self.start_in_slot()

    def take_or_wait(self, dispatcher: Dispatcher) -> None:
        """Queue ``dispatcher`` for the next worker or slot freed, unless queued already;
        one freed since its last look is handed over at once (on its next loop turn)."""
        with self._lock:
            if self.closed or dispatcher.waiting:
                return
            if self._idle:
                worker: Worker | None = self._idle.pop()
            elif self._count < self.max_workers:
                self._count += 1
                worker = None
            else:
                dispatcher.waiting = True
                self._waiters.append(dispatcher)
                return
        dispatcher.loop.call_soon(dispatcher.granted, worker)

    def stop_waiting(self, dispatcher: Dispatcher) -> None:
        """``dispatcher`` needs no worker any more."""
        if not dispatcher.waiting:
            return
        with self._lock:
            if dispatcher.waiting:
                dispatcher.waiting = False
                self._waiters.remove(dispatcher)

    def start_in_slot(self) -> Worker | None:
        """Start a worker in the slot the caller holds (freed again on failure); ``None``
        when the pool was shut down meanwhile."""
        try:
            worker = start_worker()
        except BaseException:
            self.pass_on(None)
            raise
        with self._lock:
            closed = self.closed
            if not closed:
                self._workers.add(worker)
        if closed:
            kill_and_reap(worker)
            self.pass_on(None)
            return None
        return worker

    def discard(self, worker: Worker) -> None:
        """A worker died or was killed (and reaped): free its slot for the next waiter."""
        with self._lock:
            self._workers.discard(worker)
        self.pass_on(None)

    def drop(self, worker: Worker) -> None:
        """Reap a dead idle worker and free its slot."""
        kill_and_reap(worker)
        self.discard(worker)

    def pass_on(self, worker: Worker | None) -> None:
        """Give a freed worker (or, when ``None``, a freed slot) to the next waiter; else
        park the worker as idle, or drop it and its slot when closed or over the cap."""
        while True:
            with self._lock:
                surplus = self.closed or self._count > self.max_workers
                if surplus or not self._waiters:
                    dropped = self._park_locked(worker, surplus)
                    break
                dispatcher = self._waiters.popleft()
                dispatcher.waiting = False
            if call_soon(dispatcher.loop, dispatcher.granted, worker):
                return
        if dropped is not None:
            kill_and_reap(dropped)

    def _park_locked(self, worker: Worker | None, surplus: bool) -> Worker | None:
        if worker is None or surplus:
            self._count -= 1
            if worker is not None:
                self._workers.discard(worker)
            return worker
        self._idle.append(worker)
        return None


class ProcessExecutor:
    """Runs calls in worker processes of ``pool`` (by default the shared pool)."""

    def __init__(self, pool: ProcessPool | None = None) -> None:
        self._pool = pool

    @property
    def pool(self) -> ProcessPool:
        """The pool calls go to: the one given, else the shared :func:`get_process_pool`."""
        return self._pool if self._pool is not None else get_process_pool()

    async def run(self, call: Call, on_start: OnStart = None) -> Any:
        """Run ``call`` in a worker process; see :meth:`ProcessPool.run`."""
        return await self.pool.run(call, on_start)


_POOL_LOCK = threading.Lock()
_POOL: ProcessPool | None = None


def get_process_pool(max_workers: int | None = None) -> ProcessPool:
    """The process pool shared by every run, created on first use.

    Args:
        max_workers: Cap on worker processes; ``None`` means ``os.cpu_count()`` for a new
            pool and no change for an existing one, which another value resizes.

    Returns:
        The shared :class:`ProcessPool`; it is shut down at interpreter exit.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ProcessPool(max_workers)
            atexit.register(shutdown_process_pool)
        elif max_workers is not None and max_workers != _POOL.max_workers:
            _POOL.resize(max_workers)
        return _POOL


def shutdown_process_pool() -> None:
    """Stop the shared pool's workers and wait for them; idempotent.

    The next :func:`get_process_pool` starts a fresh pool.
    """
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
        if pool is not None:
            atexit.unregister(shutdown_process_pool)
    if pool is not None:
        pool.shutdown()
