"""A plugin that raises never costs the user their results; it is reported once per run."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from auto_workflow import fan_out, flow, subscribe, task
from auto_workflow import middleware as mw_registry
from auto_workflow._core._plugins import DEFAULTS
from auto_workflow.exceptions import TaskExecutionError
from auto_workflow.metrics_provider import set_metrics_provider
from auto_workflow.tracing import set_tracer

NextCall = Callable[[], Awaitable[Any]]


@task
def add_one(x: int) -> int:
    return x + 1


@task
def explode(x: int) -> int:
    raise ValueError(f"bad {x}")


@flow
def pipeline() -> list[int]:
    a = add_one(1)
    b = add_one(a)
    return [a, b, *fan_out(add_one, [10, 20])]


@flow
def half_broken() -> list[Any]:
    return [add_one(1), explode(2)]


def _plugin_errors() -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    subscribe("plugin_error", seen.append)
    return seen


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


class _RaisingMetrics:
    """Raises in the one hook named ``broken``; records the rest."""

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.calls: list[str] = []

    def _maybe_raise(self, hook: str) -> None:
        self.calls.append(hook)
        if hook == self.broken:
            raise RuntimeError(f"metrics {hook} down")

    def inc(self, name: str, value: float = 1, **labels: Any) -> None:
        self._maybe_raise("inc")

    def observe(self, name: str, value: float, **labels: Any) -> None:
        self._maybe_raise("observe")

    def wants(self, name: str) -> bool:
        self._maybe_raise("wants")
        return True


class _RaisingTaskDone(_RaisingMetrics):
    def task_done(self, task: str, result: str, duration_ms: float) -> None:
        self._maybe_raise("task_done")


@pytest.mark.parametrize(
    ("provider_type", "hook"),
    [
        (_RaisingMetrics, "inc"),
        (_RaisingMetrics, "observe"),
        (_RaisingMetrics, "wants"),
        (_RaisingTaskDone, "task_done"),
    ],
)
def test_a_raising_metrics_provider_keeps_every_result(
    provider_type: type[_RaisingMetrics], hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_type(hook)
    set_metrics_provider(provider)
    errors = _plugin_errors()
    with caplog.at_level(logging.WARNING, logger="auto_workflow"):
        assert pipeline.run() == [2, 3, 11, 21]
    assert hook in provider.calls
    assert len(errors) == 1
    assert errors[0]["hook"].startswith(hook)
    assert errors[0]["kind"] == "metrics provider"
    assert errors[0]["plugin"].endswith(provider_type.__qualname__)
    assert errors[0]["flow"] == "pipeline"
    assert errors[0]["run_id"]
    warned = _warnings(caplog)
    assert len(warned) == 1
    assert provider_type.__qualname__ in warned[0].getMessage()
    assert hook in warned[0].getMessage()


def test_a_raising_metrics_provider_keeps_the_continue_outcome() -> None:
    set_metrics_provider(_RaisingMetrics("inc"))
    out = half_broken.run(failure_policy="continue")
    assert out[0] == 2
    assert isinstance(out[1], TaskExecutionError)


def test_a_raising_metrics_provider_keeps_a_direct_call_s_value() -> None:
    set_metrics_provider(_RaisingTaskDone("task_done"))
    assert add_one(4) == 5


def test_a_faulty_plugin_is_reported_once_per_run(caplog: pytest.LogCaptureFixture) -> None:
    set_metrics_provider(_RaisingMetrics("inc"))
    errors = _plugin_errors()
    with caplog.at_level(logging.WARNING, logger="auto_workflow"):
        pipeline.run()
        pipeline.run()
    assert len(errors) == 2
    assert errors[0]["run_id"] != errors[1]["run_id"]
    assert len(_warnings(caplog)) == 2


class _Tracer:
    """Raises where told: ``where`` in {"call", "enter", "exit"}, on spans named ``prefix*``."""

    def __init__(self, where: str, prefix: str) -> None:
        self.where = where
        self.prefix = prefix
        self.entered: list[str] = []

    def _boom(self, name: str, where: str) -> None:
        if self.where == where and name.startswith(self.prefix):
            raise RuntimeError(f"tracer {where} failed")

    def span(self, name: str, **attrs: Any) -> contextlib.AbstractAsyncContextManager[None]:
        if name != "probe":
            self._boom(name, "call")
        return self._span(name)

    @contextlib.asynccontextmanager
    async def _span(self, name: str) -> AsyncIterator[None]:
        self._boom(name, "enter")
        self.entered.append(name)
        yield
        self._boom(name, "exit")


@pytest.mark.parametrize("where", ["call", "enter", "exit"])
@pytest.mark.parametrize("prefix", ["task:", "flow:"])
def test_a_raising_tracer_keeps_every_result_and_leaves_no_warning(
    where: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    set_tracer(_Tracer(where, prefix))
    errors = _plugin_errors()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        assert pipeline.run() == [2, 3, 11, 21]
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert len(errors) == 1
    assert errors[0]["kind"] == "tracer"
    assert prefix in errors[0]["hook"]
    assert len(_warnings(caplog)) == 1


def test_a_raising_tracer_does_not_hide_a_task_failure() -> None:
    set_tracer(_Tracer("exit", "task:"))
    with pytest.raises(TaskExecutionError) as info:
        half_broken.run()
    assert isinstance(info.value.original, ValueError)


def test_a_raising_subscriber_is_reported_once_per_run(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(payload: dict[str, Any]) -> None:
        seen.append(payload["task"])
        raise RuntimeError("subscriber bug")

    subscribe("task_succeeded", broken)
    errors = _plugin_errors()
    with caplog.at_level(logging.WARNING, logger="auto_workflow"):
        assert pipeline.run() == [2, 3, 11, 21]
    assert len(seen) == 4  # still called for every task
    assert len(errors) == 1
    assert errors[0]["kind"] == "event subscriber"
    assert "task_succeeded" in errors[0]["hook"]
    assert len(_warnings(caplog)) == 1


def test_a_subscriber_raising_on_plugin_error_does_not_recurse() -> None:
    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("again")

    subscribe("task_started", broken)
    subscribe("plugin_error", broken)
    assert pipeline.run() == [2, 3, 11, 21]


def test_a_raising_middleware_is_reported_once_per_run(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        raise RuntimeError("middleware bug")

    mw_registry.register(broken)
    errors = _plugin_errors()
    with caplog.at_level(logging.WARNING, logger="auto_workflow"):
        assert pipeline.run() == [2, 3, 11, 21]
    assert len(errors) == 1
    assert errors[0]["kind"] == "middleware"
    assert "before next_call()" in errors[0]["hook"]
    assert len(_warnings(caplog)) == 1


# -- the setters from many threads -------------------------------------------------------


def _from_threads(work: Callable[[int], None], threads: int = 8) -> None:
    barrier = threading.Barrier(threads)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_subscribe_from_many_threads_keeps_every_subscription() -> None:
    def subscribe_many(index: int) -> None:
        for _ in range(300):
            subscribe("task_started", lambda payload: None)

    _from_threads(subscribe_many)
    assert DEFAULTS.events.count() == 2400


def test_register_and_setters_from_many_threads_keep_every_middleware() -> None:
    async def passthrough(next_call: NextCall, task_def: Any, args: Any, kwargs: Any) -> Any:
        return await next_call()

    tracers = [_Tracer("never", "") for _ in range(8)]

    def register_many(index: int) -> None:
        for _ in range(300):
            mw_registry.register(passthrough)
            set_tracer(tracers[index])
            set_metrics_provider(_RaisingMetrics("never"))

    _from_threads(register_many)
    assert len(DEFAULTS.snapshot().middleware) == 2400
    assert DEFAULTS.tracer in tracers
