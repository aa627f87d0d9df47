"""Task middleware: ``async def mw(next_call, task_def, args, kwargs)``.

Each middleware must ``await next_call()`` (and may inspect or replace its result). The
first registered is the outermost. Middleware wraps every attempt of every task call.
"""

from __future__ import annotations

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._observe._hub import Middleware

__all__ = ["Middleware", "clear", "register"]


def register(mw: Middleware) -> None:
    """Add ``mw`` inside those already registered."""
    if not callable(mw):
        raise TypeError(f"middleware must be an async callable; got {type(mw).__name__}")
    DEFAULTS.middleware.append(mw)


def clear() -> None:
    """Remove all middleware."""
    DEFAULTS.middleware.clear()
