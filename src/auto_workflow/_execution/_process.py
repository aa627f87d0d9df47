"""How one attempt runs in a worker process of a shared, healing pool.

* :class:`ProcessExecutor` sends calls, pickled with ``cloudpickle``, to a
  :class:`ProcessPool` of worker processes (:mod:`._worker`); one pool is shared by every
  run (:func:`get_process_pool`, :func:`shutdown_process_pool`).

Each event loop that uses the pool has a dispatcher. It queues the loop's calls, sends them
in batches (all the frames for one worker in one ``sendmsg``, once per loop turn) and reads
replies as they stream back, from the loop's own selector: no thread of ours in the
parent. A worker is owned by one dispatcher while it has calls in flight and goes back to
the pool when it drains.

Invariants:

* A worker runs one call at a time, in the order they were sent, and the parent knows which
  one runs: the oldest one not yet answered. Calls wait queued on a busy worker only while
  the pool is at its cap and only as much as fits a small budget of expected work
  (:data:`_BUDGET`, learned per task name from how long its calls took); a task not yet
  measured, or slow, waits for a worker of its own. When an estimate was wrong (a call runs
  on past :data:`_STEAL_AFTER` with calls queued behind it) and a worker is free, the queued
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
scenarios (``bench/process_pools.py``), but on 2,000 tiny calls this pool alone takes about
two thirds of the time of pebble's per-call futures, it fresh-starts its workers instead of
forking a parent that runs threads, ships closures with cloudpickle, forwards log records
and adds no dependency. Figures in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import inspect
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._core._context import RunContext
from auto_workflow._execution import _wire
from auto_workflow._execution._logs import LevelSnapshot, emit_forwarded, level_snapshot
from auto_workflow._execution._protocol import (
    Call,
    OnStart,
    check_max_workers,
    safe_str,
    type_name,
)
from auto_workflow.exceptions import RemoteTaskError, SerializationError, WorkerCrashedError

__all__ = ["ProcessExecutor", "ProcessPool", "get_process_pool", "shutdown_process_pool"]

logger = logging.getLogger(__name__)

_BUDGET = 0.002
"""Seconds of expected work a busy worker may have queued before it takes another call;
also the estimate of a task never measured, so such a call is only queued on an idle worker."""

_MAX_DEPTH = 64
"""The most calls in flight on one worker."""

_STEAL_AFTER = 0.01
"""A call that runs this long with calls queued behind it while a worker is free has them
recalled, to run on the free one: estimates can be wrong."""

_EXIT_WAIT = 0.1
"""A worker whose socket closed is exiting; after this long it is killed anyway."""

_REAP_TIMEOUT = 5.0
"""How long to wait for a stopped or killed worker to be reaped before giving up on it."""

_RECV_SIZE = 1 << 16
_IOV_MAX = 512


class _JobState(enum.Enum):
    PENDING = enum.auto()  # queued in its dispatcher
    SENT = enum.auto()  # in flight on a worker
    DONE = enum.auto()  # answered, failed or dropped


@dataclass(eq=False, slots=True)
class _Job:
    """One call on its way through the pool."""

    id: int
    task_name: str
    context: RunContext
    data: bytes
    future: asyncio.Future[tuple[tuple[Any, ...], int]]
    on_start: OnStart
    state: _JobState = _JobState.PENDING
    cancelled: bool = False
    recalled: bool = False  # asked back from its worker, to run on a free one
    began: float = 0.0  # loop time it became the call its worker runs
    estimate: float = 0.0
    worker: _Worker | None = None


@dataclass(eq=False, slots=True)
class _Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    inflight: deque[_Job] = field(default_factory=deque)  # oldest first: the running one
    backlog: float = 0.0  # expected seconds of the calls in flight
    out: deque[bytes | memoryview] = field(default_factory=deque)
    inbox: bytearray = field(default_factory=bytearray)
    path: list[str] | None = None  # the sys.path last sent
    levels: LevelSnapshot | None = None  # the logger levels last sent
    owner: _Dispatcher | None = None
    writing: bool = False  # a writer callback is registered
    dirty: bool = False  # frames appended during this flush

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def task_name(self) -> str | None:
        """The task of the call it runs now."""
        return self.inflight[0].task_name if self.inflight else None


# -- starting and stopping worker processes ---------------------------------------------------


def _parent_path() -> list[str]:
    return [entry for entry in sys.path if isinstance(entry, str)]


def _worker_command(fd: int) -> str:
    # SIGINT is ignored before anything slow happens; the parent's sys.path makes this
    # package importable in the worker (it is sent again whenever it changes).
    return (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"import sys; sys.path[:] = {_parent_path()!r}\n"
        "from auto_workflow._execution._worker import worker_main\n"
        f"worker_main({fd})\n"
    )


def _start_worker() -> _Worker:
    """Start one worker process (a fresh interpreter: no fork, no re-run of ``__main__``)."""
    parent_sock, child_sock = socket.socketpair()
    with child_sock:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _worker_command(child_sock.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(child_sock.fileno(),),
            )
        except BaseException:
            parent_sock.close()
            raise
    parent_sock.setblocking(False)
    logger.debug("started process worker pid %d", proc.pid)
    return _Worker(proc, parent_sock)


def _reap(proc: subprocess.Popen[bytes], timeout: float = _REAP_TIMEOUT) -> int | None:
    """Wait for ``proc`` to exit, killing it if it takes longer than ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        return proc.wait(_REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.warning("process worker pid %d did not exit after SIGKILL", proc.pid)
        return None


def _kill_and_reap(worker: _Worker) -> int | None:
    worker.sock.close()
    worker.proc.kill()  # a no-op once the process is reaped
    # Blocks the loop only as long as the kernel takes to tear down a SIGKILLed process.
    return _reap(worker.proc)


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "it did not exit"
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> bool:
    """Schedule ``callback`` on ``loop`` from any thread; False when the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


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


def _closed_error() -> RuntimeError:
    return RuntimeError("the process pool was shut down")


def _settle(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    """Give ``job`` its outcome, unless its caller gave up on it already."""
    job.state = _JobState.DONE
    job.worker = None
    if job.future.done():
        return
    if error is None:
        job.future.set_result(result)
    else:
        job.future.set_exception(error)


# -- one loop's side: the dispatcher -----------------------------------------------------------


class _Dispatcher:
    """The calls of one event loop and the workers it owns; touched only on that loop."""

    def __init__(self, pool: ProcessPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.pending: deque[_Job] = deque()
        self.owned: list[_Worker] = []
        self.scheduled = False
        self.waiting = False  # queued in the pool for a worker (guarded by the pool's lock)
        self.rebalancing: asyncio.TimerHandle | None = None

    def submit(self, job: _Job) -> None:
        self.pending.append(job)
        self._schedule()

    def withdraw(self, job: _Job) -> None:
        """The caller of ``job`` was cancelled: never start it, or stop it if it runs."""
        job.cancelled = True
        worker = job.worker
        if job.state is _JobState.PENDING:
            self._schedule()  # the flush drops it
        if job.state is not _JobState.SENT or worker is None:
            return
        self._read(worker)  # its answer may be here already
        if job.state is not _JobState.SENT:
            return
        if worker.inflight[0] is job:
            name = job.task_name
            logger.debug("killing process worker pid %d: %r was cancelled", worker.pid, name)
            worker.proc.kill()
            self._lose(worker)
        else:
            worker.out.append(_wire.header(_wire.CANCEL, job.id, 0))
            self._write(worker)

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    # -- sending ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Place the pending calls on workers and send each worker its frames at once."""
        self.scheduled = False
        if self.pool.closed:
            self.close()
            return
        touched: list[_Worker] = []
        while self.pending:
            job = self.pending[0]
            if job.cancelled:
                self.pending.popleft()
                _settle(job)
                continue
            try:
                worker = self._place(job)
            except (OSError, subprocess.SubprocessError) as exc:  # no process: the call fails
                self.pending.popleft()
                _settle(job, error=exc)
                continue
            if worker is None:
                break
            self.pending.popleft()
            self._send(worker, job, touched)
        for worker in touched:
            worker.dirty = False
            self._write(worker)
        if self.pending:
            self.pool.take_or_wait(self)
        else:
            self.pool.stop_waiting(self)
        if not self.pending or self.pool.others_wait(self):
            self._release_drained()
        if not self.pending:
            self._rebalance()

    def _place(self, job: _Job) -> _Worker | None:
        """An idle worker of ours, a worker of the pool, or (within the budget) a busy one.
        While another loop waits for a worker, ours only drain, so that it gets one."""
        if self.pool.others_wait(self):
            return None
        for worker in self.owned:
            if not worker.inflight:
                return worker
        taken = self.pool.take()
        if taken is not None:
            self.adopt(taken)
            return taken
        if not self.owned:
            return None
        job.estimate = self.pool.estimate(job.task_name)
        fresh = self.loop.time() - _STEAL_AFTER  # a call running since before is overdue
        fit = [w for w in self.owned if w.inflight[0].began > fresh]
        best = min(fit, key=_backlog, default=None)
        if best is None or len(best.inflight) >= _MAX_DEPTH:
            return None
        return best if best.backlog + job.estimate <= _BUDGET else None

    def _send(self, worker: _Worker, job: _Job, touched: list[_Worker]) -> None:
        if not worker.dirty:
            worker.dirty = True
            touched.append(worker)
            self._sync(worker)
        if not job.estimate:
            job.estimate = self.pool.estimate(job.task_name)
        job.state = _JobState.SENT
        job.worker = worker
        worker.inflight.append(job)
        worker.backlog += job.estimate
        worker.out.append(_wire.header(_wire.CALL, job.id, len(job.data)))
        worker.out.append(job.data)
        if len(worker.inflight) == 1:
            self._began(job)

    def _sync(self, worker: _Worker) -> None:
        """Bring the worker's sys.path and logger levels up to date, before its next call."""
        path = _parent_path()
        if worker.path != path:
            worker.path = path
            body = pickle.dumps(path)
            worker.out.append(_wire.header(_wire.PATH, 0, len(body)))
            worker.out.append(body)
        levels = level_snapshot()
        if worker.levels != levels:
            worker.levels = levels
            body = pickle.dumps(levels)
            worker.out.append(_wire.header(_wire.LEVELS, 0, len(body)))
            worker.out.append(body)

    def _write(self, worker: _Worker) -> None:
        """Send what the socket takes now; the rest when it is writable again."""
        try:
            _send_some(worker)
        except OSError:  # EPIPE or ECONNRESET: the worker died
            self._read(worker, gone=True)
            return
        if worker.out and not worker.writing:
            self.loop.add_writer(worker.sock.fileno(), self._write, worker)
            worker.writing = True
        elif not worker.out and worker.writing:
            self.loop.remove_writer(worker.sock.fileno())
            worker.writing = False

    # -- receiving ----------------------------------------------------------------------------

    def _read(self, worker: _Worker, *, gone: bool = False) -> None:
        """Take what the worker sent and act on each whole frame; EOF means it died."""
        if worker.owner is not self:
            return  # lost already (a cancellation handled it in this same turn)
        try:
            while not gone:
                chunk = worker.sock.recv(_RECV_SIZE)
                worker.inbox += chunk
                gone = not chunk
                if len(chunk) < _RECV_SIZE:
                    break
        except BlockingIOError:
            pass  # drained
        except OSError:  # ECONNRESET: the worker died
            gone = True
        self._frames(worker)
        if gone:
            self._lose(worker)

    def _frames(self, worker: _Worker) -> None:
        buf = worker.inbox
        size_of_header = _wire.HEADER.size
        offset = 0
        while len(buf) - offset >= size_of_header:
            kind, call_id, size = _wire.HEADER.unpack_from(buf, offset)
            end = offset + size_of_header + size
            if len(buf) < end:
                break
            body = memoryview(buf)[offset + size_of_header : end].tobytes()
            offset = end
            if not self._frame(worker, kind, call_id, body):
                return
        if offset:
            del buf[:offset]

    def _frame(self, worker: _Worker, kind: int, call_id: int, body: bytes) -> bool:
        """Act on one frame; False when the worker had to be dropped."""
        if kind == _wire.LOG:
            job = next((j for j in worker.inflight if j.id == call_id), None)
            emit_forwarded(body, None if job is None else job.context)
            return True
        index = _position(worker.inflight, call_id, kind)
        if index is None:
            logger.error("process worker pid %d broke the protocol; killing it", worker.pid)
            worker.proc.kill()
            self._lose(worker)
            return False
        job = worker.inflight[index]
        del worker.inflight[index]
        worker.backlog -= job.estimate
        if kind == _wire.REPLY:
            reply = pickle.loads(body)  # builtins only: the result itself stays pickled
            self.pool.learn(job.task_name, reply[-1])
            _settle(job, (reply, worker.pid))
        elif job.recalled and not job.cancelled:
            self._requeue(job)  # asked back to run on a free worker
        else:
            _settle(job)  # cancelled before it started
        if index == 0 and worker.inflight:
            self._began(worker.inflight[0])
        self._schedule()
        return True

    def _lose(self, worker: _Worker) -> None:
        """The worker died or was killed: fail the call it ran (unless that call was
        cancelled), send the calls queued behind it elsewhere, free its slot."""
        if worker.owner is not self:
            return  # lost already
        returncode = _finish_exit(worker.proc)
        head = worker.inflight.popleft() if worker.inflight else None
        rest = [job for job in worker.inflight if not job.cancelled]
        for job in worker.inflight:
            if job.cancelled:
                _settle(job)
        worker.inflight.clear()
        self._disown(worker)
        worker.sock.close()
        self.pool.discard(worker)
        if head is not None and not head.cancelled:
            _settle(head, error=_crash_error(head.task_name, worker.pid, returncode))
        elif head is not None:
            _settle(head)
        for job in reversed(rest):
            self._requeue(job)
        self._schedule()

    def _requeue(self, job: _Job) -> None:
        """Put a call that never started back at the front of the queue."""
        job.state = _JobState.PENDING
        job.worker = None
        job.recalled = False
        self.pending.appendleft(job)

    def _began(self, job: _Job) -> None:
        """``job`` is now the call its worker runs (or runs next)."""
        job.began = self.loop.time()
        if job.on_start is not None:
            job.on_start()

    def _rebalance_due(self) -> None:
        self.rebalancing = None
        self._rebalance()

    def _rebalance(self) -> None:
        """With nothing pending and a worker free, recall the calls queued behind one that
        has run for :data:`_STEAL_AFTER`; check again when the next such call is due."""
        if self.pending or not (self.pool.has_free() or any(not w.inflight for w in self.owned)):
            return
        now = self.loop.time()
        due = [w.inflight[0].began + _STEAL_AFTER for w in self.owned if len(w.inflight) > 1]
        for worker in self.owned:
            if len(worker.inflight) > 1 and worker.inflight[0].began + _STEAL_AFTER <= now:
                self._recall(worker)
        later = [when for when in due if when > now]
        if later and self.rebalancing is None:
            self.rebalancing = self.loop.call_at(min(later), self._rebalance_due)

    def _recall(self, worker: _Worker) -> None:
        for job in itertools.islice(worker.inflight, 1, None):
            if not job.recalled and not job.cancelled:
                job.recalled = True
                worker.out.append(_wire.header(_wire.RECALL, job.id, 0))
        self._write(worker)

    # -- owning workers -----------------------------------------------------------------------

    def adopt(self, worker: _Worker) -> None:
        worker.owner = self
        self.owned.append(worker)
        self.loop.add_reader(worker.sock.fileno(), self._read, worker)

    def _disown(self, worker: _Worker) -> None:
        worker.owner = None
        self.owned.remove(worker)
        fd = worker.sock.fileno()
        if fd != -1:
            self.loop.remove_reader(fd)
            if worker.writing:
                self.loop.remove_writer(fd)
        worker.writing = False

    def _release_drained(self) -> None:
        """Give the workers with nothing in flight back to the pool."""
        for worker in [w for w in self.owned if not w.inflight and not w.out]:
            self._disown(worker)
            self.pool.pass_on(worker)
        if not self.owned:
            self.pool.forget(self)

    def granted(self, worker: _Worker | None) -> None:
        """On this loop: the pool handed over a worker, or (``None``) a slot to start one."""
        self._schedule()
        if worker is not None and worker.proc.poll() is not None:
            how = _describe_exit(worker.proc.returncode)
            logger.warning("process worker pid %d died while idle (%s)", worker.pid, how)
            self.pool.drop(worker)
            return
        if self.pool.closed or not any(not job.cancelled for job in self.pending):
            self.pool.pass_on(worker)
            return
        if worker is None:
            try:
                worker = self.pool.start_in_slot()
            except (OSError, subprocess.SubprocessError) as exc:  # no process: the call fails
                _settle(self.pending.popleft(), error=exc)
                return
        if worker is not None:
            self.adopt(worker)

    def close(self) -> None:
        """The pool was shut down: kill our workers, fail every call not answered yet."""
        for worker in list(self.owned):
            worker.proc.kill()
            self._lose(worker)
        while self.pending:
            job = self.pending.popleft()
            _settle(job, error=None if job.cancelled else _closed_error())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _position(inflight: deque[_Job], call_id: int, kind: int) -> int | None:
    """Where the call a reply or SKIPPED answers is in flight: a reply must be for the
    oldest (the one running); ``None`` when the frame fits no call."""
    if kind == _wire.REPLY:
        return 0 if inflight and inflight[0].id == call_id else None
    if kind != _wire.SKIPPED:
        return None
    return next((i for i, job in enumerate(inflight) if job.id == call_id), None)


def _backlog(worker: _Worker) -> float:
    return worker.backlog


def _send_some(worker: _Worker) -> None:
    """Send queued frames until the socket would block (raises OSError if it broke)."""
    out = worker.out
    while out:
        buffers = list(itertools.islice(out, _IOV_MAX))
        try:
            sent = worker.sock.sendmsg(buffers)
        except BlockingIOError:
            return
        while sent:
            first = out[0]
            if sent >= len(first):
                sent -= len(first)
                out.popleft()
            else:
                out[0] = memoryview(first)[sent:]
                return


def _finish_exit(proc: subprocess.Popen[bytes]) -> int | None:
    """The exit status of a worker whose socket closed (killed if it lingers)."""
    try:
        return proc.wait(_EXIT_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
    return _reap(proc)


def _crash_error(task_name: str, pid: int, returncode: int | None) -> WorkerCrashedError:
    message = (
        f"task {task_name!r}: its worker process (pid {pid}) died while running it "
        f"({_describe_exit(returncode)})"
    )
    logger.warning("%s", message)
    return WorkerCrashedError(message)


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
        self._workers: set[_Worker] = set()  # every live worker, idle or owned
        self._idle: list[_Worker] = []
        self._count = 0  # worker slots taken: live workers + being started
        self._waiters: deque[_Dispatcher] = deque()
        self._dispatchers: dict[asyncio.AbstractEventLoop, _Dispatcher] = {}
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
        job = _Job(next(self._ids), call.task_name, call.context, data, future, on_start)
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
            _kill_and_reap(worker)

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
        here = _running_loop()
        for dispatcher in dict.fromkeys(dispatchers):
            if dispatcher.loop is here:
                dispatcher.close()
            else:
                _call_soon(dispatcher.loop, dispatcher.close)
        for worker in workers:
            if worker not in idle and worker.proc.poll() is None:
                name = worker.task_name
                logger.info("killing process worker pid %d running %r", worker.pid, name)
                worker.proc.kill()  # its loop sees EOF and closes the socket
        for worker in idle:
            worker.sock.close()  # EOF: the worker exits by itself
        for worker in workers:
            _reap(worker.proc)

    # -- for dispatchers (on their loop) ------------------------------------------------------

    def _dispatcher(self, loop: asyncio.AbstractEventLoop) -> _Dispatcher:
        dispatcher = self._dispatchers.get(loop)
        if dispatcher is None or self.closed:
            with self._lock:
                if self.closed:
                    raise _closed_error()
                dispatcher = self._dispatchers.setdefault(loop, _Dispatcher(self, loop))
        return dispatcher

    def forget(self, dispatcher: _Dispatcher) -> None:
        """``dispatcher`` owns no worker now; drop it unless it still has work queued."""
        with self._lock:
            if dispatcher.pending or dispatcher.waiting or dispatcher.owned:
                return
            if self._dispatchers.get(dispatcher.loop) is dispatcher:
                del self._dispatchers[dispatcher.loop]

    def estimate(self, task_name: str) -> float:
        """Expected seconds of a call of ``task_name``; the whole budget if never measured."""
        return self._estimates.get(task_name, _BUDGET)

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

    def others_wait(self, dispatcher: _Dispatcher) -> bool:
        """Whether another loop waits for a worker (then ours should drain and pass on)."""
        waiting = len(self._waiters)
        return waiting > 1 or (waiting == 1 and not dispatcher.waiting)

    def take(self) -> _Worker | None:
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
            how = _describe_exit(worker.proc.returncode)
            logger.warning("process worker pid %d died while idle (%s)", worker.pid, how)
            self.drop(worker)
        return self.start_in_slot()

    def take_or_wait(self, dispatcher: _Dispatcher) -> None:
        """Queue ``dispatcher`` for the next worker or slot freed, unless queued already;
        one freed since its last look is handed over at once (on its next loop turn)."""
        with self._lock:
            if self.closed or dispatcher.waiting:
                return
            if self._idle:
                worker: _Worker | None = self._idle.pop()
            elif self._count < self.max_workers:
                self._count += 1
                worker = None
            else:
                dispatcher.waiting = True
                self._waiters.append(dispatcher)
                return
        dispatcher.loop.call_soon(dispatcher.granted, worker)

    def stop_waiting(self, dispatcher: _Dispatcher) -> None:
        """``dispatcher`` needs no worker any more."""
        if not dispatcher.waiting:
            return
        with self._lock:
            if dispatcher.waiting:
                dispatcher.waiting = False
                self._waiters.remove(dispatcher)

    def start_in_slot(self) -> _Worker | None:
        """Start a worker in the slot the caller holds (freed again on failure); ``None``
        when the pool was shut down meanwhile."""
        try:
            worker = _start_worker()
        except BaseException:
            self.pass_on(None)
            raise
        with self._lock:
            closed = self.closed
            if not closed:
                self._workers.add(worker)
        if closed:
            _kill_and_reap(worker)
            self.pass_on(None)
            return None
        return worker

    def discard(self, worker: _Worker) -> None:
        """A worker died or was killed (and reaped): free its slot for the next waiter."""
        with self._lock:
            self._workers.discard(worker)
        self.pass_on(None)

    def drop(self, worker: _Worker) -> None:
        """Reap a dead idle worker and free its slot."""
        _kill_and_reap(worker)
        self.discard(worker)

    def pass_on(self, worker: _Worker | None) -> None:
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
            if _call_soon(dispatcher.loop, dispatcher.granted, worker):
                return
        if dropped is not None:
            _kill_and_reap(dropped)

    def _park_locked(self, worker: _Worker | None, surplus: bool) -> _Worker | None:
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
