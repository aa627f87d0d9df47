"""Run events: ``subscribe(name, callback)``.

Emitted, with a payload dict holding ``flow`` and ``run_id`` and for task events ``task``,
``node`` and ``attempt``:

* ``flow_started`` (``tasks``: how many task nodes the graph has when the run starts;
  ``nodes``: their ``(node id, task name)`` pairs in build order; dynamic fan-outs add more
  while it runs), ``flow_completed`` (``status`` ``"succeeded"``, or ``"failed"`` when
  the run raised or any task failed, also under ``failure_policy="continue"``; ``failed``:
  how many tasks failed; ``duration_ms``; ``error`` when it failed);
* ``task_started`` (``attempt`` 1), ``task_retry`` (the ``attempt`` that failed, ``error``);
* ``task_succeeded`` (``attempt``: attempts used, 0 when reused; ``duration_ms``;
  ``cached``: whether the result came from the cache or an identical call in flight);
* ``task_cached`` (``attempt`` 0, ``source``: ``"cache"`` or ``"in_flight"``);
* ``task_failed`` (``attempt``: attempts used, ``duration_ms``, ``error``);
* ``task_skipped`` (``attempt`` 0, ``error``, ``upstream``: the failed node's id).

Callbacks run on the run's event-loop thread, in the order events happen; a subscriber that
raises is logged and never breaks a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auto_workflow._core._plugins import DEFAULTS

__all__ = ["EVENT_NAMES", "clear", "subscribe", "unsubscribe"]

EVENT_NAMES = frozenset(
    {
        "flow_started",
        "flow_completed",
        "task_started",
        "task_retry",
        "task_succeeded",
        "task_cached",
        "task_failed",
        "task_skipped",
    }
)
"""Every event the engine emits."""


def subscribe(name: str, callback: Callable[[str, dict[str, Any]], Any]) -> Callable[[], None]:
    """Call ``callback(name, payload)`` for every ``name`` event.

    Returns:
        A function that removes this subscription (same as :func:`unsubscribe`).

    Raises:
        ValueError: ``name`` is not one of :data:`EVENT_NAMES` (a typo would otherwise
            never fire).
        TypeError: ``callback`` is not callable.
    """
    if not isinstance(name, str) or name not in EVENT_NAMES:
        known = ", ".join(sorted(EVENT_NAMES))
        raise ValueError(f"unknown event {name!r}; events are: {known}")
    return DEFAULTS.events.subscribe(name, callback)


def unsubscribe(name: str, callback: Callable[[str, dict[str, Any]], Any]) -> bool:
    """Stop calling ``callback`` for ``name`` events; ``True`` if it was subscribed."""
    return DEFAULTS.events.unsubscribe(name, callback)


def clear() -> None:
    """Remove every subscriber."""
    DEFAULTS.events.clear()
