"""The async shell around the pure graph state.

:class:`FlowRunner` drives a :class:`RunState` with a set of worker coroutines inside one
``asyncio.TaskGroup``; the first worker is the run's own task. A worker takes the best
ready node, runs it by awaiting it directly (no task per node), reports the outcome to the
state and takes the next. A new worker is started only when every worker is suspended
inside a task while ready nodes wait, so trivial tasks run back to back on one worker and
I/O-bound ones fan out up to ``max_concurrency`` workers: the number of workers *is* the
number of running tasks.

What "no plugins" means is decided once per run: with no event subscriber, a call that
nothing wraps (``CallRunner.bare``: async, one attempt, no timeout, cache, persistence,
cluster, middleware, tracer or gauge) is made in a straight line, and a worker runs such
calls of one task back to back in one coroutine (:meth:`FlowRunner._run_bares`): per call,
the state's ``arguments``/``done``/``pop``, the function, its time for the metrics, and
nothing else. With a journal, a task's calls take that line once the journal only counts
them (``RunJournal.counts``; never in a durable run, which checkpoints every call).

Invariants: the state is touched only from the loop thread; nothing here recurses on graph
depth; every pool a run starts is closed when the run ends, however it ends; a worker
yields to the loop at least every ``_YIELD_EVERY`` calls; user code always runs with its
own node as the context's frame.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from inspect import isawaitable
from time import perf_counter
from typing import Any

from auto_workflow._core._calls import BareCall, CallRunner, call_with_events
from auto_workflow._core._context import bind_run, reset_frame, set_node_frame, unbind_run
from auto_workflow._core._graph import Graph, Node, TaskLike, iter_placeholders, resolve
from auto_workflow._core._journal import Checkpoints, Expansions, RunJournal
from auto_workflow._core._model import FailurePolicy
from auto_workflow._core._state import SKIPPED, RunState
from auto_workflow._execution._placement import Remote, localize
from auto_workflow.exceptions import (
    AggregateTaskError,
    FanOutLimitError,
    TaskExecutionError,
    UpstreamFailedError,
)

__all__ = ["CaughtFailure", "FlowRunner", "text_fan_out_hint"]

logger = logging.getLogger(__name__)

_YIELD_EVERY = 64
"""A worker running only non-suspending tasks yields to the loop this often."""


class _Abort(Exception):
    """Raised by a worker to make the TaskGroup cancel the others (fail-fast)."""


@dataclass(frozen=True, slots=True)
class CaughtFailure:
    """A durable run's checkpoint of a caught failure (the error is the node's result),
    told apart from a task that returned an exception object."""

    error: TaskExecutionError


class FlowRunner:
    """Runs one graph to completion under a failure policy and a concurrency bound."""

    def __init__(
        self,
        graph: Graph,
        calls: CallRunner,
        *,
        policy: FailurePolicy,
        max_concurrency: int | None,
        max_dynamic_tasks: int,
        journal: RunJournal | None = None,
        checkpoints: Checkpoints | None = None,
        fetch: Callable[[Any], Awaitable[Any]] | None = None,
        output: Any = None,
    ) -> None:
        """``output``: the flow body's return value; the results it holds are kept to the
        end, every other result is released once its last consumer has started."""
        keep = [graph.own(p) for p in iter_placeholders(output)]
        self.state = RunState(graph, max_dynamic_tasks=max_dynamic_tasks, keep=keep)
        self.journal = journal
        self.checkpoints = checkpoints
        self._fetch = fetch
        """Brings a result left on a cluster back here, to be checkpointed."""
        self.expansions = Expansions(len(graph.nodes))
        calls.journal = journal
        self.calls = calls
        self.policy = policy
        self._limit = max_concurrency if max_concurrency is not None else math.inf
        self._workers = 0
        self._in_task = 0
        self._spawn_pending = False
        self._tg: asyncio.TaskGroup | None = None
        self._errors: list[TaskExecutionError] = []
        self._first_error: TaskExecutionError | None = None
        self._aborting = False
        events = calls.plugins.events
        self._events = events if events else None
        # Decided once per run: with no subscriber to tell, a call that nothing else wraps
        # (CallRunner.bare) is made in a straight line; the workers run such calls back to
        # back (_run_bares) unless each node must go by the journal (_run_recorded_node).
        self._bare: Callable[[TaskLike], BareCall | None] = (
            calls.bare if self._events is None else _never
        )
        self._recorded = journal is not None or checkpoints is not None
        """Each node goes by the journal (:meth:`_run_recorded_node`), unless the journal
        only counts its task's calls (``RunJournal.counts``). A flag, not a method stored
        on the runner: that would be a cycle keeping a finished run's graph alive until the
        collector came round."""
        # A durable run checkpoints every call: none of them can take the straight line.
        self._streak = _never if checkpoints is not None else self._bare
        self._counted = False
        """Whether the journal was told of calls made in a straight line (RunJournal.counted)."""
        self._ran = 0
        """Calls run by the workers so far: every _YIELD_EVERY-th, a worker yields."""

    async def run(self) -> RunState:
        """Run every node; raise per the failure policy."""
        bound = bind_run(self.calls.base)  # the workers inherit it: nodes are their frames
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.state.has_ready():
                    # The first worker is this task itself (no task to create and schedule:
                    # a small run is over before one would have started); more join in
                    # the group as calls suspend.
                    self._workers += 1
                    await self._worker()
        except* _Abort:
            pass
        finally:
            self._tg = None
            unbind_run(bound)
            if self._counted and self.journal is not None:
                self.journal.tally(self.state)
        if self._first_error is not None:
            raise self._first_error
        if not self.state.finished:
            raise RuntimeError("auto_workflow internal error: the scheduler stalled")
        if self._errors:  # only a failure can leave a barrier skipped
            self._fill_skipped_barriers()
        if self._errors and self.policy is FailurePolicy.AGGREGATE:
            raise AggregateTaskError(self._errors)
        return self.state

    @property
    def failures(self) -> list[TaskExecutionError]:
        """The task failures so far (skipped tasks not counted)."""
        return self._errors

    def output(self, value: Any) -> Any:
        """``value`` with every placeholder replaced by its node's result."""
        return resolve(value, self.state.results)

    # -- workers ---------------------------------------------------------------------------

    def _start_worker(self) -> None:
        assert self._tg is not None
        self._workers += 1
        self._tg.create_task(self._worker())

    def _want_worker(self) -> None:
        if not self._spawn_pending and self._workers < self._limit:
            self._spawn_pending = True
            asyncio.get_running_loop().call_soon(self._maybe_spawn)

    def _maybe_spawn(self) -> None:
        """Runs when the loop gets control: add workers if all are stuck in tasks."""
        self._spawn_pending = False
        if self._tg is None or self._aborting or not self.state.has_ready():
            return
        idle = self._workers - self._in_task
        if idle > 0:
            return
        room = self._limit - self._workers
        for _ in range(int(min(room, max(1, self._in_task)))):
            self._start_worker()

    async def _worker(self) -> None:
        state, streak = self.state, self._streak
        # With a journal, a task's calls take the straight line once it only counts them.
        counting = self.journal.counts if self.journal is not None else None
        try:
            node = state.pop()
            while node is not None and not self._aborting:
                if node.is_barrier:
                    await self._expand(node)
                    node = state.pop()
                    continue
                if not self._spawn_pending and state.has_ready():
                    self._want_worker()
                call = streak(node.task)
                if call is not None and (counting is None or counting(node.task)):
                    node = await self._run_bares(node, call)
                    continue
                if self._recorded:
                    await self._run_recorded_node(node)
                else:
                    await self._run_node(node)
                self._ran += 1
                if not self._ran % _YIELD_EVERY:
                    await asyncio.sleep(0)
                node = state.pop()
        finally:
            self._workers -= 1

    async def _run_bares(self, node: Node, call: BareCall) -> Node | None:  # noqa: C901
        """Run ``node``'s bare call, and then each next ready node that is another call of
        the same task, back to back in this one coroutine: the steps of
        :meth:`BareCall.run` inline, no coroutine of their own per call. Returns the next
        ready node, popped but not run (``None``: nothing is ready).

        One function, longer and deeper than the house rule, because it is the loop every
        trivial task of a chain or a layered graph goes round: each call it saves is paid
        once per task.
        """
        state, task = self.state, node.task
        fn, awaits, task_done, name = call.fn, call.awaits, call.task_done, call.name
        blocking = call.blocking
        current: Node | None = node
        # Each call sets its node as the frame; the frame is reset once, when the streak
        # ends (between two calls only the engine runs, which never reads it).
        first = None
        succeeded = 0  # told to the journal, if any, when the streak ends
        try:
            while current is not None and current.task is task and not current.is_barrier:
                args, kwargs = state.arguments(current)
                token = set_node_frame(current)
                first = first or token
                self._in_task += 1
                start = perf_counter()
                error = None
                returned = False
                try:
                    value = fn(*args, **kwargs) if kwargs else fn(*args)
                    returned = True
                    if awaits:
                        value = await value
                    else:  # a plain function held the loop: was it too long?
                        held = perf_counter() - start
                        if held >= blocking:
                            call.blocked(current, held)
                        if isawaitable(value):
                            value = await value
                except Exception as exc:  # noqa: BLE001 - the task's own failure, handled below
                    error = call.failed(exc, start, current, returned)
                except asyncio.CancelledError:
                    self._journal_now(current, "cancelled", 0, None, False)
                    raise
                finally:
                    self._in_task -= 1
                if error is None:
                    task_done(name, "success", (perf_counter() - start) * 1000)
                    state.done(current, value)
                    succeeded += 1
                else:
                    self._journal_now(current, "failed", error.attempts, error, False)
                    self._on_failure(current, error)
                self._ran += 1
                if not self._ran % _YIELD_EVERY:
                    await asyncio.sleep(0)
                if self._aborting:
                    return None
                current = state.pop()
                if current is not None and not self._spawn_pending and state.has_ready():
                    self._want_worker()
        finally:
            if first is not None:
                reset_frame(first)
            if succeeded and self.journal is not None:
                self.journal.counted(task, succeeded)
                self._counted = True
        return current

    def _journal_now(
        self,
        node: Node,
        status: str,
        attempts: int,
        error: TaskExecutionError | None,
        checkpoint: bool,
    ) -> None:
        """Tell the journal (if any) that ``node`` started and ended just now: a result
        taken from a checkpoint, or a straight-line call that did not succeed (only
        successes are counted there; every other outcome keeps a row of its own)."""
        journal = self.journal
        if journal is None:
            return
        now = time.time()
        journal.task_started(node, now)
        journal.task_ended(node, status, attempts, now, error, checkpoint)

    async def _run_node(self, node: Node) -> None:
        args, kwargs = self.state.arguments(node)
        self._in_task += 1
        try:
            # With no subscriber to tell, a cache hit whose key the memo knows is served
            # here, without a coroutine (CallRunner.lookup); anything else goes the long way.
            found = None if self._events is not None else self.calls.lookup(node.task, args, kwargs)
            if found is None:
                value = await self._call(node, args, kwargs or {})  # a dict of its own
            elif found[1] is not None:
                value = found[1][0]
            else:
                value = await self.calls.call_missed(node.task, node, found[0], args, kwargs)
        except TaskExecutionError as err:
            self._on_failure(node, err)
            return
        finally:
            self._in_task -= 1
        self.state.done(node, value)
        if self.state.has_ready():
            self._want_worker()

    async def _call(self, node: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        events = self._events
        if events is None:
            return (await self.calls.call(node.task, node, args, kwargs))[0]
        return (await call_with_events(self.calls, events, node.task, node, args, kwargs))[0]

    # -- with a run history: journal and checkpoints -----------------------------------------

    async def _run_recorded_node(self, node: Node) -> None:
        """:meth:`_run_node` that tells the journal and keeps a durable run's checkpoints."""
        key = self.expansions.key(node) if self.checkpoints is not None else ""
        if key and self._restore(node, key):
            return
        journal = self.journal
        args, kwargs = self.state.arguments(node)
        self._in_task += 1
        if journal is not None:
            journal.task_started(node, time.time())
        try:
            value, how = await self._call_how(node, args, kwargs)
        except TaskExecutionError as err:
            # A caught failure is the node's result: a durable run keeps it like one.
            saved = bool(key) and node.caught and self._save_caught(key, err)
            if journal is not None:
                journal.task_ended(node, "failed", err.attempts, time.time(), err, saved)
            self._on_failure(node, err)
            return
        except asyncio.CancelledError:
            if journal is not None:
                journal.task_ended(node, "cancelled", 0, time.time(), None, False)
            raise
        finally:
            self._in_task -= 1
        saved = value
        if key and self._fetch is not None:
            saved = await self._fetch(value)  # a durable run keeps its results, not handles
        self._record_success(node, key, value, how, saved)

    async def _call_how(
        self, node: Node, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int | str]:
        events = self._events
        bare = self._bare(node.task)
        if bare is not None:
            return await bare.run(node, args, kwargs), 1
        kwargs = kwargs or {}  # a dict of its own: a middleware may add to it
        if events is None:
            return await self.calls.call(node.task, node, args, kwargs)
        return await call_with_events(self.calls, events, node.task, node, args, kwargs)

    def _record_success(
        self, node: Node, key: str, value: Any, how: int | str, stored: Any
    ) -> None:
        """Checkpoint ``stored`` (before the node counts as done), journal, mark it done."""
        cps = self.checkpoints
        saved = bool(key) and cps is not None and cps.save(key, stored)
        if self.journal is not None:
            attempts = how if isinstance(how, int) else 0
            status = "succeeded" if attempts else "cached"
            self.journal.task_ended(node, status, attempts, time.time(), None, saved)
        self.state.done(node, value)
        if self.state.has_ready():
            self._want_worker()

    def _save_caught(self, key: str, err: TaskExecutionError) -> bool:
        assert self.checkpoints is not None
        return self.checkpoints.save(key, CaughtFailure(err))

    def _restore(self, node: Node, key: str) -> bool:
        """Take ``node``'s result from its checkpoint, if it has one; True if it did."""
        assert self.checkpoints is not None
        hit = self.checkpoints.load(key)
        if hit is None:
            return False
        if hit[0].__class__ is CaughtFailure:
            return node.caught and self._restore_caught(node, hit[0].error)
        self.state.started(node)  # its arguments are not needed: it will not run
        self._journal_now(node, "cached", 0, None, True)
        if self._events is not None:
            payload = self.calls.payload(node.task, node.id)
            self._events.emit("task_cached", {**payload, "attempt": 0, "source": "checkpoint"})
            done = {"attempt": 0, "duration_ms": 0.0, "cached": True}
            self._events.emit("task_succeeded", {**payload, **done})
        self.state.done(node, hit[0])
        if self.state.has_ready():
            self._want_worker()
        return True

    def _restore_caught(self, node: Node, err: TaskExecutionError) -> bool:
        """A caught failure checkpointed by the run being resumed: the same error again."""
        self.state.started(node)
        self._journal_now(node, "failed", err.attempts, err, True)
        if self._events is not None:
            payload = self.calls.payload(node.task, node.id, attempt=err.attempts)
            self._events.emit("task_failed", {**payload, "duration_ms": 0.0, "error": repr(err)})
        self._on_failure(node, err)
        return True

    def _on_failure(self, node: Node, err: TaskExecutionError) -> None:
        if node.caught and not node.is_barrier:
            # An element of fan_out(..., return_exceptions=True): its error is its result,
            # for its dependants, and the run goes on (docs/fan-out.md).
            self.state.catch(node, err)
            if self.state.has_ready():
                self._want_worker()
            return
        skipped = self.state.fail(node, err)
        self._errors.append(err)
        events = self._events
        journal = self.journal
        for s in skipped:
            skip = _skip_error(s, node, err)
            self.state.set_result(s, skip)
            if journal is not None:
                journal.task_ended(s, "skipped", 0, time.time(), skip, False)
            if events is not None and not s.is_barrier:
                payload = self.calls.payload(s.task, s.id, attempt=0, error=repr(skip))
                events.emit("task_skipped", {**payload, "upstream": node.id})
        if self.policy is FailurePolicy.FAIL_FAST:
            # Stop at once: workers already scheduled to resume must not start more tasks
            # before the TaskGroup gets round to cancelling them.
            self._aborting = True
            if self._first_error is None:
                self._first_error = err
            raise _Abort

    async def _expand(self, node: Node) -> None:
        source = self.state.results[node.deps[0]]
        self.state.started(node)
        if isinstance(source, Remote):  # a result left on a cluster: the items are needed here
            source = await localize(source)
        try:
            items = _items_of(node, source, self.state.max_dynamic_tasks)
        except TaskExecutionError as err:
            if self._events is not None:
                payload = self.calls.payload(node.task, node.id, attempt=1, error=repr(err))
                self._events.emit("task_failed", {**payload, "duration_ms": 0.0})
            if self.journal is not None:
                self.journal.task_ended(node, "failed", 1, time.time(), err, False)
            self._on_failure(node, err)
            return
        first = len(self.state.graph.nodes)
        self.expansions.add(node, first, len(items))
        if self.journal is not None:
            self.journal.expanded(node, first, len(items))
            self.journal.task_ended(node, "succeeded", 1, time.time(), None, False)
        children = self.state.expand(node, items)
        events = self._events
        if events is not None and events.wants("fanout_expanded"):
            payload = self.calls.payload(node.task, node.id, count=len(children))
            payload["nodes"] = [(child.id, child.task.name) for child in children]
            events.emit("fanout_expanded", payload)

    def _fill_skipped_barriers(self) -> None:
        """A fan-out whose child failed shows its partial list, errors in place."""
        for node, status in self.state.ended_nodes():
            if node.is_barrier and status == SKIPPED and node.children is not None:
                self.state.set_result(node, self.state.barrier_value(node))


def _never(task: TaskLike) -> None:
    return None


def _skip_error(skipped: Node, failed: Node, err: TaskExecutionError) -> UpstreamFailedError:
    name = skipped.display_name
    return UpstreamFailedError(
        name,
        err,
        0,
        message=f"task {name!r} ({skipped.id}) was skipped: upstream {failed.id} failed"
        " (dependants of a failure are skipped, not run with its error: docs/migrating.md)",
    )


def text_fan_out_hint(value: str | bytes | bytearray) -> str:
    """Why a fan-out over text is refused, and what to write instead."""
    kind = type(value).__name__
    return (
        f"the source is a {kind}, and mapping over it would make one call per character; "
        f"pass [value] for a single call, or list(value) if you do mean each character "
        "(docs/migrating.md)"
    )


def _items_of(node: Node, source: Any, limit: int) -> list[Any]:
    """The elements a dynamic fan-out maps over, or a TaskExecutionError for the barrier."""
    name = node.display_name
    if isinstance(source, str | bytes | bytearray):
        raise TaskExecutionError(name, TypeError(f"{name}: {text_fan_out_hint(source)}"), 1)
    try:
        items = list(source)
    except TypeError as exc:
        err = TypeError(
            f"{name}: the source result is a {type(source).__name__}, which is not iterable; "
            "fan_out needs a list, tuple, set, generator or other iterable"
        )
        raise TaskExecutionError(name, err, 1) from exc
    except Exception as exc:
        raise TaskExecutionError(name, exc, 1) from exc
    if len(items) > limit:
        err2 = FanOutLimitError(
            f"{name} would create {len(items)} tasks, more than max_dynamic_tasks={limit}; "
            "raise the limit (config key max_dynamic_tasks) or batch the items"
        )
        raise TaskExecutionError(name, err2, 1)
    return items
