"""Tracing: ``set_tracer(t)`` where ``t.span(name, **attrs)`` is an async context manager.

Spans: ``flow:<flow name>`` (attribute ``run_id``) around a run, and ``task:<task name>``
(attributes ``node``, ``attempt``) around each attempt. The default tracer does nothing.
"""

from __future__ import annotations

from auto_workflow._plugins import DEFAULTS, NullTracer, Tracer

__all__ = ["NullTracer", "Tracer", "get_tracer", "set_tracer"]


def set_tracer(tracer: Tracer | None) -> None:
    """Make ``tracer`` the default for new runs (``None`` restores the no-op tracer)."""
    if tracer is not None and not callable(getattr(tracer, "span", None)):
        raise TypeError("a tracer needs a span(name, **attrs) method")
    DEFAULTS.tracer = tracer if tracer is not None else NullTracer()


def get_tracer() -> Tracer:
    """The default tracer."""
    return DEFAULTS.tracer
