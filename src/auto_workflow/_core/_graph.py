"""The task graph: pure data, no asyncio, no clock.

A :class:`Graph` is built by a flow body: one :class:`Node` per task call, in build order,
plus one barrier node per dynamic fan-out. A node can only depend on nodes built before it,
so a graph is acyclic by construction; a graph put together some other way is checked when
a run starts (:class:`~auto_workflow.exceptions.CycleDetectedError` if it cannot be ordered).
A node is also the :class:`Placeholder` its call returned: one small slotted record per
call, holding nothing that calls share (options, names, an empty ``kwargs``). The state
of one run of a graph is ``_core._state.RunState``.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from auto_workflow.exceptions import PlaceholderMisuseError

if TYPE_CHECKING:
    from auto_workflow._core._model import TaskOptions

__all__ = [
    "NO_KWARGS",
    "Barrier",
    "CaughtNode",
    "Graph",
    "Group",
    "GroupedNode",
    "Node",
    "OrderedNode",
    "Placeholder",
    "Results",
    "TaskLike",
    "iter_placeholders",
    "resolve",
    "resolve_args",
]

_CONTAINERS: Final = (list, tuple, dict, set, frozenset)
_ATOMS: Final = frozenset({int, float, str, bytes, bool, type(None)})

NO_KWARGS: Final[dict[str, Any]] = {}
"""The ``kwargs`` of every node called without keyword arguments: one shared empty dict
(64 bytes saved per node). Nothing may add to it: code that hands a node's ``kwargs`` to
something that might (middleware) passes ``kwargs or {}``."""


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


class Placeholder:
    """Stands for a task's result while a flow is being built.

    Passing it to another task makes a dependency. Using it as a value (truth, length,
    iteration, arithmetic, formatting) raises :class:`PlaceholderMisuseError`: the result
    exists only when the flow runs.

    The placeholder a call returns is the graph's record of that call, its :class:`Node`:
    one object per call, not two (a wide graph holds half the objects, and the garbage
    collector has half as many to walk). Engine code therefore never uses a node as a
    value either: no truth tests, no ``==`` with other things, no ``str()``.
    """

    __slots__ = ("_owner", "index")

    _owner: weakref.ref[Graph]
    """The graph this placeholder belongs to, weakly: a graph's nodes refer back to it
    without a reference cycle, so a run's graph is freed as soon as the run lets go of it,
    with no wait for the garbage collector."""
    index: int
    """The node's position in its graph (build order)."""

    @property
    def id(self) -> str:
        """The id of the node this placeholder is (see :attr:`Node.id`)."""
        raise NotImplementedError

    @property
    def node_id(self) -> str:
        """The id of the node this placeholder stands for."""
        return self.id

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


class Node(Placeholder):
    """One task call in a graph (a dynamic fan-out's barrier is a :class:`Barrier`), and
    the placeholder the call returned while the flow was built.

    A record of five fields: everything that calls of one task share (its options, its
    name, its priority) is read from the task, and an empty ``kwargs`` is one shared empty
    mapping, so a node of a wide fan-out costs a few dozen bytes. The class defaults below
    stand for the fields only some nodes have (:class:`GroupedNode`, :class:`Barrier`).
    """

    __slots__ = ("args", "deps", "kwargs", "task")

    is_barrier: ClassVar[bool] = False
    resolves: ClassVar[bool] = True
    """Whether the dependencies (if any) are placeholders in the arguments, to be replaced
    by their results (an :class:`OrderedNode`'s are not)."""
    group: Group | None = None
    """The fan-out group whose ``max_concurrency`` bounds this call (``None``: unbounded)."""
    children: tuple[int, int] | None = None
    """For an expanded barrier: (first child index, count)."""
    caught: bool = False
    """Whether a failure of this call is its result, an element of ``fan_out(...,
    return_exceptions=True)`` (a :class:`CaughtNode`; for a :class:`Barrier`, whether its
    children are caught). See ``RunState.catch``."""

    def __init__(
        self,
        graph: Graph,
        index: int,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deps: tuple[int, ...],
    ) -> None:
        self._owner = graph._ref
        self.index = index
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.deps = deps

    @property
    def needs_resolve(self) -> bool:
        """Whether the arguments hold placeholders (of the dependencies) to resolve."""
        return bool(self.deps) and self.resolves

    @property
    def priority(self) -> int:
        """The task's priority (every call of a task shares it)."""
        return self.task.options.priority

    @property
    def display_name(self) -> str:
        """The task's name, or ``fan_out(<task name>)`` for a barrier."""
        return f"fan_out({self.task.name})" if self.is_barrier else self.task.name

    @property
    def id(self) -> str:
        """Stable, readable id: ``<task name>:<index>``, or ``fanout:<index>`` for barriers."""
        return f"fanout:{self.index}" if self.is_barrier else f"{self.task.name}:{self.index}"


class OrderedNode(Node):
    """A call ordered after other calls (``task.after(...)``) whose arguments hold no
    placeholder: its arguments are passed as they are."""

    __slots__ = ()

    resolves: ClassVar[bool] = False


class GroupedNode(Node):
    """A call of a fan-out with ``max_concurrency``: a node that belongs to a :class:`Group`."""

    __slots__ = ("group",)

    def __init__(
        self,
        graph: Graph,
        index: int,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deps: tuple[int, ...],
        group: Group,
    ) -> None:
        super().__init__(graph, index, task, args, kwargs, deps)
        self.group = group


class CaughtNode(Node):
    """An element of ``fan_out(..., return_exceptions=True)``: its failure is its result.
    Rare enough to have its own class, so other nodes carry no field for it."""

    __slots__ = ("caught", "group")

    def __init__(
        self,
        graph: Graph,
        index: int,
        task: TaskLike,
        args: tuple[Any, ...],
        deps: tuple[int, ...],
        group: Group | None,
    ) -> None:
        super().__init__(graph, index, task, args, NO_KWARGS, deps)
        self.group = group
        self.caught = True


class Barrier(Node):
    """A dynamic fan-out: expands into one child call per item of its source's result."""

    __slots__ = ("caught", "children", "group")

    is_barrier: ClassVar[bool] = True
    resolves: ClassVar[bool] = False

    def __init__(
        self,
        graph: Graph,
        index: int,
        task: TaskLike,
        source: int,
        group: Group | None,
        caught: bool = False,
    ) -> None:
        super().__init__(graph, index, task, (), NO_KWARGS, (source,))
        self.group = group
        self.children = None
        self.caught = caught


_HANDLES: Final[frozenset[Any]] = frozenset({Node, OrderedNode, GroupedNode, CaughtNode, Barrier})
"""The classes of every placeholder (each is a node): ``type(x) in _HANDLES`` is the
engine's placeholder test, cheaper than an ``isinstance``."""


def _make_node(
    graph: Graph,
    index: int,
    task: TaskLike,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deps: tuple[int, ...],
    found: bool,
    group: Group | None,
) -> Node:
    """The node for one call: ``found``, whether its arguments hold placeholders."""
    kwargs = kwargs or NO_KWARGS
    if group is not None:
        return GroupedNode(graph, index, task, args, kwargs, deps, group)
    if deps and not found:
        return OrderedNode(graph, index, task, args, kwargs, deps)
    return Node(graph, index, task, args, kwargs, deps)


def _ordered(deps: list[int]) -> tuple[int, ...]:
    """``deps`` without repeats, in index order (one or two deps, the usual, without sorting)."""
    if len(deps) < 2:
        return tuple(deps)
    if len(deps) == 2:
        a, b = deps
        return (a, b) if a < b else (b, a) if a > b else (a,)
    if all(a < b for a, b in pairwise(deps)):  # a fan-out's results, in build order
        return tuple(deps)
    return tuple(sorted(set(deps)))


def _foreign(p: Placeholder) -> PlaceholderMisuseError:
    return PlaceholderMisuseError(
        f"{p!r} belongs to another flow run; placeholders can only be used inside "
        "the flow body that created them"
    )


class Graph:
    """Nodes of one flow run, in build order (append-only)."""

    __slots__ = ("__weakref__", "_ref", "name", "nodes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Node] = []
        self._ref = weakref.ref(self)
        """What this graph's placeholders hold to name it (see Placeholder._owner)."""

    def add(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        after: Iterable[Placeholder] = (),
        group: Group | None = None,
    ) -> Placeholder:
        """Record one task call; placeholders anywhere in the arguments become dependencies."""
        deps: list[int] = []
        found = False
        for arg in args:  # _scan_args, inlined: this runs once per node built
            kind = type(arg)
            if kind in _HANDLES:
                if arg._owner is not self._ref:
                    raise _foreign(arg)
                deps.append(arg.index)
                found = True
            elif kind not in _ATOMS:
                found = self._scan(arg, deps) or found
        if kwargs:
            found = self._scan(kwargs, deps) or found
        if after:
            deps.extend(self.own(p) for p in after)
        index = len(self.nodes)
        if len(deps) == 2:  # _ordered, inlined for the usual two
            a, b = deps
            ordered: tuple[int, ...] = (a, b) if a < b else (b, a) if a > b else (a,)
        else:
            ordered = tuple(deps) if len(deps) < 2 else _ordered(deps)
        if group is None and (found or not ordered):
            node = Node(self, index, task, args, kwargs or NO_KWARGS, ordered)
        else:
            node = _make_node(self, index, task, args, kwargs, ordered, found, group)
        self.nodes.append(node)
        return node

    def add_each(
        self, task: TaskLike, items: Iterable[Any], group: Group | None, caught: bool = False
    ) -> list[Any]:
        """:meth:`add` of ``task(item)`` for each item (a static fan-out), one placeholder
        per call; a placeholder item makes a dependency as it would in :meth:`add`.
        ``caught``: each call's failure is its result (:class:`CaughtNode`)."""
        nodes = self.nodes
        first = len(nodes)
        if caught:
            for item in items:
                on: list[int] = []
                self._scan_args((item,), on)
                nodes.append(CaughtNode(self, len(nodes), task, (item,), _ordered(on), group))
            return nodes[first:]
        for item in items:
            index = len(nodes)
            if type(item) in _ATOMS and group is None:
                nodes.append(Node(self, index, task, (item,), NO_KWARGS, ()))
            else:
                deps: list[int] = []
                found = self._scan_args((item,), deps)
                ordered = _ordered(deps)
                nodes.append(
                    _make_node(self, index, task, (item,), NO_KWARGS, ordered, found, group)
                )
        return nodes[first:]

    def add_barrier(
        self, task: TaskLike, source: Placeholder, limit: int | None, *, caught: bool = False
    ) -> Placeholder:
        """Record a dynamic fan-out of ``task`` over the future result of ``source``;
        ``caught``: each child's failure is its element of the list."""
        index = len(self.nodes)
        group = Group(limit) if limit is not None else None
        barrier = Barrier(self, index, task, self.own(source), group, caught)
        self.nodes.append(barrier)
        return barrier

    def find(self, node_id: str) -> Node | None:
        """The node whose :attr:`Node.id` is ``node_id`` (its inverse, O(1)), or ``None``."""
        index = node_id.rpartition(":")[2]
        if not index.isdigit() or int(index) >= len(self.nodes):
            return None
        node = self.nodes[int(index)]
        return node if node.id == node_id else None

    def own(self, p: Placeholder) -> int:
        """The index of ``p``, checking that it was made by this graph."""
        if p._owner is not self._ref:
            raise _foreign(p)
        return p.index

    def _scan_args(self, args: Iterable[Any], deps: list[int]) -> bool:
        """:meth:`_scan` for positional arguments, skipping plain scalars cheaply."""
        found = False
        for arg in args:
            kind = type(arg)
            if kind in _HANDLES:
                if arg._owner is not self._ref:
                    raise _foreign(arg)
                deps.append(arg.index)
                found = True
            elif kind not in _ATOMS:
                found = self._scan(arg, deps) or found
        return found

    def _scan(self, value: Any, deps: list[int]) -> bool:
        """Add the placeholders found in ``value`` to ``deps``; True if there were any."""
        if type(value) is list:  # a list of results (a fan-out's, say): one pass, no stack
            return self._scan_args(value, deps)
        found = False
        for p in iter_placeholders(value):
            deps.append(self.own(p))
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


def iter_placeholders(value: Any) -> Iterator[Placeholder]:
    """Every placeholder in ``value``, looking inside lists, tuples, dicts and sets."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _HANDLES:
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
    if kind in _HANDLES:
        return results[value.index]
    if kind is list:  # the results of a fan-out, usually: placeholders taken inline
        return [results[v.index] if v.__class__ in _HANDLES else resolve(v, results) for v in value]
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


def resolve_args(args: tuple[Any, ...], results: Results) -> tuple[Any, ...]:
    """:func:`resolve` of a positional-argument tuple, taking placeholders and plain
    scalars (the usual arguments) without a call each."""
    if len(args) == 1:  # the usual calls of one or two arguments, without a list
        (arg,) = args
        kind = arg.__class__
        if kind in _HANDLES:
            return (results[arg.index],)
        return (arg if kind in _ATOMS else resolve(arg, results),)
    if len(args) == 2:
        a, b = args
        kind_a, kind_b = a.__class__, b.__class__
        if kind_a in _HANDLES and kind_b in _HANDLES:
            return results[a.index], results[b.index]
    out = []
    for arg in args:
        kind = arg.__class__
        if kind in _HANDLES:
            out.append(results[arg.index])
        elif kind in _ATOMS:
            out.append(arg)
        else:
            out.append(resolve(arg, results))
    return tuple(out)


def _resolve_subclass(value: Any, results: Results) -> Any:
    """Best effort for container subclasses: rebuild with the same type if it allows."""
    if isinstance(value, dict):
        items = {resolve(k, results): resolve(v, results) for k, v in value.items()}
        return type(value)(items)
    return type(value)(resolve(v, results) for v in value)
