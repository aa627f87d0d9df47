"""Optional adapters to other tools, each behind its own extra; the core never imports them.

* :mod:`auto_workflow.integrations.otel` (``pip install 'auto-workflow[otel]'``): an
  OpenTelemetry tracer.
* :mod:`auto_workflow.integrations.prometheus` (``pip install 'auto-workflow[prometheus]'``):
  a Prometheus metrics provider.
"""
