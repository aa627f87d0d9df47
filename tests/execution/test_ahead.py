"""Submitting ahead is pure bookkeeping over the run state: driven here without a loop."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from auto_workflow import task
from auto_workflow._core._graph import Graph, Node, resolve
from auto_workflow._core._state import RunState
from auto_workflow._execution._ahead import Lookahead


def _fn(*args: Any) -> Any:
    return args


A = task(name="a")(_fn)
LOCAL = task(name="here")(_fn)


class Handle:
    """Stands for a cluster future (weakly referenceable, to see who keeps it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _cluster_only(node: Node) -> bool:
    return node.task is not LOCAL


def _chain(n: int) -> tuple[Graph, RunState, Lookahead]:
    g = Graph("chain")
    x = g.add(A, (0,), {})
    for _ in range(n - 1):
        x = g.add(A, (x,), {})
    state = RunState(g, keep=[n - 1])
    return g, state, Lookahead(state, _cluster_only)


def _send_all(ahead: Lookahead, node: Node, handle: Handle) -> dict[int, Handle]:
    """Promise ``node`` and send everything it unblocks ahead, as the Dask run does."""
    sent: dict[int, Handle] = {}
    stack = ahead.promise(node, handle)
    while stack:
        dependant, inputs = stack.pop()
        assert resolve(dependant.args, inputs)  # every input is there
        sent[dependant.index] = Handle(dependant.id)
        stack.extend(ahead.went_ahead(dependant, sent[dependant.index], inputs))
    return sent


def test_a_promise_unblocks_each_dependant_once() -> None:
    g, state, ahead = _chain(5)
    (head,) = state.pop_ready(1)
    h0 = Handle("h0")
    first = ahead.promise(head, h0)
    assert [(n.index, inputs) for n, inputs in first] == [(1, {0: h0})]
    assert ahead.promise(head, h0) == []  # promised once: nothing twice
    h1 = Handle("h1")
    second = ahead.went_ahead(g.nodes[1], h1, {0: h0})
    assert [(n.index, inputs) for n, inputs in second] == [(2, {1: h1})]


def test_the_chain_sent_ahead_reaches_its_end() -> None:
    g, state, ahead = _chain(5)
    (head,) = state.pop_ready(1)
    sent = _send_all(ahead, head, Handle("h0"))
    assert sorted(sent) == [1, 2, 3, 4]
    assert ahead.take(g.nodes[4]) == (sent[4], (sent[3],))


def test_a_node_goes_ahead_only_once_every_input_is_promised_or_done() -> None:
    g = Graph("join")
    x, y, z = g.add(A, (), {}), g.add(A, (), {}), g.add(A, (), {})
    g.add(A, (x, y, z), {})
    state = RunState(g)
    ahead = Lookahead(state, _cluster_only)
    nx, ny, nz = state.pop_ready(3)
    state.done(nz, 7)  # a result already here counts as there
    hx, hy = Handle("x"), Handle("y")
    assert ahead.promise(nx, hx) == []
    ((join, inputs),) = ahead.promise(ny, hy)
    assert join.index == 3
    assert resolve(join.args, inputs) == (hx, hy, 7)


def test_an_attempt_takes_up_what_went_ahead_once() -> None:
    g, state, ahead = _chain(2)
    (head,) = state.pop_ready(1)
    h0 = Handle("h0")
    sent = _send_all(ahead, head, h0)
    second = g.nodes[1]
    assert ahead.take(second) == (sent[1], (h0,))
    assert ahead.take(second) is None  # a retry submits afresh
    assert ahead.pending() == []


def test_a_failed_input_withdraws_everything_built_on_it_and_a_retry_sends_it_again() -> None:
    g, state, ahead = _chain(4)
    (head,) = state.pop_ready(1)
    sent = _send_all(ahead, head, Handle("attempt 1"))
    withdrawn = ahead.revoke(head)
    assert sorted(h.name for h in withdrawn) == sorted(h.name for h in sent.values())
    assert ahead.pending() == []
    assert all(ahead.take(g.nodes[i]) is None for i in (1, 2, 3))
    retry = Handle("attempt 2")
    again = _send_all(ahead, head, retry)
    assert sorted(again) == [1, 2, 3]
    assert ahead.take(g.nodes[1]) == (again[1], (retry,))


def test_a_node_is_not_sent_again_while_its_submission_ahead_is_outstanding() -> None:
    g, state, ahead = _chain(2)
    (head,) = state.pop_ready(1)
    first = Handle("attempt 1")
    sent = _send_all(ahead, head, first)
    ahead.kept(head)  # the attempt came back, and then failed after all (a late timeout)
    assert ahead.promise(head, Handle("attempt 2")) == []
    # The attempt of the dependant sees that what went ahead got another input: its caller
    # withdraws it and submits afresh.
    assert ahead.take(g.nodes[1]) == (sent[1], (first,))


def test_local_tasks_and_fan_outs_never_go_ahead() -> None:
    g = Graph("mixed")
    x = g.add(A, (), {})
    g.add(LOCAL, (x,), {})
    g.add_barrier(A, x, None)
    state = RunState(g)
    ahead = Lookahead(state, _cluster_only)
    (head,) = state.pop_ready(1)
    assert ahead.promise(head, Handle("x")) == []


def test_a_node_that_already_ended_or_is_ready_does_not_go_ahead() -> None:
    g = Graph("ended")
    x, y = g.add(A, (), {}), g.add(A, (), {})
    g.add(A, (x, y), {})
    state = RunState(g)
    ahead = Lookahead(state, _cluster_only)
    nx, ny = state.pop_ready(2)
    state.fail(nx, ValueError("x failed"))  # its dependant is skipped
    assert ahead.promise(ny, Handle("y")) == []


def test_nothing_keeps_a_handle_once_its_attempt_succeeded() -> None:
    g, state, ahead = _chain(3)
    (head,) = state.pop_ready(1)
    h0 = Handle("h0")
    sent = _send_all(ahead, head, h0)
    refs = [weakref.ref(h) for h in (h0, *sent.values())]
    for index in (0, 1, 2):
        node = g.nodes[index]
        if index:
            assert ahead.take(node) is not None
        ahead.kept(node)
    del h0, sent
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
