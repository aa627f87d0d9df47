"""The Prometheus adapter, against a real prometheus_client registry (a fresh one per test)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from auto_workflow import flow, task
from auto_workflow.exceptions import TaskExecutionError
from auto_workflow.integrations.prometheus import DEFAULT_BUCKETS, PrometheusMetrics
from auto_workflow.metrics_provider import MetricsProvider, set_metrics_provider

RUNS = "auto_workflow_task_runs_total"
DURATION_COUNT = "auto_workflow_task_run_duration_seconds_count"
RUNNING = "auto_workflow_tasks_running"


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry whose PrometheusMetrics is the default metrics provider."""
    fresh = CollectorRegistry()
    provider: MetricsProvider = PrometheusMetrics(fresh)  # mypy: it satisfies the protocol
    set_metrics_provider(provider)
    return fresh


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_successful_runs_are_counted_per_task_and_result(registry: CollectorRegistry) -> None:
    @task
    def load() -> int:
        return 1

    @task
    def double(x: int) -> int:
        return x * 2

    @flow
    def pipeline() -> Any:
        return [double(load()), double(5)]

    assert pipeline.run() == [2, 10]
    assert sample(registry, RUNS, task="load", result="success") == 1
    assert sample(registry, RUNS, task="double", result="success") == 2
    assert sample(registry, RUNS, task="double", result="failure") is None
    assert sample(registry, DURATION_COUNT, task="double", result="success") == 2
    seconds = sample(
        registry, "auto_workflow_task_run_duration_seconds_sum", task="load", result="success"
    )
    assert seconds is not None
    assert 0 <= seconds < 5  # seconds, not milliseconds


def test_failures_and_retries_are_counted(registry: CollectorRegistry) -> None:
    attempts: list[int] = []

    @task(retries=1)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first attempt")
        return "ok"

    @task(retries=2)
    def hopeless() -> None:
        raise ValueError("never")

    assert flaky() == "ok"
    with pytest.raises(TaskExecutionError):
        hopeless()
    assert sample(registry, RUNS, task="flaky", result="success") == 1
    assert sample(registry, "auto_workflow_task_retries_total", task="flaky") == 1
    assert sample(registry, RUNS, task="hopeless", result="failure") == 1
    assert sample(registry, RUNS, task="hopeless", result="success") is None
    assert sample(registry, "auto_workflow_task_retries_total", task="hopeless") == 2
    assert sample(registry, DURATION_COUNT, task="hopeless", result="failure") == 1


def test_a_cache_hit_counts_as_a_cached_run(registry: CollectorRegistry) -> None:
    calls: list[int] = []

    @task(cache_ttl=60)
    def expensive(x: int) -> int:
        calls.append(x)
        return x * 10

    assert expensive(3) == 30
    assert expensive(3) == 30
    assert calls == [3]
    assert sample(registry, RUNS, task="expensive", result="success") == 1
    assert sample(registry, RUNS, task="expensive", result="cached") == 1
    assert sample(registry, "auto_workflow_task_cache_hits_total", task="expensive") == 1
    assert sample(registry, "auto_workflow_task_cache_sets_total", task="expensive") == 1
    assert sample(registry, DURATION_COUNT, task="expensive", result="cached") == 1
    assert sample(registry, DURATION_COUNT, task="expensive", result="success") == 1


def test_identical_running_calls_count_a_dedup_join(registry: CollectorRegistry) -> None:
    @task(cache_ttl=60)
    async def fetch(url: str) -> str:
        await asyncio.sleep(0.05)
        return url.upper()

    @flow
    def twice() -> Any:
        return [fetch("a"), fetch("a")]

    assert twice.run() == ["A", "A"]
    assert sample(registry, "auto_workflow_task_dedup_joins_total", task="fetch") == 1
    assert sample(registry, RUNS, task="fetch", result="success") == 1
    assert sample(registry, RUNS, task="fetch", result="cached") == 1


def test_tasks_running_rises_during_a_call_and_returns_to_zero(
    registry: CollectorRegistry,
) -> None:
    seen: list[float | None] = []

    @task
    def probe() -> None:
        seen.append(sample(registry, RUNNING))

    @task
    def broken() -> None:
        raise RuntimeError("down")

    probe()
    with pytest.raises(TaskExecutionError):
        broken()
    assert seen == [1]
    assert sample(registry, RUNNING) == 0


def test_labels_are_only_task_and_result(registry: CollectorRegistry) -> None:
    @task(cache_ttl=60, retries=1)
    def work(x: int) -> int:
        return x

    @flow
    def pipeline() -> Any:
        return work(1)

    pipeline.run()
    pipeline.run()
    label_names = {
        name for family in registry.collect() for s in family.samples for name in s.labels
    }
    assert label_names == {"task", "result", "le"}
    assert "run_id" not in label_names


def test_exposition_has_exactly_the_documented_metric_names(registry: CollectorRegistry) -> None:
    @task
    def one() -> int:
        return 1

    one()
    text = generate_latest(registry).decode()
    for name in (
        "auto_workflow_task_runs_total",
        "auto_workflow_task_retries_total",
        "auto_workflow_task_cache_hits_total",
        "auto_workflow_task_cache_sets_total",
        "auto_workflow_task_dedup_joins_total",
        "auto_workflow_task_run_duration_seconds",
        "auto_workflow_tasks_running",
    ):
        assert f"# TYPE {name} " in text, name
    assert "_total_total" not in text
    assert 'auto_workflow_task_runs_total{result="success",task="one"} 1.0' in text


def test_namespace_and_buckets_are_configurable() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, namespace="etl", buckets=[0.5, 2.0])
    metrics.observe("task_duration_ms", 1500, task="t", result="success")
    metrics.inc("tasks_succeeded", task="t", result="success")
    bucket = "etl_task_run_duration_seconds_bucket"
    assert sample(registry, bucket, task="t", result="success", le="0.5") == 0
    assert sample(registry, bucket, task="t", result="success", le="2.0") == 1
    assert sample(registry, "etl_task_runs_total", task="t", result="success") == 1
    assert sample(registry, RUNS, task="t", result="success") is None


def test_default_buckets_reach_an_hour() -> None:
    assert list(DEFAULT_BUCKETS) == sorted(DEFAULT_BUCKETS)
    assert DEFAULT_BUCKETS[-1] == 3600


def test_providers_on_separate_registries_are_independent() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    PrometheusMetrics(first).inc("task_retries", task="t")
    assert sample(first, "auto_workflow_task_retries_total", task="t") == 1
    assert sample(second, "auto_workflow_task_retries_total", task="t") is None
    PrometheusMetrics(second).inc("task_retries", task="t")
    assert sample(second, "auto_workflow_task_retries_total", task="t") == 1


def test_a_second_provider_on_the_same_registry_is_refused_cleanly() -> None:
    registry = CollectorRegistry()
    first = PrometheusMetrics(registry)
    families_before = [family.name for family in registry.collect()]
    with pytest.raises(ValueError, match=r"auto_workflow_task_runs.*one PrometheusMetrics"):
        PrometheusMetrics(registry)
    assert [family.name for family in registry.collect()] == families_before
    first.inc("cache_hits", task="t")
    assert sample(registry, "auto_workflow_task_cache_hits_total", task="t") == 1


def test_a_clashing_later_metric_registers_nothing() -> None:
    registry = CollectorRegistry()
    Gauge("x_tasks_running", "the application's own gauge", registry=registry)
    with pytest.raises(ValueError, match="x_tasks_running"):
        PrometheusMetrics(registry, namespace="x")  # its counters register before the gauge
    assert [family.name for family in registry.collect()] == ["x_tasks_running"]
    PrometheusMetrics(registry, namespace="y")  # the registry is still usable


def test_unknown_names_are_ignored_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = PrometheusMetrics(CollectorRegistry())
    with caplog.at_level(logging.DEBUG, logger="auto_workflow.integrations.prometheus"):
        metrics.inc("made_up", task="t")
        metrics.inc("made_up", task="t")
        metrics.observe("made_up_ms", 3.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "PrometheusMetrics: no metric for 'made_up'; ignored",
        "PrometheusMetrics: no metric for 'made_up_ms'; ignored",
    ]
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}


def test_unrecordable_values_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    with caplog.at_level(logging.WARNING, logger="auto_workflow.integrations.prometheus"):
        metrics.inc("task_retries")  # no task label
        metrics.inc("task_retries", -1, task="t")  # counters only go up; not logged again
        metrics.observe("task_duration_ms", 5.0, task="t")  # no result label
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert sample(registry, "auto_workflow_task_retries_total", task="t") == 0


def test_importing_auto_workflow_does_not_import_prometheus_client() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, auto_workflow, auto_workflow.metrics_provider\n"
            "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
            "assert 'auto_workflow.integrations.prometheus' not in sys.modules\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_adapter_without_prometheus_client_names_the_extra() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "sys.modules['prometheus_client'] = None\n"
            "import auto_workflow.integrations.prometheus\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "auto-workflow[prometheus]" in done.stderr
