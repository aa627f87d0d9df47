"""Seams consulted around every task call, each a tiny protocol with an in-memory default:

result cache, artifact store, tracer, metrics, middleware and events. A run takes a
:class:`Plugins` snapshot when it starts (explicit arguments win over the module-level
defaults), so changing a default never affects a run already under way.

Invariants: no plugin is created or configured at import; a plugin that raises is logged
and never breaks a run (the result cache included: it is only an optimisation), except the
artifact store, whose failure fails the task, so a persisted result is never silently
lost; unused seams cost a single attribute check per call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from auto_workflow._config import Config, get_config
from auto_workflow._disk import FilesystemArtifactStore, FilesystemResultCache
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
    A backend whose ``set`` also accepts a ``ttl`` keyword is told how many seconds the
    writer wants the entry kept, so it can drop expired entries.
    """

    def get(self, key: str, ttl: float | None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class MemoryResultCache:
    """Thread-safe in-process cache with per-read TTL and an optional LRU bound.

    Entries whose writer-given ``ttl`` has passed are swept every ``_SWEEP_EVERY`` writes,
    so a long-lived process does not keep dead entries forever.
    """

    _SWEEP_EVERY = 1024

    def __init__(self, max_entries: int | None = None, clock: Callable[[], float] = time.time):
        bad = isinstance(max_entries, bool) or not isinstance(max_entries, int | None)
        if bad or (max_entries is not None and max_entries < 1):
            raise ValueError(
                f"max_entries must be a positive int, or None for no bound; got {max_entries!r}"
            )
        self._entries: OrderedDict[str, tuple[float, float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock
        self._writes = 0

    def get(self, key: str, ttl: float | None) -> Any:
        """The stored value if younger than ``ttl`` seconds (``None`` ttl: no expiry)."""
        if self._max is None:
            # Unbounded: no recency to update, and a dict read is atomic, so a hit needs
            # no lock; only dropping an expired entry takes it.
            entry = self._entries.get(key)
        else:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
        if entry is None:
            return None
        stored_at, expires_at, value = entry
        now = self._clock()
        if now >= expires_at or (ttl is not None and now - stored_at >= ttl):
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` now, evicting the least recently used if full.

        ``ttl`` is how long the writer wants the entry; past it the entry may be dropped.
        """
        now = self._clock()
        expires_at = math.inf if ttl is None else now + ttl
        with self._lock:
            self._entries[key] = (now, expires_at, value)
            self._entries.move_to_end(key)
            if self._max is not None:
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            self._writes += 1
            if self._writes % self._SWEEP_EVERY == 0:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        dead = [k for k, (_, expires_at, _) in self._entries.items() if now >= expires_at]
        for key in dead:
            del self._entries[key]

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
            where = "" if ref.store == self.name else f" (the ref is from a {ref.store} store)"
            raise ArtifactNotFoundError(
                f"no artifact {ref.key!r} in the {self.name} artifact store{where}"
            ) from None

    def exists(self, ref: ArtifactRef) -> bool:
        """True if ``ref`` resolves."""
        return ref.key in self._items

    def delete(self, ref: ArtifactRef) -> None:
        """Forget the artifact behind ``ref`` (nothing happens if there is none)."""
        with self._lock:
            self._items.pop(ref.key, None)

    def __reduce__(self) -> tuple[Any, ...]:
        # Shipped to a worker process (inside a run context), the store must not copy every
        # artifact; the worker gets a stand-in that explains why it cannot resolve refs.
        return (_ForeignMemoryStore, (os.getpid(),))


class _ForeignMemoryStore:
    """The memory store of another process, as seen from a worker: nothing resolves."""

    name = "memory"

    def __init__(self, owner_pid: int) -> None:
        self.owner_pid = owner_pid

    def _explain(self, what: str) -> str:
        return (
            f"{what}: this run's artifact store is the in-memory store of process "
            f"{self.owner_pid}, which a run_in='process' task cannot reach; set "
            "artifact_store = 'filesystem' (config) or pass a FilesystemArtifactStore"
        )

    def put(self, value: Any) -> ArtifactRef:
        """Refuse: nothing stored here would be visible to the run."""
        raise ArtifactNotFoundError(self._explain("cannot persist from a worker process"))

    def get(self, ref: ArtifactRef) -> Any:
        """Refuse with an explanation (raises ArtifactNotFoundError, a KeyError)."""
        raise ArtifactNotFoundError(self._explain(f"artifact {ref.key!r} is out of reach"))

    def exists(self, ref: ArtifactRef) -> bool:
        """Always False: nothing is reachable from here."""
        return False


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
    """The module-level defaults behind the public getters and setters.

    The cache and store are set in code (``set_result_cache`` / ``set_store``) or, if not,
    made from the configuration on first use and remade when the configuration is reloaded.
    """

    def __init__(self) -> None:
        self.cache: ResultCache | None = None
        self.store: ArtifactStore | None = None
        self._cache_from: Config | None = None  # the config the cache was made from
        self._store_from: Config | None = None
        self._lock = threading.Lock()
        self.tracer: Tracer = NullTracer()
        self.metrics: MetricsProvider = InMemoryMetrics()
        self.middleware: list[Middleware] = []
        self.events = EventBus()

    def set_cache(self, cache: ResultCache | None) -> None:
        """Use ``cache`` from now on (``None``: back to the configured one)."""
        with self._lock:
            self.cache, self._cache_from = cache, None

    def set_store(self, store: ArtifactStore | None) -> None:
        """Use ``store`` from now on (``None``: back to the configured one)."""
        with self._lock:
            self.store, self._store_from = store, None

    def get_cache(self) -> ResultCache:
        """The default result cache: the one set in code, else the configured one."""
        cache = self.cache
        if cache is not None and self._cache_from is None:
            return cache  # set in code: no configuration to consult
        config = get_config()
        with self._lock:  # threads starting their first runs at once must share one cache
            cache, made_from = self.cache, self._cache_from
            if cache is None or (made_from is not None and made_from is not config):
                cache = self.cache = cache_from_config(config)
                self._cache_from = config
            return cache

    def get_store(self) -> ArtifactStore:
        """The default artifact store: the one set in code, else the configured one."""
        store = self.store
        if store is not None and self._store_from is None:
            return store
        config = get_config()
        with self._lock:
            store, made_from = self.store, self._store_from
            if store is None or (made_from is not None and made_from is not config):
                store = self.store = store_from_config(config)
                self._store_from = config
            return store

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


def _check_methods(obj: object, what: str, methods: dict[str, str]) -> None:
    if isinstance(obj, type):
        raise TypeError(
            f"{what} must be an instance; got the class {obj.__name__} (call it: "
            f"{obj.__name__}(...))"
        )
    for method, signature in methods.items():
        if not callable(getattr(obj, method, None)):
            wanted = " and ".join(methods.values())
            raise TypeError(
                f"{what} must have {wanted} methods; {type(obj).__name__} has no {signature}"
            )


def check_cache(cache: object, what: str = "a result cache") -> ResultCache:
    """``cache`` if it has the ResultCache methods, else a TypeError naming ``what``."""
    _check_methods(cache, what, {"get": "get(key, ttl)", "set": "set(key, value)"})
    return cache  # type: ignore[return-value]


def check_tracer(tracer: object, what: str = "a tracer") -> Tracer:
    """``tracer`` if its ``span(name, **attrs)`` gives an async context manager."""
    _check_methods(tracer, what, {"span": "span(name, **attrs)"})
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
    _check_methods(
        provider,
        what,
        {"inc": "inc(name, value, **labels)", "observe": "observe(name, value, **labels)"},
    )
    return provider  # type: ignore[return-value]


def check_store(store: object, what: str = "an artifact store") -> ArtifactStore:
    """``store`` if it has the ArtifactStore methods, else a TypeError naming ``what``."""
    _check_methods(store, what, {"put": "put(value)", "get": "get(ref)"})
    return store  # type: ignore[return-value]


def cache_from_config(config: Config) -> ResultCache:
    """The result cache the configuration asks for."""
    if config.result_cache == "filesystem":
        return FilesystemResultCache(config.result_cache_path)
    return MemoryResultCache(config.result_cache_max_entries)


def store_from_config(config: Config) -> ArtifactStore:
    """The artifact store the configuration asks for."""
    if config.artifact_store == "filesystem":
        return FilesystemArtifactStore(
            config.artifact_store_path, serializer=config.artifact_serializer
        )
    return MemoryArtifactStore()


DEFAULTS = Defaults()
