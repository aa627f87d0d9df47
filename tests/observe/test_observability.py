"""Events, spans and metrics as a run emits them: names, payloads, nesting, labels."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auto_workflow import flow, subscribe, task
from auto_workflow.events import EVENT_NAMES, unsubscribe
from auto_workflow.exceptions import EventNameWarning
from auto_workflow.metrics_provider import set_metrics_provider
from auto_workflow.tracing import set_tracer

TASK_KEYS = {"flow", "run_id", "task", "node", "attempt"}


class Recorder:
    """Subscribes to every event and keeps (name, payload) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        for name in EVENT_NAMES:
            subscribe(name, self)

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        self.seen.append((name, payload))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [p for n, p in self.seen if n == name]


def test_every_event_of_a_run_with_retry_failure_skip_and_cache_hit() -> None:
    rec = Recorder()
    tries: list[int] = []

    @task(retries=1)
    def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise OSError("first try")
        return 1

    @task
    def broken() -> int:
        raise ValueError("nope")

    @task
    def after(x: int) -> int:
        return x

    @task(cache_ttl=60)
    def cached(x: int) -> int:
        return x

    @flow
    def mixed() -> Any:
        return flaky(), after(broken()), cached(1), cached(1)

    mixed.run(failure_policy="continue")
    names = [n for n, _ in rec.seen]
    assert names[0] == "flow_started"
    assert names[-1] == "flow_completed"
    assert rec.named("flow_started")[0]["tasks"] == 5
    for name, payload in rec.seen:
        if name.startswith("task_"):
            assert payload.keys() >= TASK_KEYS, (name, payload)
    retry = rec.named("task_retry")
    assert [(p["task"], p["attempt"]) for p in retry] == [("flaky", 1)]
    assert "first try" in retry[0]["error"]
    succeeded = {p["node"]: p for p in rec.named("task_succeeded")}
    assert succeeded["flaky:0"]["attempt"] == 2
    assert succeeded["flaky:0"]["cached"] is False
    assert {p["node"] for p in rec.named("task_cached")} == {"cached:4"}
    assert succeeded["cached:4"]["cached"] is True
    assert succeeded["cached:4"]["attempt"] == 0
    (failed,) = rec.named("task_failed")
    assert failed["node"] == "broken:1"
    assert failed["duration_ms"] >= 0
    (skipped,) = rec.named("task_skipped")
    assert (skipped["node"], skipped["upstream"], skipped["attempt"]) == ("after:2", "broken:1", 0)
    completed = rec.named("flow_completed")[0]
    assert completed["status"] == "failed"  # continue returned, but a task failed
    assert completed["failed"] == 1
    assert completed["error"] == "1 task(s) failed"
    assert completed["duration_ms"] >= 0


def test_unsubscribe_by_callback_and_a_typo_of_an_event_name_warns() -> None:
    got: list[str] = []

    class Sink:
        def on(self, name: str, payload: dict[str, Any]) -> None:
            got.append(name)

    sink = Sink()
    subscribe("task_started", sink.on)

    @task
    def one() -> int:
        return 1

    one()
    assert unsubscribe("task_started", sink.on) is True  # a fresh bound method still matches
    assert unsubscribe("task_started", sink.on) is False
    one()
    assert got == ["task_started"]
    with pytest.warns(EventNameWarning, match="'task_start'.*did you mean 'task_started'"):
        subscribe("task_start", sink.on)


# -- spans ---------------------------------------------------------------------------------

_current_span: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)


class NestingTracer:
    """Records each span with the span that was current when it started."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str | None, dict[str, Any]]] = []

    @contextlib.asynccontextmanager
    async def span(self, name: str, **attrs: Any) -> AsyncIterator[None]:
        self.spans.append((name, _current_span.get(), attrs))
        token = _current_span.set(name)
        try:
            yield
        finally:
            _current_span.reset(token)


def test_task_spans_nest_under_the_flow_span_one_per_attempt() -> None:
    tracer = NestingTracer()
    set_tracer(tracer)
    tries: list[int] = []

    @task(retries=2)
    async def shaky() -> int:
        tries.append(1)
        if len(tries) < 3:
            raise OSError("again")
        return 3

    @task(run_in="thread")
    def blocking(x: int) -> int:
        return x + 1

    @flow
    def traced() -> int:
        return blocking(shaky())

    assert traced.run() == 4
    flow_span = tracer.spans[0]
    assert flow_span[0] == "flow:traced"
    assert flow_span[1] is None
    tasks = tracer.spans[1:]
    assert [(n, a["attempt"]) for n, _, a in tasks] == [
        ("task:shaky", 1),
        ("task:shaky", 2),
        ("task:shaky", 3),
        ("task:blocking", 1),
    ]
    assert all(parent == "flow:traced" for _, parent, _ in tasks)


def test_direct_call_has_a_task_span_and_no_flow_span() -> None:
    tracer = NestingTracer()
    set_tracer(tracer)

    @task
    def alone() -> int:
        return 1

    assert alone() == 1
    assert [(n, p) for n, p, _ in tracer.spans] == [("task:alone", None)]


# -- metrics -------------------------------------------------------------------------------


class LabelledMetrics:
    """Keeps every call with its labels."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, Any]]] = []

    def inc(self, name: str, value: float = 1, **labels: Any) -> None:
        self.calls.append(("inc", name, value, labels))

    def observe(self, name: str, value: float, **labels: Any) -> None:
        self.calls.append(("observe", name, value, labels))


def run_success_hit_failure() -> None:
    """Task ``good`` runs, then hits the cache; task ``bad`` fails."""

    @task(cache_ttl=60)
    def good(x: int) -> int:
        return x

    @task
    def bad() -> None:
        raise ValueError("x")

    good(1)
    good(1)
    with pytest.raises(Exception, match="bad"):
        bad()


def test_metrics_carry_task_and_result_labels_and_running_returns_to_zero() -> None:
    metrics = LabelledMetrics()
    set_metrics_provider(metrics)

    run_success_hit_failure()
    results = [c[3]["result"] for c in metrics.calls if c[1] == "task_duration_ms"]
    assert results == ["success", "cached", "failure"]
    running = [c[2] for c in metrics.calls if c[1] == "tasks_running"]
    assert running == [1, -1, 1, -1, 1, -1]
    assert all("run_id" not in c[3] for c in metrics.calls)
    assert {c[3]["task"] for c in metrics.calls} == {"good", "bad"}


# -- logging -------------------------------------------------------------------------------


def test_importing_attaches_no_handler_and_retries_log_at_debug_under_auto_workflow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = (
        "import logging, auto_workflow, auto_workflow.cli\n"
        "assert not logging.getLogger('auto_workflow').handlers\n"
        "assert not logging.getLogger().handlers\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    calls: list[int] = []

    @task(retries=1)
    def once_more() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("blip")
        return 1

    with caplog.at_level(logging.DEBUG, logger="auto_workflow"):
        once_more()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [(r.name.split(".")[0], r.levelno) for r in retries] == [
        ("auto_workflow", logging.DEBUG)
    ]


def test_a_fan_out_over_a_non_iterable_reports_task_failed() -> None:
    rec = Recorder()

    @task
    def number() -> int:
        return 5

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def broken_fan() -> Any:
        from auto_workflow import fan_out

        return fan_out(double, number())

    with pytest.raises(Exception, match="not iterable"):
        broken_fan.run()
    (failed,) = rec.named("task_failed")
    assert failed["node"].startswith("fanout:")
    assert "not iterable" in failed["error"]
    started = rec.named("flow_started")[0]
    assert started["nodes"] == [("number:0", "number")]


def test_middleware_sees_a_timed_out_attempt_as_a_builtin_timeout_error() -> None:
    import asyncio

    from auto_workflow import middleware
    from auto_workflow.exceptions import TimeoutError as TaskTimeout

    seen: list[bool] = []

    async def watch(next_call: Any, task_def: Any, args: Any, kwargs: Any) -> Any:
        try:
            return await next_call()
        except TimeoutError:
            seen.append(True)
            raise

    middleware.register(watch)

    @task(timeout=0.02)
    async def sleepy() -> None:
        await asyncio.sleep(1)

    with pytest.raises(TaskTimeout):
        sleepy()
    middleware.clear()
    assert seen == [True]


def test_the_flow_span_also_encloses_building_the_graph() -> None:
    tracer = NestingTracer()
    set_tracer(tracer)
    seen_while_building: list[str | None] = []

    @task
    def one() -> int:
        return 1

    @flow
    def built() -> int:
        seen_while_building.append(_current_span.get())
        return one()

    assert built.run() == 1
    assert seen_while_building == ["flow:built"]
    run_ids = {attrs.get("run_id") for name, _, attrs in tracer.spans if name == "flow:built"}
    assert len(run_ids) == 1
    assert None not in run_ids


def test_a_provider_with_task_done_gets_one_call_per_finished_task() -> None:
    calls: list[tuple[Any, ...]] = []

    class Compact(LabelledMetrics):
        def task_done(self, task: str, result: str, duration_ms: float) -> None:
            calls.append((task, result, duration_ms >= 0))

    metrics = Compact()
    set_metrics_provider(metrics)

    run_success_hit_failure()
    assert calls == [("good", "success", True), ("good", "cached", True), ("bad", "failure", True)]
    names = {c[1] for c in metrics.calls}
    assert not names & {"tasks_succeeded", "tasks_failed", "task_duration_ms"}  # not twice
    assert "cache_hits" in names


def test_a_subclass_forwarding_inc_and_observe_still_gets_them() -> None:
    from unittest import mock

    from auto_workflow.metrics_provider import InMemoryMetrics

    seen: list[tuple[str, dict[str, Any]]] = []

    class Forwarding(InMemoryMetrics):
        def inc(self, name: str, value: float = 1, **labels: Any) -> None:
            super().inc(name, value, **labels)
            seen.append((name, labels))

        def observe(self, name: str, value: float, **labels: Any) -> None:
            super().observe(name, value, **labels)
            seen.append((name, labels))

    set_metrics_provider(Forwarding())

    @task
    def hello() -> int:
        return 1

    hello()
    assert ("tasks_succeeded", {"task": "hello", "result": "success"}) in seen
    assert ("task_duration_ms", {"task": "hello", "result": "success"}) in seen

    fake = mock.MagicMock()
    set_metrics_provider(fake)
    hello()
    names = [c.args[0] for c in fake.inc.call_args_list]
    assert "tasks_succeeded" in names  # a mock's made-up task_done is not used
    fake.task_done.assert_not_called()


def test_the_flow_span_ends_with_the_failures_of_a_continue_run() -> None:
    ended: list[str | None] = []

    class Recording:
        @contextlib.asynccontextmanager
        async def span(self, name: str, **attrs: Any) -> AsyncIterator[None]:
            try:
                yield
            except BaseException as exc:
                ended.append(f"{name} {type(exc).__name__}")
                raise
            ended.append(f"{name} ok")

    set_tracer(Recording())

    @task
    def fine() -> int:
        return 1

    @task
    def broken() -> int:
        raise ValueError("no")

    @flow
    def partly() -> Any:
        return fine(), broken()

    ok, err = partly.run(failure_policy="continue")  # the caller still gets the results
    assert ok == 1
    assert isinstance(err, Exception)
    assert "flow:partly AggregateTaskError" in ended
    assert "task:fine ok" in ended

    @flow
    def clean() -> Any:
        return fine()

    assert clean.run(failure_policy="continue") == 1
    assert ended[-1] == "flow:clean ok"
