"""The runner's straight line: calls that nothing wraps run back to back in a worker.

Most runs in the other tests record into the history, which sends every node by the
journal; the tests here run with ``history=False`` too, where bare calls take the
straight line (``FlowRunner._run_bares``), and check it keeps every promise the long way
keeps: the context, the errors, the metrics, concurrency and a responsive loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from auto_workflow import fan_out, flow, task
from auto_workflow import middleware as mw_registry
from auto_workflow.context import RunContext, get_context, use_context
from auto_workflow.exceptions import TaskExecutionError
from auto_workflow.metrics_provider import InMemoryMetrics, set_metrics_provider

HISTORY = pytest.mark.parametrize("history", [False, True], ids=["bare", "recorded"])


@task
async def inc(x: int) -> int:
    return x + 1


@task
def where(x: int) -> tuple[str | None, str | None, int]:
    ctx = get_context()
    return ctx.task_name, ctx.node_id, ctx.attempt


@HISTORY
def test_each_call_sees_its_own_node_as_context(history: bool) -> None:
    @flow
    def chain() -> list[Any]:
        first = inc(0)
        return [where(first), where(inc(first))]

    assert chain.run(history=history) == [("where", "where:1", 1), ("where", "where:3", 1)]


def test_a_background_task_keeps_the_context_of_the_call_that_started_it() -> None:
    seen: list[str | None] = []
    later: list[asyncio.Task[None]] = []
    release = asyncio.Event()

    async def remember() -> None:
        await release.wait()
        seen.append(get_context().node_id)

    @task
    async def spawn(x: int) -> int:
        later.append(asyncio.create_task(remember()))
        return x

    @task
    async def finish(xs: list[int]) -> int:
        release.set()  # the spawning calls have all returned; other calls ran since
        await asyncio.gather(*later)
        return len(xs)

    @flow
    def spawning() -> int:
        return finish([inc(spawn(i)) for i in range(3)])

    assert spawning.run(history=False) == 3
    assert seen == ["spawn:0", "spawn:2", "spawn:4"]


async def test_the_callers_context_is_back_after_a_run() -> None:
    outer = RunContext(run_id="outer", flow_name="caller")

    @flow
    def chain() -> int:
        return inc(inc(0))

    with use_context(outer):
        assert await chain.run_async(history=False) == 2
        assert get_context() is outer


def test_a_failing_bare_call_fails_as_the_long_way_fails() -> None:
    metrics = InMemoryMetrics()
    set_metrics_provider(metrics)
    boom = ValueError("boom")

    @task
    async def explode(x: int) -> int:
        raise boom

    @flow
    def flaky() -> list[int]:
        return [inc(0), explode(1), inc(explode(2))]

    fine, failed, skipped = flaky.run(failure_policy="continue", history=False)
    assert fine == 1
    assert type(failed) is TaskExecutionError
    assert failed.__cause__ is boom
    assert failed.attempts == 1
    assert failed.task_name == "explode"
    assert isinstance(skipped, TaskExecutionError)
    assert metrics.counters["tasks_failed"] == 2
    assert metrics.counters["tasks_succeeded"] == 1


@HISTORY
def test_every_bare_call_is_counted_and_timed(history: bool) -> None:
    metrics = InMemoryMetrics()
    set_metrics_provider(metrics)

    @flow
    def chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = inc(x)
        return x

    assert chain.run(200, history=history) == 200
    assert metrics.counters["tasks_succeeded"] == 200
    assert metrics.observations["task_duration_ms"] == 200
    assert all(ms >= 0 for ms in metrics.histograms["task_duration_ms"])


def test_bare_calls_that_wait_still_run_at_once() -> None:
    @task
    async def nap(i: int) -> int:
        await asyncio.sleep(0.3)
        return i

    @flow
    def naps() -> list[int]:
        return fan_out(nap, range(20))

    start = time.monotonic()
    assert naps.run(history=False) == list(range(20))
    assert time.monotonic() - start < 3.0  # 20 x 0.3 s one after another would be 6 s


async def test_calls_that_never_wait_still_let_the_loop_run() -> None:
    @task
    async def other(x: int) -> int:
        return x - 1

    @flow
    def alternating(n: int) -> int:
        x = 0
        for _ in range(n):
            x = other(inc(inc(x)))  # calls of two tasks in turn: streaks of one or two
        return x

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(ticker())
    try:
        assert await alternating.run_async(3000, history=False) == 3000
    finally:
        beat.cancel()
    assert ticks > 10  # the run yielded every few dozen calls


def test_a_middleware_adding_a_keyword_changes_only_its_own_call() -> None:
    async def tag_first(next_call: Any, task_def: Any, args: Any, kwargs: Any) -> Any:
        if args == (0,):
            kwargs["tag"] = "first"
        return await next_call()

    mw_registry.register(tag_first)

    @task
    def tags(x: int, **kw: Any) -> dict[str, Any]:
        return kw

    @flow
    def both() -> list[dict[str, Any]]:
        return [tags(0), tags(1), tags(2)]

    assert both.run(history=False) == [{"tag": "first"}, {}, {}]


class _CountingCache:
    """A result cache that counts its reads."""

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}
        self.reads = 0

    def get(self, key: str, ttl: float | None) -> Any:
        self.reads += 1
        return self.entries.get(key)

    def set(self, key: str, value: Any) -> None:
        self.entries[key] = value


def test_a_cache_hit_is_served_without_running_the_task() -> None:
    metrics = InMemoryMetrics()
    set_metrics_provider(metrics)
    ran: list[int] = []

    @task(cache_ttl=60)
    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    @flow
    def doubles() -> list[int]:
        return [double(i) for i in range(5)]

    assert doubles.run(history=False) == [0, 2, 4, 6, 8]
    assert doubles.run(history=False) == [0, 2, 4, 6, 8]
    assert ran == [0, 1, 2, 3, 4]
    assert metrics.counters["cache_hits"] == 5
    assert metrics.counters["tasks_succeeded"] == 10


def test_a_cache_miss_reads_the_cache_once_and_stores_the_result() -> None:
    @task(cache_ttl=60)
    def square(x: int) -> int:
        return x * x

    @flow
    def squares() -> list[int]:
        return [square(i) for i in range(4)]

    assert squares.run(history=False) == [0, 1, 4, 9]  # the keys are now remembered
    fresh = _CountingCache()
    assert squares.run(history=False, result_cache=fresh) == [0, 1, 4, 9]
    assert fresh.reads == 4
    assert len(fresh.entries) == 4
