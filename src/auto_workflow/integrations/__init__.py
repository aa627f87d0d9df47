"""Optional adapters to other tools, each behind its own extra; the core never imports them.

* :mod:`auto_workflow.integrations.otel` (``pip install 'auto-workflow[otel]'``):
  :class:`~auto_workflow.integrations.otel.OpenTelemetryTracer`, an OpenTelemetry tracer
  for ``tracing.set_tracer``.
* :mod:`auto_workflow.integrations.prometheus` (``pip install 'auto-workflow[prometheus]'``):
  :class:`~auto_workflow.integrations.prometheus.PrometheusMetrics`, a Prometheus metrics
  provider for ``metrics_provider.set_metrics_provider``.

Importing this package imports neither; import the submodule you need.
"""
