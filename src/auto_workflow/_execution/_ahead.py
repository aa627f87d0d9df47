"""Submitting a task before its inputs are done: which nodes can go ahead (pure state).

A cluster holds the futures it was given and runs a task once its inputs exist, on its own.
So a run on a cluster need not wait, in the client, for a task's inputs to finish before it
submits the task: once every input is *done* or *promised* (an attempt of it was submitted
and its future exists), the task can be submitted with those futures as arguments and the
cluster pipelines it, as a program that submits a whole chain at once does. A task submitted
ahead is promised in turn, so a chain goes to the cluster whole.

:class:`Lookahead` keeps that bookkeeping for one run. Invariants:

* It only reads the run's :class:`~auto_workflow._core._graph.RunState`, which stays the
  truth: a node submitted ahead is still popped, started, run and ended by the runner like any
  other; its first attempt takes up the future submitted ahead (:meth:`Lookahead.take`), if
  that was built on the very inputs the attempt has (the caller checks), else submits anew.
* A node goes ahead at most once per promise of its inputs, and never while a submission of
  it ahead is still outstanding.
* A promise lasts from an attempt's submission until its outcome is known: :meth:`kept` (the
  state holds the handle from then on) or :meth:`revoke`, which also withdraws every
  submission ahead built on it, transitively; a retry promises again.
* Handles are held only while their outcome is unknown (a submission ahead also holds the
  inputs it got until it is taken up or withdrawn): nothing here keeps a result alive after
  its consumers have started.
* Every step is O(degree of the node): per node, a count of the inputs neither done nor
  promised, computed the first time one of its inputs is promised. An input that ends without
  a promise after that (a local task, say) leaves the count high: the node then waits for its
  inputs as usual. Going ahead is only ever an optimisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auto_workflow._core._graph import Node
from auto_workflow._core._state import DONE, PENDING, RELEASED, RunState

__all__ = ["Lookahead"]


class Lookahead:
    """Which nodes of one run can be submitted before their inputs are done.

    Args:
        state: The run's state (read only).
        eligible: Whether a node's attempts may be submitted ahead at all (a task that runs
            on the cluster, whose result is not fetched, cached or persisted).
    """

    __slots__ = ("_ahead", "_eligible", "_promised", "_state", "_waiting")

    def __init__(self, state: RunState, eligible: Callable[[Node], bool]) -> None:
        self._state = state
        self._eligible = eligible
        self._promised: dict[int, Any] = {}
        """Node index -> the handle of its submitted attempt, while the outcome is unknown."""
        self._ahead: dict[int, tuple[Any, ...]] = {}
        """Nodes submitted ahead, not taken up by an attempt yet -> the inputs they got."""
        self._waiting: dict[int, int] = {}
        """Node index -> how many of its inputs are neither done nor promised."""

    def node(self, node_id: str) -> Node | None:
        """The node of the run with id ``node_id`` (an attempt's ``context.node_id``)."""
        return self._state.graph.find(node_id)

    def promise(self, node: Node, handle: Any) -> list[tuple[Node, dict[int, Any]]]:
        """An attempt of ``node`` was submitted; ``handle`` stands for its result.

        Returns the nodes that can now be submitted ahead, each with its inputs (node index
        -> the input's result or handle), for :func:`~auto_workflow._core._graph.resolve`.
        """
        index = node.index
        if index in self._promised:
            return []  # promised already (until its outcome withdraws it)
        self._promised[index] = handle
        self._waiting.pop(index, None)  # its own count no longer matters: it was submitted
        nodes, waiting = self._state.graph.nodes, self._waiting
        ready: list[tuple[Node, dict[int, Any]]] = []
        for d in self._state.dependents(index):
            dependant = nodes[d]
            if dependant.is_barrier:
                continue  # a fan-out needs its source's items here, not a future
            left = waiting.get(d)
            left = self._count(dependant) if left is None else left - 1
            waiting[d] = left
            if left == 0:
                inputs = self._inputs(dependant)
                if inputs is not None:
                    ready.append((dependant, inputs))
        return ready

    def went_ahead(
        self, node: Node, handle: Any, inputs: dict[int, Any]
    ) -> list[tuple[Node, dict[int, Any]]]:
        """``node`` was submitted ahead with ``inputs`` as ``handle``: it is promised (and
        what that unblocks is returned, as by :meth:`promise`)."""
        self._ahead[node.index] = tuple(inputs.values())
        return self.promise(node, handle)

    def take(self, node: Node) -> tuple[Any, tuple[Any, ...]] | None:
        """For ``node``'s first attempt: the handle it was submitted ahead as, and the input
        values (results or handles) that submission got; ``None`` if it did not go ahead.

        The node stays promised under that handle; if the attempt finds its inputs differ,
        it revokes the node (see :meth:`revoke`) and submits afresh.
        """
        inputs = self._ahead.pop(node.index, None)
        if inputs is None:
            return None
        return self._promised[node.index], inputs

    def kept(self, node: Node) -> None:
        """``node``'s attempt succeeded: the state holds its handle from now on."""
        self._promised.pop(node.index, None)

    def revoke(self, node: Node) -> list[Any]:
        """``node``'s attempt failed or was abandoned: withdraw its promise.

        Returns the handles of the submissions ahead built on it (transitively), which are
        withdrawn too: the caller releases them so they never run. Their inputs count as
        not promised again, so a retry's promise sends them ahead once more.
        """
        promised, ahead, waiting = self._promised, self._ahead, self._waiting
        withdrawn: list[Any] = []
        stack = [node.index]
        while stack:
            index = stack.pop()
            if promised.pop(index, None) is None:
                continue
            for d in self._state.dependents(index):
                if d in waiting:
                    waiting[d] += 1
                if ahead.pop(d, None) is not None:
                    withdrawn.append(promised[d])
                    stack.append(d)
        return withdrawn

    def pending(self) -> list[Any]:
        """The handles submitted ahead and not taken up yet (for the end of a run)."""
        return [self._promised[i] for i in self._ahead]

    def _count(self, node: Node) -> int:
        """How many of ``node``'s inputs are neither done nor promised now."""
        promised, status = self._promised, self._state.status
        return sum(1 for d in node.deps if d not in promised and status(d) != DONE)

    def _inputs(self, node: Node) -> dict[int, Any] | None:
        """``node``'s inputs if it can go ahead now (pending, eligible, all inputs there)."""
        state = self._state
        if state.status(node.index) != PENDING or node.index in self._promised:
            return None  # ended, ready, running, or submitted (ahead) already
        if not self._eligible(node):
            return None
        promised, results = self._promised, state.results
        inputs: dict[int, Any] = {}
        for d in node.deps:
            value = promised.get(d, RELEASED)
            if value is RELEASED and state.status(d) == DONE:
                value = results[d]
            if value is RELEASED:
                return None  # an input settled but not yet recorded: it goes as usual
            inputs[d] = value
        return inputs
