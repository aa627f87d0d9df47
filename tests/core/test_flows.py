"""Flows: building graphs from task calls and running them."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import threading
import time
from typing import Any

import pytest

from auto_workflow import fan_out, flow, get_context, task
from auto_workflow.exceptions import (
    AggregateTaskError,
    FanOutLimitError,
    PlaceholderMisuseError,
    TaskExecutionError,
    UpstreamFailedError,
)


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def boom(*_: Any) -> None:
    raise RuntimeError("boom")


def test_flow_returns_its_structure_with_results_filled_in() -> None:
    @flow
    def pipeline(n: int) -> dict[str, Any]:
        a = add(n, 1)
        b = double(a)
        return {"a": a, "b": b, "both": (a, [b, {"k": b}]), "plain": 7}

    assert pipeline.run(4) == {"a": 5, "b": 10, "both": (5, [10, {"k": 10}]), "plain": 7}


def test_placeholders_nested_in_sets_and_dicts_are_dependencies() -> None:
    @task
    def sort_all(items: dict[str, Any]) -> list[int]:
        return sorted([*items["s"], items["d"]["x"]])

    @flow
    def nested() -> list[int]:
        a, b = add(1, 1), add(2, 2)
        return sort_all({"s": {a, b}, "d": {"x": double(b)}})

    assert nested.run() == [2, 4, 8]


def test_calling_a_flow_runs_it() -> None:
    @flow
    def simple() -> int:
        return add(1, 2)

    assert simple() == 3


def test_independent_tasks_run_concurrently() -> None:
    @task
    async def nap() -> float:
        await asyncio.sleep(0.2)
        return time.monotonic()

    @flow
    def naps() -> list[float]:
        return [nap() for _ in range(10)]

    start = time.monotonic()
    naps.run()
    assert time.monotonic() - start < 1.5  # 10 x 0.2 s sequentially would be 2 s


def test_after_orders_tasks_without_passing_data() -> None:
    log: list[str] = []

    @task
    async def create() -> None:
        await asyncio.sleep(0.05)
        log.append("create")

    @task
    def insert(row: int) -> int:
        log.append("insert")
        return row

    @flow
    def ordered() -> int:
        made = create()
        return insert.after(made)(5)

    assert ordered.run() == 5
    assert log == ["create", "insert"]
    assert ordered.describe()["nodes"][1]["upstream"] == ["create:0"]


def test_after_accepts_only_task_results() -> None:
    @flow
    def wrong() -> Any:
        return add.after(3)(1, 2)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="task results"):
        wrong.run()


def test_after_outside_a_flow_is_an_error() -> None:
    with pytest.raises(PlaceholderMisuseError):
        add.after()


@pytest.mark.parametrize(
    "misuse",
    [lambda p: bool(p), lambda p: len(p), lambda p: list(p), lambda p: p + 1],
)
def test_using_a_placeholder_as_a_value_at_build_time_fails_clearly(misuse: Any) -> None:
    @flow
    def bad() -> Any:
        return misuse(add(1, 2))

    with pytest.raises(PlaceholderMisuseError, match="fan_out"):
        bad.run()


def test_placeholder_passed_to_a_direct_call_is_rejected() -> None:
    leaked: list[Any] = []

    @flow
    def leak() -> None:
        leaked.append(add(1, 2))

    leak.describe()
    with pytest.raises(PlaceholderMisuseError):
        add(leaked[0], 1)


def test_nested_flow_is_inlined_into_the_outer_graph() -> None:
    @flow
    def inner(x: int) -> int:
        return double(add(x, 1))

    @flow
    def outer() -> list[int]:
        return [inner(1), inner(2)]

    assert outer.run() == [4, 6]
    assert outer.describe()["count"] == 4


async def test_run_async_from_async_code() -> None:
    @flow
    def pipeline() -> int:
        return double(add(1, 2))

    assert await pipeline.run_async() == 6


async def test_sync_run_from_inside_a_running_loop() -> None:
    @flow
    def pipeline() -> int:
        return double(3)

    assert pipeline.run() == 6


def test_params_reach_tasks_and_can_shape_the_graph() -> None:
    @task
    def read_param() -> Any:
        return get_context().params["region"]

    @flow
    def shaped() -> list[Any]:
        width = get_context().params["width"]
        return [read_param() for _ in range(width)]

    assert shaped.run(params={"width": 3, "region": "eu"}) == ["eu", "eu", "eu"]


def test_context_names_the_flow_task_and_run() -> None:
    @task(name="probe")
    def probe() -> tuple[Any, ...]:
        ctx = get_context()
        return ctx.flow_name, ctx.task_name, ctx.node_id, ctx.attempt, ctx.run_id

    @flow(name="ctx_flow")
    def ctx_flow() -> Any:
        return probe(), get_context().run_id

    (flow_name, task_name, node_id, attempt, run_id), build_run_id = ctx_flow.run()
    assert (flow_name, task_name, node_id, attempt) == ("ctx_flow", "probe", "probe:0", 1)
    assert run_id == build_run_id


def test_async_flow_body_is_rejected() -> None:
    with pytest.raises(TypeError, match="plain function"):

        @flow
        async def not_allowed() -> None:
            pass


# -- failure policies -----------------------------------------------------------------------


def _policy_flow() -> Any:
    @flow
    def f() -> dict[str, Any]:
        ok = add(1, 1)
        bad = boom(ok)
        after_bad = add(bad, 1)
        independent = double(5)
        return {"ok": ok, "bad": bad, "after": after_bad, "independent": independent}

    return f


def test_fail_fast_raises_the_first_failure() -> None:
    with pytest.raises(TaskExecutionError) as info:
        _policy_flow().run()
    assert info.value.task_name == "boom"
    assert str(info.value.original) == "boom"


def test_fail_fast_cancels_running_tasks_and_starts_nothing_new() -> None:
    cancelled: list[bool] = []
    started: list[str] = []

    @task
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @task
    async def quick_fail() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("stop")

    @task
    def later(_: Any) -> None:
        started.append("later")

    @flow
    def f() -> Any:
        return slow(), quick_fail(), later(slow())

    start = time.monotonic()
    with pytest.raises(TaskExecutionError):
        f.run()
    assert time.monotonic() - start < 3
    assert cancelled == [True, True]
    assert started == []


def test_continue_returns_errors_in_failed_and_skipped_positions() -> None:
    out = _policy_flow().run(failure_policy="continue")
    assert out["ok"] == 2
    assert out["independent"] == 10
    assert isinstance(out["bad"], TaskExecutionError)
    assert not isinstance(out["bad"], UpstreamFailedError)
    assert isinstance(out["after"], UpstreamFailedError)
    assert out["after"].original is out["bad"]


def test_aggregate_raises_every_failure_after_running_the_rest() -> None:
    ran: list[int] = []

    @task
    def record(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def f() -> Any:
        return boom(), boom(), add(boom(), 1), record(3)

    with pytest.raises(AggregateTaskError) as info:
        f.run(failure_policy="aggregate")
    assert [e.task_name for e in info.value.errors] == ["boom", "boom", "boom"]
    assert ran == [3]


def test_aggregate_without_failures_returns_normally() -> None:
    @flow
    def f() -> int:
        return add(1, 2)

    assert f.run(failure_policy="aggregate") == 3


@pytest.mark.parametrize("bad", ["stop", 3, None])
def test_unknown_failure_policy_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="failure_policy"):
        _policy_flow().run(failure_policy=bad)


# -- concurrency and priority ------------------------------------------------------------------


class PeakTracker:
    """A task that records how many of its calls run at the same time."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.task = task(name="tracked")(self._body)

    async def _body(self, *_: Any) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.02)
        self.running -= 1


def test_max_concurrency_bounds_running_tasks() -> None:
    tracker = PeakTracker()

    @flow
    def f() -> Any:
        return [tracker.task() for _ in range(20)]

    f.run(max_concurrency=3)
    assert tracker.peak == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_max_concurrency_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        _policy_flow().run(max_concurrency=bad)


def test_priority_orders_ready_tasks() -> None:
    order: list[str] = []

    @task
    def record(label: str) -> None:
        order.append(label)

    low = record.with_options(priority=-5)
    high = record.with_options(priority=10)

    @flow
    def f() -> Any:
        return low("low"), record("mid"), high("high"), record("mid2")

    f.run(max_concurrency=1)
    assert order == ["high", "mid", "mid2", "low"]


# -- fan-out ----------------------------------------------------------------------------------


def test_static_fan_out_is_a_list_of_results() -> None:
    @flow
    def f() -> Any:
        doubled = fan_out(double, [1, 2, 3])
        return doubled, total(doubled)

    assert f.run() == ([2, 4, 6], 12)


def test_dynamic_fan_out_expands_at_run_time() -> None:
    @flow
    def f(n: int) -> Any:
        return total(fan_out(double, numbers(n)))

    assert f.run(5) == 20
    described = f.describe(5)
    assert [n["id"] for n in described["nodes"]] == ["numbers:0", "fanout:1", "total:2"]


def test_nested_dynamic_fan_out() -> None:
    @task
    def ranges(n: int) -> list[list[int]]:
        return [list(range(i)) for i in range(n)]

    @task
    def length(xs: list[int]) -> int:
        return len(xs)

    @flow
    def f(n: int) -> Any:
        lengths = fan_out(length, ranges(n))
        doubled = fan_out(double, lengths)
        return doubled, total(doubled)

    assert f.run(4) == ([0, 2, 4, 6], 12)


def test_fan_out_of_an_empty_source_yields_an_empty_list() -> None:
    @flow
    def f() -> Any:
        return total(fan_out(double, numbers(0))), fan_out(double, [])

    assert f.run() == (0, [])


def test_fan_out_over_a_non_iterable_result_fails_that_step() -> None:
    @task
    def scalar() -> int:
        return 5

    @flow
    def f() -> Any:
        return fan_out(double, scalar())

    with pytest.raises(TaskExecutionError, match="not iterable") as info:
        f.run()
    assert "double" in info.value.task_name


def test_fan_out_guardrail(monkeypatch: Any) -> None:
    from auto_workflow._core import _config

    monkeypatch.setenv("AUTO_WORKFLOW_MAX_DYNAMIC_TASKS", "10")
    _config.reload_config()
    try:

        @flow
        def f(n: int) -> Any:
            return fan_out(double, numbers(n))

        assert len(f.run(10)) == 10
        with pytest.raises(TaskExecutionError, match="max_dynamic_tasks") as info:
            f.run(11)
        assert isinstance(info.value.original, FanOutLimitError)
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_MAX_DYNAMIC_TASKS")
        _config.reload_config()


def test_default_guardrail_allows_large_fan_outs() -> None:
    from auto_workflow._core import _config

    assert _config.get_config().max_dynamic_tasks >= 100_000


@pytest.mark.parametrize("dynamic", [False, True])
def test_fan_out_max_concurrency_bounds_its_children(dynamic: bool) -> None:
    tracker = PeakTracker()

    @flow
    def f() -> Any:
        source = numbers(12) if dynamic else list(range(12))
        return fan_out(tracker.task, source, max_concurrency=2)

    f.run()
    assert tracker.peak == 2


def test_fan_out_outside_a_flow_runs_now() -> None:
    assert fan_out(double, [1, 2, 3]) == [2, 4, 6]


def test_fan_out_rejects_non_tasks_and_bad_limits() -> None:
    with pytest.raises(TypeError, match="@task"):
        fan_out(len, [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        fan_out(double, [1], max_concurrency=0)
    with pytest.raises(TypeError, match="iterable"):
        fan_out(double, 5)  # type: ignore[arg-type]


def test_failed_dynamic_child_under_continue_keeps_siblings() -> None:
    @task
    def fragile(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    @flow
    def f() -> Any:
        results = fan_out(fragile, numbers(4))
        return results, total(results)

    results, summed = f.run(failure_policy="continue")
    assert results[:2] == [0, 1]
    assert results[3] == 3
    assert isinstance(results[2], TaskExecutionError)
    assert isinstance(summed, UpstreamFailedError)


# -- describe / export -------------------------------------------------------------------------


def test_describe_runs_nothing_and_is_json() -> None:
    ran: list[int] = []

    @task(retries=2, run_in="thread", priority=3)
    def side_effect() -> None:
        ran.append(1)

    @flow
    def f() -> Any:
        return add(side_effect(), 1)

    described = f.describe()
    assert ran == []
    assert json.loads(json.dumps(described)) == described
    first = described["nodes"][0]
    assert first["task"] == "side_effect"
    assert first["run_in"] == "thread"
    assert first["priority"] == 3
    assert first["retries"] == 2
    assert described["nodes"][1]["upstream"] == ["side_effect:0"]
    assert f.export_graph() == {"side_effect:0": ["add:1"], "add:1": []}
    assert '"side_effect:0" -> "add:1";' in f.export_dot()


def test_params_must_be_a_mapping() -> None:
    @flow
    def f() -> int:
        return add(1, 2)

    with pytest.raises(TypeError, match="params must be a mapping"):
        f.run(params=[("a", 1)])  # type: ignore[arg-type]


def test_fan_out_over_text_is_refused_with_what_to_write_instead() -> None:
    @task
    def shout(s: str) -> str:
        return s.upper()

    @task
    def word() -> str:
        return "abc"

    with pytest.raises(TypeError, match=r"one call per character; pass \[value\]"):
        fan_out(shout, "abc")

    @flow
    def concrete() -> Any:
        return fan_out(shout, "abc")

    with pytest.raises(TypeError, match="one call per character"):
        concrete.run()

    @flow
    def dynamic() -> Any:
        return fan_out(shout, word())

    with pytest.raises(TaskExecutionError, match="one call per character"):
        dynamic.run()
    assert fan_out(shout, ["abc"]) == ["ABC"]


def test_a_call_that_does_not_fit_the_task_fails_the_build_naming_the_task() -> None:
    @task(retries=3)
    def pair(a: int, b: int) -> int:
        return a + b

    @task
    def two_needed(a: int, b: int) -> int:
        return a - b

    @flow
    def wrong_count() -> Any:
        return pair(1)

    @flow
    def wrong_name() -> Any:
        return pair(1, 2, c=3)

    @flow
    def wrong_fan_out() -> Any:
        return fan_out(two_needed, [1, 2])

    for bad, detail in (
        (wrong_count, "missing a required argument: 'b'"),
        (wrong_name, "unexpected keyword argument 'c'"),
    ):
        with pytest.raises(TypeError, match=r"task 'pair' called with arguments that do not fit"):
            bad.describe()
        with pytest.raises(TypeError, match=detail):
            bad.run()
    with pytest.raises(TypeError, match="task 'two_needed'"):
        wrong_fan_out.run()


def _inject_session(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn("SESSION", *args, **kwargs)

    return wrapper


@task(cache_ttl=60)
@_inject_session
def load_with_session(session: str, key: str) -> str:
    return f"{session}:{key}"


def test_a_decorator_that_injects_arguments_keeps_its_own_signature() -> None:
    @task
    def first() -> int:
        return 1

    @flow
    def uses() -> Any:
        return load_with_session("k"), load_with_session.after(first())("j")

    assert uses.run() == ("SESSION:k", "SESSION:j")
    assert uses.run() == ("SESSION:k", "SESSION:j")  # cached: the key binds the wrapper's call

    @flow
    def bad_after() -> Any:
        return first.after(first())(1)

    with pytest.raises(TypeError, match="task 'first' called with arguments that do not fit"):
        bad_after.run()


def test_a_skipped_dependant_says_why_and_where_the_difference_is_documented() -> None:
    @task
    def broken() -> int:
        raise ValueError("no")

    @task
    def use(x: int) -> int:
        return x

    @flow
    def pipeline() -> int:
        return use(broken())

    skipped = pipeline.run(failure_policy="continue")
    assert "skipped, not run with its error: docs/migrating.md" in str(skipped)


def test_describe_of_a_flow_counts_its_dynamic_fanouts() -> None:
    @task
    def numbers() -> list[int]:
        return [1, 2]

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def pipeline() -> Any:
        return fan_out(double, fan_out(double, numbers()))

    described = pipeline.describe()
    assert described["dynamic_count"] == 2
    assert [f["source"] for f in described["dynamic_fanouts"]] == ["numbers:0", "fanout:1"]
    assert {f["type"] for f in described["dynamic_fanouts"]} == {"dynamic_fanout"}
    assert json.loads(json.dumps(described)) == described


def test_a_fan_out_over_text_is_refused_with_a_pointer_to_the_migration_page() -> None:
    @task
    def shout(c: str) -> str:
        return c.upper()

    @flow
    def pipeline() -> list[str]:
        return fan_out(shout, "abc")

    with pytest.raises(TypeError, match=r"list\(value\).*docs/migrating\.md"):
        pipeline.run()


@pytest.mark.parametrize(
    "keyword",
    [
        "params",
        "failure_policy",
        "max_concurrency",
        "result_cache",
        "artifact_store",
        "run_id",
        "durable",
        "history",
        "executor",
    ],
)
def test_a_flow_parameter_named_like_a_run_keyword_is_refused_at_decoration(
    keyword: str,
) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def body({keyword}=None):\n    return None\n", namespace)
    with pytest.raises(TypeError, match=rf"flow 'body': parameter\(s\) '{keyword}'.*flow\.run"):
        flow(namespace["body"])


def test_positional_only_and_var_keyword_parameters_do_not_collide() -> None:
    @flow
    def body(params: int, /, **kwargs: Any) -> int:
        return params

    assert body.run(3) == 3


def test_the_collector_pauses_while_a_body_builds_and_resumes_however_it_ends() -> None:
    seen: list[bool] = []

    @flow
    def watched(fail: bool) -> int:
        seen.append(gc.isenabled())
        if fail:
            raise RuntimeError("body failed")
        return add(1, 2)

    assert gc.isenabled()
    assert watched.run(False) == 3
    with pytest.raises(RuntimeError, match="body failed"):
        watched.run(True)
    assert seen == [False, False]
    assert gc.isenabled()


def test_a_collector_turned_off_before_a_build_stays_off() -> None:
    @flow
    def small() -> int:
        return add(1, 2)

    gc.disable()
    try:
        assert small.run() == 3
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_builds_in_two_threads_share_one_pause() -> None:
    inside, first_done = threading.Event(), threading.Event()
    after_first: list[bool] = []

    @flow
    def slow_body() -> int:
        inside.set()
        first_done.wait(5)
        after_first.append(gc.isenabled())  # the other build ended: still paused for us
        return add(1, 1)

    @flow
    def quick_body() -> int:
        return add(2, 2)

    builder = threading.Thread(target=slow_body.build)
    builder.start()
    assert inside.wait(5)
    quick_body.build()
    first_done.set()
    builder.join(5)
    assert after_first == [False]
    assert gc.isenabled()
