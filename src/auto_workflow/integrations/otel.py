"""OpenTelemetry tracing for auto_workflow runs (extra ``auto-workflow[otel]``).

``set_tracer(OpenTelemetryTracer())`` makes every flow and task attempt a span. The
implementation lives in :mod:`auto_workflow._observe.otel`; this is its public path.
"""

from auto_workflow._observe.otel import OpenTelemetryTracer

__all__ = ["OpenTelemetryTracer"]
