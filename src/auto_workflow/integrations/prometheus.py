"""Prometheus metrics for auto_workflow runs (extra ``auto-workflow[prometheus]``).

``set_metrics_provider(PrometheusMetrics(registry))`` records the engine's counters and the
task-duration histogram on the user's registry. The implementation lives in
:mod:`auto_workflow._observe.prometheus`; this is its public path.
"""

from auto_workflow._observe.prometheus import DEFAULT_BUCKETS, PrometheusMetrics

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]
