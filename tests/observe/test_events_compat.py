"""Subscribers and middleware written as the public auto-workflow package documents them."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from auto_workflow import flow, subscribe, task
from auto_workflow.events import emit, unsubscribe
from auto_workflow.exceptions import EventNameWarning, TaskExecutionError
from auto_workflow.middleware import register

NextCall = Callable[[], Awaitable[Any]]


@task
def one() -> int:
    return 1


# -- subscribers ---------------------------------------------------------------------------


def test_a_one_argument_subscriber_gets_the_payload_with_the_event_name() -> None:
    seen: list[dict[str, Any]] = []

    def on_event(payload: dict[str, Any]) -> None:
        seen.append(payload)

    subscribe("task_succeeded", on_event)
    assert one() == 1
    assert len(seen) == 1
    assert seen[0]["event"] == "task_succeeded"
    assert seen[0]["task"] == "one"


def test_a_two_argument_subscriber_still_gets_name_and_payload() -> None:
    seen: list[tuple[str, str]] = []
    subscribe("task_started", lambda name, payload: seen.append((name, payload["event"])))
    one()
    assert seen == [("task_started", "task_started")]


def test_a_callback_that_fits_both_forms_gets_the_documented_one() -> None:
    seen: list[tuple[Any, ...]] = []

    def either(*args: Any) -> None:
        seen.append(args)

    subscribe("task_started", either)
    one()
    assert len(seen) == 1
    assert len(seen[0]) == 1
    assert seen[0][0]["event"] == "task_started"


@pytest.mark.parametrize(
    "callback",
    [lambda: None, lambda a, b, c: None, lambda *, payload: None],
    ids=["no-arguments", "three-arguments", "keyword-only"],
)
def test_a_callback_that_fits_neither_form_is_refused_at_subscribe(
    callback: Callable[..., Any],
) -> None:
    with pytest.raises(TypeError, match=r"def cb\(payload\)"):
        subscribe("task_started", callback)
    one()  # nothing was subscribed, so nothing fails later


def test_unsubscribe_finds_a_one_argument_callback() -> None:
    seen: list[str] = []

    def on_event(payload: dict[str, Any]) -> None:
        seen.append(payload["event"])

    subscribe("task_started", on_event)
    assert unsubscribe("task_started", on_event) is True
    one()
    assert seen == []


def test_emit_reaches_subscribers_of_a_custom_event_with_a_copy_of_the_payload() -> None:
    seen: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a name of one's own is no typo
        subscribe("batch_loaded", seen.append)
    sent = {"rows": 10}
    emit("batch_loaded", sent)
    emit("batch_loaded")
    assert seen == [{"rows": 10, "event": "batch_loaded"}, {"event": "batch_loaded"}]
    assert sent == {"rows": 10}


def test_emit_from_a_task_reaches_subscribers_during_the_run() -> None:
    seen: list[int] = []
    subscribe("progress", lambda payload: seen.append(payload["done"]))

    @task
    def work(n: int) -> int:
        emit("progress", {"done": n})
        return n

    @flow
    def pipeline() -> list[int]:
        return [work(1), work(2)]

    assert pipeline.run() == [1, 2]
    assert sorted(seen) == [1, 2]


def test_a_typo_of_a_built_in_event_warns_with_the_close_match() -> None:
    with pytest.warns(EventNameWarning, match="did you mean 'task_succeeded'"):
        subscribe("task_sucess", lambda payload: None)


def test_a_custom_name_close_to_a_built_in_does_not_warn_once_emitted() -> None:
    emit("task_starts", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subscribe("task_starts", lambda payload: None)


def test_emit_rejects_a_payload_that_is_not_a_mapping() -> None:
    with pytest.raises(TypeError, match="payload must be a mapping"):
        emit("mine", [1, 2])  # type: ignore[arg-type]


def test_flow_completed_carries_the_task_count() -> None:
    ends: list[dict[str, Any]] = []
    subscribe("flow_completed", ends.append)

    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def pipeline() -> Any:
        from auto_workflow import fan_out

        return fan_out(double, numbers())

    assert pipeline.run() == [2, 4, 6]
    assert ends[0]["tasks"] == 4  # the source and the three fan-out children


def test_flow_completed_carries_the_task_count_when_the_run_fails() -> None:
    ends: list[dict[str, Any]] = []
    subscribe("flow_completed", ends.append)

    @task
    def broken() -> int:
        raise ValueError("no")

    @flow
    def pipeline() -> list[int]:
        return [one(), broken()]

    with pytest.raises(TaskExecutionError):
        pipeline.run()
    assert ends[0]["tasks"] == 2
    assert ends[0]["status"] == "failed"


# -- middleware ------------------------------------------------------------------------------


def _middleware_errors() -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    subscribe("middleware_error", seen.append)
    return seen


def test_a_middleware_raising_before_next_call_is_skipped_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = _middleware_errors()
    order: list[str] = []

    async def broken(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        raise RuntimeError("middleware bug")

    async def inner(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        order.append("inner")
        return await next_call()

    register(broken)
    register(inner)
    with caplog.at_level(logging.WARNING, logger="auto_workflow"):
        assert one() == 1
    assert order == ["inner"]  # the rest of the chain ran once
    assert len(errors) == 1
    assert errors[0]["task"] == "one"
    assert errors[0]["middleware"].endswith("broken")
    assert "middleware bug" in errors[0]["error"]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "middleware bug" in warned[0].getMessage()


def test_a_middleware_raising_after_next_call_keeps_the_result_and_runs_the_task_once() -> None:
    errors = _middleware_errors()
    runs: list[int] = []

    @task
    def counted() -> int:
        runs.append(1)
        return 7

    async def after(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        await next_call()
        raise KeyError("after")

    register(after)
    assert counted() == 7
    assert runs == [1]
    assert [e["event"] for e in errors] == ["middleware_error"]


def test_the_task_s_own_error_through_a_middleware_is_still_the_task_failure() -> None:
    errors = _middleware_errors()

    @task
    def broken() -> int:
        raise ValueError("task bug")

    async def passthrough(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        return await next_call()

    register(passthrough)
    with pytest.raises(TaskExecutionError) as info:
        broken()
    assert isinstance(info.value.original, ValueError)
    assert errors == []


def test_a_middleware_error_in_a_flow_does_not_fail_the_run() -> None:
    errors = _middleware_errors()

    async def broken(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        raise RuntimeError("bug")

    register(broken)

    @flow
    def pipeline() -> list[int]:
        return [one(), one.with_options(name="two")()]

    assert pipeline.run() == [1, 1]
    assert sorted(e["task"] for e in errors) == ["one", "two"]
    assert all(e["run_id"] and e["flow"] == "pipeline" for e in errors)
