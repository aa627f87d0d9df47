"""What the HTML report shows, worked out from a :class:`RunRecord` alone (pure, no I/O).

The report page gets one compact JSON document, built here by :func:`report_data`:

- ``s``: every string the page shows (task names, error types, messages, tracebacks),
  interned once, so 500 children that fail with the same traceback carry it once. Other
  fields refer to strings by their index in ``s``.
- ``t``: the task records as columns (one list per field, one entry per record in build
  order, fan-out barriers included), times in integer milliseconds from the run's start.
- ``att``: the attempt log of each record that retried or failed, as ``[position,
  [[start, end, error type, error message], ...]]``; a record without one ran once, from
  its start to its end.
- ``graph``: the nodes drawn (one per task, or one per dynamic fan-out for its barrier and
  all its children) and the edges between them; ``t.g`` maps each record to its node.
- ``cp``: the positions on the critical path, first to last; ``t.ln``: each record's lane on
  the timeline.

Invariants: the functions here only read records; every list in ``t`` has one entry per
record; a position is an index into ``run.tasks``; a record's lane is ``-1`` exactly when it
has no start time.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from auto_workflow._history._records import (
    AttemptRecord,
    ErrorRecord,
    RunRecord,
    TaskRecord,
    TaskStatus,
)

__all__ = [
    "STATUSES",
    "Graph",
    "Timing",
    "critical_path",
    "fanout_groups",
    "graph_of",
    "pack_lanes",
    "report_data",
    "timings",
]

STATUSES: tuple[TaskStatus, ...] = (
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.SKIPPED,
    TaskStatus.CACHED,
    TaskStatus.RUNNING,
    TaskStatus.CANCELLED,
)
"""Status codes on the page: a status is sent as its index in this tuple."""

MAX_GRAPH_NODES = 300
"""Past this many nodes (fan-outs already grouped), calls of one task are drawn as one node."""

TASK_NODE, FANOUT_NODE, NAME_NODE = 0, 1, 2
"""Kinds of graph node: one task call, one dynamic fan-out, all calls of one task."""

_STATUS_CODE = {status: code for code, status in enumerate(STATUSES)}


@dataclass(frozen=True, slots=True)
class Timing:
    """One record's place in time, in ms from the run's start (``None``: not known).

    ``end`` of a record still running (or whose end was lost) is the run's last known time,
    so it is drawn up to there; ``busy`` is the time its attempts actually ran.
    """

    start: int | None
    end: int | None
    busy: int


@dataclass(frozen=True, slots=True)
class Graph:
    """The drawn graph: ``node_of[position]`` is the node a record is drawn in.

    ``nodes`` are ``(kind, label, ref)``: ``ref`` is the record's position for a task node,
    the barrier's position (or -1 when it was not recorded) for a fan-out node, -1 for a
    node grouping one task's calls. ``edges`` are pairs of node indices, each once.
    """

    node_of: list[int]
    nodes: list[tuple[int, str, int]]
    edges: list[tuple[int, int]]


class _Strings:
    """Interns strings: each distinct string gets one index, in order of first use."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        found = self._index.get(text)
        if found is None:
            found = self._index[text] = len(self.values)
            self.values.append(text)
        return found


def _ms(moment: float | None, origin: float) -> int | None:
    return None if moment is None else round((moment - origin) * 1000)


def _last_time(run: RunRecord) -> float:
    """The run's end, or (while it runs) the latest time any record mentions."""
    if run.ended_at is not None:
        return run.ended_at
    moments = [run.started_at]
    for t in run.tasks:
        moments.extend(m for m in (t.started_at, t.ended_at) if m is not None)
        moments.extend(a.ended_at or a.started_at for a in t.attempt_log)
    return max(moments)


def _attempt_busy(attempts: Sequence[AttemptRecord], last: float) -> float:
    return sum((a.ended_at if a.ended_at is not None else last) - a.started_at for a in attempts)


def _timing(task: TaskRecord, origin: float, last: float) -> Timing:
    log = task.attempt_log
    start = task.started_at if task.started_at is not None else (log[0].started_at if log else None)
    if start is None:
        return Timing(None, None, 0)
    end = task.ended_at
    if end is None:
        end = log[-1].ended_at if log and task.status is not TaskStatus.RUNNING else None
    end = last if end is None else end
    busy = _attempt_busy(log, last) if log else end - start
    return Timing(_ms(start, origin), _ms(max(end, start), origin), max(0, round(busy * 1000)))


def timings(run: RunRecord) -> list[Timing]:
    """Each record's start, end and busy time in ms from the run's start."""
    last = _last_time(run)
    return [_timing(t, run.started_at, last) for t in run.tasks]


def pack_lanes(spans: Sequence[tuple[int, int] | None]) -> list[int]:
    """Put each span on a lane so that spans on one lane never overlap, using fewest lanes.

    Spans are ``(start, end)``; one that starts when another ends may share its lane.
    ``None`` (nothing to draw) gets lane -1. Greedy by start time, reusing the lowest free
    lane, which is optimal: the lane count is the most spans open at once.
    """
    lanes = [-1] * len(spans)
    order = sorted((s[0], i) for i, s in enumerate(spans) if s is not None)
    busy: list[tuple[int, int]] = []  # (end, lane) of spans still open
    free: list[int] = []
    for start, i in order:
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else len(busy) + len(free)
        lanes[i] = lane
        end = spans[i][1]  # type: ignore[index]
        heapq.heappush(busy, (max(end, start), lane))
    return lanes


def fanout_groups(tasks: Sequence[TaskRecord]) -> dict[str, list[int]]:
    """Positions of each dynamic fan-out's children, by their barrier's node id."""
    groups: dict[str, list[int]] = {}
    for position, task in enumerate(tasks):
        if task.fanout is not None:
            groups.setdefault(task.fanout, []).append(position)
    return groups


def _predecessors(tasks: Sequence[TaskRecord], positions: dict[str, int]) -> list[list[int]]:
    """What each record waited for: its upstream, plus a barrier's children.

    A fan-out child could only start once its barrier's source had ended, so it waits for
    the barrier's own upstream (never for the barrier, which waits for the child).
    """
    preds = [[positions[u] for u in t.upstream if u in positions] for t in tasks]
    for barrier_id, children in fanout_groups(tasks).items():
        barrier = positions.get(barrier_id)
        if barrier is None:
            continue
        inherited = [p for p in preds[barrier] if tasks[p].fanout != barrier_id]
        for child in children:
            preds[child] = [p for p in preds[child] if p != barrier] + inherited
        preds[barrier] = sorted(set(inherited) | set(children))
    return preds


def _effective_ends(preds: list[list[int]], ends: Sequence[int | None]) -> list[int | None]:
    """A record's end, or for one without (a barrier, a skipped task) its latest input's."""
    out: list[int | None] = list(ends)
    pending = [i for i, e in enumerate(ends) if e is None]
    state: dict[int, int] = {}  # 1: on the stack, 2: done
    for root in pending:
        stack = [root]
        while stack:
            node = stack[-1]
            todo = [p for p in preds[node] if out[p] is None and p not in state]
            if state.get(node) != 1 and todo:
                state[node] = 1
                stack.extend(todo)
                continue
            stack.pop()
            state[node] = 2
            known = [e for p in preds[node] if (e := out[p]) is not None]
            out[node] = max(known) if known else None
    return out


def critical_path(tasks: Sequence[TaskRecord], ends: Sequence[int | None]) -> list[int]:
    """The chain of records that held the run up, first to last (positions).

    It ends at the record that ended last and steps back, each time to the input that ended
    latest (the one the record was still waiting for), until a record waited for nothing.
    A record without an end of its own (a barrier) passes its latest input's end on; a
    skipped record never ends the path, since nothing waited on it.
    """
    positions = {t.node: i for i, t in enumerate(tasks)}
    preds = _predecessors(tasks, positions)
    eff = _effective_ends(preds, ends)
    ran = [(e, i) for i, e in enumerate(ends) if e is not None]
    if not ran:
        return []
    node = max(ran)[1]
    path, seen = [node], {node}
    while True:
        options = [(e, p) for p in preds[node] if (e := eff[p]) is not None and p not in seen]
        if not options:
            break
        node = max(options)[1]
        path.append(node)
        seen.add(node)
    path.reverse()
    return path


def _fanout_label(tasks: Sequence[TaskRecord], barrier: int | None, children: list[int]) -> str:
    return tasks[children[0]].task if children else tasks[barrier or 0].task


def _first_pass(tasks: Sequence[TaskRecord]) -> Graph:
    """One node per task call, one per dynamic fan-out (its barrier and its children)."""
    positions = {t.node: i for i, t in enumerate(tasks)}
    node_of = [-1] * len(tasks)
    nodes: list[tuple[int, str, int]] = []
    for barrier_id, children in fanout_groups(tasks).items():
        barrier = positions.get(barrier_id)
        label = _fanout_label(tasks, barrier, children)
        for child in children:
            node_of[child] = len(nodes)
        if barrier is not None:
            node_of[barrier] = len(nodes)
        nodes.append((FANOUT_NODE, label, -1 if barrier is None else barrier))
    for position, task in enumerate(tasks):
        if node_of[position] == -1:
            node_of[position] = len(nodes)
            kind = FANOUT_NODE if task.kind == "fanout" else TASK_NODE
            nodes.append((kind, task.task, position))
    return Graph(node_of, nodes, [])


def _by_task_name(tasks: Sequence[TaskRecord], first: Graph) -> Graph:
    """Fold the task nodes of each task name into one node (fan-out nodes stay)."""
    remap: list[int] = []
    nodes: list[tuple[int, str, int]] = []
    by_name: dict[str, int] = {}
    for kind, label, ref in first.nodes:
        if kind != TASK_NODE:
            remap.append(len(nodes))
            nodes.append((kind, label, ref))
            continue
        if label not in by_name:
            by_name[label] = len(nodes)
            nodes.append((NAME_NODE, label, -1))
        remap.append(by_name[label])
    return Graph([remap[n] for n in first.node_of], nodes, [])


def _edges(tasks: Sequence[TaskRecord], node_of: list[int]) -> list[tuple[int, int]]:
    positions = {t.node: i for i, t in enumerate(tasks)}
    seen: dict[tuple[int, int], None] = {}
    for position, task in enumerate(tasks):
        target = node_of[position]
        for up in task.upstream:
            source = node_of[positions[up]] if up in positions else target
            if source != target:
                seen[(source, target)] = None
    return list(seen)


def graph_of(tasks: Sequence[TaskRecord], max_nodes: int = MAX_GRAPH_NODES) -> Graph:
    """The graph to draw: fan-outs grouped, and calls of one task too when it is too big."""
    graph = _first_pass(tasks)
    if len(graph.nodes) > max_nodes:
        graph = _by_task_name(tasks, graph)
    return Graph(graph.node_of, graph.nodes, _edges(tasks, graph.node_of))


def _error(error: ErrorRecord | None, strings: _Strings) -> list[int] | None:
    if error is None:
        return None
    return [strings(error.type), strings(error.message), strings(error.traceback)]


def _attempt_rows(run: RunRecord, strings: _Strings, last: float) -> Iterator[list[Any]]:
    origin = run.started_at
    for position, task in enumerate(run.tasks):
        log = task.attempt_log
        if len(log) < 2 and not any(a.error for a in log):
            continue
        rows = []
        for a in log:
            end = a.ended_at if a.ended_at is not None else last
            err = a.error
            kind = None if err is None else strings(err.type)
            message = None if err is None else strings(err.message)
            rows.append([_ms(a.started_at, origin), _ms(end, origin), kind, message])
        yield [position, rows]


def _plain(value: Any) -> Any:
    """``value`` as JSON can carry it: as is when it serialises (NaN included), else repr."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        if isinstance(value, dict):
            return {str(k): _plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_plain(v) for v in value]
        return value if isinstance(value, str) else repr(value)
    return value


def _run_header(run: RunRecord, last: float) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "flow": run.flow,
        "status": run.status.value,
        "started": run.started_at * 1000,
        "wall": _ms(last, run.started_at),
        "ended": run.ended_at is not None,
        "target": run.target,
        "params": _plain(run.params),
        "args": _plain(list(run.args)),
        "kwargs": _plain(run.kwargs),
        "host": run.host,
        "pid": run.pid,
        "durable": run.durable,
        "error": None if run.error is None else [run.error.type, run.error.message],
        "traceback": None if run.error is None else run.error.traceback,
    }


def _columns(run: RunRecord, strings: _Strings, times: list[Timing]) -> dict[str, Any]:
    tasks = run.tasks
    lanes = pack_lanes(
        [
            None if t.kind == "fanout" or x.start is None else (x.start, x.end or x.start)
            for t, x in zip(tasks, times, strict=True)
        ]
    )
    return {
        "name": [strings(t.task) for t in tasks],
        "node": {str(i): t.node for i, t in enumerate(tasks) if t.node != f"{t.task}:{t.index}"},
        "idx": [t.index for t in tasks],
        "barrier": [i for i, t in enumerate(tasks) if t.kind == "fanout"],
        "w": {str(i): t.item for i, t in enumerate(tasks) if t.kind == "summary" and t.item},
        "st": [_STATUS_CODE[t.status] for t in tasks],
        "s": [x.start for x in times],
        "e": [x.end for x in times],
        "busy": [x.busy for x in times],
        "n": [t.attempts for t in tasks],
        "it": [t.item for t in tasks],
        "ck": [i for i, t in enumerate(tasks) if t.checkpoint],
        "err": [_error(t.error, strings) for t in tasks],
        "ln": lanes,
    }


def report_data(run: RunRecord) -> dict[str, Any]:
    """Everything the report page shows, as one JSON-ready document (see the module doc)."""
    strings = _Strings()
    last = _last_time(run)
    times = [_timing(t, run.started_at, last) for t in run.tasks]
    columns = _columns(run, strings, times)
    graph = graph_of(run.tasks)
    columns["g"] = graph.node_of
    path = critical_path(run.tasks, [x.end for x in times])
    return {
        "v": 1,
        "run": _run_header(run, last),
        "t": columns,
        "att": list(_attempt_rows(run, strings, last)),
        "graph": {
            "nodes": [[kind, strings(label), ref] for kind, label, ref in graph.nodes],
            "edges": [n for edge in graph.edges for n in edge],
        },
        "cp": path,
        "statuses": [s.value for s in STATUSES],
        "s": strings.values,
    }
