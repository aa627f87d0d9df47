"""Results are released once nothing in the run needs them (graph state and whole runs)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import pytest

from auto_workflow import fan_out, flow, task
from auto_workflow._core._graph import Graph
from auto_workflow._core._state import RELEASED, RunState
from auto_workflow.exceptions import TaskExecutionError

ROOT = Path(__file__).resolve().parents[2]


def _fn(*args: Any) -> Any:
    return args


A = task(name="a")(_fn)


def test_a_result_is_released_once_its_last_consumer_started() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    g.add(A, (x,), {})
    g.add(A, (x,), {})
    state = RunState(g, keep=())
    (first,) = state.pop_ready(1)
    state.done(first, "x")
    one, two = state.pop_ready(2)
    state.started(one)
    assert state.results[0] == "x"  # the second consumer has not started yet
    state.started(two)
    assert state.results[0] is RELEASED


def test_outputs_and_unreleasing_states_keep_their_results() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    g.add(A, (x,), {})
    kept = RunState(g, keep=(0,))
    everything = RunState(g)  # keep=None: the state keeps every result
    for state in (kept, everything):
        (first,) = state.pop_ready(1)
        state.done(first, "x")
        (second,) = state.pop_ready(1)
        state.started(second)
        assert state.results[0] == "x"


def test_a_result_nobody_consumes_is_released_when_done() -> None:
    g = Graph("f")
    g.add(A, (), {})
    state = RunState(g, keep=())
    (only,) = state.pop_ready(1)
    state.done(only, "side effect")
    assert state.results[0] is RELEASED


def test_a_failure_is_never_released() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    y = g.add(A, (), {})
    g.add(A, (x, y), {})
    state = RunState(g, keep=())
    first, second = state.pop_ready(2)
    state.done(first, "x")
    error = ValueError("bad")
    state.fail(second, error)
    assert state.results[1] is error
    assert state.results[0] == "x"  # its consumer was skipped, never started


def test_fan_out_children_are_released_when_their_barrier_ends() -> None:
    g = Graph("f")
    source = g.add(A, (), {})
    barrier = g.add_barrier(A, source, None)
    g.add(A, (barrier,), {})
    state = RunState(g, keep=(2,))
    (src,) = state.pop_ready(1)
    state.done(src, [1, 2])
    (bar,) = state.pop_ready(1)
    state.started(bar)
    assert state.results[0] is RELEASED
    children = state.expand(bar, [1, 2])
    for child in state.pop_ready(2):
        state.done(child, child.args[0] * 10)
    assert [state.results[c.index] for c in children] == [RELEASED, RELEASED]
    assert state.results[1] == [10, 20]
    (consumer,) = state.pop_ready(1)
    state.started(consumer)
    assert state.results[1] is RELEASED


@task
def make(n: int) -> list[int]:
    return list(range(n))


@task
def double(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return 2 * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@flow
def mixed() -> dict[str, Any]:
    items = make(5)
    doubled = fan_out(double, items)
    first = double(1)
    return {"items": items, "doubled": doubled, "sum": total(fan_out(double, [1, 2])), "x": first}


def test_runs_keep_outputs_and_failures_while_releasing_the_rest() -> None:
    out = mixed.run(failure_policy="continue")
    assert out["items"] == [0, 1, 2, 3, 4]
    assert out["doubled"][:3] == [0, 2, 4]
    assert isinstance(out["doubled"][3], TaskExecutionError)
    assert out["sum"] == 6
    assert out["x"] == 2


@pytest.mark.parametrize("engine_path", ["recorded"], indirect=True)  # resuming needs the history
def test_a_durable_run_still_resumes_with_released_results() -> None:
    @flow(durable=True)
    def durable_chain() -> int:
        return total([double(1), double(2)])

    assert durable_chain.run(run_id="mem-durable") == 6
    assert durable_chain.resume("mem-durable") == 6


def test_a_chain_of_large_results_peaks_far_below_their_sum() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
    done = subprocess.run(
        [sys.executable, "-c", "import memory_chain as m; print(m.peak_mb(50, 20, 'flow'))"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    peak = float(done.stdout.split()[-1])
    assert peak < 120, f"a chain of 50 x 20 MB results peaked at {peak:.0f} MB"


def test_a_call_of_a_wide_fan_out_costs_a_few_hundred_bytes() -> None:
    # Graph node (its own placeholder), its argument tuple and index, the run state's slots:
    # about 255 bytes per call, where separate placeholders, a dict of keyword arguments
    # and a list of dependants per node made it 520.
    n = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        g = Graph("wide")
        calls = g.add_each(A, range(1_000, 1_000 + n), None)
        g.add(A, (calls,), {})
        state = RunState(g, keep=())
        per_call = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert state.unfinished == n + 1
    assert per_call < 300, f"{per_call:.0f} bytes per call"


def test_a_graph_holds_one_object_the_collector_walks_per_call() -> None:
    g = Graph("wide")
    calls = g.add_each(A, range(1_000, 6_000), None)
    assert all(call is node for call, node in zip(calls, g.nodes, strict=True))
    gc.collect()
    assert not any(gc.is_tracked(node.args) for node in g.nodes)  # tuples of plain values


@pytest.mark.parametrize("history", [False, True])
def test_a_finished_runs_graph_is_freed_without_the_collector(
    history: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A graph kept alive by a reference cycle would wait for a collection, and none runs
    # while the next flow body builds: two graphs at once in a loop of big runs.
    graphs: list[weakref.ref[Graph]] = []
    made = RunState.__init__

    def remember(self: RunState, graph: Graph, **options: Any) -> None:
        graphs.append(weakref.ref(graph))
        made(self, graph, **options)

    monkeypatch.setattr(RunState, "__init__", remember)

    @flow
    def wide(n: int) -> int:
        return total(fan_out(double, range(4, n)))

    gc.collect()
    gc.disable()
    try:
        assert wide.run(50, history=history) > 0
        assert graphs[0]() is None
    finally:
        gc.enable()
