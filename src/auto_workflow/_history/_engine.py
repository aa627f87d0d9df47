"""The run history the engine records into: the core's ``RunHistory`` over the SQLite
writer, the reading store and the checkpoint directories.

:func:`install` (called by the public faces when ``auto_workflow`` is imported) gives the
core a factory; nothing is opened until a run asks for it. One :class:`SqliteHistory` is
kept per history file and process, so all runs share one writer thread.

Invariants: the journal's node calls append one tuple to the writer's queue (the writer
formats errors, declares nodes and redacts secrets on its own thread, never the
scheduler's); a journal method never raises; the run's final status is flushed before
``finish`` returns (or the writer has given up, with one warning).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auto_workflow._core._config import Config, get_config
from auto_workflow._core._durable import signature_digest
from auto_workflow._core._graph import Graph
from auto_workflow._core._journal import (
    Expansions,
    PriorRun,
    RunSpec,
    install_history,
)
from auto_workflow._history._checkpoints import RunCheckpoints
from auto_workflow._history._paths import checkpoint_dir, default_history_path
from auto_workflow._history._records import ErrorRecord, RunStatus, TaskStatus
from auto_workflow._history._report import write_report
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._writer import HistoryWriter, Retention, WriterOptions
from auto_workflow.exceptions import RunNotFoundError, TaskExecutionError, UpstreamFailedError

if TYPE_CHECKING:
    from auto_workflow._core._graph import Node, TaskLike
    from auto_workflow._core._state import RunState

__all__ = ["SqliteHistory", "close_all", "error_record", "history_for", "install"]

logger = logging.getLogger(__name__)

_TASK_STATUS = {s.value: s for s in TaskStatus}
_RUN_STATUS = {s.value: s for s in RunStatus}
_LOCK = threading.Lock()
_OPEN: dict[tuple[Path, float | None, int | None], SqliteHistory] = {}
_FINAL_FLUSH = 10.0


def history_path(config: Config) -> Path:
    """The history file the configuration names (default: the user's data directory)."""
    if config.history_path:
        return Path(config.history_path).expanduser().absolute()
    return default_history_path()


def history_for(config: Config) -> SqliteHistory | None:
    """The process's history for ``config`` (``None`` when ``history = "off"``)."""
    if config.history == "off":
        return None
    path = history_path(config)
    key = (path, config.history_retention, config.history_keep_runs)
    with _LOCK:
        found = _OPEN.get(key)
        if found is None:
            found = _OPEN[key] = SqliteHistory(path, _retention(config))
        return found


def _retention(config: Config) -> Retention | None:
    age, keep = config.history_retention, config.history_keep_runs
    if age is None and keep is None:
        return None
    return Retention(
        max_age_days=(age / 86400.0) if age is not None else 1e9,
        keep_last=keep if keep is not None else 2**62,
    )


def close_all() -> None:
    """Commit and stop every history writer of this process (tests; atexit does it too)."""
    with _LOCK:
        opened = list(_OPEN.values())
        _OPEN.clear()
    for history in opened:
        history.writer.close(_FINAL_FLUSH)


def install() -> None:
    """Make the SQLite history the one every flow run records into (lazily)."""
    install_history(lambda: history_for(get_config()))


def error_record(error: BaseException) -> ErrorRecord:
    """An error as the history keeps it: the user's exception's type, message, traceback."""
    shown = error
    upstream = isinstance(error, UpstreamFailedError)
    if isinstance(error, TaskExecutionError) and error.original is not None and not upstream:
        shown = error.original
    kind = type(shown)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = "".join(traceback.format_exception(shown)) if shown.__traceback__ else ""
    return ErrorRecord(type=name, message=str(shown), traceback=text)


class SqliteHistory:
    """The core's ``RunHistory`` over one history file."""

    def __init__(self, path: Path, retention: Retention | None) -> None:
        self.path = path
        self.checkpoint_root = checkpoint_dir(path)
        self.writer = HistoryWriter(path, WriterOptions(retention=retention))
        self.store = HistoryStore(path)

    def ended(self) -> None:
        """A run's end was queued: commit it before the run returns. The writer thread
        stays for a moment (the next run reuses it and its open file), then exits idle."""
        self.writer.flush(_FINAL_FLUSH)

    def lookup(self, run_id: str) -> PriorRun | None:
        """What the history holds under ``run_id`` (after committing pending writes)."""
        self.writer.flush(_FINAL_FLUSH)
        summary = self.store.find_run(run_id)
        if summary is None:
            return None
        checkpoints = RunCheckpoints(self.checkpoint_root, run_id)
        return PriorRun(
            flow=summary.flow,
            status=summary.status.value,
            durable=summary.durable,
            signature=self.store.graph_signature(run_id),
            shape=checkpoints.shape,
            call=checkpoints.call,
        )

    def write_report(self, run_id: str, path: str | os.PathLike[str]) -> None:
        """Write the HTML report of run ``run_id`` (exact id) to ``path``, once its writes
        are committed.

        Raises:
            RunNotFoundError: the run is not in the history (it was never recorded).
        """
        self.writer.flush(_FINAL_FLUSH)
        record = self.store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"run {run_id!r} is not in the run history {self.path}")
        write_report(record, path)

    def begin(
        self, spec: RunSpec, graph: Graph, shape: list[str] | None, resumed: bool
    ) -> tuple[_Journal, RunCheckpoints | None]:
        """Record the run's start and its nodes; open a durable run's checkpoints.

        ``shape``: the graph's shape lines, given for a durable run (the only kind that
        can be resumed, so the only one whose shape is recorded)."""
        self.writer.run_started(
            spec.run_id,
            flow=spec.flow,
            target=spec.target,
            params=spec.params,
            args=spec.args,
            kwargs=spec.kwargs,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            durable=spec.durable,
            graph_signature=None if shape is None else signature_digest(shape),
        )
        journal = _Journal(self, spec.run_id, graph, spec.durable)
        checkpoints = None
        if spec.durable:
            checkpoints = RunCheckpoints(self.checkpoint_root, spec.run_id)
            if not resumed:
                checkpoints.save_call(spec, shape or [])
        return journal, checkpoints


ITEMISED = 100
"""Rows per task name in one run before its further plain successes are only counted."""

UPFRONT = 1000
"""A graph with at most this many nodes when built is declared whole when the run starts
(a live view shows what is still waiting) and its build-time nodes are all itemised. A
live view of waiting tasks matters when tasks are slow, and then rows cost nothing next to
them; a bigger graph is a fan-out, whose trivial calls an itemised row each would slow
down 4-5x (about 20 µs a call here), so its calls past :data:`ITEMISED` are counted."""

_SUMMARY_BASE = 1 << 40
"""Build indexes of summary rows (above any real node's)."""

_PLAIN = frozenset({"succeeded", "cached"})


class _Journal:
    """One run's journal: node events become ops on the writer's queue.

    A graph of at most :data:`UPFRONT` nodes is declared whole at the start, so a live view
    shows what still waits. In a larger graph a node is declared when it first shows up
    (started, skipped, or a barrier expanded), so nodes that never started are not recorded.
    In a run that is not durable, once a task name has :data:`ITEMISED` rows, its further
    calls that succeed at their first attempt are counted into one summary row per (task,
    status, fan-out) instead of a row each: failures, retries, skips and cancellations
    always get their own row. A 100,000-call fan-out then costs the history a hundred rows,
    not a hundred thousand.

    Such a counted ("quiet") call is the hot path, paid by every call of a big fan-out on
    the scheduler's thread: it queues nothing, keeps only its start time while it runs,
    and usually adds one to the summary row the previous call went to (``_hot``).
    """

    __slots__ = (
        "_bare_ok",
        "_counting",
        "_declared_upto",
        "_expansions",
        "_graph",
        "_history",
        "_hot",
        "_itemised_ok",
        "_over",
        "_quiet",
        "_quiet_from",
        "_retries",
        "_rows",
        "_run_id",
        "_summary",
        "_writer",
    )

    def __init__(self, history: SqliteHistory, run_id: str, graph: Graph, durable: bool) -> None:
        self._history = history
        self._writer = history.writer
        self._run_id = run_id
        self._graph = graph
        self._expansions = Expansions(len(graph.nodes))
        self._retries: dict[int, tuple[int, float]] = {}
        self._rows: dict[object, int] = {}  # itemised calls per task
        self._over: set[object] = set()  # tasks whose plain calls are only counted now
        self._quiet: dict[int, float] = {}  # start times of counted calls still running
        self._hot: _Hot = _COLD
        self._summary: dict[tuple[str, str, str | None], list[float]] = {}
        # Calls the runner makes without telling us (see counts): per task, when counting
        # began and how many succeeded; and the itemised successes per (task, fan-out), to
        # tell the two apart in the final state.
        self._counting: dict[TaskLike, float] = {}
        self._bare_ok: dict[TaskLike, int] = {}
        self._itemised_ok: dict[tuple[TaskLike, Node | None], int] = {}
        built = len(graph.nodes)
        self._declared_upto = built if built <= UPFRONT else 0
        # A durable run itemises every call; otherwise calls past the whole-graph
        # declaration may be counted.
        self._quiet_from = _NEVER if durable else self._declared_upto
        if self._declared_upto:
            decls = _declarations(graph, 0, built)
            self._writer.nodes_declared_lazily(run_id, decls)

    def _declare(self, node: Node) -> None:
        if node.index < self._declared_upto:
            return  # declared with the whole graph
        origin = self._expansions.origin(node.index)
        self._writer.nodes_declared_lazily(self._run_id, _declaration(self._graph, node, origin))

    def task_started(self, node: Node, at: float) -> None:
        index = node.index
        if index >= self._quiet_from and not node.is_barrier:
            task = node.task
            if task in self._over:
                self._quiet[index] = at
                return
            self._itemised(task)
        self._declare(node)
        self._writer.task_started(self._run_id, index, at)

    def _itemised(self, task: object) -> None:
        """Count one more row of ``task``; past :data:`ITEMISED`, its calls are quiet."""
        seen = self._rows.get(task, 0) + 1
        self._rows[task] = seen
        if seen >= ITEMISED:
            self._over.add(task)

    def task_ended(
        self,
        node: Node,
        status: str,
        attempts: int,
        at: float,
        error: BaseException | None,
        checkpoint: bool,
    ) -> None:
        started = self._quiet.pop(node.index, None) if self._quiet else None
        if started is not None and error is None and attempts <= 1 and status in _PLAIN:
            # A quiet call counted into its summary row: (task, status, fan-out) and its
            # span. Inline, not a helper: on this path a call costs as much as the work.
            hot = self._hot  # the row the last call went to: a fan-out's calls come in a run
            if hot.task is node.task and hot.lo <= node.index < hot.hi and hot.status == status:
                row = hot.row
            else:
                row = self._summary_row(node, status)
            row[0] += 1
            if started < row[1]:
                row[1] = started
            if at > row[2]:
                row[2] = at
            return
        if started is not None:
            self._declare(node)  # an unusual outcome of a quiet call: itemised after all
            self._writer.task_started(self._run_id, node.index, started)
        elif node.is_barrier or status == "skipped":
            self._declare(node)  # never started: declared now
        retry = self._retries.pop(node.index, None) if self._retries else None
        if retry is not None and error is None:
            self._writer.attempt_ended(self._run_id, node.index, retry[0], retry[1], at, None)
        if status in _PLAIN and node.index >= self._quiet_from and not node.is_barrier:
            self._itemised_success(node)
        record = None if error is None else error_record(error)
        state = _TASK_STATUS[status]
        self._writer.task_ended(self._run_id, node.index, state, attempts, at, record, checkpoint)

    def _itemised_success(self, node: Node) -> None:
        """Count an itemised call that succeeded, by (task, fan-out): :meth:`tally` takes
        these out of the final state's successes to find the calls it was not told of."""
        key = (node.task, self._expansions.span(node.index)[2])
        self._itemised_ok[key] = self._itemised_ok.get(key, 0) + 1

    # -- calls the runner makes without telling the journal (RunJournal.counts) -----------

    def counts(self, task: TaskLike) -> bool:
        """True once ``task`` has its :data:`ITEMISED` rows in a run that is not durable:
        from then on its calls that succeed at once are only counted."""
        if task not in self._over:
            return False
        if task not in self._counting:
            self._counting[task] = time.time()
        return True

    def counted(self, task: TaskLike, calls: int) -> None:
        self._bare_ok[task] = self._bare_ok.get(task, 0) + calls

    def tally(self, state: RunState) -> None:
        """Split the counted calls of each task by fan-out and add them to the summary:
        in each expansion of the task, the successes the final state shows less those
        itemised; the rest were build-time calls."""
        try:
            self._tally(state, time.time())
        except Exception:  # a bug here must not cost the run: its rows are only counts
            logger.warning(
                "the run history could not count run %s's calls", self._run_id, exc_info=True
            )

    def _tally(self, state: RunState, now: float) -> None:
        ranges = list(self._expansions.ranges())
        for task, calls in self._bare_ok.items():
            began = self._counting.get(task, now)
            left = calls
            for barrier, first, count in ranges:
                if barrier.task is not task or not left:
                    continue
                done = state.count_done(first, first + count)
                done -= self._itemised_ok.get((task, barrier), 0)
                done = min(max(done, 0), left)
                if done:
                    self._add_counted(task.name, barrier.id, done, began, now)
                    left -= done
            if left:
                self._add_counted(task.name, None, left, began, now)
        self._bare_ok.clear()

    def _add_counted(
        self, name: str, fanout: str | None, calls: int, began: float, ended: float
    ) -> None:
        row = self._summary.setdefault((name, "succeeded", fanout), [0.0, began, ended])
        row[0] += calls
        row[1] = min(row[1], began)
        row[2] = max(row[2], ended)

    def _summary_row(self, node: Node, status: str) -> list[float]:
        """The summary row of ``node``'s (task, status, fan-out), made the hot one."""
        lo, hi, barrier = self._expansions.span(node.index)
        key = (node.task.name, status, None if barrier is None else barrier.id)
        row = self._summary.get(key)
        if row is None:
            row = self._summary[key] = [0.0, math.inf, -math.inf]
        self._hot = _Hot(node.task, lo, hi, status, row)
        return row

    def attempt_started(self, node: object, number: int, at: float) -> None:
        index = getattr(node, "index", None)
        if index is not None:
            self._retries[index] = (number, at)

    def attempt_failed(
        self, node: object, number: int, started: float, ended: float, error: BaseException
    ) -> None:
        index = getattr(node, "index", None)
        if index is None:
            return
        self._retries.pop(index, None)
        record = error_record(error)
        self._writer.attempt_ended(self._run_id, index, number, started, ended, record)

    def expanded(self, barrier: Node, first: int, count: int) -> None:
        self._expansions.add(barrier, first, count)

    def finish(self, status: str, error: BaseException | None, at: float) -> None:
        self._write_summary()
        record = None if error is None else error_record(error)
        self._writer.run_ended(self._run_id, _RUN_STATUS[status], at, record)
        self._history.ended()
        self._release()

    def _release(self) -> None:
        """Let go of the run's graph once its end is committed. The engine may keep this
        journal in a reference cycle after the run; holding the graph from there would
        leave every node of the run for the cyclic garbage collector to find (memory, and
        time in each full collection) instead of being freed when the run ends."""
        self._graph = _ENDED
        self._declared_upto = _NEVER  # nothing is declared after the end
        self._expansions = Expansions(0)
        self._hot = _COLD

    def _write_summary(self) -> None:
        writer, run_id = self._writer, self._run_id
        for offset, (key, (count, first, last)) in enumerate(self._summary.items()):
            name, status, fanout = key
            index = _SUMMARY_BASE + offset
            calls = int(count)
            node_id = f"{name} \u00d7{calls} (counted, not itemised)"
            upstream = () if fanout is None else (fanout,)
            decl = (index, node_id, name, "summary", upstream, fanout, calls)
            writer.nodes_declared(run_id, (decl,))
            writer.task_started(run_id, index, first)
            writer.task_ended(run_id, index, _TASK_STATUS[status], 1, last, None, False)


class _Hot:
    """The summary row the last counted call went to, and which calls go there too: calls
    of ``task`` with ``status`` whose index lies in ``[lo, hi)`` (one expansion's range)."""

    __slots__ = ("hi", "lo", "row", "status", "task")

    def __init__(self, task: object, lo: int, hi: int, status: str, row: list[float]) -> None:
        self.task = task
        self.lo = lo
        self.hi = hi
        self.status = status
        self.row = row


_COLD = _Hot(None, 0, 0, "", [])
_ENDED = Graph("")
"""The graph of an ended journal (it keeps no nodes alive)."""
_NEVER = 1 << 62
"""``_quiet_from`` of a durable run: no build index reaches it, so every call is itemised."""


def _declarations(graph: Graph, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    """Build-time nodes' declarations, made on the writer thread when it gets to them."""
    for node in graph.nodes[start:stop]:  # a snapshot: the list only ever grows
        yield from _declaration(graph, node, None)


def _declaration(
    graph: Graph, node: Node, origin: tuple[Node, int] | None
) -> Iterator[tuple[Any, ...]]:
    """The node's declaration, made on the writer thread when it gets to it."""
    kind = "fanout" if node.is_barrier else "task"
    if origin is not None:
        barrier, item = origin
        yield (node.index, node.id, node.task.name, kind, (barrier.id,), barrier.id, item)
        return
    every = graph.nodes
    upstream = tuple(every[d].id for d in node.deps)
    yield (node.index, node.id, node.display_name, kind, upstream, None, None)
