"""Metrics: ``set_metrics_provider(p)`` with ``inc(name, value=1, **labels)`` and
``observe(name, value, **labels)``.

The in-memory default records ``tasks_succeeded``, ``tasks_failed``, ``task_retries``,
``cache_hits``, ``cache_sets`` and the histogram ``task_duration_ms``.
"""

from __future__ import annotations

from auto_workflow._plugins import DEFAULTS, InMemoryMetrics, MetricsProvider

__all__ = ["InMemoryMetrics", "MetricsProvider", "get_metrics_provider", "set_metrics_provider"]


def set_metrics_provider(provider: MetricsProvider) -> None:
    """Make ``provider`` the default for new runs."""
    for method in ("inc", "observe"):
        if not callable(getattr(provider, method, None)):
            raise TypeError(f"a metrics provider needs an {method}() method")
    DEFAULTS.metrics = provider


def get_metrics_provider() -> MetricsProvider:
    """The default metrics provider."""
    return DEFAULTS.metrics
