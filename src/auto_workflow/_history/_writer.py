"""The history writer: the engine's hot path appends to a queue, one thread commits it.

Lifecycle: constructing a :class:`HistoryWriter` does nothing (no thread, no file). The
first call starts a daemon thread and registers :meth:`HistoryWriter.close` with
``atexit``. The thread opens the file (creating it ``0600`` in a ``0700`` directory and
migrating its schema), applies retention once if asked to, then every ``interval`` seconds
(at once on ``flush()``/``close()``) commits whatever is queued, at most ``max_batch`` ops
per transaction. ``close()`` commits the rest and stops the thread; a later call starts a
new one.

Invariants:

- The per-task methods never block, do no I/O and never raise: each appends one tuple to
  a deque (atomic, so any thread may call them). Errors and their texts are redacted and
  bounded on the writer thread, not the caller's.
- Ops commit in the order they were queued; within a batch, a task row's declaration,
  start and end merge into one row write (see ``_batch``).
- History never fails a run. The first error the thread cannot retry past (the directory
  is read-only, the disk is full, the file is corrupt or is a directory, its schema is
  newer than this code, or it stays locked beyond the busy timeout and retries) logs ONE
  warning on the ``auto_workflow.history`` logger naming the file and the cause, and this
  writer *gives up for good*: later calls are dropped at once and ``flush()`` returns
  False promptly. Giving up, rather than retrying later, keeps a broken history from
  costing every later task time and from repeating its warning; the next writer (for
  example, the next process) tries the file afresh.
"""

from __future__ import annotations

import atexit
import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_workflow._history import _batch
from auto_workflow._history._batch import Batch, FlushMarker
from auto_workflow._history._errors import HistoryError
from auto_workflow._history._maintenance import apply_retention
from auto_workflow._history._records import ErrorRecord, RunStatus, TaskStatus
from auto_workflow._history._schema import connect, write_transaction
from auto_workflow._history._values import recorded_args, recorded_mapping, redact

__all__ = ["HistoryWriter", "Retention", "WriterOptions"]

logger = logging.getLogger("auto_workflow.history")  # the public face's name, for users

NodeDeclaration = tuple[int, str, str, str, tuple[str, ...], str | None, int | None]
"""``(index, node_id, task_name, kind, upstream_ids, fanout_id, item)``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Delete runs older than ``max_age_days`` or beyond the newest ``keep_last`` per flow."""

    max_age_days: float = 30.0
    keep_last: int = 1000
    min_interval: float = 600.0
    """Seconds between two passes over one file by one process."""

    def __post_init__(self) -> None:
        if self.max_age_days <= 0 or self.keep_last < 1 or self.min_interval < 0:
            raise ValueError(f"invalid retention: {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterOptions:
    """How the writer batches and how long it waits for a busy file."""

    interval: float = 0.05
    """Seconds between commits while ops arrive."""
    max_batch: int = 20_000
    """Most ops in one transaction (bounds how long the write lock is held)."""
    busy_timeout: float = 2.0
    """Seconds SQLite waits for another process's write lock, per try."""
    retries: int = 6
    """Further tries of a busy commit, with backoff from 50 ms doubling to 1 s."""
    retention: Retention | None = None
    """Applied once when the thread starts, if set."""
    linger: float = 2.0
    """Idle seconds after which the thread exits (the next op starts a new one), so a
    process that stopped running flows keeps no thread and no open file."""

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.max_batch < 1 or self.linger < 0:
            raise ValueError(f"invalid writer options: {self!r}")
        if self.busy_timeout < 0 or self.retries < 0:
            raise ValueError(f"invalid writer options: {self!r}")


_STATUS_VALUES: dict[str, str] = {status: status.value for status in TaskStatus}


def _discard(op: tuple[Any, ...]) -> None:
    """The queue of a writer that gave up."""


class HistoryWriter:
    """Records runs into the history file at ``path``, off the caller's thread.

    Args:
        path: The history file (created on first use if missing).
        options: Batching and lock-waiting settings.
    """

    __slots__ = (
        "__weakref__",
        "_failed",
        "_lock",
        "_ops",
        "_options",
        "_path",
        "_push",
        "_stopping",
        "_thread",
        "_wake",
    )

    def __init__(self, path: Path, options: WriterOptions | None = None) -> None:
        self._path = Path(path)
        self._options = options or WriterOptions()
        self._ops: collections.deque[tuple[Any, ...]] = collections.deque()
        self._push: Callable[[tuple[Any, ...]], None] = self._first_push
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failed = False

    @property
    def path(self) -> Path:
        """The history file."""
        return self._path

    @property
    def failed(self) -> bool:
        """True once this writer has given up (see the module docstring)."""
        return self._failed

    # -- the hot path: one tuple appended per call ----------------------------------------

    def run_started(
        self,
        run_id: str,
        *,
        flow: str,
        target: str | None,
        params: Mapping[str, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        host: str,
        pid: int,
        started_at: float,
        durable: bool,
        graph_signature: str | None,
    ) -> None:
        """Record a run's start. Its values are serialised now (they may change later)."""
        values = _recorded_inputs(params, args, kwargs)
        target = None if target is None else redact(target)
        row = (flow, target, *values, host, pid, started_at, durable, graph_signature)
        self._push((_batch.RUN_STARTED, run_id, row))

    def nodes_declared(self, run_id: str, nodes: Iterable[NodeDeclaration]) -> None:
        """Record nodes of the run's graph (again later for dynamic fan-out children).

        ``nodes`` is copied into a tuple here (O(n), once per declaration).
        """
        self._push((_batch.NODES, run_id, tuple(nodes)))

    def nodes_declared_lazily(self, run_id: str, nodes: Iterable[NodeDeclaration]) -> None:
        """:meth:`nodes_declared` with ``nodes`` iterated on the writer thread, not here:
        the engine hands a generator, so a 100,000-node graph costs the scheduler O(1)."""
        self._push((_batch.NODES, run_id, nodes))

    def task_started(self, run_id: str, index: int, started_at: float) -> None:
        """Record that task ``index`` started its first attempt (status ``running``)."""
        self._push((_batch.TASK_STARTED, run_id, index, started_at))

    def attempt_ended(
        self,
        run_id: str,
        index: int,
        number: int,
        started_at: float,
        ended_at: float,
        error: ErrorRecord | None,
    ) -> None:
        """Record one attempt (kept only if it failed or was not the first)."""
        self._push((_batch.ATTEMPT, run_id, index, number, started_at, ended_at, error))

    def task_ended(
        self,
        run_id: str,
        index: int,
        status: TaskStatus,
        attempts: int,
        ended_at: float,
        error: ErrorRecord | None,
        checkpoint: bool,
    ) -> None:
        """Record how task ``index`` ended."""
        # The plain str, not the enum member: a tuple of atomic values is untracked by the
        # garbage collector, which halves this call's cost while the op waits in the queue.
        value = _STATUS_VALUES.get(status, status)
        self._push((_batch.TASK_ENDED, run_id, index, value, attempts, ended_at, error, checkpoint))

    def run_ended(
        self, run_id: str, status: RunStatus, ended_at: float, error: ErrorRecord | None
    ) -> None:
        """Record how the run ended (its task counts are stored with it)."""
        self._push((_batch.RUN_ENDED, run_id, status, ended_at, error))

    # -- waiting and stopping -------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every op queued before this call is committed.

        Returns:
            True if committed; False if this writer gave up, or ``timeout`` passed.
        """
        if self._failed:
            return False
        if self._thread is None and not self._ops:
            return True
        marker = FlushMarker()
        self._push((_batch.FLUSH, marker))
        self._wake.set()
        return self._await(marker, time.monotonic() + timeout)

    def _await(self, marker: FlushMarker, deadline: float) -> bool:
        # Short waits, so that giving up (which may race with this marker) ends the wait.
        while not marker.done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._failed or time.monotonic() >= deadline:
                return False
        return marker.ok

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued and stop the thread (idempotent; a later call restarts it).

        Waits at most ``timeout`` seconds for the thread (which may be retrying a busy
        file); calls from other threads that would start a new thread wait meanwhile.
        """
        with self._lock:
            thread = self._thread
            if thread is None and self._ops and not self._failed:
                self._start_locked()  # ops that raced an idle thread's exit: commit them
                thread = self._thread
            if thread is None:
                return
            if not self._failed:
                self._push = self._first_push  # later ops start a new thread, after this
            self._stopping = True
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("run history writer for %s did not stop in %gs", self._path, timeout)
                return
            self._thread = None
            self._stopping = False
        atexit.unregister(self.close)

    # -- the writer thread ----------------------------------------------------------------

    def _first_push(self, op: tuple[Any, ...]) -> None:
        with self._lock:
            if self._failed:
                return
            if self._thread is None:
                self._start_locked()
            if not self._failed:
                self._push = self._ops.append
                self._ops.append(op)

    def _start_locked(self) -> None:
        thread = threading.Thread(target=self._run, name="auto_workflow-history", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # e.g. called during interpreter shutdown
            self._give_up(exc)
            return
        self._thread = thread
        # Daemon, so a forgotten close() never hangs the exit; atexit still commits.
        atexit.unregister(self.close)  # once, however often the thread is restarted
        atexit.register(self.close)

    def _run(self) -> None:
        try:
            conn = connect(
                self._path,
                create=True,
                busy_timeout=self._options.busy_timeout,
                retries=self._options.retries,
            )
        except (sqlite3.Error, OSError, HistoryError) as exc:
            self._give_up(exc)
            return
        try:
            self._retain(conn)
            self._serve(conn)
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)
        except Exception as exc:  # a bug here must cost the history, never the run
            logger.warning("run history writer for %s failed", self._path, exc_info=True)
            self._give_up(exc, warned=True)
        finally:
            conn.close()

    def _retain(self, conn: sqlite3.Connection) -> None:
        retention = self._options.retention
        if retention is None:
            return
        try:
            deleted = apply_retention(
                conn,
                self._path,
                max_age_days=retention.max_age_days,
                keep_last=retention.keep_last,
                min_interval=retention.min_interval,
            )
        except sqlite3.OperationalError as exc:  # busy or read-only: try next process
            logger.info("run history retention skipped for %s: %s", self._path, exc)
            return
        if deleted:
            logger.debug("run history retention deleted %d run(s) from %s", deleted, self._path)

    def _serve(self, conn: sqlite3.Connection) -> None:
        idle = 0.0
        while True:
            self._wake.wait(self._options.interval)
            self._wake.clear()
            stopping = self._stopping
            busy = bool(self._ops)
            while self._ops:
                self._commit(conn, self._take())
            if stopping:
                return
            idle = 0.0 if busy else idle + self._options.interval
            if idle >= self._options.linger and self._retire():
                return

    def _retire(self) -> bool:
        """Leave after ``linger`` idle seconds: the next op starts a fresh thread."""
        with self._lock:
            if self._ops or self._stopping:
                return False
            self._push = self._first_push
            self._thread = None
            return True

    def _take(self) -> Batch:
        batch = Batch()
        popleft = self._ops.popleft
        for _ in range(self._options.max_batch):
            try:
                op = popleft()
            except IndexError:
                break
            batch.add(op)
        return batch

    def _commit(self, conn: sqlite3.Connection, batch: Batch) -> None:
        if batch.has_writes:
            write_transaction(conn, batch.apply, retries=self._options.retries)
        batch.resolve(True)

    def _give_up(self, exc: BaseException, *, warned: bool = False) -> None:
        """Stop recording for good: warn once, drop what is queued, release flush waiters."""
        self._push = _discard
        first, self._failed = not self._failed, True
        if first and not warned:
            logger.warning(
                "run history disabled: cannot write %s (%s: %s); runs continue unrecorded",
                self._path,
                type(exc).__name__,
                exc,
            )
        while self._ops:
            op = self._ops.popleft()
            if op[0] == _batch.FLUSH:
                op[1].resolve(False)


def _recorded_inputs(
    params: Mapping[str, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[str, str, str]:
    """JSON text of a run's params, args and kwargs; placeholders if they cannot be read."""
    try:
        return (recorded_mapping(params), recorded_args(args), recorded_mapping(kwargs))
    except Exception:  # user containers may fail to iterate; the run must not fail for it
        logger.warning("run history could not record a run's parameters", exc_info=True)
        return ("{}", "[]", "{}")
