"""Metrics: ``set_metrics_provider(p)`` with ``inc(name, value=1, **labels)`` and
``observe(name, value, **labels)``.

The in-memory default records ``tasks_succeeded``, ``tasks_failed``, ``task_retries``,
``cache_hits``, ``cache_sets`` and the histogram ``task_duration_ms``.
"""

from __future__ import annotations

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._observe._hub import InMemoryMetrics, MetricsProvider, check_metrics

__all__ = ["InMemoryMetrics", "MetricsProvider", "get_metrics_provider", "set_metrics_provider"]


def set_metrics_provider(provider: MetricsProvider | None) -> None:
    """Make ``provider`` the default for new runs (``None``: a fresh in-memory one).

    Raises:
        TypeError: ``provider`` is a class, or lacks ``inc`` or ``observe``.
    """
    DEFAULTS.set_metrics(InMemoryMetrics() if provider is None else check_metrics(provider))


def get_metrics_provider() -> MetricsProvider:
    """The default metrics provider."""
    return DEFAULTS.metrics
