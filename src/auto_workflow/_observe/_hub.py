"""The observation seams consulted around every task call, each a tiny protocol with an
in-memory default: tracer, metrics provider, middleware and the event bus.

Invariants: nothing is created or configured at import; a subscriber that raises is logged
and never breaks a run; an unused seam costs a single attribute check per call.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from auto_workflow._core._model import require_methods

__all__ = [
    "EventBus",
    "InMemoryMetrics",
    "MetricsProvider",
    "Middleware",
    "NullTracer",
    "Tracer",
    "check_metrics",
    "check_tracer",
]

logger = logging.getLogger(__name__)

Middleware = Callable[..., Awaitable[Any]]
"""``async def mw(next_call, task_def, args, kwargs)`` that must ``await next_call()``."""


# -- tracing -----------------------------------------------------------------------------


class Tracer(Protocol):
    """``span(name, **attrs)`` returns an async context manager around the work."""

    def span(self, name: str, **attrs: Any) -> contextlib.AbstractAsyncContextManager[Any]: ...


class NullTracer:
    """The default tracer: records nothing. The runner skips it entirely."""

    @contextlib.asynccontextmanager
    async def span(self, name: str, **attrs: Any) -> AsyncIterator[None]:
        """A span that does nothing."""
        yield


# -- metrics -----------------------------------------------------------------------------


class MetricsProvider(Protocol):
    """Counters and histograms.

    A provider may also have ``wants(name) -> bool``; the engine asks it once per run and
    skips the metrics it does not want (today only the ``tasks_running`` gauge). And it may
    have ``task_done(task, result, duration_ms)``, called once per finished task call
    (``result``: ``"success"``, ``"cached"`` or ``"failure"``) in place of the
    ``tasks_succeeded`` / ``tasks_failed`` increment and the ``task_duration_ms`` sample.
    """

    def inc(self, name: str, value: float = 1, **labels: Any) -> None: ...

    def observe(self, name: str, value: float, **labels: Any) -> None: ...


class InMemoryMetrics:
    """The default metrics provider: counters and recent histogram samples, keyed by name.

    ``histograms[name]`` keeps the latest ``max_samples`` samples (a long-lived process
    must not grow without bound); ``observations[name]`` counts every sample ever made.
    It does not take the ``tasks_running`` gauge (two more calls per task, for a number
    nobody reads from a dict): pass ``track_running=True`` to have it counted.
    """

    def __init__(self, *, track_running: bool = False, max_samples: int = 10_000) -> None:
        if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive int; got {max_samples!r}")
        self.counters: defaultdict[str, float] = defaultdict(float)
        self.histograms: defaultdict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=max_samples)
        )
        self.observations: defaultdict[str, int] = defaultdict(int)
        self._track_running = track_running

    def wants(self, name: str) -> bool:
        """Every metric, except ``tasks_running`` unless asked for."""
        return self._track_running or name != "tasks_running"

    def inc(self, name: str, value: float = 1, **labels: Any) -> None:
        """Add ``value`` to counter ``name`` (labels are accepted and ignored)."""
        self.counters[name] += value

    def observe(self, name: str, value: float, **labels: Any) -> None:
        """Record one sample of histogram ``name``."""
        self.histograms[name].append(value)
        self.observations[name] += 1

    def task_done(self, task: str, result: str, duration_ms: float) -> None:
        """One finished task call: ``tasks_succeeded`` or ``tasks_failed``, and its time."""
        self.counters["tasks_failed" if result == "failure" else "tasks_succeeded"] += 1
        self.histograms["task_duration_ms"].append(duration_ms)
        self.observations["task_duration_ms"] += 1

    def reset(self) -> None:
        """Forget everything recorded."""
        self.counters.clear()
        self.histograms.clear()
        self.observations.clear()


# -- events ------------------------------------------------------------------------------

EventCallback = Callable[[str, dict[str, Any]], Any]


class EventBus:
    """Named events with subscriber callbacks ``cb(name, payload)``."""

    def __init__(self) -> None:
        self._subs: dict[str, list[EventCallback]] = {}

    def subscribe(self, name: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(name, payload)`` on each ``name`` event; returns an unsubscriber."""
        if not callable(callback):
            raise TypeError(f"subscribe({name!r}, ...): callback must be callable")
        self._subs = {**self._subs, name: [*self._subs.get(name, ()), callback]}

        def remove() -> None:
            self.unsubscribe(name, callback)

        return remove

    def unsubscribe(self, name: str, callback: EventCallback) -> bool:
        """Remove one subscription of ``callback`` to ``name``; ``True`` if there was one."""
        current = list(self._subs.get(name, ()))
        for index, cb in enumerate(current):
            if cb is callback or cb == callback:
                del current[index]
                self._subs = {**self._subs, name: current}
                return True
        return False

    def wants(self, name: str) -> bool:
        """True if anyone listens to ``name`` (lets callers skip building payloads)."""
        return bool(self._subs.get(name))

    def __bool__(self) -> bool:
        return any(self._subs.values())

    def emit(self, name: str, payload: dict[str, Any]) -> None:
        """Deliver one event; a raising subscriber is logged, never propagated."""
        for callback in self._subs.get(name, ()):
            try:
                callback(name, payload)
            except Exception:
                logger.exception("event subscriber %r failed on %r", callback, name)

    def clear(self) -> None:
        """Remove every subscriber."""
        self._subs = {}


def check_tracer(tracer: object, what: str = "a tracer") -> Tracer:
    """``tracer`` if its ``span(name, **attrs)`` gives an async context manager."""
    require_methods(tracer, what, {"span": "span(name, **attrs)"})
    probe = tracer.span("probe")  # type: ignore[attr-defined]
    if not (hasattr(probe, "__aenter__") and hasattr(probe, "__aexit__")):
        raise TypeError(
            f"{what}: span(name, **attrs) must return an async context manager (use "
            f"contextlib.asynccontextmanager); {type(tracer).__name__}.span returned "
            f"{type(probe).__name__}"
        )
    return tracer  # type: ignore[return-value]


def check_metrics(provider: object, what: str = "a metrics provider") -> MetricsProvider:
    """``provider`` if it has the MetricsProvider methods, else a TypeError naming ``what``."""
    require_methods(
        provider,
        what,
        {"inc": "inc(name, value, **labels)", "observe": "observe(name, value, **labels)"},
    )
    return provider  # type: ignore[return-value]
