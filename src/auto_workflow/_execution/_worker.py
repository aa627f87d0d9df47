"""The worker side of the process pool: the loop a worker process runs.

A worker is a fresh interpreter started by :class:`~._process.ProcessPool` with one end of a
``socketpair``. It serves calls one at a time in the order they arrive (see :mod:`._wire`);
several may wait queued, so it never waits for the parent between two calls.

Invariants:

* A reader thread takes frames off the socket as they arrive. When the parent closes its
  end (shutdown) or dies, the process exits at once, even in the middle of a call: nobody is
  left to receive its result, and runaway work must not linger.
* A ``CANCEL`` for a call that has not started is answered ``SKIPPED`` at once; for the
  running call it ends the process (the parent then sees the worker gone, as when it kills
  it). A ``RECALL`` skips a call that has not started and leaves a running one alone. The
  reader and the serving thread decide under one lock, so a skipped call never starts.
* Every record logged in the worker goes to the parent (:mod:`._logs`), tagged with the call
  that was running; the worker prints none itself.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._execution import _wire
from auto_workflow._execution._logs import apply_levels, pack_record
from auto_workflow._execution._protocol import call_to_completion, safe_str, type_name

__all__ = ["worker_main"]

_Frame = tuple[int, int, bytes]  # (kind, call id, body)

_SMALL = 1 << 16
"""Bodies up to this size are sent in one piece with their header."""


class _Link:
    """The worker's end of the socket: ordered sends from any thread, and which call runs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.running = 0  # the call id being served; 0 between calls
        self.queued: set[int] = set()  # received, not started
        self.skipped: set[int] = set()  # received, answered SKIPPED, never to start

    def send(self, kind: int, call_id: int, body: bytes = b"") -> None:
        head = _wire.header(kind, call_id, len(body))
        with self.send_lock:
            if len(body) <= _SMALL:
                self.sock.sendall(head + body)
            else:
                self.sock.sendall(head)
                self.sock.sendall(body)

    def received(self, call_id: int) -> None:
        with self.state_lock:
            self.queued.add(call_id)

    def begin(self, call_id: int) -> bool:
        """Mark ``call_id`` running; False (and forget it) if it was skipped meanwhile."""
        with self.state_lock:
            if call_id in self.skipped:
                self.skipped.discard(call_id)
                return False
            self.queued.discard(call_id)
            self.running = call_id
            return True

    def end(self) -> None:
        with self.state_lock:
            self.running = 0

    def withdraw(self, call_id: int, *, stop_running: bool) -> None:
        """On the reader thread: answer a queued call SKIPPED now; a running one ends the
        process if ``stop_running`` (a cancel) and goes on otherwise (a recall)."""
        with self.state_lock:
            if stop_running and self.running == call_id:
                os._exit(1)  # the parent counts this call as cancelled, not crashed
            if call_id not in self.queued:
                return  # running on, or answered already
            self.queued.discard(call_id)
            self.skipped.add(call_id)
            # Sent under the lock: the reply of a later call (which cannot begin meanwhile)
            # must not overtake it, since replies answer the oldest call not skipped.
            self.send(_wire.SKIPPED, call_id)


class _ForwardHandler(logging.Handler):
    """Sends every record to the parent, tagged with the call running now."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            body = pack_record(record, self._formatter)
            self._link.send(_wire.LOG, self._link.running, body)
        except OSError:  # the parent is gone; the reader thread ends the process
            return
        except Exception:  # noqa: BLE001 - logging's own convention for a failing handler
            self.handleError(record)


# -- serving ----------------------------------------------------------------------------------


def _pack_result(result: Any, seconds: float) -> bytes:
    try:
        payload = cloudpickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - the parent raises SerializationError for it
        detail = f"{type_name(exc)}: {safe_str(exc)}"
        return pickle.dumps(("result_unpicklable", None, type_name(result), detail, "", seconds))
    return pickle.dumps(("ok", payload, type_name(result), "", "", seconds))


def _pack_exception(kind: str, exc: BaseException, seconds: float) -> bytes:
    remote_tb = "".join(traceback.format_exception(exc))
    payload: bytes | None
    try:
        payload = cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - the parent substitutes a RemoteTaskError
        payload = None
    return pickle.dumps((kind, payload, type_name(exc), safe_str(exc), remote_tb, seconds))


def _serve(body: bytes) -> bytes:
    """Run one pickled call; the reply never fails to pickle and says how long it took."""
    start = time.perf_counter()
    try:
        call = _wire.decode_call(body)
    except Exception as exc:  # noqa: BLE001 - unpickling runs arbitrary code; report anything
        return _pack_exception("load_failed", exc, time.perf_counter() - start)
    try:
        result = call_to_completion(call)
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
        return _pack_exception("raised", exc, time.perf_counter() - start)
    return _pack_result(result, time.perf_counter() - start)


def _follow_parent_path(body: bytes) -> None:
    """Use the parent's current sys.path, so functions pickled by reference import here."""
    path = pickle.loads(body)
    if sys.path != path:
        sys.path[:] = path
        importlib.invalidate_caches()


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to do
                stream.flush()


def _handle(link: _Link, frame: _Frame) -> None:
    kind, call_id, body = frame
    if kind == _wire.PATH:
        _follow_parent_path(body)
    elif kind == _wire.LEVELS:
        apply_levels(pickle.loads(body))
    elif link.begin(call_id):
        reply = _serve(body)
        link.end()
        _flush_std_streams()  # the process may be killed later; do not lose the call's output
        link.send(_wire.REPLY, call_id, reply)


# -- reading ----------------------------------------------------------------------------------


def _read_frame(stream: BinaryIO) -> _Frame | None:
    head = stream.read(_wire.HEADER.size)
    if len(head) < _wire.HEADER.size:
        return None
    kind, call_id, size = _wire.HEADER.unpack(head)
    body = stream.read(size) if size else b""
    if len(body) < size:
        return None
    return kind, call_id, body


def _read_frames(link: _Link, frames: queue.SimpleQueue[_Frame]) -> None:
    """The reader thread: queue each frame, act on cancels; exit when the parent is gone."""
    with contextlib.suppress(OSError), link.sock.makefile("rb") as stream:  # broken = EOF
        while (frame := _read_frame(stream)) is not None:
            kind, call_id, _ = frame
            if kind in (_wire.CANCEL, _wire.RECALL):
                link.withdraw(call_id, stop_running=kind == _wire.CANCEL)
                continue
            if kind == _wire.CALL:
                link.received(call_id)
            frames.put(frame)
    os._exit(0)


def worker_main(fd: int) -> None:
    """Entry point of a worker process started by the pool (not public API)."""
    # Ctrl-C reaches the whole process group; the parent decides what to cancel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_inheritable(fd, False)  # processes the task starts must not hold the socket open
    link = _Link(socket.socket(fileno=fd))
    logging.root.addHandler(_ForwardHandler(link))
    frames: queue.SimpleQueue[_Frame] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_frames, args=(link, frames), name="auto_workflow-reader", daemon=True
    )
    reader.start()
    while True:
        try:
            _handle(link, frames.get())
        except OSError:  # the parent is gone
            os._exit(0)
