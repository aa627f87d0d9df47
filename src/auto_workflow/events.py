"""Run events: ``subscribe(name, callback)``.

Emitted: ``flow_started``, ``flow_completed``, ``task_started``, ``task_retry``,
``task_failed``, ``task_succeeded``. Payloads are dicts with ``flow``, ``run_id``, ``task``,
``node`` and, where they apply, ``attempt``, ``duration_ms`` and ``error``. A subscriber that
raises is logged and never breaks a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auto_workflow._plugins import DEFAULTS

__all__ = ["clear", "subscribe"]


def subscribe(name: str, callback: Callable[[str, dict[str, Any]], Any]) -> Callable[[], None]:
    """Call ``callback(name, payload)`` for every ``name`` event.

    Returns:
        A function that removes this subscription.
    """
    return DEFAULTS.events.subscribe(name, callback)


def clear() -> None:
    """Remove every subscriber."""
    DEFAULTS.events.clear()
