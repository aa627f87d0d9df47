"""The async shell around the pure graph state.

:class:`FlowRunner` drives a :class:`RunState` with a set of worker coroutines inside one
``asyncio.TaskGroup``. A worker takes the best ready node, runs it by awaiting it directly
(no task per node), reports the outcome to the state and takes the next. A new worker is
started only when every worker is suspended inside a task while ready nodes wait, so
trivial tasks run back to back on one worker and I/O-bound ones fan out up to
``max_concurrency`` workers: the number of workers *is* the number of running tasks.

Invariants: the state is touched only from the loop thread; nothing here recurses on graph
depth; every pool a run starts is closed when the run ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

from auto_workflow._core._graph import SKIPPED, Graph, Node, RunState, resolve
from auto_workflow._core._model import FailurePolicy
from auto_workflow._execution._placement import Remote, localize
from auto_workflow.exceptions import (
    AggregateTaskError,
    FanOutLimitError,
    TaskExecutionError,
    UpstreamFailedError,
)

if TYPE_CHECKING:
    pass
from auto_workflow._core._calls import CallRunner, call_with_events

__all__ = ["FlowRunner", "text_fan_out_hint"]

logger = logging.getLogger(__name__)

_YIELD_EVERY = 64
"""A worker running only non-suspending tasks yields to the loop this often."""


class _Abort(Exception):
    """Raised by a worker to make the TaskGroup cancel the others (fail-fast)."""


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
    ) -> None:
        self.state = RunState(graph, max_dynamic_tasks=max_dynamic_tasks)
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

    async def run(self) -> RunState:
        """Run every node; raise per the failure policy."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.state.has_ready():
                    self._start_worker()
        except* _Abort:
            pass
        finally:
            self._tg = None
        if self._first_error is not None:
            raise self._first_error
        if not self.state.finished:
            raise RuntimeError("auto_workflow internal error: the scheduler stalled")
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
        state = self.state
        ran = 0
        try:
            while not self._aborting:
                batch = state.pop_ready(1)
                if not batch:
                    return
                node = batch[0]
                if node.is_barrier:
                    await self._expand(node)
                    continue
                if state.has_ready():
                    self._want_worker()
                await self._run_node(node)
                ran += 1
                if ran % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            self._workers -= 1

    async def _run_node(self, node: Node) -> None:
        results = self.state.results
        args, kwargs = node.args, node.kwargs
        if node.needs_resolve:
            args = resolve(args, results)
            kwargs = resolve(kwargs, results)
        self._in_task += 1
        try:
            value = await self._call(node, args, kwargs)
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
        return await call_with_events(self.calls, events, node.task, node.id, args, kwargs)

    def _on_failure(self, node: Node, err: TaskExecutionError) -> None:
        skipped = self.state.fail(node, err)
        self._errors.append(err)
        events = self._events
        for s in skipped:
            skip = _skip_error(s, node, err)
            self.state.set_result(s, skip)
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
        if isinstance(source, Remote):  # a result left on a cluster: the items are needed here
            source = await localize(source)
        try:
            items = _items_of(node, source, self.state.max_dynamic_tasks)
        except TaskExecutionError as err:
            if self._events is not None:
                payload = self.calls.payload(node.task, node.id, attempt=1, error=repr(err))
                self._events.emit("task_failed", {**payload, "duration_ms": 0.0})
            self._on_failure(node, err)
            return
        self.state.expand(node, items)

    def _fill_skipped_barriers(self) -> None:
        """A fan-out whose child failed shows its partial list, errors in place."""
        for node, status in self.state.ended_nodes():
            if node.is_barrier and status == SKIPPED and node.children is not None:
                self.state.set_result(node, self.state.barrier_value(node))


def _skip_error(skipped: Node, failed: Node, err: TaskExecutionError) -> UpstreamFailedError:
    name = skipped.display_name
    return UpstreamFailedError(
        name,
        err,
        0,
        message=f"task {name!r} ({skipped.id}) was skipped: upstream {failed.id} failed",
    )


def text_fan_out_hint(value: str | bytes | bytearray) -> str:
    """Why a fan-out over text is refused, and what to write instead."""
    kind = type(value).__name__
    return (
        f"the source is a {kind}, and mapping over it would make one call per character; "
        f"pass [value] for a single call, or list(value) if you do mean each character"
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
