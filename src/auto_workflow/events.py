"""Run events: ``subscribe(name, callback)`` and ``emit(name, payload)``.

A subscriber is ``def on_event(payload): ...``; the payload dict holds the event's name
under ``"event"``, ``flow`` and ``run_id``, and for task events ``task``, ``node`` and
``attempt``. (``def on_event(name, payload)`` works too.) Emitted:

* ``flow_started`` (``tasks``: how many task nodes the graph has when the run starts;
  ``nodes``: their ``(node id, task name)`` pairs in build order; dynamic fan-outs add more
  while it runs), ``flow_completed`` (``tasks``: how many task nodes the graph had at
  the end, dynamic fan-out children included; ``status`` ``"succeeded"``, or ``"failed"`` when
  the run raised or any task failed, also under ``failure_policy="continue"``; ``failed``:
  how many tasks failed; ``duration_ms``; ``error`` when it failed);
* ``task_started`` (``attempt`` 1), ``task_retry`` (the ``attempt`` that failed, ``error``);
* ``task_succeeded`` (``attempt``: attempts used, 0 when reused; ``duration_ms``;
  ``cached``: whether the result came from the cache or an identical call in flight);
* ``task_cached`` (``attempt`` 0, ``source``: ``"cache"`` or ``"in_flight"``);
* ``task_failed`` (``attempt``: attempts used, ``duration_ms``, ``error``);
* ``task_skipped`` (``attempt`` 0, ``error``, ``upstream``: the failed node's id);
* ``fanout_expanded`` (``node``: the fan-out's node, ``task``, ``count``: how many children
  it made, ``nodes``: their ``(node id, task name)`` pairs), when a dynamic fan-out's source
  has finished and its children are queued;
* ``middleware_error`` (``middleware``: its name, ``error``; the call went on without it);
* ``plugin_error`` (``plugin``: its name, ``kind``: ``"tracer"``, ``"metrics provider"``,
  ``"event subscriber"`` or ``"middleware"``, ``hook``: where it raised, ``error``): once
  per faulty plugin per run; the run goes on with the same results (docs/observability.md).

Your own events: ``emit("batch_loaded", {"rows": 10})`` reaches the callbacks subscribed to
``"batch_loaded"``.

Callbacks run on the run's event-loop thread, in the order events happen; a subscriber that
raises is reported once per run (a warning and a ``plugin_error`` event) and never breaks a
run. ``subscribe`` and ``unsubscribe`` may be called from any thread.
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._observe._hub import EventCallback
from auto_workflow.exceptions import EventNameWarning

__all__ = ["EVENT_NAMES", "EventCallback", "clear", "emit", "subscribe", "unsubscribe"]

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
        "fanout_expanded",
        "middleware_error",
        "plugin_error",
    }
)
"""Every event the engine emits."""

_emitted: set[str] = set()
"""The user's own event names seen by :func:`emit` (never warned about as typos)."""
_emitted_lock = threading.Lock()


def subscribe(name: str, callback: EventCallback) -> Callable[[], None]:
    """Call ``callback`` for every ``name`` event.

    ``callback(payload)`` gets the payload dict, which also holds the event's name under
    ``"event"``; a callback written as ``callback(name, payload)`` is called that way. Which
    of the two is decided here, once, from its signature.

    ``name`` may be one of :data:`EVENT_NAMES` or a name of your own (see :func:`emit`).
    A name that is not built in but close to one (``"task_sucess"``) gets an
    :class:`~auto_workflow.exceptions.EventNameWarning` naming the close match, unless it
    has been emitted.

    Returns:
        A function that removes this subscription (same as :func:`unsubscribe`).

    Raises:
        ValueError: ``name`` is not a non-empty string.
        TypeError: ``callback`` is not callable, or takes neither one nor two arguments.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an event name must be a non-empty string; got {name!r}")
    if name not in EVENT_NAMES and name not in _emitted:
        _warn_if_typo(name)
    return DEFAULTS.events.subscribe(name, callback)


def _warn_if_typo(name: str) -> None:
    close = difflib.get_close_matches(name, EVENT_NAMES, n=1, cutoff=0.7)
    if close:
        warnings.warn(
            f"subscribe({name!r}, ...): {name!r} is not a built-in event; did you mean "
            f"{close[0]!r}? (a name of your own is fine: it fires when you emit() it)",
            EventNameWarning,
            stacklevel=3,
        )


def emit(name: str, payload: Mapping[str, Any] | None = None) -> None:
    """Send an event of your own (or a built-in one) to its subscribers, now, in this thread.

    Subscribers get a copy of ``payload`` with ``"event"`` set to ``name``. A subscriber
    that raises is logged, never propagated.

    Raises:
        ValueError: ``name`` is not a non-empty string.
        TypeError: ``payload`` is not a mapping.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an event name must be a non-empty string; got {name!r}")
    if payload is not None and not isinstance(payload, Mapping):
        raise TypeError(f"emit({name!r}, payload): payload must be a mapping (dict)")
    if name not in EVENT_NAMES and name not in _emitted:
        with _emitted_lock:
            _emitted.add(name)
    DEFAULTS.events.emit(name, dict(payload or {}))


def unsubscribe(name: str, callback: EventCallback) -> bool:
    """Stop calling ``callback`` for ``name`` events; ``True`` if it was subscribed."""
    return DEFAULTS.events.unsubscribe(name, callback)


def clear() -> None:
    """Remove every subscriber."""
    DEFAULTS.events.clear()
