"""Frozen records of past runs, as the run history stores and returns them.

These are the contract between the engine (which reports what happens), the store (which
writes and reads it), and the views (CLI tables, the HTML report, the web UI). They depend
on the standard library only.

Invariants: records are immutable; times are Unix epoch seconds (floats); node ids are the
engine's stable ids (``<task name>:<build index>``, ``fanout:<index>`` for a barrier), and a
task's ``index`` is its build-order position, unique within a run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AttemptRecord",
    "ErrorRecord",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "TaskRecord",
    "TaskStatus",
]


class RunStatus(enum.StrEnum):
    """How a run stands (or ended)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    """The process died while the run was ``running`` (detected when the history is read)."""


class TaskStatus(enum.StrEnum):
    """How one task call stands (or ended)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CACHED = "cached"
    """Its result was reused: a cache hit, an identical call in flight, or a checkpoint."""
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRecord:
    """A recorded exception: its type's qualified name, its message, its traceback text."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One attempt of one task call (``number`` counts from 1)."""

    number: int
    started_at: float
    ended_at: float | None = None
    error: ErrorRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """One task call of a run (or one dynamic fan-out barrier, ``kind == "fanout"``).

    ``upstream`` lists the node ids this node waited for. A child of a dynamic fan-out has
    ``fanout`` set to its barrier's node id and ``item`` to its position in the source list.

    ``kind == "summary"``: one row standing for ``item`` successful single-attempt calls of
    ``task`` in a large run that were counted rather than itemised (docs/history.md);
    ``started_at``/``ended_at`` span them, ``status`` is theirs.
    """

    node: str
    task: str
    index: int
    status: TaskStatus
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: ErrorRecord | None = None
    checkpoint: bool = False
    kind: str = "task"
    upstream: tuple[str, ...] = ()
    fanout: str | None = None
    item: int | None = None
    attempt_log: tuple[AttemptRecord, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the end, when both are known."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """One row of a runs list: a run without its tasks, with counts per task status."""

    run_id: str
    flow: str
    status: RunStatus
    started_at: float
    ended_at: float | None = None
    target: str | None = None
    durable: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds the run took, or ``None`` while it runs."""
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A whole recorded run: what was asked, how it went, and each task call.

    ``params`` holds the run's parameters as recorded: JSON values where they serialise,
    else their ``repr`` (secrets redacted). ``args``/``kwargs`` are the flow function's
    arguments in the same form. ``tasks`` are in build order.
    """

    run_id: str
    flow: str
    status: RunStatus
    started_at: float
    ended_at: float | None = None
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    durable: bool = False
    error: ErrorRecord | None = None
    tasks: tuple[TaskRecord, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds the run took, or ``None`` while it runs."""
        return None if self.ended_at is None else self.ended_at - self.started_at

    def counts(self) -> dict[str, int]:
        """Task calls per status (fan-out barriers not counted; a summary row counts as the
        calls it stands for)."""
        out: dict[str, int] = {}
        for t in self.tasks:
            if t.kind != "fanout":
                weight = t.item or 0 if t.kind == "summary" else 1
                out[t.status.value] = out.get(t.status.value, 0) + weight
        return out
