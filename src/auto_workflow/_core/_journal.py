"""The core's seam to a run history: what the engine reports as a run goes, and where a
durable run's checkpoints come from. The core defines these protocols; ``_history``
implements them and the public faces install it, so the core never imports the history.

Invariants: every journal call on the scheduler's path is O(1) and must not raise (an
implementation catches its own faults: history never fails a run); a checkpoint is saved
before the node counts as done, and a node whose checkpoint loads is not run again.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import os

    from auto_workflow._core._graph import Graph, Node, TaskLike
    from auto_workflow._core._state import RunState

__all__ = [
    "Checkpoints",
    "Expansions",
    "HistoryFactory",
    "PriorRun",
    "RunHistory",
    "RunJournal",
    "RunSpec",
    "graph_signature",
    "install_history",
    "installed_history",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """What one run was asked to do, as the history records it."""

    run_id: str
    flow: str
    target: str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    params: dict[str, Any]
    durable: bool
    options: dict[str, Any] = field(default_factory=dict)


class RunJournal(Protocol):
    """One run's side of the history. Node-level calls are cheap and never raise."""

    def task_started(self, node: Node, at: float) -> None: ...

    def task_ended(
        self,
        node: Node,
        status: str,
        attempts: int,
        at: float,
        error: BaseException | None,
        checkpoint: bool,
    ) -> None: ...

    def attempt_started(self, node: object, number: int, at: float) -> None: ...

    def attempt_failed(
        self, node: object, number: int, started: float, ended: float, error: BaseException
    ) -> None: ...

    def expanded(self, barrier: Node, first: int, count: int) -> None: ...

    def counts(self, task: TaskLike) -> bool:
        """Whether the journal only counts ``task``'s calls that succeed at once from now
        on: the runner may then make them without telling it of each, say how many with
        :meth:`counted`, and still tell it of every other outcome (a failure, a
        cancellation). The journal learns where they ran from the run's final state
        (:meth:`tally`)."""
        ...

    def counted(self, task: TaskLike, calls: int) -> None:
        """``calls`` more calls of ``task`` that :meth:`counts` let go by succeeded."""
        ...

    def tally(self, state: RunState) -> None:
        """The run is over: turn what :meth:`counted` heard into rows, using ``state`` to
        tell which fan-out each call belonged to. Called before :meth:`finish`."""
        ...

    def finish(self, status: str, error: BaseException | None, at: float) -> None: ...


class Checkpoints(Protocol):
    """A durable run's saved results, by stable node key."""

    def load(self, key: str) -> tuple[Any] | None: ...

    def save(self, key: str, value: Any) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorRun:
    """What the history holds under a run id that is asked for again."""

    flow: str
    status: str
    durable: bool
    signature: str | None = None
    """Digest of the recorded graph's shape (see :func:`graph_signature`)."""
    shape: Callable[[], list[str] | None] | None = None
    """Reads the recorded shape lines, to say where a changed graph differs."""
    call: Callable[[], RunSpec | None] | None = None
    """Reads the recorded call (arguments, parameters, options) of a durable run."""


class RunHistory(Protocol):
    """Looks up runs by id, opens a journal (and a durable run's checkpoints) per run, and
    writes the report of a recorded run (``flow.run(..., report=path)``)."""

    def lookup(self, run_id: str) -> PriorRun | None: ...

    def begin(
        self, spec: RunSpec, graph: Graph, shape: list[str] | None, resumed: bool
    ) -> tuple[RunJournal, Checkpoints | None]: ...

    def write_report(self, run_id: str, path: str | os.PathLike[str]) -> None: ...


HistoryFactory = Callable[[], "RunHistory | None"]

_INSTALLED: list[HistoryFactory] = []


def install_history(factory: HistoryFactory) -> None:
    """Make ``factory`` the source of every run's history (the public faces call this)."""
    _INSTALLED[:] = [factory]


def installed_history() -> RunHistory | None:
    """The run history to record into now, or ``None`` (none installed, or it is off)."""
    if not _INSTALLED:
        return None
    try:
        return _INSTALLED[0]()
    except Exception:  # a plugin boundary: a broken history never stops a run
        logging.getLogger(__name__).warning("the run history is unavailable", exc_info=True)
        return None


class Expansions:
    """Which dynamic fan-out made each child node: stable names for children.

    A child's build index depends on when its fan-out expanded (timing may differ between
    runs); its barrier's index and its position in the source list do not. Expansions
    append increasing index ranges, so a lookup is a bisect.
    """

    __slots__ = ("_barriers", "_counts", "_firsts", "built")

    def __init__(self, built: int) -> None:
        self.built = built
        self._firsts: list[int] = []
        self._counts: list[int] = []
        self._barriers: list[Node] = []

    def add(self, barrier: Node, first: int, count: int) -> None:
        """Record that ``barrier``'s ``count`` children start at index ``first``."""
        self._firsts.append(first)
        self._counts.append(count)
        self._barriers.append(barrier)

    def origin(self, index: int) -> tuple[Node, int] | None:
        """``(barrier, item position)`` of child ``index``; ``None`` for a build-time node."""
        if index < self.built or not self._firsts:
            return None
        at = bisect.bisect_right(self._firsts, index) - 1
        return self._barriers[at], index - self._firsts[at]

    def span(self, index: int) -> tuple[int, int, Node | None]:
        """``(first, stop, barrier)``: the index range ``index`` was made in, the build's
        (barrier ``None``) or one expansion's; a lone ``index`` if no expansion made it."""
        if index < self.built:
            return 0, self.built, None
        at = bisect.bisect_right(self._firsts, index) - 1
        if at >= 0 and index < self._firsts[at] + self._counts[at]:
            first = self._firsts[at]
            return first, first + self._counts[at], self._barriers[at]
        return index, index + 1, None

    def ranges(self) -> Iterator[tuple[Node, int, int]]:
        """``(barrier, first, count)`` of every expansion, in the order they were made."""
        return zip(self._barriers, self._firsts, self._counts, strict=True)

    def key(self, node: Node) -> str:
        """The node's stable key: its id, or ``<barrier id>[<item>]`` for a child."""
        found = self.origin(node.index)
        if found is None:
            return node.id
        barrier, item = found
        return f"{barrier.id}[{item}]"


def graph_signature(graph: Graph) -> list[str]:
    """One line per build-time node: its id and its dependencies' indices, in build order.

    Two builds of a flow have the same shape exactly when these lines are equal.
    """
    return [
        f"{node.id} <- {','.join(map(str, node.deps))}" + (" *" if node.is_barrier else "")
        for node in graph.nodes
    ]
