"""One event loop's side of the process pool: its calls and the workers it owns.

A :class:`Dispatcher` queues the calls of one loop, places them on workers once per loop
turn, sends each worker its frames in one ``sendmsg`` and reads replies from the loop's own
selector as they stream back (no thread of ours in the parent). It is touched only on its
loop; what it shares with other loops (idle workers, slots, waiting dispatchers) it asks
the pool for (:mod:`._process`).

Invariants:

* A worker serves its calls in order, so the oldest call in flight is the one it runs: a
  worker that dies fails that call (:class:`WorkerCrashedError`, unless it was cancelled)
  and the calls queued behind it, which never started, are queued again.
* A call waits queued on a busy worker only while the pool is at its cap and only within a
  budget of expected work (:data:`BUDGET`); a call that runs past :data:`_STEAL_AFTER`
  takes no company, and the calls behind it are recalled when a worker is free.
* ``on_start`` is called when a call becomes the one its worker runs, never before.
* Every worker it drops is reaped and its socket closed and unregistered from the loop.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import pickle
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from auto_workflow._core._context import RunContext
from auto_workflow._execution import _wire
from auto_workflow._execution._logs import LevelSnapshot, emit_forwarded, level_snapshot
from auto_workflow._execution._protocol import OnStart
from auto_workflow.exceptions import WorkerCrashedError

if TYPE_CHECKING:
    from auto_workflow._execution._process import ProcessPool

__all__ = [
    "BUDGET",
    "Dispatcher",
    "Job",
    "Worker",
    "call_soon",
    "closed_error",
    "describe_exit",
    "kill_and_reap",
    "reap",
    "running_loop",
    "start_worker",
]

logger = logging.getLogger("auto_workflow._execution._process")  # one logger for the pool

BUDGET = 0.002
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
class Job:
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
    worker: Worker | None = None


@dataclass(eq=False, slots=True)
class Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    inflight: deque[Job] = field(default_factory=deque)  # oldest first: the running one
    backlog: float = 0.0  # expected seconds of the calls in flight
    out: deque[bytes | memoryview] = field(default_factory=deque)
    inbox: bytearray = field(default_factory=bytearray)
    path: list[str] | None = None  # the sys.path last sent
    levels: LevelSnapshot | None = None  # the logger levels last sent
    owner: Dispatcher | None = None
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


def parent_path() -> list[str]:
    return [entry for entry in sys.path if isinstance(entry, str)]


def _worker_command(fd: int) -> str:
    # SIGINT is ignored before anything slow happens; the parent's sys.path makes this
    # package importable in the worker (it is sent again whenever it changes).
    return (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"import sys; sys.path[:] = {parent_path()!r}\n"
        "from auto_workflow._execution._worker import worker_main\n"
        f"worker_main({fd})\n"
    )


def start_worker() -> Worker:
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
    return Worker(proc, parent_sock)


def reap(proc: subprocess.Popen[bytes], timeout: float = _REAP_TIMEOUT) -> int | None:
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


def kill_and_reap(worker: Worker) -> int | None:
    worker.sock.close()
    worker.proc.kill()  # a no-op once the process is reaped
    # Blocks the loop only as long as the kernel takes to tear down a SIGKILLed process.
    return reap(worker.proc)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "it did not exit"
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> bool:
    """Schedule ``callback`` on ``loop`` from any thread; False when the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def closed_error() -> RuntimeError:
    return RuntimeError("the process pool was shut down")


def settle(job: Job, result: Any = None, error: BaseException | None = None) -> None:
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


class Dispatcher:
    """The calls of one event loop and the workers it owns; touched only on that loop."""

    def __init__(self, pool: ProcessPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.pending: deque[Job] = deque()
        self.owned: list[Worker] = []
        self.scheduled = False
        self.waiting = False  # queued in the pool for a worker (guarded by the pool's lock)
        self.rebalancing: asyncio.TimerHandle | None = None

    def submit(self, job: Job) -> None:
        self.pending.append(job)
        self._schedule()

    def withdraw(self, job: Job) -> None:
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
        touched: list[Worker] = []
        while self.pending:
            job = self.pending[0]
            if job.cancelled:
                self.pending.popleft()
                settle(job)
                continue
            try:
                worker = self._place(job)
            except (OSError, subprocess.SubprocessError) as exc:  # no process: the call fails
                self.pending.popleft()
                settle(job, error=exc)
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

    def _place(self, job: Job) -> Worker | None:
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
        return best if best.backlog + job.estimate <= BUDGET else None

    def _send(self, worker: Worker, job: Job, touched: list[Worker]) -> None:
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

    def _sync(self, worker: Worker) -> None:
        """Bring the worker's sys.path and logger levels up to date, before its next call."""
        path = parent_path()
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

    def _write(self, worker: Worker) -> None:
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

    def _read(self, worker: Worker, *, gone: bool = False) -> None:
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

    def _frames(self, worker: Worker) -> None:
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

    def _frame(self, worker: Worker, kind: int, call_id: int, body: bytes) -> bool:
        """Act on one frame; False when the worker had to be dropped."""
        if kind == _wire.LOG:
            job = next((j for j in worker.inflight if j.id == call_id), None)
            emit_forwarded(body, None if job is None else job.context)
            return True
        index = _position(worker.inflight, call_id, kind)
        if index is None:
            expected = [job.id for job in itertools.islice(worker.inflight, 3)]
            logger.error(
                "process worker pid %d broke the protocol (frame kind %d for call %d; in "
                "flight: %s...); killing it",
                worker.pid,
                kind,
                call_id,
                expected,
            )
            worker.proc.kill()
            self._lose(worker)
            return False
        job = worker.inflight[index]
        del worker.inflight[index]
        worker.backlog -= job.estimate
        if kind == _wire.REPLY:
            reply = pickle.loads(body)  # builtins only: the result itself stays pickled
            self.pool.learn(job.task_name, reply[-1])
            settle(job, (reply, worker.pid))
        elif job.recalled and not job.cancelled:
            self._requeue(job)  # asked back to run on a free worker
        else:
            settle(job)  # cancelled before it started
        if index == 0 and worker.inflight:
            self._began(worker.inflight[0])
        self._schedule()
        return True

    def _lose(self, worker: Worker) -> None:
        """The worker died or was killed: fail the call it ran (unless that call was
        cancelled), send the calls queued behind it elsewhere, free its slot."""
        if worker.owner is not self:
            return  # lost already
        returncode = _finish_exit(worker.proc)
        head = worker.inflight.popleft() if worker.inflight else None
        rest = [job for job in worker.inflight if not job.cancelled]
        for job in worker.inflight:
            if job.cancelled:
                settle(job)
        worker.inflight.clear()
        self._disown(worker)
        worker.sock.close()
        self.pool.discard(worker)
        if head is not None and not head.cancelled:
            settle(head, error=_crash_error(head.task_name, worker.pid, returncode))
        elif head is not None:
            settle(head)
        for job in reversed(rest):
            self._requeue(job)
        self._schedule()

    def _requeue(self, job: Job) -> None:
        """Put a call that never started back at the front of the queue."""
        job.state = _JobState.PENDING
        job.worker = None
        job.recalled = False
        self.pending.appendleft(job)

    def _began(self, job: Job) -> None:
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

    def _recall(self, worker: Worker) -> None:
        for job in itertools.islice(worker.inflight, 1, None):
            if not job.recalled and not job.cancelled:
                job.recalled = True
                worker.out.append(_wire.header(_wire.RECALL, job.id, 0))
        self._write(worker)

    # -- owning workers -----------------------------------------------------------------------

    def adopt(self, worker: Worker) -> None:
        worker.owner = self
        self.owned.append(worker)
        self.loop.add_reader(worker.sock.fileno(), self._read, worker)

    def _disown(self, worker: Worker) -> None:
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

    def granted(self, worker: Worker | None) -> None:
        """On this loop: the pool handed over a worker, or (``None``) a slot to start one."""
        self._schedule()
        if worker is not None and worker.proc.poll() is not None:
            how = describe_exit(worker.proc.returncode)
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
                settle(self.pending.popleft(), error=exc)
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
            settle(job, error=None if job.cancelled else closed_error())


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _position(inflight: deque[Job], call_id: int, kind: int) -> int | None:
    """Where the call a reply or SKIPPED answers is in flight: a reply must be for the
    oldest (the one running); ``None`` when the frame fits no call."""
    if kind == _wire.REPLY:
        return 0 if inflight and inflight[0].id == call_id else None
    if kind != _wire.SKIPPED:
        return None
    return next((i for i, job in enumerate(inflight) if job.id == call_id), None)


def _backlog(worker: Worker) -> float:
    return worker.backlog


def _send_some(worker: Worker) -> None:
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
    return reap(proc)


def _crash_error(task_name: str, pid: int, returncode: int | None) -> WorkerCrashedError:
    message = (
        f"task {task_name!r}: its worker process (pid {pid}) died while running it "
        f"({describe_exit(returncode)})"
    )
    logger.warning("%s", message)
    return WorkerCrashedError(message)
