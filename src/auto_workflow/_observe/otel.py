"""An OpenTelemetry tracer for auto_workflow (the ``otel`` extra: ``opentelemetry-api``).

Usage::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from auto_workflow.integrations.otel import OpenTelemetryTracer
    from auto_workflow.tracing import set_tracer

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    set_tracer(OpenTelemetryTracer(provider))  # or OpenTelemetryTracer() for the global one

The engine's spans are renamed and their attributes namespaced:

* ``flow:<name>`` becomes span ``flow <name>`` with ``auto_workflow.flow.name``,
  ``auto_workflow.flow.run_id`` and, when it ends, ``auto_workflow.flow.result``;
* ``task:<name>`` (one per attempt) becomes span ``task <name>`` with
  ``auto_workflow.task.name``, ``auto_workflow.task.node``, ``auto_workflow.task.attempt``
  and, when it ends, ``auto_workflow.task.result``;
* any other span keeps its name, its attributes prefixed with ``auto_workflow.`` and its
  result in ``auto_workflow.result``.

Invariants: a result is ``"success"``, ``"failure"`` or ``"cancelled"``. A failure sets
``error.type`` to the exception's qualified type name and the status to ERROR, described by
that type name only: exception messages and argument values may hold data, so they are
never recorded unless ``record_exceptions=True`` opts in to OpenTelemetry's exception
events (which carry the message and traceback). A cancellation (``asyncio.CancelledError``,
e.g. a sibling task failed under ``fail_fast``) is not an error: result ``"cancelled"``,
status left unset. Every exception propagates unchanged. Each span becomes the current span
while it is open, so task spans nest under the flow span (the engine starts tasks inside
the flow span and asyncio copies the context into them), whatever the task's ``run_in``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

# This module is the optional extra itself: importing it without opentelemetry installed
# should say which extra to install rather than show a bare ModuleNotFoundError.
try:
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # pragma: no cover - checked in a subprocess
    raise ImportError(
        "auto_workflow.integrations.otel needs OpenTelemetry: pip install 'auto-workflow[otel]'"
    ) from exc

__all__ = ["OpenTelemetryTracer"]

_PREFIX = "auto_workflow"
_SCOPED_KINDS = frozenset({"flow", "task"})  # engine spans named "<kind>:<subject>"


class OpenTelemetryTracer:
    """A :class:`~auto_workflow.tracing.Tracer` that records OpenTelemetry spans.

    Args:
        tracer_provider: Where spans go; ``None`` uses OpenTelemetry's global provider
            (``opentelemetry.trace.set_tracer_provider``), looked up when spans start.
        tracer_name: The instrumentation scope name given to ``get_tracer``.
        record_exceptions: Also add an OpenTelemetry exception event to a failed span. The
            event holds the exception's message and traceback, which may contain data
            (argument values, secrets), so this is off by default.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        tracer_name: str = _PREFIX,
        record_exceptions: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
        self._record_exceptions = record_exceptions

    def span(self, name: str, **attrs: Any) -> contextlib.AbstractAsyncContextManager[Span]:
        """An async context manager around one engine span (see the module docstring).

        Args:
            name: The engine's span name: ``flow:<name>``, ``task:<name>`` or anything else.
            **attrs: The engine's attributes (``run_id``; ``node``, ``attempt``).

        Returns:
            A context manager that yields the OpenTelemetry span, current while it is open.
        """
        span_name, scope, attributes = _describe(name, attrs)
        return self._open(span_name, scope, attributes)

    @contextlib.asynccontextmanager
    async def _open(
        self, span_name: str, scope: str, attributes: dict[str, AttributeValue]
    ) -> AsyncIterator[Span]:
        # The API's own exception handling would put the message in the status
        # description; ours records the type name only.
        with self._tracer.start_as_current_span(
            span_name,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            result_key = f"{scope}.result"
            try:
                yield span
            except asyncio.CancelledError:
                span.set_attribute(result_key, "cancelled")
                raise
            except BaseException as exc:
                span.set_attribute(result_key, "failure")
                self._mark_failed(span, exc)
                raise
            span.set_attribute(result_key, "success")

    def _mark_failed(self, span: Span, exc: BaseException) -> None:
        error_type = _type_name(exc)
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
        if self._record_exceptions:
            span.record_exception(exc, escaped=True)

    def __repr__(self) -> str:
        return f"<OpenTelemetryTracer record_exceptions={self._record_exceptions}>"


def _describe(name: str, attrs: Mapping[str, Any]) -> tuple[str, str, dict[str, AttributeValue]]:
    """``(span name, attribute scope, attributes)`` for one engine span."""
    kind, sep, subject = name.partition(":")
    if not (sep and subject and kind in _SCOPED_KINDS):
        return name, _PREFIX, {f"{_PREFIX}.{key}": _value(v) for key, v in attrs.items()}
    scope = f"{_PREFIX}.{kind}"
    attributes: dict[str, AttributeValue] = {f"{scope}.name": subject}
    for key, value in attrs.items():
        attributes[f"{scope}.{key}"] = _value(value)
    return f"{kind} {subject}", scope, attributes


def _value(value: Any) -> AttributeValue:
    """``value`` as an attribute value: str, bool, int and float pass, the rest as text."""
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


def _type_name(exc: BaseException) -> str:
    """The exception's qualified type name (``ValueError``, ``pkg.mod.MyError``)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
