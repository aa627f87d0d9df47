"""How one attempt runs in a worker process of a shared, healing pool.

* :class:`ProcessExecutor` sends calls, pickled with ``cloudpickle``, to a
  :class:`ProcessPool` of worker processes; one pool is shared by every run
  (:func:`get_process_pool`, :func:`shutdown_process_pool`).

Invariants:

* A worker process runs one call at a time and the parent knows which. A worker that dies
  fails only that call (:class:`WorkerCrashedError`) and is replaced on demand; a cancelled
  call's worker is killed. Every worker the pool starts is reaped (no zombies) and its
  socket closed (no leaked fds).
* Pool bookkeeping (idle workers, worker count, waiting callers) sits behind one
  ``threading.Lock``, so one pool serves any number of event loops in any threads; a caller
  waiting on another loop is handed its worker with ``call_soon_threadsafe``.
* The parent never blocks its loop while a call runs: replies arrive through the loop's
  ``sock_*`` methods, which register the socket with the loop only while they wait.
* Nothing happens at import: threads, processes and the ``atexit`` hook start on first use.

Wire protocol (parent <-> worker, over a ``socketpair``): a frame is an 8-byte big-endian
length and that many bytes. A request is two frames, ``pickle.dumps(sys.path)`` (the worker
adopts it, so functions pickled by reference import there) and ``cloudpickle.dumps(call)``;
the worker answers with one frame, ``pickle.dumps((kind, payload, type_name, message,
traceback))``, where ``kind`` is ``"ok"``, ``"raised"``, ``"result_unpicklable"`` or
``"load_failed"``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import inspect
import logging
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._execution._protocol import (
    Call,
    OnStart,
    call_to_completion,
    check_max_workers,
    safe_str,
    type_name,
)
from auto_workflow.exceptions import RemoteTaskError, SerializationError, WorkerCrashedError

__all__ = ["ProcessExecutor", "ProcessPool", "get_process_pool", "shutdown_process_pool"]

logger = logging.getLogger(__name__)


_EXIT_GRACE = 5.0
"""A worker whose socket closed is exiting; after this long it is killed anyway."""

_REAP_TIMEOUT = 5.0
"""How long to wait for a stopped or killed worker to be reaped before giving up on it."""

_HEADER = struct.Struct("!Q")


# -- in a process: the worker side ------------------------------------------------------------


def _recv_exactly_blocking(sock: socket.socket, size: int) -> bytearray | None:
    """Read ``size`` bytes; ``None`` when the peer closed the socket first."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return buf


def _recv_frame_blocking(sock: socket.socket) -> bytearray | None:
    header = _recv_exactly_blocking(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    return _recv_exactly_blocking(sock, size)


def _send_frame_blocking(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


def _pack_result(result: Any) -> bytes:
    try:
        payload = cloudpickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - the parent raises SerializationError for it
        detail = f"{type_name(exc)}: {safe_str(exc)}"
        return pickle.dumps(("result_unpicklable", None, type_name(result), detail, ""))
    return pickle.dumps(("ok", payload, type_name(result), "", ""))


def _pack_exception(kind: str, exc: BaseException) -> bytes:
    remote_tb = "".join(traceback.format_exception(exc))
    payload: bytes | None
    try:
        payload = cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - the parent substitutes a RemoteTaskError
        payload = None
    return pickle.dumps((kind, payload, type_name(exc), safe_str(exc), remote_tb))


def _follow_parent_path(path_frame: bytearray) -> None:
    """Use the parent's current sys.path, so functions pickled by reference import here."""
    path = pickle.loads(path_frame)
    if sys.path != path:
        sys.path[:] = path
        importlib.invalidate_caches()


def _serve(path_frame: bytearray, call_frame: bytearray) -> bytes:
    """Run one pickled call in this worker; the reply never fails to pickle."""
    try:
        _follow_parent_path(path_frame)
        call = cloudpickle.loads(call_frame)
    except Exception as exc:  # noqa: BLE001 - unpickling runs arbitrary code; report anything
        return _pack_exception("load_failed", exc)
    try:
        result = call_to_completion(call)
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
        return _pack_exception("raised", exc)
    return _pack_result(result)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to do
                stream.flush()


_Request = tuple[bytearray, bytearray]  # (sys.path frame, call frame)


def _recv_request(sock: socket.socket) -> _Request | None:
    try:
        path_frame = _recv_frame_blocking(sock)
        call_frame = None if path_frame is None else _recv_frame_blocking(sock)
    except OSError:
        return None
    if path_frame is None or call_frame is None:
        return None
    return path_frame, call_frame


def _read_requests(sock: socket.socket, requests: queue.SimpleQueue[_Request]) -> None:
    """Worker reader thread: queue each request; exit the process when the parent is gone."""
    while (request := _recv_request(sock)) is not None:
        requests.put(request)
    # The parent closed its end (shutdown) or died. Stop now, even in the middle of a call:
    # nobody is left to receive its result, and runaway work must not linger.
    os._exit(0)


def _worker_main(fd: int) -> None:
    """Entry point of a worker process started by :class:`ProcessPool` (not public API).

    Serves one call at a time over the socket ``fd``. A reader thread takes requests off the
    socket so that EOF (the parent shut the pool down or died) ends the process at once.
    """
    # Ctrl-C reaches the whole process group; the parent decides what to cancel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_inheritable(fd, False)  # processes the task starts must not hold the socket open
    sock = socket.socket(fileno=fd)
    requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_requests, args=(sock, requests), name="auto_workflow-reader", daemon=True
    )
    reader.start()
    while True:
        reply = _serve(*requests.get())
        _flush_std_streams()  # the process may be killed later; do not lose the call's output
        try:
            _send_frame_blocking(sock, reply)
        except OSError:  # the parent is gone
            os._exit(0)


# -- in a process: the parent side ------------------------------------------------------------


class _WorkerGone(Exception):
    """The worker's socket reached EOF or broke: the process died (internal)."""


@dataclass(eq=False, slots=True)
class _Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    task_name: str | None = None  # the call it runs now

    @property
    def pid(self) -> int:
        return self.proc.pid


def _parent_path() -> list[str]:
    return [entry for entry in sys.path if isinstance(entry, str)]


def _worker_command(fd: int) -> str:
    # SIGINT is ignored before anything slow happens; the parent's sys.path makes this
    # package importable in the worker (each request then brings the current sys.path).
    return (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"import sys; sys.path[:] = {_parent_path()!r}\n"
        "from auto_workflow._execution._process import _worker_main\n"
        f"_worker_main({fd})\n"
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


def _reap(proc: subprocess.Popen[bytes], timeout: float = _REAP_TIMEOUT) -> None:
    """Wait for ``proc`` to exit, killing it if it takes longer than ``timeout``."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(_REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("process worker pid %d did not exit after SIGKILL", proc.pid)


def _kill_and_reap(worker: _Worker) -> None:
    worker.sock.close()
    worker.proc.kill()  # a no-op once the process is reaped
    # Blocks the loop only as long as the kernel takes to tear down a SIGKILLed process.
    _reap(worker.proc)


def _forget_socket(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Unregister ``sock`` from ``loop`` before it is closed (its fd number may be reused)."""
    fd = sock.fileno()
    if fd != -1:
        loop.remove_reader(fd)
        loop.remove_writer(fd)


async def _recv_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = await loop.sock_recv_into(sock, view[got:])
        if n == 0:
            raise _WorkerGone
        got += n
    return buf


async def _request(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, frames: tuple[bytes, ...]
) -> bytearray:
    """Send a request's frames and wait for the reply frame without blocking the loop."""
    try:
        for frame in frames:
            await loop.sock_sendall(sock, _HEADER.pack(len(frame)))
            await loop.sock_sendall(sock, frame)
        header = await _recv_exactly(loop, sock, _HEADER.size)
        (size,) = _HEADER.unpack(header)
        return await _recv_exactly(loop, sock, size)
    except OSError as exc:  # EPIPE or ECONNRESET: the worker died
        raise _WorkerGone from exc


async def _wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait, without blocking the loop, for a worker whose socket closed to finish exiting."""
    deadline = time.monotonic() + _EXIT_GRACE
    while (code := proc.poll()) is None:
        if time.monotonic() > deadline:
            proc.kill()
            return proc.wait()
        await asyncio.sleep(0.002)
    return code


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


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
        data: bytes = cloudpickle.dumps(call)
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


def _unpack_reply(reply: bytearray, task_name: str, pid: int) -> Any:
    """Return the call's result, or raise what the worker reported."""
    kind, payload, type_name, message, remote_tb = pickle.loads(reply)
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


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> bool:
    """Schedule ``callback`` on ``loop`` from any thread; False when the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _fail_closed(waiter: asyncio.Future[_Worker | None]) -> None:
    if not waiter.done():
        waiter.set_exception(RuntimeError("the process pool was shut down"))


_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[_Worker | None]]


class ProcessPool:
    """Worker processes that run pickled calls, one call per worker at a time.

    Workers start on demand (up to ``max_workers``), are reused after a call and replaced
    when one dies. One pool can serve several event loops in several threads.

    Attributes:
        max_workers: The most worker processes alive at once.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = check_max_workers(
            max_workers if max_workers is not None else (os.cpu_count() or 1)
        )
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()  # handed out: running a call or being handed over
        self._count = 0  # worker slots taken: idle + busy + being started
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    async def run(self, call: Call, on_start: OnStart = None) -> Any:
        """Run ``call`` in a worker process and return its result.

        Raises:
            SerializationError: an argument, the result or the call cannot be pickled.
            WorkerCrashedError: the worker died while running the call.
            RuntimeError: the pool was shut down.
            asyncio.CancelledError: when cancelled; the worker is killed first.
            BaseException: what the function raised, as the same type when it pickles (with
                the remote traceback in a note), else as :class:`RemoteTaskError`.
        """
        data = _dump_call(call)
        worker = await self._acquire()
        if on_start is not None:
            on_start()
        worker.task_name = call.task_name
        reply = await self._exchange(worker, data, call.task_name)
        return _unpack_reply(reply, call.task_name, worker.pid)

    def worker_pids(self) -> list[int]:
        """The process ids of the workers alive now (idle or busy)."""
        with self._lock:
            return sorted(w.pid for w in [*self._idle, *self._busy])

    def resize(self, max_workers: int) -> None:
        """Change :attr:`max_workers`: waiting calls may start workers at once when it grows;
        idle workers above the new cap stop now, busy ones when their call ends."""
        check_max_workers(max_workers)
        with self._lock:
            self.max_workers = max_workers
            grants = min(max(0, max_workers - self._count), len(self._waiters))
            self._count += grants
            surplus = self._idle[: max(0, self._count - max_workers)]
            del self._idle[: len(surplus)]
            self._count -= len(surplus)
        for _ in range(grants):
            self._pass_on(None)
        for worker in surplus:
            _kill_and_reap(worker)

    def shutdown(self) -> None:
        """Stop every worker and wait for it to exit; idempotent.

        Idle workers exit when their socket closes; busy ones are killed, so their calls
        fail with :class:`WorkerCrashedError`; waiting calls fail with ``RuntimeError``.
        """
        with self._lock:
            self._closed = True
            idle, busy, waiters = self._idle[:], list(self._busy), list(self._waiters)
            self._idle.clear()
            self._busy.clear()
            self._waiters.clear()
        for loop, waiter in waiters:
            _call_soon(loop, _fail_closed, waiter)
        for worker in busy:
            logger.info("killing process worker pid %d running %r", worker.pid, worker.task_name)
            worker.proc.kill()  # its caller sees EOF and closes the socket
        for worker in idle:
            worker.sock.close()  # EOF: the worker exits by itself
        deadline = time.monotonic() + _REAP_TIMEOUT
        for worker in idle + busy:
            _reap(worker.proc, max(0.0, deadline - time.monotonic()))

    async def _acquire(self) -> _Worker:
        """An idle worker, a new one below the cap, or the next one freed."""
        while True:
            worker = await self._idle_or_new()
            if worker.proc.poll() is None:
                return worker
            how = _describe_exit(worker.proc.returncode)
            logger.warning("process worker pid %d died while idle (%s)", worker.pid, how)
            self._retire(worker, None)

    async def _idle_or_new(self) -> _Worker:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Worker | None] | None = None
        with self._lock:
            if self._closed:
                raise RuntimeError("the process pool was shut down")
            if self._idle:
                worker = self._idle.pop()
                self._busy.add(worker)
                return worker
            if self._count < self.max_workers:
                self._count += 1
            else:
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
        granted = None if waiter is None else await self._wait_turn(loop, waiter)
        return granted if granted is not None else self._start_in_slot()

    async def _wait_turn(
        self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[_Worker | None]
    ) -> _Worker | None:
        """Wait to be handed a worker, or (``None``) a free slot to start one in."""
        try:
            return await waiter
        except asyncio.CancelledError:
            self._leave_queue(loop, waiter)
            raise

    def _leave_queue(
        self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[_Worker | None]
    ) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiters.remove((loop, waiter))
        if not waiter.done():
            waiter.cancel()  # a grant still in flight sees this and passes itself on
        elif not waiter.cancelled() and waiter.exception() is None:
            self._pass_on(waiter.result())  # granted just as we were cancelled

    def _start_in_slot(self) -> _Worker:
        """Start a worker in the slot this caller holds (freed again on failure)."""
        try:
            worker = _start_worker()
        except BaseException:
            self._pass_on(None)
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._busy.add(worker)
        if closed:
            _kill_and_reap(worker)
            raise RuntimeError("the process pool was shut down")
        return worker

    def _pass_on(self, worker: _Worker | None) -> None:
        """Give a freed worker (or, when ``None``, a freed slot) to the next waiter; else
        park the worker as idle, or drop it and its slot when closed or over the cap."""
        while True:
            with self._lock:
                surplus = self._closed or self._count > self.max_workers
                if surplus or not self._waiters:
                    dropped = self._park_locked(worker, surplus)
                    break
                loop, waiter = self._waiters.popleft()
            if _call_soon(loop, self._grant, waiter, worker):
                return
        if dropped is not None:
            _kill_and_reap(dropped)

    def _park_locked(self, worker: _Worker | None, surplus: bool) -> _Worker | None:
        if worker is not None:
            self._busy.discard(worker)
        if worker is None or surplus:
            self._count -= 1
            return worker
        self._idle.append(worker)
        return None

    def _grant(self, waiter: asyncio.Future[_Worker | None], worker: _Worker | None) -> None:
        """On the waiter's loop: hand over, or pass on if the waiter gave up meanwhile."""
        if waiter.done():
            self._pass_on(worker)
        else:
            waiter.set_result(worker)

    async def _exchange(self, worker: _Worker, data: bytes, task_name: str) -> bytearray:
        """Send a call to ``worker`` and return its reply; the worker is always released,
        or killed and reaped."""
        loop = asyncio.get_running_loop()
        try:
            frames = (pickle.dumps(_parent_path()), data)
            reply = await _request(loop, worker.sock, frames)
        except _WorkerGone:
            raise await self._crashed(worker, loop, task_name) from None
        except BaseException:  # cancelled mid-call (timeout, run cancelled, Ctrl-C)
            logger.debug("killing process worker pid %d: %r was cancelled", worker.pid, task_name)
            self._retire(worker, loop)
            raise
        worker.task_name = None
        self._pass_on(worker)
        return reply

    async def _crashed(
        self, worker: _Worker, loop: asyncio.AbstractEventLoop, task_name: str
    ) -> WorkerCrashedError:
        try:
            returncode = await _wait_exit(worker.proc)
        finally:
            self._retire(worker, loop)
        message = (
            f"task {task_name!r}: its worker process (pid {worker.pid}) died while running "
            f"it ({_describe_exit(returncode)})"
        )
        logger.warning("%s", message)
        return WorkerCrashedError(message)

    def _retire(self, worker: _Worker, loop: asyncio.AbstractEventLoop | None) -> None:
        """Kill (if still alive) and reap ``worker``, close its socket, free its slot."""
        with self._lock:
            self._busy.discard(worker)
        if loop is not None:
            _forget_socket(loop, worker.sock)
        _kill_and_reap(worker)
        self._pass_on(None)


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
