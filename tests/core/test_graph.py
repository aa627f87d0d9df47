"""The graph and its run state are pure: these tests drive them without an event loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from auto_workflow import task
from auto_workflow._core._graph import Graph, Group
from auto_workflow._core._state import DONE, FAILED, RELEASED, SKIPPED, RunState
from auto_workflow.exceptions import PlaceholderMisuseError


def _fn(*args: Any) -> Any:
    return args


A = task(name="a")(_fn)
B = task(name="b", priority=5)(_fn)
C = task(name="c", priority=-1)(_fn)


def test_placeholders_in_nested_arguments_become_dependencies() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    y = g.add(A, (), {})
    z = g.add(A, ([x, (1, {"k": {y}})],), {"kw": {"n": x}})
    node = g.nodes[z.index]
    assert node.deps == (0, 1)
    assert node.needs_resolve


def test_scalar_arguments_need_no_resolution() -> None:
    g = Graph("f")
    p = g.add(A, (1, "s", None), {})
    assert not g.nodes[p.index].needs_resolve
    assert g.nodes[p.index].deps == ()


def test_ready_queue_orders_by_priority_then_build_order() -> None:
    g = Graph("f")
    for t in (A, C, B, A, B):
        g.add(t, (), {})
    state = RunState(g)
    order = [n.index for n in state.pop_ready(10)]
    assert order == [2, 4, 0, 3, 1]


def test_done_releases_dependents_only_when_all_dependencies_ended() -> None:
    g = Graph("f")
    x, y = g.add(A, (), {}), g.add(A, (), {})
    g.add(A, (x, y), {})
    state = RunState(g)
    first, second = state.pop_ready(2)
    state.done(first, 1)
    assert state.pop_ready(5) == []
    state.done(second, 2)
    (third,) = state.pop_ready(5)
    assert third.index == 2
    state.done(third, 3)
    assert state.finished


def test_fail_skips_every_descendant_and_nothing_else() -> None:
    g = Graph("f")
    root = g.add(A, (), {})
    other = g.add(A, (), {})
    mid = g.add(A, (root,), {})
    g.add(A, (mid, other), {})
    g.add(A, (other,), {})
    state = RunState(g)
    nodes = state.pop_ready(2)
    skipped = state.fail(nodes[0], RuntimeError("x"))
    assert sorted(n.index for n in skipped) == [2, 3]
    state.done(nodes[1], 1)
    (last,) = state.pop_ready(5)
    assert last.index == 4
    state.done(last, 2)
    assert state.finished
    assert [state.status(i) for i in range(5)] == [FAILED, DONE, SKIPPED, SKIPPED, DONE]


def test_group_limit_holds_back_siblings() -> None:
    g = Graph("f")
    group = Group(2)
    for _ in range(5):
        g.add(A, (), {}, group=group)
    state = RunState(g)
    running = state.pop_ready(10)
    assert len(running) == 2
    state.done(running[0], None)
    more = state.pop_ready(10)
    assert [n.index for n in more] == [2]


def test_expand_adds_children_and_barrier_ends_with_their_results() -> None:
    g = Graph("f")
    src = g.add(A, (), {})
    fan = g.add_barrier(B, src, None)
    g.add(A, (fan,), {})
    state = RunState(g)
    (s,) = state.pop_ready(1)
    state.done(s, [10, 20])
    (barrier,) = state.pop_ready(1)
    assert barrier.is_barrier
    children = state.expand(barrier, [10, 20])
    assert [c.args for c in children] == [(10,), (20,)]
    popped = state.pop_ready(5)
    for node, value in zip(popped, [11, 21], strict=True):
        state.done(node, value)
    assert state.results[fan.index] == [11, 21]
    (consumer,) = state.pop_ready(5)
    assert consumer.deps == (fan.index,)


def test_a_caught_failure_is_its_result_and_its_dependants_still_run() -> None:
    g = Graph("f")
    group = Group(1)
    first, second = g.add_each(A, [1, 2], group, caught=True)
    consumer = g.add(A, ([first, second],), {})
    state = RunState(g, keep=[consumer.index])
    (a,) = state.pop_ready(5)  # the group lets one run at a time
    error = ValueError("bad row")
    state.catch(a, error)
    assert state.status(a.index) == FAILED
    assert state.results[a.index] is error
    (b,) = state.pop_ready(5)  # leaving the group let the sibling in
    state.done(b, 20)
    (c,) = state.pop_ready(5)
    assert c.index == consumer.index
    assert state.results[first.index] is error  # failures are never released
    state.started(c)
    state.done(c, "summary")
    assert state.finished


def test_a_caught_barrier_ends_with_its_childrens_errors_in_place() -> None:
    g = Graph("f")
    src = g.add(A, (), {})
    fan = g.add_barrier(B, src, None, caught=True)
    g.add(A, (fan,), {})
    state = RunState(g)
    state.done(state.pop_ready(1)[0], [1, 2, 3])
    (barrier,) = state.pop_ready(1)
    children = state.expand(barrier, [1, 2, 3])
    assert all(c.caught for c in children)
    error = KeyError(2)
    one, two, three = state.pop_ready(5)
    state.done(one, 10)
    state.catch(two, error)
    state.done(three, 30)
    assert state.status(fan.index) == DONE
    assert state.results[fan.index] == [10, error, 30]
    (consumer,) = state.pop_ready(5)
    assert consumer.deps == (fan.index,)


def test_empty_expansion_ends_the_barrier_at_once() -> None:
    g = Graph("f")
    src = g.add(A, (), {})
    fan = g.add_barrier(B, src, 3)
    state = RunState(g)
    state.done(state.pop_ready(1)[0], [])
    (barrier,) = state.pop_ready(1)
    state.expand(barrier, [])
    assert state.results[fan.index] == []
    assert state.finished


def test_long_chains_complete_without_recursion() -> None:
    g = Graph("f")
    p = g.add(A, (), {})
    for _ in range(50_000):
        p = g.add(A, (p,), {})
    state = RunState(g)
    while not state.finished:
        (node,) = state.pop_ready(1)
        state.done(node, node.index)
    assert state.results[-1] == 50_000


def test_long_failure_cascade_does_not_recurse() -> None:
    g = Graph("f")
    p = g.add(A, (), {})
    for _ in range(50_000):
        p = g.add(A, (p,), {})
    state = RunState(g)
    skipped = state.fail(state.pop_ready(1)[0], RuntimeError())
    assert len(skipped) == 50_000
    assert state.finished


@pytest.mark.parametrize(
    "misuse",
    [
        bool,
        len,
        iter,
        int,
        float,
        str,
        lambda p: p + 1,
        lambda p: 1 - p,
        lambda p: p * 2,
        lambda p: p < 3,
        lambda p: p[0],
        lambda p: 3 in p,
        lambda p: f"{p}",
        lambda p: -p,
    ],
)
def test_placeholder_used_as_a_value_explains_itself(misuse: Any) -> None:
    g = Graph("f")
    p = g.add(A, (), {})
    with pytest.raises(PlaceholderMisuseError, match="only when the flow runs"):
        misuse(p)


def test_placeholder_repr_and_hash_work() -> None:
    g = Graph("f")
    p = g.add(A, (), {})
    assert repr(p) == "<result of a:0>"
    assert {p: 1}[p] == 1


def test_placeholder_from_another_graph_is_rejected() -> None:
    other = Graph("other").add(A, (), {})
    with pytest.raises(PlaceholderMisuseError, match="another flow run"):
        Graph("f").add(A, (other,), {})


def test_views_derive_from_one_model() -> None:
    g = Graph("etl")
    src = g.add(A, (), {})
    fan = g.add_barrier(B, src, 4)
    g.add(C, (fan,), {})
    described = g.describe()
    json.dumps(described)
    assert described["flow"] == "etl"
    assert described["count"] == 3
    assert [n["id"] for n in described["nodes"]] == ["a:0", "fanout:1", "c:2"]
    assert described["nodes"][1]["kind"] == "fanout"
    assert described["nodes"][1]["max_concurrency"] == 4
    assert described["nodes"][2]["upstream"] == ["fanout:1"]
    assert g.adjacency() == {"a:0": ["fanout:1"], "fanout:1": ["c:2"], "c:2": []}
    dot = g.to_dot()
    assert dot.startswith('digraph "etl" {')
    assert '"a:0" -> "fanout:1";' in dot
    assert '"fanout:1" -> "c:2";' in dot
    mermaid = g.to_mermaid().splitlines()
    assert mermaid[0] == "flowchart LR"
    assert '    n0["a:0"]' in mermaid
    assert '    n1{"fan_out(b)"}' in mermaid
    assert "    n0 --> n1" in mermaid
    assert "    n1 --> n2" in mermaid


def test_mermaid_labels_cannot_break_out_of_their_quotes() -> None:
    g = Graph("odd")
    weird = task(name='say "hi" <b>#1</b> `md`')(_fn)
    g.add(weird, (), {})
    line = g.to_mermaid().splitlines()[1]
    assert line == '    n0["say #quot;hi#quot; #lt;b#gt;#35;1#lt;/b#gt; #96;md#96;:0"]'


def test_comparing_a_placeholder_with_a_value_is_misuse_but_placeholders_hash() -> None:
    g = Graph("cmp")
    a = g.add(A, (), {})
    b = g.add(B, (), {})
    with pytest.raises(PlaceholderMisuseError, match=r"compare \(==\)"):
        _ = a == []
    with pytest.raises(PlaceholderMisuseError, match=r"compare \(!=\)"):
        _ = a != 0
    assert a == a
    assert a != b
    assert len({a, b, a}) == 2  # sets of placeholders (a dependency form) still work
    with pytest.raises(AttributeError):  # no hint: a __getattr__ would slow every placeholder
        _ = a.rows  # type: ignore[attr-defined]


def test_describe_lists_dynamic_fanouts_with_their_source() -> None:
    g = Graph("etl")
    src = g.add(A, (), {})
    fan = g.add_barrier(B, src, None)
    g.add(C, (fan,), {})
    described = g.describe()
    assert described["count"] == 3  # every node built, the barrier included
    assert described["dynamic_count"] == 1
    assert described["dynamic_fanouts"] == [
        {
            "id": "fanout:1",
            "type": "dynamic_fanout",
            "task": "b",
            "source": "a:0",
            "max_concurrency": None,
        }
    ]
    assert Graph("plain").describe()["dynamic_fanouts"] == []


def test_a_graph_whose_nodes_depend_on_each_other_is_a_cycle_error() -> None:
    from auto_workflow.exceptions import CycleDetectedError

    g = Graph("loop")
    first = g.add(A, (), {})
    g.add(A, (first,), {})
    g.nodes[0].deps = (1,)  # made by hand: a flow body cannot build this
    with pytest.raises(CycleDetectedError, match=r"cannot be ordered.*a:0, a:1"):
        RunState(g)


def test_a_graph_built_out_of_order_without_a_cycle_still_runs() -> None:
    g = Graph("f")
    g.add(A, (), {})
    g.add(A, (), {})
    g.nodes[0].deps = (1,)  # a forward edge, but no cycle
    state = RunState(g)
    (ready,) = state.pop_ready(5)
    assert ready.index == 1


def test_a_dependency_on_a_missing_node_is_an_invalid_graph() -> None:
    from auto_workflow.exceptions import InvalidGraphError

    g = Graph("f")
    g.add(A, (), {})
    g.nodes[0].deps = (7,)
    with pytest.raises(InvalidGraphError, match="does not have"):
        RunState(g)


# -- compact records and the state's hot-path operations -------------------------------


def test_calls_are_slotted_records_sharing_one_empty_kwargs() -> None:
    g = Graph("f")
    x = g.add(A, (1,), {})
    g.add(A, (x,), {})
    first, second = g.nodes
    assert not hasattr(first, "__dict__")
    assert first.kwargs is second.kwargs == {}
    assert (first.group, first.children, first.is_barrier) == (None, None, False)
    assert second.priority == A.options.priority


def test_a_static_fan_out_records_one_call_per_item() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    placeholders = g.add_each(A, [1, x, (x, 2)], None)
    assert [p.index for p in placeholders] == [1, 2, 3]
    assert [n.deps for n in g.nodes[1:]] == [(), (0,), (0,)]
    assert [n.needs_resolve for n in g.nodes[1:]] == [False, True, True]


def test_pop_takes_the_best_ready_node_until_none_is_ready() -> None:
    g = Graph("f")
    for t in (A, B):
        g.add(t, (), {})
    state = RunState(g)
    assert [state.pop().index, state.pop().index] == [1, 0]  # type: ignore[union-attr]
    assert state.pop() is None


def test_done_tells_whether_a_node_is_ready() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    g.add(A, (x,), {})
    state = RunState(g)
    first = state.pop()
    assert first is not None
    assert state.done(first, 1) is True
    second = state.pop()
    assert second is not None
    assert state.done(second, 2) is False


def test_arguments_resolve_placeholders_and_release_what_was_consumed() -> None:
    g = Graph("f")
    x, y = g.add(A, (), {}), g.add(A, (), {})
    g.add(A, (x, [y], "s"), {"k": x})
    state = RunState(g, keep=())
    for node in state.pop_ready(2):
        state.done(node, f"r{node.index}")
    consumer = state.pop()
    assert consumer is not None
    assert state.arguments(consumer) == (("r0", ["r1"], "s"), {"k": "r0"})
    assert state.results[:2] == [RELEASED, RELEASED]


def test_a_call_ordered_only_by_after_gets_its_arguments_as_they_are() -> None:
    g = Graph("f")
    first = g.add(A, (), {})
    rows = [1, 2]
    g.add(A, (rows,), {}, after=[first])
    state = RunState(g)
    state.done(state.pop(), None)  # type: ignore[arg-type]
    node = state.pop()
    assert node is not None
    assert not node.needs_resolve
    (passed,), _ = state.arguments(node)
    assert passed is rows


def test_dependents_are_listed_once_per_dependant() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    g.add(A, (x, x), {})
    g.add(A, (x,), {})
    state = RunState(g)
    assert list(state.dependents(0)) == [1, 2]
    assert list(state.dependents(1)) == []
    assert g.nodes[1].deps == (0,)


def test_nodes_made_ready_out_of_build_order_still_go_by_priority_then_build_order() -> None:
    g = Graph("f")
    a, b = g.add(A, (), {}), g.add(A, (), {})
    late = g.add(A, (b,), {})  # index 2, ready after b
    early = g.add(A, (a,), {})  # index 3, ready after a
    g.add(B, (b,), {})  # index 4, priority 5
    state = RunState(g)
    first, second = state.pop(), state.pop()
    assert first is a
    assert second is b
    state.done(b, None)  # queues 2 and 4
    state.done(a, None)  # queues 3, after 2 and 4 were queued
    assert [state.pop() for _ in range(3)] == [g.nodes[4], late, early]
    assert state.pop() is None


def test_find_is_the_inverse_of_node_ids() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    g.add_barrier(B, x, None)
    g.add(task(name="with:colon")(_fn), (x,), {})
    assert [g.find(n.id) for n in g.nodes] == g.nodes
    for unknown in ("a:1", "b:0", "a:9", "a", "a:-0", "", "fanout:0"):
        assert g.find(unknown) is None


def test_caught_calls_and_a_caught_fan_outs_children_are_caught_nodes() -> None:
    g = Graph("f")
    x = g.add(A, (), {})
    static = g.add_each(A, [1, x], None, caught=True)
    barrier = g.add_barrier(B, x, None, caught=True)
    assert [n.caught for n in static] == [True, True]
    assert [n.deps for n in static] == [(), (0,)]
    assert not x.caught
    state = RunState(g)
    state.done(state.pop(), [7, 8])  # type: ignore[arg-type]
    children = state.expand(barrier, [7, 8])  # type: ignore[arg-type]
    assert [(c.caught, c.args) for c in children] == [(True, (7,)), (True, (8,))]
