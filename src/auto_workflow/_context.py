"""The run context visible to task code through ``get_context()``.

One context variable holds the current :class:`RunContext`. It is set with a token and reset
in ``finally`` (never left behind), copied into worker threads with the rest of the context,
and shipped to process workers as a small picklable snapshot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from typing import Any

from auto_workflow.exceptions import ContextError

__all__ = ["RunContext", "TaskFrame", "get_context", "use_context"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """What a task (or a flow body being built) can learn about the run it belongs to.

    Attributes:
        run_id: Unique id of this run (a direct task call is a run of its own).
        flow_name: The flow's name, or ``None`` for a direct task call.
        params: The ``params`` mapping given to ``Flow.run``.
        task_name: The running task's name; ``None`` while the flow body is being built.
        node_id: The running task's node id in the graph; ``None`` while building.
        attempt: The current attempt, starting at 1; 0 while building.
        artifact_store: The run's artifact store (what ``artifacts.get_store()`` returns
            inside the run).
    """

    run_id: str
    flow_name: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    task_name: str | None = None
    node_id: str | None = None
    attempt: int = 0
    artifact_store: Any = field(default=None, repr=False, compare=False)

    @property
    def logger(self) -> logging.Logger:
        """A logger under ``auto_workflow`` named for the flow and task."""
        name = "auto_workflow.run"
        if self.flow_name:
            name += f".{self.flow_name}"
        if self.task_name:
            name += f".{self.task_name}"
        return logging.getLogger(name)

    def for_attempt(self, task_name: str, node_id: str, attempt: int) -> RunContext:
        """The same run, seen from one attempt of one task."""
        return replace(self, task_name=task_name, node_id=node_id, attempt=attempt)


class TaskFrame:
    """The cheap stand-in the engine sets per attempt; ``get_context()`` expands it.

    Building a full :class:`RunContext` for every attempt would cost more than running a
    trivial task, and most tasks never ask for it.
    """

    __slots__ = ("attempt", "base", "node", "task_name")

    def __init__(self, base: RunContext, task_name: str, node: Any, attempt: int) -> None:
        self.base = base
        self.task_name = task_name
        self.node = node  # a node id, or an object with an ``id`` attribute
        self.attempt = attempt

    def materialize(self) -> RunContext:
        """The full context for this attempt."""
        node = self.node
        node_id = node if isinstance(node, str) else node.id
        return self.base.for_attempt(self.task_name, node_id, self.attempt)


_current: ContextVar[RunContext | TaskFrame | None] = ContextVar(
    "auto_workflow_run_context", default=None
)


def get_context() -> RunContext:
    """Return the context of the run this code belongs to.

    Works inside a task in every ``run_in`` mode and inside a flow body while its graph is
    being built (so ``params`` can shape the graph).

    Raises:
        ContextError: when called outside a flow run or task execution.
    """
    ctx = current_context()
    if ctx is None:
        raise ContextError(
            "get_context() was called outside a run: call it inside a @task function or "
            "a @flow body while the flow runs"
        )
    return ctx


def current_context() -> RunContext | None:
    """The current context, or ``None`` outside a run (never raises)."""
    ctx = _current.get()
    if isinstance(ctx, TaskFrame):
        return ctx.materialize()
    return ctx


def set_frame(frame: TaskFrame) -> Token[RunContext | TaskFrame | None]:
    """Set the current context to ``frame``; reset with :func:`reset_frame`."""
    return _current.set(frame)


def reset_frame(token: Token[RunContext | TaskFrame | None]) -> None:
    """Undo :func:`set_frame`."""
    _current.reset(token)


@contextlib.contextmanager
def use_context(ctx: RunContext) -> Iterator[RunContext]:
    """Make ``ctx`` the current run context for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
