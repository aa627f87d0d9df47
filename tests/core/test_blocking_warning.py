"""A plain function that holds the event loop (run_in="async") is logged once per task per run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from auto_workflow import fan_out, flow, task
from auto_workflow import middleware as mw_registry
from auto_workflow.config import reload_config
from auto_workflow.exceptions import TaskExecutionError

HOLD = 0.15
"""Seconds a blocking task holds the loop: well past the default 100 ms threshold."""


@task
def parse(i: int) -> int:
    time.sleep(HOLD)  # blocking work on the loop thread
    return i


@task
def quick(i: int) -> int:
    return i


@pytest.fixture
def threshold(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set ``blocking_warning_ms`` through the environment, as a user would."""

    def set_ms(value: str) -> None:
        monkeypatch.setenv("AUTO_WORKFLOW_BLOCKING_WARNING_MS", value)
        reload_config()

    return set_ms


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]


def test_a_blocking_plain_task_is_warned_about_once_per_run_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @flow
    def pipeline() -> list[int]:
        return fan_out(parse, [1, 2, 3])

    with caplog.at_level("WARNING", logger="auto_workflow"):
        assert pipeline.run() == [1, 2, 3]
    (message,) = _logged(caplog)
    assert message.startswith("task 'parse' (parse:")
    assert 'use run_in="thread"' in message
    held_ms = float(message.split("blocked the event loop for ")[1].split(" ms")[0])
    assert held_ms >= HOLD * 1000 * 0.9
    assert "flow 'pipeline'" in message
    assert "blocking_warning_ms=100" in message


def test_each_run_warns_again(caplog: pytest.LogCaptureFixture) -> None:
    @flow
    def pipeline() -> int:
        return parse(1)

    with caplog.at_level("WARNING", logger="auto_workflow"):
        pipeline.run()
        pipeline.run()
    assert len(_logged(caplog)) == 2


def test_quick_plain_tasks_threads_and_coroutines_are_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @task(run_in="thread")
    def in_thread(i: int) -> int:
        time.sleep(HOLD)
        return i

    @task
    async def sleeper(i: int) -> int:
        await asyncio.sleep(HOLD)
        return i

    @flow
    def pipeline() -> list[Any]:
        return [fan_out(quick, range(50)), in_thread(1), sleeper(2)]

    with caplog.at_level("WARNING", logger="auto_workflow"):
        pipeline.run()
    assert _logged(caplog) == []


def test_the_threshold_is_configurable_and_zero_turns_it_off(
    caplog: pytest.LogCaptureFixture, threshold: Any
) -> None:
    @task
    def short_block() -> None:
        time.sleep(0.05)

    @flow
    def pipeline() -> None:
        return short_block()

    with caplog.at_level("WARNING", logger="auto_workflow"):
        pipeline.run()  # 50 ms: under the default 100 ms
        assert _logged(caplog) == []
        threshold("20")
        pipeline.run()
        assert len(_logged(caplog)) == 1
        assert "blocking_warning_ms=20" in _logged(caplog)[0]
        threshold("0")
        pipeline.run()
        parse(1)
        assert len(_logged(caplog)) == 1


def test_a_blocking_call_that_raises_is_warned_about_too(caplog: pytest.LogCaptureFixture) -> None:
    @task
    def fails_slowly() -> None:
        time.sleep(HOLD)
        raise ConnectionError("gave up")

    @flow
    def pipeline() -> None:
        return fails_slowly()

    with caplog.at_level("WARNING", logger="auto_workflow"), pytest.raises(TaskExecutionError):
        pipeline.run()
    assert len(_logged(caplog)) == 1


def test_with_middleware_the_blocking_call_is_warned_about_as_well(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def passthrough(next_call: Any, task_def: Any, args: Any, kwargs: Any) -> Any:
        return await next_call()

    mw_registry.register(passthrough)

    @flow
    def pipeline() -> list[int]:
        return [parse(1), parse(2)]

    with caplog.at_level("WARNING", logger="auto_workflow"):
        assert pipeline.run() == [1, 2]
    (message,) = _logged(caplog)
    assert message.startswith("task 'parse' (parse:")


async def test_run_async_on_the_callers_loop_warns_but_a_sync_direct_call_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="auto_workflow"):
        assert await parse.run_async(1) == 1
        assert len(_logged(caplog)) == 1  # it held the caller's own loop
        assert parse(2) == 2  # a loop of its own, where nothing else runs
        assert len(_logged(caplog)) == 1
