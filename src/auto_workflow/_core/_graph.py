"""The task graph and its run state: pure data, no asyncio, no clock.

A :class:`Graph` is built by a flow body: one :class:`Node` per task call, in build order,
plus one barrier node per dynamic fan-out. A node can only depend on nodes built before it,
so a graph is acyclic by construction; a graph put together some other way is checked when
a run starts (:class:`~auto_workflow.exceptions.CycleDetectedError` if it cannot be ordered).

:class:`RunState` drives one run of a graph. Invariants:

* every step costs O(degree of the node) (plus O(log n) for the ready heap): completion
  walks the node's own dependents, never the whole graph, and no step recurses on depth;
* a node enters the ready heap once, when its last dependency finished;
* the heap is ordered by (-priority, build order); a node whose fan-out group is at its
  ``max_concurrency`` waits in that group's own heap and re-enters the main heap when a
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

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from auto_workflow.exceptions import CycleDetectedError, InvalidGraphError, PlaceholderMisuseError

if TYPE_CHECKING:
    from auto_workflow._core._model import TaskOptions

__all__ = [
    "RELEASED",
    "Graph",
    "Group",
    "Node",
    "Placeholder",
    "Results",
    "RunState",
    "iter_placeholders",
    "resolve",
]

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

_CONTAINERS: Final = (list, tuple, dict, set, frozenset)
_ATOMS: Final = frozenset({int, float, str, bytes, bool, type(None)})


class TaskLike(Protocol):
    """What the engine needs of a task definition."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> TaskOptions: ...

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def is_async(self) -> bool: ...


class Group:
    """Children of one fan-out that share a ``max_concurrency`` bound."""

    __slots__ = ("limit", "running", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting: list[int] = []


class Node:
    """One task call (or one dynamic fan-out barrier) in a graph."""

    __slots__ = (
        "args",
        "caught",
        "children",
        "deps",
        "group",
        "index",
        "is_barrier",
        "kwargs",
        "needs_resolve",
        "priority",
        "task",
    )

    def __init__(
        self,
        index: int,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deps: tuple[int, ...],
        *,
        priority: int,
        group: Group | None = None,
        is_barrier: bool = False,
        needs_resolve: bool = True,
        caught: bool = False,
    ) -> None:
        self.index = index
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.deps = deps
        self.priority = priority
        self.group = group
        self.is_barrier = is_barrier
        self.needs_resolve = needs_resolve
        # A task node: its failure is its result (see RunState.catch). A barrier: its
        # children are caught.
        self.caught = caught
        # For a barrier: (first child index, count) once expanded.
        self.children: tuple[int, int] | None = None

    @property
    def display_name(self) -> str:
        """The task's name, or ``fan_out(<task name>)`` for a barrier."""
        return f"fan_out({self.task.name})" if self.is_barrier else self.task.name

    @property
    def id(self) -> str:
        """Stable, readable id: ``<task name>:<index>``, or ``fanout:<index>`` for barriers."""
        return f"fanout:{self.index}" if self.is_barrier else f"{self.task.name}:{self.index}"


class Graph:
    """Nodes of one flow run, in build order (append-only)."""

    __slots__ = ("__weakref__", "name", "nodes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Node] = []

    def add(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        after: Iterable[Placeholder] = (),
        group: Group | None = None,
        caught: bool = False,
    ) -> Placeholder:
        """Record one task call; placeholders anywhere in the arguments become dependencies.

        ``caught``: a failure of this call is its result (see :meth:`RunState.catch`).
        """
        deps: dict[int, None] = {}
        found = self._scan_args(args, deps)
        if kwargs:
            found = self._scan(kwargs, deps) or found
        for p in after:
            deps[self.own(p)] = None
        index = len(self.nodes)
        node = Node(
            index,
            task,
            args,
            kwargs,
            tuple(sorted(deps)) if len(deps) > 1 else tuple(deps),
            priority=task.options.priority,
            group=group,
            needs_resolve=found,
            caught=caught,
        )
        self.nodes.append(node)
        return Placeholder(self, index)

    def add_barrier(
        self, task: TaskLike, source: Placeholder, limit: int | None, *, caught: bool = False
    ) -> Placeholder:
        """Record a dynamic fan-out of ``task`` over the future result of ``source``;
        ``caught``: each child's failure is its element of the list."""
        index = len(self.nodes)
        group = Group(limit) if limit is not None else None
        node = Node(
            index,
            task,
            (),
            {},
            (self.own(source),),
            priority=task.options.priority,
            group=group,
            is_barrier=True,
            caught=caught,
        )
        self.nodes.append(node)
        return Placeholder(self, index)

    def find(self, node_id: str) -> Node | None:
        """The node whose :attr:`Node.id` is ``node_id`` (its inverse, O(1)), or ``None``."""
        index = node_id.rpartition(":")[2]
        if not index.isdigit() or int(index) >= len(self.nodes):
            return None
        node = self.nodes[int(index)]
        return node if node.id == node_id else None

    def own(self, p: Placeholder) -> int:
        """The index of ``p``, checking that it was made by this graph."""
        if p._graph is not self:
            raise PlaceholderMisuseError(
                f"{p!r} belongs to another flow run; placeholders can only be used inside "
                "the flow body that created them"
            )
        return p._index

    def _scan_args(self, args: tuple[Any, ...], deps: dict[int, None]) -> bool:
        """:meth:`_scan` for positional arguments, skipping plain scalars cheaply."""
        found = False
        for arg in args:
            kind = type(arg)
            if kind is Placeholder:
                deps[self.own(arg)] = None
                found = True
            elif kind not in _ATOMS:
                found = self._scan(arg, deps) or found
        return found

    def _scan(self, value: Any, deps: dict[int, None]) -> bool:
        """Add the placeholders found in ``value`` to ``deps``; True if there were any."""
        found = False
        for p in iter_placeholders(value):
            deps[self.own(p)] = None
            found = True
        return found

    # -- views: describe / DOT / adjacency are all derived from this one model ----------

    def task_count(self) -> int:
        """How many task nodes the graph has (fan-out barriers not counted)."""
        return sum(not n.is_barrier for n in self.nodes)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description of the graph.

        ``nodes`` lists every node in build order, fan-out barriers included, and ``count``
        is their number; ``dynamic_fanouts`` has one entry per dynamic fan-out (its node,
        source node, task and ``type: "dynamic_fanout"``) and ``dynamic_count`` their number.
        The children a dynamic fan-out creates at run time are in none of these.
        """
        nodes = [self._describe_node(n) for n in self.nodes]
        fanouts = [self._describe_fanout(n) for n in self.nodes if n.is_barrier]
        return {
            "flow": self.name,
            "nodes": nodes,
            "count": len(nodes),
            "dynamic_fanouts": fanouts,
            "dynamic_count": len(fanouts),
        }

    def _describe_fanout(self, barrier: Node) -> dict[str, Any]:
        return {
            "id": barrier.id,
            "type": "dynamic_fanout",
            "task": barrier.task.name,
            "source": self.nodes[barrier.deps[0]].id,
            "max_concurrency": barrier.group.limit if barrier.group else None,
        }

    def _describe_node(self, node: Node) -> dict[str, Any]:
        ids = self.nodes
        entry: dict[str, Any] = {
            "id": node.id,
            "task": node.task.name,
            "upstream": [ids[d].id for d in node.deps],
            "priority": node.priority,
        }
        if node.is_barrier:
            entry["kind"] = "fanout"
            entry["max_concurrency"] = node.group.limit if node.group else None
        else:
            entry["kind"] = "task"
            entry.update(node.task.options.describe())
        return entry

    def adjacency(self) -> dict[str, list[str]]:
        """``{node id: [downstream node ids]}`` for every node."""
        out: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for node in self.nodes:
            for d in node.deps:
                out[self.nodes[d].id].append(node.id)
        return out

    def to_dot(self) -> str:
        """The graph in Graphviz DOT (UTF-8 text: non-ASCII names stay as they are)."""
        lines = [f"digraph {_dot_text(self.name)} {{", "  rankdir=LR;"]
        for node in self.nodes:
            shape = "diamond" if node.is_barrier else "box"
            label = node.display_name if node.is_barrier else node.id
            lines.append(f"  {_dot_text(node.id)} [label={_dot_text(label)}, shape={shape}];")
        for src, targets in self.adjacency().items():
            lines.extend(f"  {_dot_text(src)} -> {_dot_text(t)};" for t in targets)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (renders on GitHub and in most docs tools).

        Node ids become ``n0``, ``n1``, ... (Mermaid ids cannot hold ``:``); the labels
        keep the real ids. Fan-out barriers are drawn as diamonds.
        """
        lines = ["flowchart LR"]
        for index, node in enumerate(self.nodes):
            label = _mermaid_text(node.display_name if node.is_barrier else node.id)
            shape = '{{"{}"}}' if node.is_barrier else '["{}"]'
            lines.append(f"    n{index}{shape.format(label)}")
        for index, node in enumerate(self.nodes):
            lines.extend(f"    n{d} --> n{index}" for d in node.deps)
        return "\n".join(lines) + "\n"


_DOT_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _dot_text(text: str) -> str:
    """``text`` as a quoted DOT string: backslash and quote escaped, a newline as DOT's
    ``\\n`` line break, other control characters dropped; non-ASCII kept (DOT is UTF-8)."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\n", "\\n")
    return '"' + _DOT_CONTROL.sub("", text) + '"'


def _mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted Mermaid label (quotes, markup and control characters
    as entity codes; non-ASCII kept)."""
    pairs = (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("`", "#96;"))
    for char, code in pairs:
        text = text.replace(char, code)
    return _DOT_CONTROL.sub(lambda m: f"#{ord(m.group())};", text)


class Placeholder:
    """Stands for a task's result while a flow is being built.

    Passing it to another task makes a dependency. Using it as a value (truth, length,
    iteration, arithmetic, formatting) raises :class:`PlaceholderMisuseError`: the result
    exists only when the flow runs.
    """

    __slots__ = ("_graph", "_index")

    def __init__(self, graph: Graph, index: int) -> None:
        self._graph = graph
        self._index = index

    @property
    def node_id(self) -> str:
        """The id of the node this placeholder stands for."""
        return self._graph.nodes[self._index].id

    def __repr__(self) -> str:
        return f"<result of {self.node_id}>"

    def _misuse(self, what: str) -> PlaceholderMisuseError:
        return PlaceholderMisuseError(
            f"cannot {what} the result of {self.node_id} while the flow is being built: "
            "task results exist only when the flow runs. Pass it to another @task (which "
            "receives the real value), or use fan_out() to map a task over it."
        )

    def __bool__(self) -> bool:
        raise self._misuse("test the truth of")

    def __len__(self) -> int:
        raise self._misuse("take len() of")

    def __iter__(self) -> Iterator[Any]:
        raise self._misuse("iterate over")

    def __contains__(self, item: object) -> bool:
        raise self._misuse("use 'in' on")

    def __getitem__(self, key: object) -> Any:
        raise self._misuse("index or subscript")

    def __index__(self) -> int:
        raise self._misuse("use as an integer")

    def __int__(self) -> int:
        raise self._misuse("convert to int")

    def __float__(self) -> float:
        raise self._misuse("convert to float")

    def __str__(self) -> str:
        raise self._misuse("format or convert to str")

    def __format__(self, spec: str) -> str:
        raise self._misuse("format")

    def __lt__(self, other: object) -> bool:
        raise self._misuse("compare")

    __le__ = __gt__ = __ge__ = __lt__

    def __eq__(self, other: object) -> bool:
        # Two placeholders compare by identity, so sets and dicts of them keep working;
        # comparing one with a value would silently be False and pick the wrong branch.
        if isinstance(other, Placeholder):
            return self is other
        raise self._compare_misuse("==")

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Placeholder):
            return self is not other
        raise self._compare_misuse("!=")

    def _compare_misuse(self, op: str) -> PlaceholderMisuseError:
        err = self._misuse(f"compare ({op})")
        hint = (
            " Lists that mix results and values compare them too (`in`, .index(), "
            ".remove()): to find a result by identity, use `is`, e.g. "
            "any(item is result for item in items)."
        )
        return PlaceholderMisuseError(str(err) + hint)

    __hash__ = object.__hash__

    def __await__(self) -> Any:
        raise self._misuse("await")


def _arith(name: str) -> Callable[..., Any]:
    def method(self: Placeholder, *_: object) -> Any:
        raise self._misuse(f"do arithmetic ({name}) with")

    method.__name__ = name
    return method


_ARITHMETIC = (
    "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift divmod "
    "radd rsub rmul rtruediv rfloordiv rmod rpow rmatmul rand ror rxor rlshift rrshift "
    "neg pos abs invert round"
)
for _name in _ARITHMETIC.split():
    setattr(Placeholder, f"__{_name}__", _arith(_name))


def iter_placeholders(value: Any) -> Iterator[Placeholder]:
    """Every placeholder in ``value``, looking inside lists, tuples, dicts and sets."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is Placeholder:
            yield item
        elif kind is dict:
            stack.extend(item.values())
            stack.extend(item.keys())
        elif kind in _CONTAINERS or isinstance(item, _CONTAINERS):
            stack.extend(item)


Results = Sequence[Any] | Mapping[int, Any]
"""What :func:`resolve` reads a placeholder's value from: indexed by node index."""


def resolve(value: Any, results: Results) -> Any:
    """``value`` with every placeholder replaced by its node's result (containers rebuilt)."""
    kind = type(value)
    if kind is Placeholder:
        return results[value._index]
    if kind is list:
        return [resolve(v, results) for v in value]
    if kind is tuple:
        return tuple(resolve(v, results) for v in value)
    if kind is dict:
        return {resolve(k, results): resolve(v, results) for k, v in value.items()}
    if kind is set:
        return {resolve(v, results) for v in value}
    if kind is frozenset:
        return frozenset(resolve(v, results) for v in value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return kind(*(resolve(v, results) for v in value))
    if isinstance(value, _CONTAINERS):
        return _resolve_subclass(value, results)
    return value


def _resolve_subclass(value: Any, results: Results) -> Any:
    """Best effort for container subclasses: rebuild with the same type if it allows."""
    if isinstance(value, dict):
        items = {resolve(k, results): resolve(v, results) for k, v in value.items()}
        return type(value)(items)
    return type(value)(resolve(v, results) for v in value)


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


class RunState:
    """The state of one run of a graph. Synchronous and loop-free; see the module docstring."""

    __slots__ = (
        "_consumers",
        "_dependents",
        "_heap",
        "_keep",
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
        nodes = graph.nodes
        n = len(nodes)
        self.graph = graph
        self.max_dynamic_tasks = max_dynamic_tasks
        self._keep: frozenset[int] | None = None if keep is None else frozenset(keep)
        self.results: list[Any] = [None] * n
        self.unfinished = n
        self._status = bytearray(n)
        self._remaining = [len(node.deps) for node in nodes]
        self._dependents: list[list[int]] = [[] for _ in range(n)]
        self._heap: list[int] = []
        dependents = self._dependents
        backwards = True  # every dependency built before its dependant: no cycle possible
        try:
            for node in nodes:
                for d in node.deps:
                    dependents[d].append(node.index)
                    backwards = backwards and 0 <= d < node.index
                if not node.deps:
                    self._push(node)
        except IndexError:
            raise InvalidGraphError(
                f"flow {graph.name!r}: a node depends on a node the graph does not have"
            ) from None
        if not backwards:
            _check_orderable(graph)
        self._consumers = [len(d) for d in dependents]
        """Per node: how many of its dependants have not started yet."""

    # -- queries ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once every node has ended."""
        return self.unfinished == 0

    def has_ready(self) -> bool:
        """True if :meth:`pop_ready` may return something now."""
        return bool(self._heap)

    def status(self, index: int) -> int:
        """The status code of node ``index``."""
        return self._status[index]

    def dependents(self, index: int) -> list[int]:
        """The indices of the nodes that depend on node ``index`` (do not change it)."""
        return self._dependents[index]

    # -- transitions -----------------------------------------------------------------------

    def _push(self, node: Node) -> None:
        self._status[node.index] = READY
        heapq.heappush(self._heap, (-node.priority << _INDEX_BITS) | node.index)

    def pop_ready(self, n: int) -> list[Node]:
        """Up to ``n`` ready nodes, highest priority first, ties in build order.

        Returned task nodes are marked running; barriers are returned for expansion.
        """
        out: list[Node] = []
        heap, nodes = self._heap, self.graph.nodes
        while heap and len(out) < n:
            key = heapq.heappop(heap)
            node = nodes[key & _INDEX_MASK]
            group = node.group
            if group is not None and not node.is_barrier:
                if group.running >= group.limit:
                    heapq.heappush(group.waiting, key)
                    continue
                group.running += 1
            self._status[node.index] = RUNNING
            out.append(node)
        return out

    def _leave_group(self, node: Node) -> None:
        group = node.group
        if group is not None and not node.is_barrier:
            group.running -= 1
            if group.waiting:
                heapq.heappush(self._heap, heapq.heappop(group.waiting))

    def done(self, node: Node, value: Any, ending: int = DONE) -> None:
        """Record ``node``'s result; dependents whose last dependency this was become ready.

        ``ending=FAILED`` is :meth:`catch`.
        """
        self._leave_group(node)
        self._end(node.index, ending, value)
        stack = [node.index]
        nodes, remaining, status = self.graph.nodes, self._remaining, self._status
        while stack:
            for d in self._dependents[stack.pop()]:
                remaining[d] -= 1
                if remaining[d] or status[d] in _ENDED:
                    continue
                child = nodes[d]
                if child.children is not None:  # an expanded barrier whose children all ended
                    self._end(d, DONE, self.barrier_value(child))
                    self._consume_children(child)
                    if not self._consumers[d]:
                        self._release(d)
                    stack.append(d)
                else:
                    self._push(child)
        if self._keep is not None and not self._consumers[node.index]:
            self._release(node.index)

    def started(self, node: Node) -> None:
        """``node`` has its arguments (a barrier: its source's items): the results it
        consumed are released if it was their last consumer (see the module docstring)."""
        if self._keep is None:
            return
        consumers = self._consumers
        for d in node.deps:
            consumers[d] -= 1
            if not consumers[d]:
                self._release(d)

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

    def catch(self, node: Node, error: BaseException) -> None:
        """Record a caught node's failure: it ends ``FAILED`` with ``error`` as its result,
        and its dependants go on as after a success, receiving ``error`` in its place
        (nothing is skipped). The runner decides which nodes are caught (``node.caught``).
        """
        self.done(node, error, FAILED)

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
            for d in self._dependents[stack.pop()]:
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
        graph, task = self.graph, barrier.task
        first = len(graph.nodes)
        children = [
            Node(
                first + i,
                task,
                (item,),
                {},
                (),
                priority=barrier.priority,
                group=barrier.group,
                needs_resolve=False,
                caught=barrier.caught,
            )
            for i, item in enumerate(items)
        ]
        graph.nodes.extend(children)
        count = len(children)
        self.results.extend([None] * count)
        self._status.extend(bytes(count))
        self._remaining.extend([0] * count)
        self._consumers.extend([1] * count)  # each child is consumed by its barrier
        self._dependents.extend([barrier.index] for _ in range(count))
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
