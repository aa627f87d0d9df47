"""The seams around each call: cache, artifacts, middleware, events, tracing, metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auto_workflow import flow, subscribe, task
from auto_workflow import middleware as mw_registry
from auto_workflow.artifacts import ArtifactRef, get_store
from auto_workflow.exceptions import ArtifactNotFoundError, TaskExecutionError
from auto_workflow.metrics_provider import InMemoryMetrics, set_metrics_provider
from auto_workflow.tracing import set_tracer


def test_cached_task_runs_once_within_ttl() -> None:
    calls: list[int] = []

    @task(cache_ttl=60)
    def expensive(x: int) -> int:
        calls.append(x)
        return x * 10

    assert expensive(1) == 10
    assert expensive(1) == 10
    assert expensive(2) == 20
    assert calls == [1, 2]


def test_cache_ttl_zero_never_hits() -> None:
    calls: list[int] = []

    @task(cache_ttl=0)
    def fresh(x: int) -> int:
        calls.append(x)
        return x

    fresh(1)
    fresh(1)
    assert calls == [1, 1]


def test_failures_are_not_cached() -> None:
    calls: list[int] = []

    @task(cache_ttl=60)
    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time")
        return 5

    with pytest.raises(TaskExecutionError):
        flaky()
    assert flaky() == 5
    assert flaky() == 5
    assert len(calls) == 2


def test_cache_key_fn_replaces_the_default_key() -> None:
    calls: list[str] = []

    def by_first_letter(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return args[0][0]

    @task(cache_ttl=60, cache_key_fn=by_first_letter)
    def greet(name: str) -> str:
        calls.append(name)
        return f"hi {name}"

    assert greet("ann") == "hi ann"
    assert greet("amy") == "hi ann"
    assert calls == ["ann"]


def test_persisted_result_is_a_ref_that_downstream_can_resolve() -> None:
    @task(persist=True)
    def large() -> bytes:
        return b"binary-payload" * 1024

    @task
    def size(ref: ArtifactRef) -> int:
        return len(get_store().get(ref))

    @flow
    def f() -> Any:
        ref = large()
        return ref, size(ref)

    ref, n = f.run()
    assert isinstance(ref, ArtifactRef)
    assert n == len(b"binary-payload") * 1024
    assert large() != ref  # a direct call persists a new artifact


def test_missing_artifact_is_a_key_error_naming_the_key() -> None:
    with pytest.raises(KeyError) as info:
        get_store().get(ArtifactRef("nope"))
    assert isinstance(info.value, ArtifactNotFoundError)
    assert "nope" in str(info.value)


def test_middleware_wraps_each_call_outermost_first() -> None:
    seen: list[str] = []

    async def outer(next_call: Any, task_def: Any, args: Any, kwargs: Any) -> Any:
        seen.append(f"outer>{task_def.name}{args}")
        result = await next_call()
        seen.append("outer<")
        return result

    async def inner(next_call: Any, task_def: Any, args: Any, kwargs: Any) -> Any:
        seen.append("inner>")
        return (await next_call()) + 1

    mw_registry.register(outer)
    mw_registry.register(inner)

    @task
    def one(x: int) -> int:
        return x

    assert one(1) == 2
    assert seen == ["outer>one(1,)", "inner>", "outer<"]
    mw_registry.clear()
    assert one(1) == 1


def test_events_are_emitted_and_a_raising_subscriber_never_breaks_a_run() -> None:
    received: list[tuple[str, dict[str, Any]]] = []

    def record(name: str, payload: dict[str, Any]) -> None:
        received.append((name, payload))

    def broken(name: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    names = ("flow_started", "flow_completed", "task_started", "task_retry", "task_succeeded")
    for name in names:
        subscribe(name, broken)
        subscribe(name, record)

    attempts: list[int] = []

    @task(retries=1)
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("once")
        return 1

    @flow(name="evented")
    def f() -> Any:
        return flaky()

    assert f.run() == 1
    kinds = [name for name, _ in received]
    assert kinds == [
        "flow_started",
        "task_started",
        "task_retry",
        "task_succeeded",
        "flow_completed",
    ]
    started = received[1][1]
    assert started["flow"] == "evented"
    assert started["task"] == "flaky"
    assert started["node"] == "flaky:0"
    assert started["run_id"] == received[0][1]["run_id"]
    assert received[2][1]["attempt"] == 1
    assert "duration_ms" in received[3][1]


def test_task_failed_event_carries_the_error() -> None:
    failures: list[dict[str, Any]] = []
    subscribe("task_failed", lambda name, payload: failures.append(payload))

    @task
    def bad() -> None:
        raise ValueError("x")

    with pytest.raises(TaskExecutionError):
        bad()
    assert failures[0]["task"] == "bad"
    assert "ValueError" in failures[0]["error"]


def test_unsubscribe_stops_delivery() -> None:
    got: list[str] = []
    stop = subscribe("task_started", lambda name, payload: got.append(name))

    @task
    def t() -> None:
        return None

    t()
    stop()
    t()
    assert got == ["task_started"]


class RecordingTracer:
    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []

    @contextlib.asynccontextmanager
    async def span(self, name: str, **attrs: Any) -> AsyncIterator[None]:
        self.spans.append((name, attrs))
        yield


def test_tracer_sees_flow_and_task_spans() -> None:
    tracer = RecordingTracer()
    set_tracer(tracer)

    @task
    def a() -> int:
        return 1

    @flow(name="traced")
    def f() -> Any:
        return a()

    f.run()
    names = [n for n, _ in tracer.spans]
    assert names == ["flow:traced", "task:a"]
    assert tracer.spans[1][1] == {"node": "a:0", "attempt": 1}
    assert "run_id" in tracer.spans[0][1]
    set_tracer(None)


def test_in_memory_metrics_count_successes_failures_retries_and_cache() -> None:
    metrics = InMemoryMetrics()
    set_metrics_provider(metrics)

    @task(cache_ttl=60)
    def cached(x: int) -> int:
        return x

    @task(retries=1)
    def bad() -> None:
        raise RuntimeError("no")

    cached(1)
    cached(1)
    with pytest.raises(TaskExecutionError):
        bad()
    assert metrics.counters["tasks_succeeded"] == 2
    assert metrics.counters["tasks_failed"] == 1
    assert metrics.counters["task_retries"] == 1
    assert metrics.counters["cache_hits"] == 1
    assert metrics.counters["cache_sets"] == 1
    assert len(metrics.histograms["task_duration_ms"]) == 3  # failures are timed too
    assert "tasks_running" not in metrics.counters  # the default does not take the gauge


def test_in_memory_metrics_can_track_the_running_gauge() -> None:
    metrics = InMemoryMetrics(track_running=True)
    set_metrics_provider(metrics)
    seen: list[float] = []

    @task
    def peek() -> int:
        seen.append(metrics.counters["tasks_running"])
        return 1

    peek()
    assert seen == [1]
    assert metrics.counters["tasks_running"] == 0


def test_in_memory_histograms_keep_recent_samples_and_count_all() -> None:
    metrics = InMemoryMetrics(max_samples=3)
    for value in range(5):
        metrics.observe("task_duration_ms", float(value))
    assert list(metrics.histograms["task_duration_ms"]) == [2.0, 3.0, 4.0]
    assert metrics.observations["task_duration_ms"] == 5
    with pytest.raises(ValueError, match="max_samples"):
        InMemoryMetrics(max_samples=0)


def test_plugin_setters_reject_classes_and_wrong_shapes_by_name() -> None:
    import contextlib as cl

    from auto_workflow.artifacts import MemoryArtifactStore, set_store
    from auto_workflow.cache import MemoryResultCache, set_result_cache

    with pytest.raises(TypeError, match=r"got the class MemoryResultCache \(call it"):
        set_result_cache(MemoryResultCache)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got the class MemoryArtifactStore"):
        set_store(MemoryArtifactStore)  # type: ignore[arg-type]

    class SyncSpans:
        @cl.contextmanager
        def span(self, name: str, **attrs: Any) -> Any:
            yield

    with pytest.raises(TypeError, match="must return an async context manager"):
        set_tracer(SyncSpans())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"has no observe"):
        set_metrics_provider(type("OnlyInc", (), {"inc": lambda self, *a, **k: None})())
    set_metrics_provider(None)  # back to a fresh in-memory provider
    with pytest.raises(ValueError, match="max_entries must be a positive int"):
        MemoryResultCache(0)
    with pytest.raises(ValueError, match="max_entries"):
        MemoryResultCache("5")  # type: ignore[arg-type]


def test_store_and_event_misuse_names_what_was_expected(tmp_path: Any) -> None:
    from auto_workflow.artifacts import FilesystemArtifactStore
    from auto_workflow.cache import FilesystemResultCache

    store = FilesystemArtifactStore(tmp_path / "art")
    with pytest.raises(TypeError, match="expected an ArtifactRef"):
        store.get("abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serializer must be one of"):
        FilesystemArtifactStore(tmp_path, serializer=["json"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be a non-empty str"):
        FilesystemResultCache(None)  # type: ignore[arg-type]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is a file; the store needs a directory"):
        FilesystemResultCache(tmp_path / "a_file")
    with pytest.raises(ValueError, match="event name must be a non-empty string"):
        subscribe(["task_started"], lambda n, p: None)  # type: ignore[arg-type]


def test_persist_failure_reports_the_attempts_that_ran() -> None:
    from auto_workflow.artifacts import set_store

    class Full:
        def put(self, value: Any) -> Any:
            raise OSError("disk full")

        def get(self, ref: Any) -> Any:
            raise KeyError(ref)

    set_store(Full())

    @task(persist=True, retries=3)
    def once() -> int:
        return 1

    with pytest.raises(TaskExecutionError, match="could not be persisted") as info:
        once()
    assert info.value.attempts == 1
