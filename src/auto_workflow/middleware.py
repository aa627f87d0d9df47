"""Task middleware: ``async def mw(next_call, task_def, args, kwargs)``.

Each middleware must ``await next_call()`` (and may inspect or replace its result). The
first registered is the outermost. Middleware wraps every attempt of every task call.

A middleware that raises on its own account, before calling ``next_call()`` or after it
returned, does not fail the task: the call goes on without that middleware, the error is
sent as a ``middleware_error`` event (payload: ``middleware``, ``task``, ``error``, ...) on
each call it happens to, and the middleware is reported once per run (one warning naming
it and the hook, one ``plugin_error`` event); it is still called on later calls. The task's
own exception passing through a middleware is still the task's failure, whatever the
middleware raises on the way out.
"""

from __future__ import annotations

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._observe._hub import Middleware

__all__ = ["Middleware", "clear", "register"]


def register(mw: Middleware) -> None:
    """Add ``mw`` inside those already registered (safe from any thread).

    Raises:
        TypeError: ``mw`` is not callable.
    """
    if not callable(mw):
        raise TypeError(f"middleware must be an async callable; got {type(mw).__name__}")
    DEFAULTS.add_middleware(mw)


def clear() -> None:
    """Remove all middleware."""
    DEFAULTS.clear_middleware()
