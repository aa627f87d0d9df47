"""The observation seams consulted around every task call, each a tiny protocol with an
in-memory default: tracer, metrics provider, middleware and the event bus.

Invariants: nothing is created or configured at import; a subscriber that raises is logged
and never breaks a run, nor does a middleware that raises on its own account (only the
task's own error fails a task); an unused seam costs a single attribute check per call.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

from auto_workflow._core._model import require_methods

__all__ = [
    "EventBus",
    "EventCallback",
    "Events",
    "FaultReporter",
    "InMemoryMetrics",
    "MetricsProvider",
    "Middleware",
    "NullTracer",
    "Subscription",
    "Tracer",
    "chain_middleware",
    "check_metrics",
    "check_tracer",
    "deliver",
    "middleware_name",
    "takes_payload_only",
]

logger = logging.getLogger(__name__)


class FaultReporter(Protocol):
    """Where a run reports a plugin that raised (``_observe._guard.PluginFaults``)."""

    def report(self, kind: str, plugin: object, hook: str, exc: BaseException) -> None: ...


class Events(Protocol):
    """What the engine needs of an event bus: ``wants(name)`` and ``emit(name, payload)``."""

    def wants(self, name: str) -> bool: ...

    def emit(self, name: str, payload: dict[str, Any]) -> None: ...


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

EventCallback = Callable[..., Any]
"""``cb(payload)`` (the documented form) or ``cb(name, payload)``."""

_PROBE = object()


def takes_payload_only(callback: EventCallback) -> bool:
    """Whether ``callback`` is called as ``cb(payload)`` (else as ``cb(name, payload)``).

    Decided once, when it subscribes, from its signature: a callback that fits both (say
    ``def cb(*args)``) gets the documented one-argument form; one whose signature cannot be
    read (some builtins) too.

    Raises:
        TypeError: ``callback`` is not callable, or takes neither one nor two arguments.
    """
    if not callable(callback):
        raise TypeError(f"an event callback must be callable; got {type(callback).__name__}")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return True
    for one_argument, probe in ((True, (_PROBE,)), (False, (_PROBE, _PROBE))):
        try:
            signature.bind(*probe)
        except TypeError:
            continue
        return one_argument
    raise TypeError(
        f"event callback {callback!r} must take the payload dict (def cb(payload)) or the "
        f"event name and the payload (def cb(name, payload)); its signature is {signature}"
    )


class EventBus:
    """Named events with subscriber callbacks ``cb(payload)`` or ``cb(name, payload)``.

    The payload delivered holds the event's name under ``"event"``. Subscriptions are an
    immutable snapshot replaced on change, so a callback may (un)subscribe while an event
    is being delivered; changes are made under a lock, so threads subscribing at once
    never lose one another's subscriptions (delivery reads the snapshot without it).
    """

    def __init__(self) -> None:
        self._subs: dict[str, tuple[tuple[EventCallback, bool], ...]] = {}
        self._lock = threading.Lock()

    def subscribe(self, name: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback`` on each ``name`` event; returns an unsubscriber.

        Raises:
            TypeError: ``callback`` is not callable or fits neither form.
        """
        try:
            single = takes_payload_only(callback)
        except TypeError as exc:
            raise TypeError(f"subscribe({name!r}, ...): {exc}") from None
        with self._lock:
            self._subs = {**self._subs, name: (*self._subs.get(name, ()), (callback, single))}

        def remove() -> None:
            self.unsubscribe(name, callback)

        return remove

    def unsubscribe(self, name: str, callback: EventCallback) -> bool:
        """Remove one subscription of ``callback`` to ``name``; ``True`` if there was one."""
        with self._lock:
            current = list(self._subs.get(name, ()))
            for index, (cb, _) in enumerate(current):
                if cb is callback or cb == callback:
                    del current[index]
                    self._subs = {**self._subs, name: tuple(current)}
                    return True
        return False

    def subscriptions(self, name: str) -> tuple[tuple[EventCallback, bool], ...]:
        """The ``(callback, takes payload only)`` pairs subscribed to ``name`` now."""
        return self._subs.get(name, ())

    def count(self) -> int:
        """How many subscriptions there are, over every event name."""
        return sum(len(subs) for subs in self._subs.values())

    def wants(self, name: str) -> bool:
        """True if anyone listens to ``name`` (lets callers skip building payloads)."""
        return bool(self._subs.get(name))

    def __bool__(self) -> bool:
        return any(self._subs.values())

    def emit(self, name: str, payload: dict[str, Any]) -> None:
        """Deliver one event; a raising subscriber is logged, never propagated.

        ``payload`` gets the key ``"event"`` (the name) when anyone listens.
        """
        subs = self._subs.get(name)
        if subs:
            deliver(subs, name, payload, _log_subscriber_error)

    def clear(self) -> None:
        """Remove every subscriber."""
        with self._lock:
            self._subs = {}


# -- middleware --------------------------------------------------------------------------


class _Inner:
    """The ``next_call`` one middleware gets: runs the rest of the chain and remembers
    whether it ran and how it ended, so a middleware's own error can be told apart from
    the task's error passing through it."""

    __slots__ = ("called", "failed", "inner", "value")

    def __init__(self, inner: Callable[[], Awaitable[Any]]) -> None:
        self.inner = inner
        self.called = False
        self.failed = False
        self.value: Any = None

    async def __call__(self) -> Any:
        self.called = True
        try:
            self.value = await self.inner()
        except BaseException:
            self.failed = True
            raise
        self.failed = False
        return self.value


def middleware_name(mw: object) -> str:
    """A readable name for a middleware (its qualified name, else its repr)."""
    name = getattr(mw, "__qualname__", None) or getattr(type(mw), "__qualname__", None)
    module = getattr(mw, "__module__", None)
    return f"{module}.{name}" if module and name else repr(mw)


def chain_middleware(
    middleware: tuple[Middleware, ...],
    innermost: Callable[[], Awaitable[Any]],
    task: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    events: Events,
    payload: Callable[[], dict[str, Any]],
    faults: FaultReporter,
) -> Callable[[], Awaitable[Any]]:
    """Compose ``middleware`` around ``innermost``; the first registered is outermost.

    A middleware that raises before it calls ``next_call()`` or after it returned is
    skipped for this call: the rest of the chain runs (or its result is kept), the error is
    sent as a ``middleware_error`` event (``payload()`` plus ``middleware`` and ``error``)
    and reported to ``faults`` (a warning and a ``plugin_error`` event once per run). An
    error raised after ``next_call()`` failed is the task's failure and propagates.
    """
    call = innermost
    for mw in reversed(middleware):
        call = _Step(mw, call, task, args, kwargs, events, payload, faults)
    return call


class _Step:
    """One middleware around the rest of the chain (see :func:`chain_middleware`)."""

    __slots__ = ("args", "events", "faults", "inner", "kwargs", "mw", "payload", "task")

    def __init__(
        self,
        mw: Middleware,
        inner: Callable[[], Awaitable[Any]],
        task: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        events: Events,
        payload: Callable[[], dict[str, Any]],
        faults: FaultReporter,
    ) -> None:
        self.mw, self.inner, self.task = mw, inner, task
        self.args, self.kwargs = args, kwargs
        self.events, self.payload, self.faults = events, payload, faults

    async def __call__(self) -> Any:
        inner = _Inner(self.inner)
        try:
            return await self.mw(inner, self.task, self.args, self.kwargs)
        except Exception as exc:
            if inner.called and inner.failed:
                raise  # the task's own failure (or one a middleware made of it)
            self._report(exc, "after next_call()" if inner.called else "before next_call()")
            if inner.called:
                return inner.value  # it failed after the rest of the chain succeeded
            return await self.inner()

    def _report(self, exc: Exception, hook: str) -> None:
        name = middleware_name(self.mw)
        task_name = getattr(self.task, "name", repr(self.task))
        self.faults.report("middleware", self.mw, f"{hook} on task {task_name!r}", exc)
        if self.events.wants("middleware_error"):
            extra = {"middleware": name, "error": repr(exc)}
            self.events.emit("middleware_error", {**self.payload(), **extra})


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


Subscription = tuple[Callable[..., Any], bool]
"""A subscriber and whether it takes the payload alone (else ``(name, payload)``)."""


def deliver(
    subs: Iterable[Subscription],
    name: str,
    payload: dict[str, Any],
    on_error: Callable[[Callable[..., Any], str, Exception], None],
) -> None:
    """Call each subscriber with ``payload`` (which gets ``"event": name``); a raising one
    goes to ``on_error(callback, name, exc)`` and the others still get the event."""
    payload["event"] = name
    for callback, single in subs:
        try:
            if single:
                callback(payload)
            else:
                callback(name, payload)
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: on_error reports it
            on_error(callback, name, exc)


def _log_subscriber_error(callback: Callable[..., Any], name: str, exc: Exception) -> None:
    logger.error("event subscriber %r failed on %r", callback, name, exc_info=exc)
