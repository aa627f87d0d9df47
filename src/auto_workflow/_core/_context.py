"""The run context visible to task code through ``get_context()``.

One context variable holds the current :class:`RunContext`. It is set with a token and reset
in ``finally`` (never left behind), copied into worker threads with the rest of the context,
and shipped to process workers as a small picklable snapshot.

What the engine sets per attempt is a cheap frame that ``get_context()`` expands: a
:class:`TaskFrame`, or for the first attempt of a call in a flow run the graph node itself
(with the run bound once, in a second variable, by :func:`bind_run`), so a call costs no
frame object at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow.exceptions import ContextError

__all__ = [
    "NodeFrame",
    "RunContext",
    "TaskFrame",
    "bind_run",
    "get_context",
    "reset_context",
    "set_context",
    "set_node_frame",
    "unbind_run",
    "use_context",
]

_logger = logging.getLogger(__name__)


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

    def __reduce__(self) -> tuple[Any, ...]:
        # Shipped to a worker process, the context takes the run's artifact store along
        # only if the store can travel; one that cannot (it holds a client, a lock...) is
        # left behind and the worker falls back to its own default store.
        store = self.artifact_store
        if store is not None and not _picklable(store):
            store = None
        fields = (self.run_id, self.flow_name, self.params, self.task_name, self.node_id)
        return (_rebuild, (*fields, self.attempt, store))

    def for_attempt(self, task_name: str, node_id: str, attempt: int) -> RunContext:
        """The same run, seen from one attempt of one task."""
        return replace(self, task_name=task_name, node_id=node_id, attempt=attempt)


def _rebuild(
    run_id: str,
    flow_name: str | None,
    params: Mapping[str, Any],
    task_name: str | None,
    node_id: str | None,
    attempt: int,
    artifact_store: Any,
) -> RunContext:
    return RunContext(
        run_id=run_id,
        flow_name=flow_name,
        params=params,
        task_name=task_name,
        node_id=node_id,
        attempt=attempt,
        artifact_store=artifact_store,
    )


def _picklable(value: object) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:  # noqa: BLE001 - a user's object: any failure means "cannot travel"
        _logger.debug("%r cannot be pickled; worker processes use their own default", value)
        return False
    return True


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


class NodeFrame(Protocol):
    """A graph node standing as its own frame (see :func:`set_node_frame`)."""

    @property
    def id(self) -> str: ...

    @property
    def task(self) -> Any: ...


Frame = RunContext | TaskFrame | NodeFrame | None

_current: ContextVar[Frame] = ContextVar("auto_workflow_run_context", default=None)

_run: ContextVar[RunContext | None] = ContextVar("auto_workflow_run", default=None)
"""The run whose nodes ``_current`` may hold (bound once per run by its runner)."""


def get_context() -> RunContext:
    """Return the context of the run this code belongs to.

    Works inside a task in every ``run_in`` mode and inside a flow body while its graph is
    being built (so ``params`` can shape the graph).

    Raises:
        ContextError: when called outside a flow run or task execution (also a
            ``RuntimeError``, as in the public ``auto-workflow`` package).
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
    if ctx is None or isinstance(ctx, RunContext):
        return ctx
    if isinstance(ctx, TaskFrame):
        return ctx.materialize()
    base = _run.get()
    return None if base is None else base.for_attempt(ctx.task.name, ctx.id, 1)


ContextToken = Token[Frame]


def set_frame(frame: TaskFrame) -> ContextToken:
    """Set the current context to ``frame``; reset with :func:`reset_frame`."""
    return _current.set(frame)


# The two below run once per task of a run: the context variable's own methods, so they
# cost no Python call of their own.

set_node_frame: Final[Callable[[Frame], ContextToken]] = _current.set
"""``set_node_frame(node)``: make the first attempt of ``node`` (of the run :func:`bind_run`
bound) the current context; the node itself is the frame, so an attempt makes no object."""

reset_frame: Final[Callable[[ContextToken], None]] = _current.reset
"""``reset_frame(token)``: undo :func:`set_frame` or :func:`set_node_frame`."""


def bind_run(base: RunContext) -> Token[RunContext | None]:
    """Bind the run whose nodes :func:`set_node_frame` sets, from now on in this context
    (the tasks a runner starts inherit it); undo with :func:`unbind_run`."""
    return _run.set(base)


def unbind_run(token: Token[RunContext | None]) -> None:
    """Undo :func:`bind_run`."""
    _run.reset(token)


def set_context(ctx: RunContext) -> ContextToken:
    """Make ``ctx`` the current run context (what :func:`get_context` returns) from now on
    in this context; undo it with ``reset_context(token)``. Prefer :func:`use_context`,
    which undoes it for you.

    Raises:
        TypeError: ``ctx`` is not a :class:`RunContext`.
    """
    if not isinstance(ctx, RunContext):
        raise TypeError(f"set_context() takes a RunContext; got {type(ctx).__name__}")
    return _current.set(ctx)


def reset_context(token: ContextToken) -> None:
    """Undo the :func:`set_context` that returned ``token``."""
    _current.reset(token)


@contextlib.contextmanager
def use_context(ctx: RunContext) -> Iterator[RunContext]:
    """Make ``ctx`` the current run context for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
