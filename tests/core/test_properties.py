"""Property tests of whole flow runs on random DAGs.

A random DAG is a tuple of :class:`Slot`, one per node the flow body builds, in build order
(so slot ``i`` is graph node ``i``). Slots are plain task calls, calls returning a list,
children of a static ``fan_out`` (consecutive slots sharing a ``group``) and dynamic
``fan_out`` barriers over an earlier list result, possibly another barrier (nested).

Every task records ``start`` / ``end`` / ``fail`` events, labelled with the slot index (or
``(barrier slot, position)`` for a dynamic child) passed to it as an argument. What a run
should do is computed by :func:`evaluate`, a plain sequential evaluation of the same DAG in
build order, and the event log and the results are checked against it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from auto_workflow import TaskDefinition, fan_out, flow, task
from auto_workflow.exceptions import (
    AggregateTaskError,
    TaskExecutionError,
    UpstreamFailedError,
)

Label = int | tuple[int, int]  # a slot, or (dynamic fan-out slot, position of the child)

TASK, LIST, STATIC, DYN = "task", "list", "static", "dyn"
PRIME = 1_000_003

# -- what each task computes: deterministic, hash-free arithmetic of its inputs ------------


def digest(value: Any) -> int:
    """An int standing for a result: itself, or a position-weighted sum of the elements."""
    if isinstance(value, int):
        return value
    return sum((i + 1) * digest(v) for i, v in enumerate(value)) % PRIME


def compute(kind: str, label: int, inputs: tuple[Any, ...]) -> Any:
    """A call's value; a ``LIST`` call returns 0-4 ``(position, value)`` items."""
    base = (label * 7919 + 1 + digest(inputs)) % PRIME
    if kind != LIST:
        return base
    return [(k, (base + 31 * k) % PRIME) for k in range(base % 5)]


def child_value(fan: int, item: tuple[int, int]) -> tuple[int, int]:
    """A dynamic child's value keeps the item's position, so nested fan-outs can label it."""
    k, v = item
    return (k, (3 * v + 7 * fan + k) % PRIME)


# -- the tasks -----------------------------------------------------------------------------


class Boom(Exception):
    """What a failing task raises."""

    def __init__(self, label: Label) -> None:
        super().__init__(label)
        self.label = label


@dataclass
class Recorder:
    """The event log of one run, appended to from inside the tasks."""

    events: list[tuple[str, Label]] = field(default_factory=list)

    def start(self, label: Label) -> None:
        self.events.append(("start", label))

    def finish(self, label: Label, fails: bool, value: Any) -> Any:
        if fails:
            self.events.append(("fail", label))
            raise Boom(label)
        self.events.append(("end", label))
        return value


def _spins(label: Label) -> int:
    """How often an async task yields to the loop: varies so runs interleave."""
    return sum(label) % 3 if isinstance(label, tuple) else label % 3


def _call_sync(rec: Recorder, label: int, kind: str, fails: bool, *inputs: Any) -> Any:
    rec.start(label)
    return rec.finish(label, fails, compute(kind, label, inputs))


async def _call_async(rec: Recorder, label: int, kind: str, fails: bool, *inputs: Any) -> Any:
    rec.start(label)
    for _ in range(_spins(label)):
        await asyncio.sleep(0)
    return rec.finish(label, fails, compute(kind, label, inputs))


def _item_sync(item: tuple[Any, ...]) -> Any:
    return _call_sync(*item)


async def _item_async(item: tuple[Any, ...]) -> Any:
    return await _call_async(*item)


def _child_sync(rec: Recorder, fan: int, fail_at: int | None, item: tuple[int, int]) -> Any:
    label = (fan, item[0])
    rec.start(label)
    return rec.finish(label, item[0] == fail_at, child_value(fan, item))


async def _child_async(rec: Recorder, fan: int, fail_at: int | None, item: tuple[int, int]) -> Any:
    label = (fan, item[0])
    rec.start(label)
    for _ in range(_spins(label)):
        await asyncio.sleep(0)
    return rec.finish(label, item[0] == fail_at, child_value(fan, item))


CALL = {False: task(_call_sync), True: task(_call_async)}
ITEM = {False: task(_item_sync), True: task(_item_async)}


@functools.cache
def prioritised(base: TaskDefinition[..., Any], priority: int) -> TaskDefinition[..., Any]:
    return base.with_options(priority=priority)


# -- random DAGs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One node of a random DAG (see the module docstring)."""

    kind: str
    parents: tuple[int, ...]  # DYN: (source,); STATIC: at most one
    priority: int
    is_async: bool
    fails: bool = False  # TASK / LIST / STATIC: the call raises Boom
    fail_at: int | None = None  # DYN: the child at this position raises Boom
    group: int | None = None  # STATIC / DYN: first slot of the fan_out call
    limit: int | None = None  # STATIC / DYN: that fan_out's max_concurrency


# One draw per fan_out or call, of everything it may need: the shrinker can then delete it
# as a unit. Every field shrinks towards the simplest choice.
RAW_OPS = st.tuples(
    st.integers(0, 9),  # kind: 0-4 a task call, 5-6 a list call, 7-8 a static fan-out, 9 dynamic
    st.integers(-2, 2),  # priority
    st.booleans(),  # async
    st.integers(0, 99),  # fails if >= 100 - fail_pct
    st.lists(st.integers(0, 1 << 16), max_size=4),  # parents, as offsets back
    st.integers(0, 3),  # a fan-out's max_concurrency (0: none)
    st.integers(1, 4),  # a static fan-out's width
    st.integers(0, 3),  # a fan-out's failing child, if it fails
)


class _DagBuilder:
    """Turns raw ops into slots; ``lists`` are the slots a dynamic fan-out can map over."""

    def __init__(self, fail_pct: int) -> None:
        self.fail_pct = fail_pct
        self.slots: list[Slot] = []
        self.lists: list[int] = []

    def add(self, raw: tuple[Any, ...]) -> None:
        kind_roll, priority, is_async, fail_roll, offsets, limit, width, fail_at = raw
        fails = fail_roll >= 100 - self.fail_pct
        failing = fail_at if fails else None
        if kind_roll <= 6 or (kind_roll == 9 and not self.lists):
            kind = TASK if kind_roll <= 4 else LIST
            self.add_call(Slot(kind, self.parents(offsets[:3]), priority, is_async, fails))
        elif kind_roll <= 8:
            like = Slot(STATIC, (), priority, is_async, limit=limit or None)
            self.add_static(like, offsets, width, failing)
        else:
            like = Slot(DYN, (), priority, is_async, fail_at=failing, limit=limit or None)
            self.add_dynamic(like, offsets)

    def parents(self, offsets: list[int], below: int | None = None) -> tuple[int, ...]:
        """Distinct slots before ``below``, each ``offset`` back: offsets shrink to chains."""
        i = len(self.slots) if below is None else below
        return tuple(dict.fromkeys(i - 1 - off % i for off in offsets)) if i else ()

    def add_call(self, slot: Slot) -> None:
        if slot.kind == LIST:
            self.lists.append(len(self.slots))
        self.slots.append(slot)

    def add_static(self, like: Slot, offsets: list[int], width: int, fail_at: int | None) -> None:
        """``width`` children; child j depends on the j-th offset's slot, if there is one."""
        first = len(self.slots)
        for j in range(width):
            parents = self.parents(offsets[j : j + 1], below=first)
            self.slots.append(replace(like, parents=parents, fails=j == fail_at, group=first))

    def add_dynamic(self, like: Slot, offsets: list[int]) -> None:
        """A fan-out over an earlier list result, possibly another fan-out's (nested)."""
        back = offsets[0] if offsets else 0
        source, i = self.lists[-1 - back % len(self.lists)], len(self.slots)
        self.slots.append(replace(like, parents=(source,), group=i))
        self.lists.append(i)


@st.composite
def dags(draw: st.DrawFn, max_ops: int = 100, failures: bool = False) -> tuple[Slot, ...]:
    """Random DAGs with priorities, static and (nested) dynamic fan-outs and failures."""
    fail_pct = draw(st.sampled_from((0, 2, 8, 25))) if failures else 0
    # A drawn floor spreads sizes over the whole range (a bare list would average a few
    # ops) yet shrinks to 0, after which single ops can be deleted.
    floor = draw(st.integers(0, max_ops - 1))
    builder = _DagBuilder(fail_pct)
    for raw in draw(st.lists(RAW_OPS, min_size=floor + 1, max_size=max_ops)):
        builder.add(raw)
    return tuple(builder.slots)


# -- the reference: a sequential evaluation in build order ---------------------------------

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


@dataclass
class Evaluation:
    """What each label should end as; ``children[b]`` counts a dynamic fan-out's children
    (``None`` when its source never produced a list)."""

    outcome: dict[Label, tuple[str, Any]] = field(default_factory=dict)
    children: dict[int, int | None] = field(default_factory=dict)
    ancestors: list[int] = field(default_factory=list)  # bit p set: slot p is upstream

    def status(self, label: Label) -> str:
        return self.outcome[label][0]

    def value(self, label: Label) -> Any:
        return self.outcome[label][1]

    def labels(self, status: str) -> set[Label]:
        """The task calls (not barriers) that end with ``status``."""
        return {label for label, (s, _) in self.outcome.items() if s == status} - set(self.children)

    def child_labels(self, fan: int) -> list[tuple[int, int]]:
        return [(fan, k) for k in range(self.children[fan] or 0)]

    def upstream_of(self, label: Label, cause: Label) -> bool:
        """True if ``cause`` (a call) runs before, and feeds, ``label``."""
        slot = label if isinstance(label, int) else label[0]
        if isinstance(cause, tuple):
            return cause[0] == slot or bool(self.ancestors[slot] >> cause[0] & 1)
        return bool(self.ancestors[slot] >> cause & 1)


def evaluate(dag: tuple[Slot, ...]) -> Evaluation:
    ev = Evaluation()
    for i, slot in enumerate(dag):
        ev.ancestors.append(_ancestor_bits(ev, slot))
        if slot.kind == DYN:
            _evaluate_fan_out(ev, i, slot)
        elif any(ev.status(p) != DONE for p in slot.parents):
            ev.outcome[i] = (SKIPPED, None)
        elif slot.fails:
            ev.outcome[i] = (FAILED, None)
        else:
            kind = LIST if slot.kind == LIST else TASK
            ev.outcome[i] = (DONE, compute(kind, i, tuple(ev.value(p) for p in slot.parents)))
    return ev


def _ancestor_bits(ev: Evaluation, slot: Slot) -> int:
    bits = 0
    for p in slot.parents:
        bits |= ev.ancestors[p] | 1 << p
    return bits


def _evaluate_fan_out(ev: Evaluation, fan: int, slot: Slot) -> None:
    source = slot.parents[0]
    if ev.status(source) != DONE:
        ev.children[fan] = None
        ev.outcome[fan] = (SKIPPED, None)
        return
    items = ev.value(source)
    ev.children[fan] = len(items)
    for k, item in enumerate(items):
        failed = k == slot.fail_at
        ev.outcome[(fan, k)] = (FAILED, None) if failed else (DONE, child_value(fan, item))
    values = [ev.value((fan, k)) for k in range(len(items))]
    failed_any = slot.fail_at is not None and slot.fail_at < len(items)
    ev.outcome[fan] = (SKIPPED, None) if failed_any else (DONE, values)


# -- building and running the flow ---------------------------------------------------------


def _body(dag: tuple[Slot, ...], rec: Recorder) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(dag):
        slot = dag[i]
        if slot.kind == STATIC:
            width = _static_width(dag, i)
            out.extend(_static_fan_out(dag, rec, i, width, out))
            i += width
        elif slot.kind == DYN:
            out.append(_dynamic_fan_out(rec, i, slot, out))
            i += 1
        else:
            call = prioritised(CALL[slot.is_async], slot.priority)
            out.append(call(rec, i, slot.kind, slot.fails, *(out[p] for p in slot.parents)))
            i += 1
    return out


def _static_width(dag: tuple[Slot, ...], first: int) -> int:
    end = first
    while end < len(dag) and dag[end].kind == STATIC and dag[end].group == first:
        end += 1
    return end - first


def _static_fan_out(
    dag: tuple[Slot, ...], rec: Recorder, first: int, width: int, out: list[Any]
) -> list[Any]:
    slot = dag[first]
    items = [
        (rec, j, TASK, dag[j].fails, *(out[p] for p in dag[j].parents))
        for j in range(first, first + width)
    ]
    item_task = prioritised(ITEM[slot.is_async], slot.priority)
    return fan_out(item_task, items, max_concurrency=slot.limit)


def _dynamic_fan_out(rec: Recorder, fan: int, slot: Slot, out: list[Any]) -> Any:
    fn = _child_async if slot.is_async else _child_sync
    child = task(
        functools.partial(fn, rec, fan, slot.fail_at), name=f"child{fan}", priority=slot.priority
    )
    return fan_out(child, out[slot.parents[0]], max_concurrency=slot.limit)


def run_quietly(body: Callable[[], Any], loop_errors: list[str], **options: Any) -> Any:
    """Run ``body`` as a flow on a private loop that records errors in its callbacks.

    Such an error (say, a worker spawned on an aborting TaskGroup) would otherwise only be
    logged. If one was recorded, garbage is collected before returning, so that whatever it
    left behind (an un-awaited coroutine) is reported against this test, not a later one.
    """

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Text only: holding the exception would keep its frames alive.
        loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    try:
        with asyncio.Runner() as runner:
            runner.get_loop().set_exception_handler(record)
            return runner.run(flow(name="random_dag")(body).run_async(**options))
    finally:
        if loop_errors:
            gc.collect()


def run_dag(dag: tuple[Slot, ...], rec: Recorder, **options: Any) -> list[Any]:
    """Run the DAG as a flow; returns the result of every slot, in build order."""
    loop_errors: list[str] = []
    try:
        result: list[Any] = run_quietly(functools.partial(_body, dag, rec), loop_errors, **options)
    finally:
        assert loop_errors == [], "the event loop reported errors"
    return result


# -- reading the event log -----------------------------------------------------------------


class Log:
    """Positions of the events of one run."""

    def __init__(self, events: list[tuple[str, Label]]) -> None:
        self.events = events
        self.starts = Counter(label for kind, label in events if kind == "start")
        self.start_at = {label: i for i, (kind, label) in enumerate(events) if kind == "start"}
        self.end_at = {label: i for i, (kind, label) in enumerate(events) if kind == "end"}
        self.failed = [label for kind, label in events if kind == "fail"]

    def available_at(self, dag: tuple[Slot, ...], ev: Evaluation, slot: int) -> int | None:
        """Where ``slot``'s result became available (``None``: it never did)."""
        if dag[slot].kind != DYN:
            return self.end_at.get(slot)
        if ev.children[slot] == 0:
            return self.available_at(dag, ev, dag[slot].parents[0])
        ends = [self.end_at.get(c) for c in ev.child_labels(slot)]
        return None if not ends or None in ends else max(e for e in ends if e is not None)


def dependencies(dag: tuple[Slot, ...], label: Label) -> tuple[int, ...]:
    """The slots a call waits for: its parents, or a dynamic child's source."""
    if isinstance(label, tuple):
        return dag[label[0]].parents
    return dag[label].parents


def group_of(dag: tuple[Slot, ...], label: Label) -> tuple[int, int] | None:
    """(group id, limit) of a call that runs under a fan-out's max_concurrency."""
    slot = dag[label[0]] if isinstance(label, tuple) else dag[label]
    if slot.group is None or slot.limit is None:
        return None
    return slot.group, slot.limit


# -- checks --------------------------------------------------------------------------------


def assert_started_once_after_dependencies(dag: tuple[Slot, ...], ev: Evaluation, log: Log) -> None:
    assert all(n == 1 for n in log.starts.values()), f"started twice: {log.starts}"
    for label, at in log.start_at.items():
        for dep in dependencies(dag, label):
            ready = log.available_at(dag, ev, dep)
            assert ready is not None, f"{label} ran although its dependency {dep} never finished"
            assert ready < at, f"{label} started before its dependency {dep} finished"


def assert_limits_respected(
    dag: tuple[Slot, ...], events: list[tuple[str, Label]], max_concurrency: int | None
) -> None:
    running: Counter[tuple[int, int] | None] = Counter()
    total = 0
    for kind, label in events:
        group = group_of(dag, label)
        step = 1 if kind == "start" else -1
        running[group] += step
        total += step
        if group is not None:
            assert running[group] <= group[1], f"fan-out {group[0]} ran over its limit"
        assert max_concurrency is None or total <= max_concurrency


def assert_results_match(dag: tuple[Slot, ...], ev: Evaluation, results: list[Any]) -> None:
    assert len(results) == len(dag)
    for i, result in enumerate(results):
        status = ev.status(i)
        if status == DONE:
            assert result == ev.value(i), f"slot {i}"
        elif status == FAILED:
            assert_failed_with(result, i)
        elif dag[i].kind == DYN and ev.children[i] is not None:
            assert_partial_fan_out(ev, i, result)
        else:
            assert_skipped(ev, i, result)


def assert_failed_with(error: Any, label: Label) -> None:
    assert isinstance(error, TaskExecutionError), f"{label}: {error!r}"
    assert not isinstance(error, UpstreamFailedError), f"{label}: {error!r}"
    assert isinstance(error.original, Boom), f"{label}: {error!r}"
    assert error.original.label == label


def assert_skipped(ev: Evaluation, label: Label, error: Any) -> None:
    assert isinstance(error, UpstreamFailedError), f"{label}: {error!r}"
    cause = error.original
    assert isinstance(cause, TaskExecutionError), f"{label}: {error!r}"
    assert not isinstance(cause, UpstreamFailedError)
    assert isinstance(cause.original, Boom)
    assert ev.status(cause.original.label) == FAILED
    assert ev.upstream_of(label, cause.original.label), f"{label}: blamed on a non-ancestor"


def assert_partial_fan_out(ev: Evaluation, fan: int, result: Any) -> None:
    """A fan-out with a failed child holds its children's results, errors in place."""
    assert isinstance(result, list), f"{fan}: {result!r}"
    assert len(result) == ev.children[fan]
    for child, value in zip(ev.child_labels(fan), result, strict=True):
        if ev.status(child) == DONE:
            assert value == ev.value(child)
        else:
            assert_failed_with(value, child)


# -- the reference for max_concurrency=1: which ready node a lone worker takes next --------


class LoneWorker:
    """The start order a single worker must follow.

    Ready nodes are taken best first by (-priority, build order). A dynamic fan-out barrier
    waits in the same queue; when it is taken its children are built (numbered after every
    node built so far) and queued. A node whose dependency failed never becomes ready.
    """

    def __init__(self, dag: tuple[Slot, ...], ev: Evaluation) -> None:
        self.dag = dag
        self.ev = ev
        self.queue: list[tuple[int, int, Label]] = []
        self.built = len(dag)
        self.waiting = [len(slot.parents) for slot in dag]
        self.children_left: dict[int, int] = {}
        self.dependents: list[list[int]] = [[] for _ in dag]
        for i, slot in enumerate(dag):
            for p in slot.parents:
                self.dependents[p].append(i)
            if not slot.parents:
                self.queue.append((-slot.priority, i, i))
        heapq.heapify(self.queue)

    def next_start(self) -> Label | None:
        while self.queue:
            _, _, label = heapq.heappop(self.queue)
            if isinstance(label, int) and self.dag[label].kind == DYN:
                self.expand(label)
            else:
                return label
        return None

    def expand(self, fan: int) -> None:
        count = self.ev.children[fan] or 0
        self.children_left[fan] = count
        for k in range(count):
            heapq.heappush(self.queue, (-self.dag[fan].priority, self.built, (fan, k)))
            self.built += 1
        if count == 0:
            self.finished(fan)

    def finished(self, label: Label) -> None:
        if self.ev.status(label) == FAILED:
            return
        if isinstance(label, tuple):
            fan = label[0]
            self.children_left[fan] -= 1
            if self.children_left[fan] == 0 and self.ev.status(fan) == DONE:
                self.finished(fan)
            return
        for d in self.dependents[label]:
            self.waiting[d] -= 1
            if self.waiting[d] == 0:
                heapq.heappush(self.queue, (-self.dag[d].priority, d, d))


def pairs(events: list[tuple[str, Label]]) -> Iterator[tuple[Label, Label]]:
    """(started, ended) label pairs of a log where calls never overlap."""
    assert len(events) % 2 == 0
    for (kind, label), (end_kind, end_label) in zip(events[::2], events[1::2], strict=True):
        assert kind == "start"
        assert end_kind in ("end", "fail")
        yield label, end_label


# -- properties ----------------------------------------------------------------------------

CONCURRENCY = st.sampled_from((None, None, 1, 2, 7))

# One root cause often trips several checks, and shrinking each of them, then explaining it,
# takes minutes on DAGs this size: report one failure, shrunk, unexplained.
FLOWS = settings(
    deadline=None,
    report_multiple_bugs=False,
    phases=tuple(phase for phase in Phase if phase is not Phase.explain),
)


@settings(FLOWS, max_examples=40)
@given(dag=dags(max_ops=200), limit=CONCURRENCY)
def test_every_node_runs_exactly_once_after_its_dependencies(
    dag: tuple[Slot, ...], limit: int | None
) -> None:
    rec = Recorder()
    run_dag(dag, rec, max_concurrency=limit)
    ev, log = evaluate(dag), Log(rec.events)
    assert set(log.starts) == ev.labels(DONE)
    assert set(log.end_at) == set(log.starts)
    assert_started_once_after_dependencies(dag, ev, log)
    assert_limits_respected(dag, rec.events, limit)


@settings(FLOWS, max_examples=40)
@given(dag=dags(max_ops=200), limit=CONCURRENCY)
def test_results_equal_a_sequential_evaluation(dag: tuple[Slot, ...], limit: int | None) -> None:
    results = run_dag(dag, Recorder(), max_concurrency=limit)
    assert_results_match(dag, evaluate(dag), results)


@settings(FLOWS, max_examples=60)
@given(dag=dags(failures=True))
def test_one_worker_starts_the_best_ready_node(dag: tuple[Slot, ...]) -> None:
    rec = Recorder()
    run_dag(dag, rec, max_concurrency=1, failure_policy="continue")
    model = LoneWorker(dag, evaluate(dag))
    for started, ended in pairs(rec.events):
        assert started == ended, "with max_concurrency=1 calls must not overlap"
        assert started == model.next_start(), f"{started} started out of priority order"
        model.finished(started)
    assert model.next_start() is None, "a ready node never ran"


def assert_ran_exactly_the_unaffected_nodes(
    dag: tuple[Slot, ...], ev: Evaluation, log: Log
) -> None:
    assert set(log.starts) == ev.labels(DONE) | ev.labels(FAILED)
    assert set(log.end_at) == ev.labels(DONE)
    assert Counter(log.failed) == Counter(ev.labels(FAILED))
    assert_started_once_after_dependencies(dag, ev, log)


def boom_label(error: BaseException) -> Label:
    """The label of the call whose Boom ``error`` carries."""
    assert isinstance(error, TaskExecutionError), repr(error)
    assert isinstance(error.original, Boom), repr(error)
    return error.original.label


@settings(FLOWS, max_examples=50)
@given(dag=dags(failures=True), limit=CONCURRENCY)
def test_continue_runs_every_branch_without_a_failure(
    dag: tuple[Slot, ...], limit: int | None
) -> None:
    rec = Recorder()
    results = run_dag(dag, rec, failure_policy="continue", max_concurrency=limit)
    ev = evaluate(dag)
    assert_ran_exactly_the_unaffected_nodes(dag, ev, Log(rec.events))
    assert_limits_respected(dag, rec.events, limit)
    assert_results_match(dag, ev, results)


@settings(FLOWS, max_examples=50)
@given(dag=dags(failures=True), limit=CONCURRENCY)
def test_aggregate_raises_every_failure_after_running_the_rest(
    dag: tuple[Slot, ...], limit: int | None
) -> None:
    rec, ev = Recorder(), evaluate(dag)
    if not ev.labels(FAILED):
        results = run_dag(dag, rec, failure_policy="aggregate", max_concurrency=limit)
        assert_results_match(dag, ev, results)
        return
    with pytest.raises(AggregateTaskError) as caught:
        run_dag(dag, rec, failure_policy="aggregate", max_concurrency=limit)
    log = Log(rec.events)
    assert_ran_exactly_the_unaffected_nodes(dag, ev, log)
    labels = [boom_label(error) for error in caught.value.errors]
    assert labels == log.failed, "one error per failed call, in the order they failed"
    for error, label in zip(caught.value.errors, labels, strict=True):
        assert_failed_with(error, label)


@settings(FLOWS, max_examples=50)
@given(dag=dags(failures=True), limit=CONCURRENCY)
def test_fail_fast_raises_the_first_failure_and_starts_nothing_after_it(
    dag: tuple[Slot, ...], limit: int | None
) -> None:
    rec, ev = Recorder(), evaluate(dag)
    if not ev.labels(FAILED):
        assert_results_match(dag, ev, run_dag(dag, rec, max_concurrency=limit))
        return
    with pytest.raises(TaskExecutionError) as caught:
        run_dag(dag, rec, failure_policy="fail_fast", max_concurrency=limit)
    log = Log(rec.events)
    assert log.failed, "fail_fast raised although no task failed"
    assert set(log.failed) <= ev.labels(FAILED)
    assert set(log.end_at) <= ev.labels(DONE)
    assert_failed_with(caught.value, log.failed[0])  # the first failure, not a later one
    assert_started_once_after_dependencies(dag, ev, log)
    first_failure = rec.events.index(("fail", log.failed[0]))
    late = [label for kind, label in rec.events[first_failure:] if kind == "start"]
    assert late == [], "fail_fast started tasks after the first failure"


# -- fail_fast regressions, first found by the property above ----------------------------------
# FailurePolicy documents that FAIL_FAST "cancels running tasks, starts nothing new and raises
# the first error". The TaskGroup's cancellation reaches the other workers only a few loop
# iterations later; these pin the smallest runs where workers resumed in between used to take
# new nodes, a later failure replaced the first, and the spawner touched an aborting group.


@task
async def step(rec: Recorder, name: str, spins: int, fails: bool) -> str:
    rec.start(name)  # type: ignore[arg-type]
    for _ in range(spins):
        await asyncio.sleep(0)
    return str(rec.finish(name, fails, name))  # type: ignore[arg-type]


def race(rec: Recorder) -> list[Any]:
    """a fails while a second worker, spawned as a yielded, is about to take b."""
    return [step(rec, "a", 1, True), step(rec, "b", 0, True), step(rec, "c", 0, False)]


def run_race(rec: Recorder) -> tuple[BaseException, list[str]]:
    """Run :func:`race`; returns the raised error and what the loop reported."""
    loop_errors: list[str] = []
    with pytest.raises(TaskExecutionError) as caught:
        run_quietly(functools.partial(race, rec), loop_errors)
    return caught.value, loop_errors


def test_fail_fast_starts_nothing_after_a_failure() -> None:
    rec = Recorder()
    run_race(rec)
    first_failure = rec.events.index(("fail", "a"))
    assert ("start", "b") not in rec.events[first_failure:]


def test_fail_fast_raises_the_first_failure() -> None:
    error, _ = run_race(Recorder())
    assert boom_label(error) == "a"


def test_fail_fast_starts_no_worker_once_aborting() -> None:
    _, loop_errors = run_race(Recorder())
    assert loop_errors == []
