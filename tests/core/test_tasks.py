"""Tasks called directly (outside a flow): retries, backoff, timeouts, errors, context."""

from __future__ import annotations

import asyncio
import builtins
import time
from typing import Any

import pytest

from auto_workflow import get_context, task
from auto_workflow._core import _calls as runner_module
from auto_workflow.exceptions import (
    ContextError,
    RetryExhaustedError,
    TaskExecutionError,
    TimeoutError,
)


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_direct_call_runs_now_and_returns_the_value() -> None:
    assert add(1, 2) == 3
    assert async_add(2, 3) == 5


async def test_direct_call_works_while_a_loop_runs_in_the_thread() -> None:
    # e.g. Jupyter: a sync call from inside a running loop must not fail or deadlock
    assert add(4, 5) == 9
    assert async_add(1, 1) == 2


async def test_async_code_can_await_a_task_run() -> None:
    assert await async_add.run_async(20, 22) == 42
    assert await add.run_async(1, 1) == 2


def test_retries_then_success_counts_attempts() -> None:
    calls: list[int] = []

    @task(retries=3)
    def flaky() -> str:
        calls.append(get_context().attempt)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    assert flaky() == "ok"
    assert calls == [1, 2, 3]


def test_retries_exhausted_carries_original_and_attempts() -> None:
    @task(retries=2)
    def broken() -> None:
        raise ValueError("bad row")

    with pytest.raises(RetryExhaustedError) as info:
        broken()
    err = info.value
    assert err.task_name == "broken"
    assert err.attempts == 3
    assert isinstance(err.original, ValueError)
    assert err.__cause__ is err.original


def test_failure_without_retries_is_plain_task_execution_error() -> None:
    @task
    def broken() -> None:
        raise KeyError("k")

    with pytest.raises(TaskExecutionError) as info:
        broken()
    assert type(info.value) is TaskExecutionError
    assert info.value.attempts == 1
    assert isinstance(info.value.original, KeyError)


@pytest.fixture
def slept(monkeypatch: Any) -> list[float]:
    """Backoff sleeps the runner asks for, recorded instead of slept."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> Any:
        delays.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(runner_module.asyncio, "sleep", fake_sleep)
    return delays


def test_backoff_sequence_doubles_and_skips_the_last_sleep(slept: list[float]) -> None:
    @task(retries=3, retry_backoff=1.5)
    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RetryExhaustedError):
        broken()
    assert [d for d in slept if d] == [1.5, 3.0, 6.0]


def test_jitter_is_added_within_its_bound(slept: list[float]) -> None:
    @task(retries=4, retry_backoff=1.0, retry_jitter=0.5)
    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RetryExhaustedError):
        broken()
    delays = [d for d in slept if d]
    assert len(delays) == 4
    for k, delay in enumerate(delays, start=1):
        assert 2 ** (k - 1) <= delay <= 2 ** (k - 1) + 0.5


def test_real_backoff_waits_roughly_as_configured() -> None:
    @task(retries=2, retry_backoff=0.1)
    def broken() -> None:
        raise RuntimeError("no")

    start = time.monotonic()
    with pytest.raises(RetryExhaustedError):
        broken()
    elapsed = time.monotonic() - start
    assert 0.28 <= elapsed < 2.0  # 0.1 + 0.2, generous upper bound for a noisy machine


def test_async_timeout_cancels_the_attempt_and_raises_timeout_error() -> None:
    cancelled: list[bool] = []

    @task(timeout=0.1)
    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        slow()
    assert time.monotonic() - start < 5
    assert cancelled == [True]
    assert isinstance(info.value, builtins.TimeoutError)
    assert isinstance(info.value, TaskExecutionError)
    assert info.value.task_name == "slow"


def test_timeouts_are_retried_and_last_one_decides_the_error() -> None:
    attempts: list[int] = []

    @task(timeout=0.05, retries=2)
    async def slow() -> None:
        attempts.append(get_context().attempt)
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError) as info:
        slow()
    assert attempts == [1, 2, 3]
    assert info.value.attempts == 3


def test_timeout_then_success_on_retry() -> None:
    attempts: list[int] = []

    @task(timeout=0.1, retries=1)
    async def sometimes_slow() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(10)
        return "done"

    assert sometimes_slow() == "done"


def test_users_own_timeout_error_is_not_mistaken_for_ours() -> None:
    @task(timeout=5)
    async def raises_builtin_timeout() -> None:
        raise builtins.TimeoutError("socket timed out")

    with pytest.raises(TaskExecutionError) as info:
        raises_builtin_timeout()
    assert not isinstance(info.value, TimeoutError)
    assert str(info.value.original) == "socket timed out"


def test_get_context_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(ContextError, match="outside a run"):
        get_context()


def test_get_context_in_a_direct_call() -> None:
    @task(name="who")
    def who() -> tuple[Any, ...]:
        ctx = get_context()
        return ctx.task_name, ctx.flow_name, ctx.attempt, bool(ctx.run_id)

    assert who() == ("who", None, 1, True)


def test_keyboard_interrupt_in_a_task_is_not_swallowed() -> None:
    @task(retries=3)
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()


def test_a_timed_out_attempt_is_an_attempt_timeout_error_carried_as_original() -> None:
    from auto_workflow.exceptions import AttemptTimeoutError

    @task(timeout=0.02)
    async def stuck() -> None:
        await asyncio.sleep(1)

    with pytest.raises(TimeoutError) as info:
        stuck()
    original = info.value.original
    assert isinstance(original, AttemptTimeoutError)
    assert isinstance(original, builtins.TimeoutError)
    assert original.seconds == 0.02
    assert info.value.__cause__ is original


def test_a_failure_is_not_chained_to_an_event_loop_lookup() -> None:
    @task
    def divide(x: int) -> float:
        return 1 / x

    with pytest.raises(TaskExecutionError) as info:
        divide(0)
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None and len(chain) < 10:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert not any("no running event loop" in str(e) for e in chain)
    assert isinstance(chain[-1], ZeroDivisionError)


def test_a_plain_function_that_overruns_its_timeout_fails_when_it_returns() -> None:
    # Nothing can interrupt a plain function running on the event loop; an attempt that ran
    # past its limit still fails (and is retried) as soon as the function returns.
    calls: list[float] = []

    @task(timeout=0.05, retries=1)
    def blocking() -> str:
        calls.append(time.perf_counter())
        time.sleep(0.1)
        return "late"

    with pytest.raises(TimeoutError) as info:
        blocking()
    assert info.value.attempts == 2
    assert len(calls) == 2

    @task(timeout=5)
    def quick() -> str:
        return "on time"

    assert quick() == "on time"


def test_callables_returning_coroutines_keep_their_timeout() -> None:
    class Slow:
        async def __call__(self, seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

    slow = task(timeout=0.05, name="slow")(Slow())
    with pytest.raises(TimeoutError):
        slow(1.0)
    assert slow(0.0) == 0.0


def test_a_task_exposes_its_options_as_read_only_attributes() -> None:
    def key(fn: Any, args: Any, kwargs: Any) -> str:
        return "k"

    @task(
        name="fetch",
        retries=2,
        retry_backoff=0.5,
        retry_jitter=0.1,
        timeout=3,
        cache_ttl=60,
        cache_key_fn=key,
        persist=True,
        priority=4,
        run_in="thread",
        tags={"io"},
    )
    def fetch_url() -> int:
        return 1

    assert (fetch_url.name, fetch_url.retries, fetch_url.priority) == ("fetch", 2, 4)
    assert (fetch_url.retry_backoff, fetch_url.retry_jitter, fetch_url.timeout) == (0.5, 0.1, 3)
    assert (fetch_url.cache_ttl, fetch_url.cache_key_fn, fetch_url.persist) == (60, key, True)
    assert fetch_url.run_in == "thread"
    assert fetch_url.tags == frozenset({"io"})
    assert fetch_url.options.retries == 2  # .options stays
    for attribute in ("name", "retries", "timeout", "run_in", "tags"):
        with pytest.raises(AttributeError):
            setattr(fetch_url, attribute, None)
    assert fetch_url.with_options(retries=5).retries == 5


# -- calls that do not bind to the task's signature ------------------------------------------

_MISFITS = [
    pytest.param((1,), {}, "missing a required argument: 'b'", id="missing"),
    pytest.param((1, 2, 3), {}, "too many positional arguments", id="too-many"),
    pytest.param((1, 2), {"c": 3}, "unexpected keyword argument 'c'", id="unknown-keyword"),
    pytest.param((1,), {"a": 2}, "multiple values for argument 'a'", id="twice"),
]


@pytest.mark.parametrize(("args", "kwargs", "detail"), _MISFITS)
def test_a_direct_call_that_does_not_bind_is_a_type_error_and_never_runs(
    args: tuple[Any, ...], kwargs: dict[str, Any], detail: str
) -> None:
    ran: list[int] = []

    @task(retries=3)
    def pair(a: int, b: int) -> int:
        ran.append(a)
        return a + b

    with pytest.raises(TypeError, match=detail) as info:
        pair(*args, **kwargs)
    assert type(info.value) is TypeError  # not a TaskExecutionError: no attempt was made
    assert str(info.value).startswith("task 'pair' called with arguments that do not fit")
    assert ran == []  # never called, so never retried


@pytest.mark.parametrize(("args", "kwargs", "detail"), _MISFITS)
async def test_run_async_with_arguments_that_do_not_bind_raises_before_running(
    args: tuple[Any, ...], kwargs: dict[str, Any], detail: str
) -> None:
    ran: list[int] = []

    @task(retries=3)
    async def pair(a: int, b: int) -> int:
        ran.append(a)
        return a + b

    with pytest.raises(TypeError, match=detail):
        await pair.run_async(*args, **kwargs)
    assert ran == []


def test_keyword_only_and_variadic_signatures_are_checked_like_python_does() -> None:
    @task
    def load(path: str, *, limit: int = 10, **options: Any) -> tuple[Any, ...]:
        return path, limit, options

    assert load("a", limit=2, mode="r") == ("a", 2, {"mode": "r"})
    assert load(path="b") == ("b", 10, {})
    with pytest.raises(TypeError, match="too many positional arguments"):
        load("a", 2)
    with pytest.raises(TypeError, match="missing a required argument: 'path'"):
        load(limit=2)
    # The same shapes again: remembered per shape, the answers do not change.
    assert load("c", limit=3, mode="w") == ("c", 3, {"mode": "w"})
    with pytest.raises(TypeError, match="missing a required argument: 'path'"):
        load(limit=5)


# -- retry_on and retry_backoff_max ----------------------------------------------------------


def test_retry_on_retries_the_listed_errors_and_fails_others_at_once() -> None:
    seen: list[type[BaseException]] = []
    errors = iter([ConnectionError("reset"), ConnectionError("reset"), KeyError("row")])

    @task(retries=5, retry_on=(ConnectionError, TimeoutError))
    def fetch() -> None:
        err = next(errors)
        seen.append(type(err))
        raise err

    with pytest.raises(TaskExecutionError) as info:
        fetch()
    assert seen == [ConnectionError, ConnectionError, KeyError]
    assert type(info.value) is TaskExecutionError  # retries were left: not "exhausted"
    assert info.value.attempts == 3
    assert isinstance(info.value.original, KeyError)


def test_retry_on_a_single_type_and_exhaustion_still_says_so() -> None:
    attempts: list[int] = []

    @task(retries=2, retry_on=ConnectionError)
    def fetch() -> None:
        attempts.append(get_context().attempt)
        raise ConnectionResetError("reset")  # a subclass matches

    with pytest.raises(RetryExhaustedError):
        fetch()
    assert attempts == [1, 2, 3]


def test_a_retry_on_predicate_decides_per_error() -> None:
    codes = iter([503, 502, 404])

    class HttpError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            self.status = status

    @task(retries=5, retry_on=lambda exc: isinstance(exc, HttpError) and exc.status >= 500)
    def get() -> None:
        raise HttpError(next(codes))

    with pytest.raises(TaskExecutionError) as info:
        get()
    assert info.value.attempts == 3
    assert info.value.original.status == 404  # type: ignore[union-attr]


def test_a_raising_retry_on_predicate_is_logged_and_the_error_is_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[int] = []

    def broken_rule(exc: Exception) -> bool:
        raise AttributeError("no status")

    @task(retries=3, retry_on=broken_rule)
    def get() -> None:
        ran.append(1)
        raise ValueError("bad")

    with caplog.at_level("WARNING", logger="auto_workflow"), pytest.raises(TaskExecutionError):
        get()
    assert ran == [1]
    assert "task 'get': its retry_on predicate raised AttributeError: no status" in caplog.text


@pytest.mark.parametrize("kind", [builtins.TimeoutError, TimeoutError], ids=["builtin", "ours"])
def test_retry_on_timeout_error_retries_timed_out_attempts(kind: type[Exception]) -> None:
    attempts: list[int] = []

    @task(retries=2, timeout=0.05, retry_on=kind)
    async def slow() -> str:
        attempts.append(get_context().attempt)
        if len(attempts) < 3:
            await asyncio.sleep(5)
        return "done"

    assert slow() == "done"
    assert attempts == [1, 2, 3]


def test_retry_on_applies_in_a_flow_too() -> None:
    from auto_workflow import flow

    ran: list[int] = []

    @task(retries=4, retry_on=ConnectionError)
    def parse() -> None:
        ran.append(1)
        raise ValueError("not json")

    @flow
    def pipeline() -> None:
        return parse()

    with pytest.raises(TaskExecutionError, match="not json"):
        pipeline.run()
    assert ran == [1]


def test_retry_backoff_max_caps_the_exponential_delay(slept: list[float]) -> None:
    @task(retries=5, retry_backoff=1.0, retry_backoff_max=3.0)
    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RetryExhaustedError):
        broken()
    assert [d for d in slept if d] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_jitter_is_added_after_the_cap(slept: list[float]) -> None:
    @task(retries=3, retry_backoff=10.0, retry_backoff_max=1.0, retry_jitter=0.5)
    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RetryExhaustedError):
        broken()
    delays = [d for d in slept if d]
    assert len(delays) == 3
    assert all(1.0 <= d <= 1.5 for d in delays)


def test_a_capped_backoff_really_waits_only_the_cap() -> None:
    @task(retries=2, retry_backoff=30.0, retry_backoff_max=0.05)
    def broken() -> None:
        raise RuntimeError("no")

    start = time.monotonic()
    with pytest.raises(RetryExhaustedError):
        broken()
    assert 0.09 <= time.monotonic() - start < 5.0  # 2 x 0.05 s, not 30 + 60 s


def test_more_than_a_thousand_retries_do_not_overflow_the_backoff() -> None:
    @task(retries=1100)
    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RetryExhaustedError) as info:
        broken()
    assert info.value.attempts == 1101
