"""Tracing: ``set_tracer(t)`` where ``t.span(name, **attrs)`` is an async context manager.

Spans: ``flow:<flow name>`` (attribute ``run_id``) around a run, and ``task:<task name>``
(attributes ``node``, ``attempt``) around each attempt. The default tracer does nothing.
"""

from __future__ import annotations

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._observe._hub import NullTracer, Tracer, check_tracer

__all__ = ["DummyTracer", "NullTracer", "Tracer", "get_tracer", "set_tracer"]

DummyTracer = NullTracer
"""The public ``auto-workflow`` package's name for the no-op tracer (the same class)."""


def set_tracer(tracer: Tracer | None) -> None:
    """Make ``tracer`` the default for new runs (``None`` restores the no-op tracer).

    Raises:
        TypeError: ``tracer`` is a class, or its ``span`` is missing or does not return an
            async context manager.
    """
    if tracer is not None:
        check_tracer(tracer)
    DEFAULTS.set_tracer(tracer if tracer is not None else NullTracer())


def get_tracer() -> Tracer:
    """The default tracer."""
    return DEFAULTS.tracer
