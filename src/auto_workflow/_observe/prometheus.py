"""A Prometheus metrics provider for auto_workflow (the ``prometheus`` extra).

Usage::

    from prometheus_client import CollectorRegistry, generate_latest

    from auto_workflow.integrations.prometheus import PrometheusMetrics
    from auto_workflow.metrics_provider import set_metrics_provider

    registry = CollectorRegistry()  # or prometheus_client.REGISTRY
    set_metrics_provider(PrometheusMetrics(registry))
    ...  # run flows, then expose the registry however the application already does
    print(generate_latest(registry).decode())

Metrics registered on the given registry (``auto_workflow`` is the default ``namespace``):

==========================================  =========  ==============  ==================
metric                                      type       labels          engine name
==========================================  =========  ==============  ==================
``auto_workflow_task_runs_total``           counter    task, result    ``tasks_succeeded``
                                                                       / ``tasks_failed``
``auto_workflow_task_retries_total``        counter    task            ``task_retries``
``auto_workflow_task_cache_hits_total``     counter    task            ``cache_hits``
``auto_workflow_task_cache_sets_total``     counter    task            ``cache_sets``
``auto_workflow_task_dedup_joins_total``    counter    task            ``dedup_joins``
``auto_workflow_task_run_duration_seconds`` histogram  task, result    ``task_duration_ms``
``auto_workflow_tasks_running``             gauge      (none)          ``tasks_running``
==========================================  =========  ==============  ==================

``result`` is ``success``, ``failure`` or ``cached`` (a result cache hit, or an identical
call running at the same time in the run). A task run is one call to its final outcome,
retries included; its duration spans every attempt.

Invariants: labels are only the task name and the result, never a run id or an argument
value, so the number of series grows with the number of tasks, not with runs. Nothing is
served over HTTP: exposing the registry is the application's choice. The provider never
raises into a run: an unknown metric name is ignored (logged once at DEBUG) and a metric
that cannot be recorded is logged once per name at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

# This module is the optional extra itself: importing it without prometheus_client
# installed should say which extra to install rather than show a bare ModuleNotFoundError.
try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics import MetricWrapperBase
except ImportError as exc:  # pragma: no cover - checked in a subprocess
    raise ImportError(
        "auto_workflow.integrations.prometheus needs prometheus_client: "
        "pip install 'auto-workflow[prometheus]'"
    ) from exc

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]

logger = logging.getLogger("auto_workflow.integrations.prometheus")  # its public path

DEFAULT_BUCKETS: tuple[float, ...] = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
"""Duration buckets in seconds: Prometheus' defaults, extended to an hour for batch tasks."""

M = TypeVar("M", bound=MetricWrapperBase)


@dataclass(frozen=True, slots=True)
class _Route(Generic[M]):
    """Where one engine metric name goes: a metric, the engine labels it keeps, fixed ones."""

    metric: M
    labels: tuple[str, ...] = ()
    fixed: Mapping[str, str] = field(default_factory=dict)

    def child(self, labels: Mapping[str, Any]) -> M:
        """The labelled child to record on (the metric itself when it has no labels).

        Raises:
            KeyError: the engine did not pass a label this metric needs.
        """
        if not self.labels and not self.fixed:
            return self.metric
        values = {name: str(labels[name]) for name in self.labels}
        return self.metric.labels(**values, **self.fixed)


class PrometheusMetrics:
    """A :class:`~auto_workflow.metrics_provider.MetricsProvider` writing to a registry.

    Args:
        registry: The ``prometheus_client.CollectorRegistry`` to register the metrics on.
        namespace: The metric name prefix (``<namespace>_task_runs_total`` ...).
        buckets: Histogram bucket bounds in seconds (default :data:`DEFAULT_BUCKETS`).

    Raises:
        ValueError: ``registry`` already has one of these metric names (say, from another
            ``PrometheusMetrics`` with the same namespace); nothing is registered then.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        namespace: str = "auto_workflow",
        buckets: Sequence[float] | None = None,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        bounds = DEFAULT_BUCKETS if buckets is None else tuple(buckets)
        runs = self._metric(Counter, "task_runs_total", "Task calls by final result", "result")
        duration = self._metric(
            Histogram,
            "task_run_duration_seconds",
            "Duration of task calls (all attempts) by final result",
            "result",
            buckets=bounds,
        )
        running = Gauge(
            "tasks_running", "Task calls in progress", namespace=namespace, registry=None
        )
        self._incs: dict[str, _Route[Counter] | _Route[Gauge]] = {
            "tasks_succeeded": _Route(runs, ("task", "result")),
            "tasks_failed": _Route(runs, ("task",), {"result": "failure"}),
            "task_retries": self._per_task("task_retries_total", "Failed attempts retried"),
            "cache_hits": self._per_task("task_cache_hits_total", "Result cache hits"),
            "cache_sets": self._per_task("task_cache_sets_total", "Results stored in the cache"),
            "dedup_joins": self._per_task(
                "task_dedup_joins_total", "Calls that waited for an identical running call"
            ),
            "tasks_running": _Route(running),
        }
        self._observes = {"task_duration_ms": _Route(duration, ("task", "result"))}
        metrics = dict.fromkeys([*(route.metric for route in self._incs.values()), duration])
        _register_all(registry, metrics, namespace)
        self._ignored: set[str] = set()  # names already logged as unknown or failing

    def _metric(
        self, kind: type[M], name: str, documentation: str, *labels: str, **options: Any
    ) -> M:
        """A metric labelled by task (and ``labels``), not registered yet."""
        labelnames = ("task", *labels)
        return kind(
            name, documentation, labelnames, namespace=self.namespace, registry=None, **options
        )

    def _per_task(self, name: str, documentation: str) -> _Route[Counter]:
        return _Route(self._metric(Counter, name, documentation), ("task",))

    def inc(self, name: str, value: float = 1, **labels: Any) -> None:
        """Add ``value`` to the metric behind engine counter ``name``; never raises."""
        route = self._incs.get(name)
        if route is None:
            self._ignore(name, None)
            return
        try:
            route.child(labels).inc(value)
        except Exception as exc:  # noqa: BLE001 - logged once; metrics never break a run
            self._ignore(name, exc)

    def observe(self, name: str, value: float, **labels: Any) -> None:
        """Record one sample of engine histogram ``name`` (milliseconds become seconds)."""
        route = self._observes.get(name)
        if route is None:
            self._ignore(name, None)
            return
        try:
            route.child(labels).observe(value / 1000)
        except Exception as exc:  # noqa: BLE001 - logged once; metrics never break a run
            self._ignore(name, exc)

    def _ignore(self, name: str, error: Exception | None) -> None:
        """Log, once per name, that ``name`` is unknown or could not be recorded."""
        if name in self._ignored:
            return
        self._ignored.add(name)
        if error is None:
            logger.debug("PrometheusMetrics: no metric for %r; ignored", name)
        else:
            logger.warning(
                "PrometheusMetrics: could not record %r (%s); later failures not logged",
                name,
                type(error).__name__,
                exc_info=error,
            )

    def __repr__(self) -> str:
        return f"<PrometheusMetrics namespace={self.namespace!r}>"


def _register_all(
    registry: CollectorRegistry, metrics: Iterable[MetricWrapperBase], namespace: str
) -> None:
    """Register every metric or, if one name is taken, none of them."""
    done: list[MetricWrapperBase] = []
    try:
        for metric in metrics:
            registry.register(metric)
            done.append(metric)
    except ValueError as exc:
        for metric in done:
            registry.unregister(metric)
        raise ValueError(
            f"cannot register the {namespace}_* metrics on this registry: {exc}. Use one "
            "PrometheusMetrics per registry, or give each a different namespace"
        ) from exc
