"""Seams consulted around every task call, each a tiny protocol with an in-memory default.

result cache, artifact store, tracer, metrics, middleware and events. A run takes a
:class:`Plugins` snapshot when it starts (explicit arguments win over the module-level
defaults), so changing a default never affects a run already under way.

Invariants: no plugin is created or configured at import; a plugin that raises is logged
and never breaks a run (except the cache and store, whose failures fail the task: data
must not be silently lost); unused seams cost a single attribute check per call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from auto_workflow._model import ArtifactRef
from auto_workflow.exceptions import ArtifactNotFoundError

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "EventBus",
    "InMemoryMetrics",
    "MemoryArtifactStore",
    "MemoryResultCache",
    "MetricsProvider",
    "Middleware",
    "NullTracer",
    "Plugins",
    "ResultCache",
    "Tracer",
]

logger = logging.getLogger(__name__)

Middleware = Callable[..., Awaitable[Any]]
"""``async def mw(next_call, task_def, args, kwargs)`` that must ``await next_call()``."""


# -- result cache ------------------------------------------------------------------------


@runtime_checkable
class ResultCache(Protocol):
    """Where successful results of cached tasks are kept.

    ``get`` returns ``None`` on a miss (or an expired entry); otherwise what ``set`` stored.
    The engine stores each result wrapped in a 1-tuple, so a task may return ``None``.
    """

    def get(self, key: str, ttl: float | None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class MemoryResultCache:
    """Thread-safe in-process cache with per-read TTL and an optional LRU bound."""

    def __init__(self, max_entries: int | None = None, clock: Callable[[], float] = time.time):
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    def get(self, key: str, ttl: float | None) -> Any:
        """The stored value if younger than ``ttl`` seconds (``None`` ttl: no expiry)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, value = entry
            if ttl is not None and self._clock() - stored_at >= ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` now, evicting the least recently used if full."""
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            if self._max is not None:
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


# -- artifacts ---------------------------------------------------------------------------


@runtime_checkable
class ArtifactStore(Protocol):
    """Keeps persisted results: ``put`` returns a ref, ``get`` returns the value."""

    def put(self, value: Any) -> ArtifactRef: ...

    def get(self, ref: ArtifactRef) -> Any: ...


class MemoryArtifactStore:
    """Thread-safe in-process artifact store."""

    name = "memory"

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def put(self, value: Any) -> ArtifactRef:
        """Store ``value`` under a fresh key."""
        key = uuid.uuid4().hex
        with self._lock:
            self._items[key] = value
        return ArtifactRef(key, self.name)

    def get(self, ref: ArtifactRef) -> Any:
        """The value behind ``ref``.

        Raises:
            ArtifactNotFoundError: (a ``KeyError``) if nothing is stored under it.
        """
        try:
            return self._items[ref.key]
        except KeyError:
            raise ArtifactNotFoundError(
                f"no artifact {ref.key!r} in the {self.name} artifact store"
            ) from None

    def exists(self, ref: ArtifactRef) -> bool:
        """True if ``ref`` resolves."""
        return ref.key in self._items


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
    """Counters and histograms."""

    def inc(self, name: str, value: float = 1, **labels: Any) -> None: ...

    def observe(self, name: str, value: float, **labels: Any) -> None: ...


class InMemoryMetrics:
    """The default metrics provider: counters and raw histogram samples, keyed by name."""

    def __init__(self) -> None:
        self.counters: defaultdict[str, float] = defaultdict(float)
        self.histograms: defaultdict[str, list[float]] = defaultdict(list)

    def inc(self, name: str, value: float = 1, **labels: Any) -> None:
        """Add ``value`` to counter ``name`` (labels are accepted and ignored)."""
        self.counters[name] += value

    def observe(self, name: str, value: float, **labels: Any) -> None:
        """Record one sample of histogram ``name``."""
        self.histograms[name].append(value)

    def reset(self) -> None:
        """Forget everything recorded."""
        self.counters.clear()
        self.histograms.clear()


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

        def unsubscribe() -> None:
            current = [cb for cb in self._subs.get(name, ()) if cb is not callback]
            self._subs = {**self._subs, name: current}

        return unsubscribe

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


# -- the snapshot a run uses ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Plugins:
    """The plugins one run uses, fixed when it starts."""

    cache: ResultCache
    store: ArtifactStore
    tracer: Tracer | None = None
    metrics: MetricsProvider | None = None
    middleware: tuple[Middleware, ...] = ()
    events: EventBus = field(default_factory=EventBus)


class Defaults:
    """The module-level defaults behind the public getters and setters."""

    def __init__(self) -> None:
        self.cache: ResultCache | None = None
        self.store: ArtifactStore | None = None
        self.tracer: Tracer = NullTracer()
        self.metrics: MetricsProvider = InMemoryMetrics()
        self.middleware: list[Middleware] = []
        self.events = EventBus()

    def get_cache(self) -> ResultCache:
        """The default result cache (an in-memory one, made on first use)."""
        if self.cache is None:
            self.cache = MemoryResultCache()
        return self.cache

    def get_store(self) -> ArtifactStore:
        """The default artifact store (an in-memory one, made on first use)."""
        if self.store is None:
            self.store = MemoryArtifactStore()
        return self.store

    def snapshot(
        self,
        *,
        cache: ResultCache | None = None,
        store: ArtifactStore | None = None,
        tracer: Tracer | None = None,
        metrics: MetricsProvider | None = None,
    ) -> Plugins:
        """The plugins for a new run: explicit ones win over the defaults."""
        chosen_tracer = tracer if tracer is not None else self.tracer
        return Plugins(
            cache=cache if cache is not None else self.get_cache(),
            store=store if store is not None else self.get_store(),
            tracer=None if isinstance(chosen_tracer, NullTracer) else chosen_tracer,
            metrics=metrics if metrics is not None else self.metrics,
            middleware=tuple(self.middleware),
            events=self.events,
        )


DEFAULTS = Defaults()
