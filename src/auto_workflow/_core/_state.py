"""The state of one run of a graph: pure data, no asyncio, no clock.

:class:`RunState` drives one run of a graph. Invariants:

* every step costs O(degree of the node) (plus O(log n) for the ready heap): completion
  walks the node's own dependents, never the whole graph, and no step recurses on depth;
* a node is queued once, when its last dependency finished;
* ready nodes are taken by (-priority, build order): a node that becomes ready after every
  node queued so far (the usual case) is appended to a sorted deque in O(1), any other
  goes to a heap, and the next is the smaller of the two heads; a node whose fan-out group
  is at its ``max_concurrency`` waits in that group's own heap and is queued again when a
  sibling finishes;
* a node ends exactly once: ``DONE``, ``FAILED`` or ``SKIPPED``;
* a *caught* node (an element of ``fan_out(..., return_exceptions=True)``) that fails is
  :meth:`RunState.catch`-ed: it ends ``FAILED`` with its error as its result, and its
  dependants run with that error in its place instead of being skipped;
* with ``keep`` given, a result is released (its slot holds :data:`RELEASED`) as soon as
  its last consumer has started (:meth:`RunState.started`), or when it is done if it has
  none, unless its node is in ``keep`` (the flow's outputs): each node counts the
  consumers it still waits for, so releasing is O(degree) too. A fan-out's children are
  consumed by their barrier when it ends with their list; a failed or skipped node's
  position is never released (the failure policy reads it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from heapq import heapify, heappop, heappush
from itertools import pairwise, repeat
from typing import Any, Final

from auto_workflow._core._graph import (
    NO_KWARGS,
    Barrier,
    CaughtNode,
    Graph,
    GroupedNode,
    Node,
    resolve,
    resolve_args,
)
from auto_workflow.exceptions import CycleDetectedError, InvalidGraphError

__all__ = ["DONE", "FAILED", "PENDING", "READY", "RELEASED", "RUNNING", "SKIPPED", "RunState"]

# Heap keys pack (-priority, index) into one int: ints compare faster than tuples.
_INDEX_BITS: Final = 40
_INDEX_MASK: Final = (1 << _INDEX_BITS) - 1

PENDING: Final = 0
READY: Final = 1
RUNNING: Final = 2
DONE: Final = 3
FAILED: Final = 4
SKIPPED: Final = 5
_ENDED: Final = (DONE, FAILED, SKIPPED)


class _Released:
    """The type of :data:`RELEASED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<released result>"


RELEASED: Final = _Released()
"""What a result's slot holds once nothing in the run needs the result any more."""


def _check_orderable(graph: Graph) -> None:
    """Raise CycleDetectedError unless the graph's nodes can be put in dependency order
    (Kahn's algorithm; only for graphs not built in order, which a flow body never makes)."""
    nodes = graph.nodes
    if any(d < 0 for n in nodes for d in n.deps):
        raise InvalidGraphError(f"flow {graph.name!r}: a node has a negative dependency index")
    remaining = [len(n.deps) for n in nodes]
    dependents: list[list[int]] = [[] for _ in nodes]
    for node in nodes:
        for d in node.deps:
            dependents[d].append(node.index)
    ready = [n.index for n in nodes if not n.deps]
    ordered = 0
    while ready:
        ordered += 1
        for dep in dependents[ready.pop()]:
            remaining[dep] -= 1
            if remaining[dep] == 0:
                ready.append(dep)
    if ordered < len(nodes):
        stuck = [nodes[i].id for i, left in enumerate(remaining) if left][:10]
        raise CycleDetectedError(
            f"flow {graph.name!r}: its graph cannot be ordered, nodes depend on each other "
            f"in a cycle (among: {', '.join(stuck)})"
        )


_Dependents = int | tuple[int, int] | list[int] | None
"""A node's dependents: ``None`` (none), one index, a pair, or a list of three or more. Most
nodes have none, one or two: an int costs no container of its own, and a pair of ints is a
tuple the garbage collector stops tracking (a list it would walk in every collection)."""


def _heap_key(node: Node) -> int:
    """(-priority, index) packed into one int; at priority 0 the index itself (no new int)."""
    priority = node.task.options.priority
    return (-priority << _INDEX_BITS) | node.index if priority else node.index


class RunState:
    """The state of one run of a graph. Synchronous and loop-free; see the module docstring.

    Per node it holds a few list slots (result, dependents, counters) and one status byte.
    """

    __slots__ = (
        "_consumers",
        "_dependents",
        "_heap",
        "_keep",
        "_queue",
        "_remaining",
        "_status",
        "graph",
        "max_dynamic_tasks",
        "results",
        "unfinished",
    )

    def __init__(
        self,
        graph: Graph,
        *,
        max_dynamic_tasks: int = 100_000,
        keep: Iterable[int] | None = None,
    ) -> None:
        """``keep``: the nodes whose results must outlive the run (the flow's outputs);
        every other result is released once consumed. ``None``: keep every result."""
        n = len(graph.nodes)
        self.graph = graph
        self.max_dynamic_tasks = max_dynamic_tasks
        self._keep: frozenset[int] | None = None if keep is None else frozenset(keep)
        self.results: list[Any] = [None] * n
        self.unfinished = n
        self._status = bytearray(n)
        self._remaining = [0] * n
        self._dependents: list[_Dependents] = [None] * n
        self._consumers = [0] * n
        """Per node: how many of its dependants have not started yet."""
        # The ready nodes' keys: a deque of keys in increasing order (nodes that become
        # ready in build order, the usual case: O(1) each), and a heap of the others;
        # the next is the smaller of the two heads.
        self._heap: list[int] = []
        self._queue: deque[int] = deque()
        try:
            backwards = self._link(graph.nodes)
        except IndexError:
            raise InvalidGraphError(
                f"flow {graph.name!r}: a node depends on a node the graph does not have"
            ) from None
        if not backwards:
            _check_orderable(graph)
        if all(a < b for a, b in pairwise(self._heap)):
            self._queue, self._heap = deque(self._heap), []
        else:
            heapify(self._heap)

    def _link(self, nodes: list[Node]) -> bool:
        """Count every node's dependencies and dependants, list the ready ones; True if every
        dependency was built before its dependant (then no cycle is possible)."""
        remaining, dependents, consumers = self._remaining, self._dependents, self._consumers
        heap, status = self._heap, self._status
        backwards = True
        for node in nodes:
            index, deps = node.index, node.deps
            if not deps:
                status[index] = READY
                heap.append(_heap_key(node))
                continue
            remaining[index] = len(deps)
            for d in deps:
                consumers[d] += 1
                after = dependents[d]
                if after is None:
                    dependents[d] = index
                elif isinstance(after, int):
                    dependents[d] = (after, index)
                elif isinstance(after, tuple):
                    dependents[d] = [*after, index]
                else:
                    after.append(index)
                backwards = backwards and 0 <= d < index
        return backwards

    # -- queries ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once every node has ended."""
        return self.unfinished == 0

    def has_ready(self) -> bool:
        """True if :meth:`pop_ready` may return something now."""
        return bool(self._queue or self._heap)

    def count_done(self, first: int, stop: int) -> int:
        """How many of the nodes ``first`` to ``stop - 1`` ended ``DONE`` (one C-level
        count over the status bytes: a range of a fan-out costs no loop)."""
        return self._status.count(DONE, first, stop)

    def status(self, index: int) -> int:
        """The status code of node ``index``."""
        return self._status[index]

    def dependents(self, index: int) -> tuple[int, ...] | list[int]:
        """The indices of the nodes that depend on node ``index``."""
        after = self._dependents[index]
        if after is None:
            return ()
        return (after,) if isinstance(after, int) else after

    # -- transitions -----------------------------------------------------------------------

    def _push(self, node: Node) -> None:
        self._status[node.index] = READY
        self._enqueue(_heap_key(node))

    def _enqueue(self, key: int) -> None:
        queue = self._queue
        if not queue or key > queue[-1]:
            queue.append(key)
        else:
            heappush(self._heap, key)

    def pop(self) -> Node | None:
        """The best ready node, marked running (a barrier: returned for expansion), or
        ``None`` when nothing is ready. Highest priority first, ties in build order."""
        heap, queue, nodes = self._heap, self._queue, self.graph.nodes
        while True:
            if heap and (not queue or heap[0] < queue[0]):
                key = heappop(heap)
            elif queue:
                key = queue.popleft()
            else:
                return None
            node = nodes[key & _INDEX_MASK]
            group = node.group
            if group is not None and not node.is_barrier:
                if group.running >= group.limit:
                    heappush(group.waiting, key)
                    continue
                group.running += 1
            self._status[key & _INDEX_MASK] = RUNNING
            return node
        return None

    def pop_ready(self, n: int) -> list[Node]:
        """Up to ``n`` ready nodes, as :meth:`pop` gives them."""
        out: list[Node] = []
        while len(out) < n:
            node = self.pop()
            if node is None:
                break
            out.append(node)
        return out

    def _leave_group(self, node: Node) -> None:
        group = node.group
        if group is not None and not node.is_barrier:
            group.running -= 1
            if group.waiting:
                self._enqueue(heappop(group.waiting))

    def done(self, node: Node, value: Any) -> bool:
        """Record ``node``'s result; dependents whose last dependency this was become ready.

        Returns whether any node is ready now (what :meth:`has_ready` would say).
        """
        if node.group is not None:
            self._leave_group(node)
        index = node.index
        status = self._status
        status[index] = DONE
        self.results[index] = value
        self.unfinished -= 1
        after = self._dependents[index]
        remaining = self._remaining
        if isinstance(after, int):  # one dependant: no tuple made to loop over
            left = remaining[after] - 1
            remaining[after] = left
            if not left and status[after] < DONE:  # its last dependency (and not skipped)
                self._ready(after)
        elif after is not None:
            for d in after:
                left = remaining[d] - 1
                remaining[d] = left
                if not left and status[d] < DONE:
                    self._ready(d)
        keep = self._keep
        if keep is not None and not self._consumers[index] and index not in keep:
            self.results[index] = RELEASED
        return bool(self._queue or self._heap)

    def _ready(self, index: int) -> None:
        """Node ``index`` has all its dependencies: queue it (an expanded barrier: end it)."""
        node = self.graph.nodes[index]
        if node.children is not None:  # an expanded barrier whose children all ended
            self._end_barriers(node)
            return
        priority = node.task.options.priority
        self._status[index] = READY
        key = (-priority << _INDEX_BITS) | index if priority else index
        queue = self._queue
        if not queue or key > queue[-1]:  # _enqueue, inlined
            queue.append(key)
        else:
            heappush(self._heap, key)

    def _end_barriers(self, barrier: Node) -> None:
        """End ``barrier`` with its children's list, and what that completes in turn
        (iteratively: a chain of barriers never recurses)."""
        stack = [barrier]
        nodes, remaining, status = self.graph.nodes, self._remaining, self._status
        while stack:
            node = stack.pop()
            index = node.index
            self._end(index, DONE, self.barrier_value(node))
            self._consume_children(node)
            if not self._consumers[index]:
                self._release(index)
            for d in self.dependents(index):
                remaining[d] -= 1
                if remaining[d] or status[d] >= DONE:
                    continue
                child = nodes[d]
                if child.children is None:
                    self._push(child)
                else:
                    stack.append(child)

    def arguments(self, node: Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``node``'s arguments with every placeholder replaced by its result; the node has
        started (see :meth:`started`)."""
        args, kwargs = node.args, node.kwargs
        results = self.results
        if node.deps and node.resolves:
            args = resolve_args(args, results)
            if kwargs:
                kwargs = resolve(kwargs, results)
        keep = self._keep
        if keep is not None:  # started(node), inlined
            consumers, status = self._consumers, self._status
            for d in node.deps:
                left = consumers[d] - 1
                consumers[d] = left
                if not left and status[d] == DONE and d not in keep:
                    results[d] = RELEASED
        return args, kwargs

    def started(self, node: Node) -> None:
        """``node`` has its arguments (a barrier: its source's items): the results it
        consumed are released if it was their last consumer (see the module docstring)."""
        keep = self._keep
        if keep is None:
            return
        consumers, status, results = self._consumers, self._status, self.results
        for d in node.deps:
            left = consumers[d] - 1
            consumers[d] = left
            if not left and status[d] == DONE and d not in keep:  # _release, inlined
                results[d] = RELEASED

    def _consume_children(self, barrier: Node) -> None:
        """The barrier holds its children's results in its list: their slots can go."""
        if self._keep is None or barrier.children is None:
            return
        first, count = barrier.children
        for index in range(first, first + count):
            self._consumers[index] = 0
            self._release(index)

    def _release(self, index: int) -> None:
        keep = self._keep
        if keep is not None and index not in keep and self._status[index] == DONE:
            self.results[index] = RELEASED

    def catch(self, node: Node, error: BaseException) -> bool:
        """Record a caught node's failure: it ends ``FAILED`` with ``error`` as its result,
        and its dependants go on as after a success, receiving ``error`` in its place
        (nothing is skipped). The runner decides which nodes are caught (``node.caught``).
        Returns what :meth:`done` does.
        """
        ready = self.done(node, error)
        self._status[node.index] = FAILED
        self.results[node.index] = error  # a failure's position is never released
        return ready

    def fail(self, node: Node, error: BaseException) -> list[Node]:
        """Record ``node``'s failure; return every not-yet-ended descendant, now skipped.

        The caller decides what a skipped node's result holds (see :meth:`skip_result`).
        """
        self._leave_group(node)
        self._end(node.index, FAILED, error)
        return self._skip_descendants(node.index)

    def _skip_descendants(self, index: int) -> list[Node]:
        skipped: list[Node] = []
        stack = [index]
        nodes, status = self.graph.nodes, self._status
        while stack:
            for d in self.dependents(stack.pop()):
                if status[d] in _ENDED:
                    continue
                self._end(d, SKIPPED, None)
                skipped.append(nodes[d])
                stack.append(d)
        return skipped

    def set_result(self, node: Node, value: Any) -> None:
        """Store what an ended node's position holds (e.g. the skip error)."""
        self.results[node.index] = value

    def _end(self, index: int, status: int, value: Any) -> None:
        self._status[index] = status
        self.results[index] = value
        self.unfinished -= 1

    def expand(self, barrier: Node, items: list[Any]) -> list[Node]:
        """Add one child call of the barrier's task per item; the barrier ends with them.

        Returns the new children (already queued). An empty ``items`` ends the barrier
        with ``[]`` at once.
        """
        assert isinstance(barrier, Barrier), barrier
        graph, task, group = self.graph, barrier.task, barrier.group
        first = len(graph.nodes)
        if barrier.caught:
            children: list[Node] = [
                CaughtNode(graph, first + i, task, (x,), (), group) for i, x in enumerate(items)
            ]
        elif group is None:
            children = [
                Node(graph, first + i, task, (x,), NO_KWARGS, ()) for i, x in enumerate(items)
            ]
        else:
            children = [
                GroupedNode(graph, first + i, task, (item,), NO_KWARGS, (), group)
                for i, item in enumerate(items)
            ]
        graph.nodes.extend(children)
        count = len(children)
        self.results.extend(repeat(None, count))
        self._status.extend(bytes(count))
        self._remaining.extend(repeat(0, count))
        self._consumers.extend(repeat(1, count))  # each child is consumed by its barrier
        self._dependents.extend(repeat(barrier.index, count))
        self.unfinished += count
        barrier.children = (first, count)
        self._remaining[barrier.index] = count
        if count == 0:
            self.done(barrier, [])
        for child in children:
            self._push(child)
        return children

    def barrier_value(self, barrier: Node) -> list[Any]:
        """The list of the barrier's children's results (errors in failed positions)."""
        if barrier.children is None:
            return []
        first, count = barrier.children
        return self.results[first : first + count]

    def ended_nodes(self) -> Iterator[tuple[Node, int]]:
        """Every node with its status code (for summaries)."""
        status = self._status
        for node in self.graph.nodes:
            yield node, status[node.index]
