"""The plugins of one run, and the module-level defaults behind the public setters.

A run takes a :class:`Plugins` snapshot when it starts (explicit arguments win over the
module-level defaults), so changing a default never affects a run already under way. The
snapshot puts the tracer, the metrics provider and the subscribers behind the run's plugin
boundary (``_observe._guard``): a plugin that raises is reported once and costs the run
nothing else.

Invariants: no plugin is created or configured at import; the default cache and store are
made from the configuration on first use (under a lock) and remade when it is reloaded;
a failing result cache is only an optimisation lost, a failing artifact store fails the
task, so a persisted result is never silently lost; the setters and ``register`` may be
called from many threads at once (they change the defaults under a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from auto_workflow._core._config import Config, get_config
from auto_workflow._observe._guard import (
    PluginFaults,
    RunEvents,
    guard_metrics,
    guard_tracer,
    own_task_done,
)
from auto_workflow._observe._hub import (
    EventBus,
    InMemoryMetrics,
    MetricsProvider,
    Middleware,
    NullTracer,
    Tracer,
)
from auto_workflow._results._memory import (
    ArtifactStore,
    ResultCache,
    cache_from_config,
    store_from_config,
)

__all__ = ["DEFAULTS", "Defaults", "Plugins"]

# -- the snapshot a run uses ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Plugins:
    """The plugins one run uses, fixed when it starts (see :meth:`Defaults.snapshot`)."""

    cache: ResultCache
    store: ArtifactStore
    events: RunEvents
    faults: PluginFaults
    tracer: Tracer | None = None
    metrics: MetricsProvider | None = None
    task_done: Callable[[str, str, float], None] | None = None
    """The provider's own ``task_done`` (guarded), if it has one (see MetricsProvider)."""
    middleware: tuple[Middleware, ...] = ()


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
        self._plugins_lock = threading.Lock()  # tracer, metrics and middleware change together

    def set_tracer(self, tracer: Tracer) -> None:
        """Make ``tracer`` the default tracer."""
        with self._plugins_lock:
            self.tracer = tracer

    def set_metrics(self, metrics: MetricsProvider) -> None:
        """Make ``metrics`` the default metrics provider."""
        with self._plugins_lock:
            self.metrics = metrics

    def add_middleware(self, mw: Middleware) -> None:
        """Add ``mw`` inside the middleware already registered."""
        with self._plugins_lock:
            self.middleware = [*self.middleware, mw]

    def clear_middleware(self) -> None:
        """Remove every middleware."""
        with self._plugins_lock:
            self.middleware = []

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
        """The plugins for a new run: explicit ones win over the defaults.

        Every run gets its own :class:`PluginFaults`, so each faulty plugin is reported once
        per run.
        """
        with self._plugins_lock:
            default_tracer, default_metrics = self.tracer, self.metrics
            middleware = tuple(self.middleware)
        chosen_tracer = tracer if tracer is not None else default_tracer
        chosen_metrics = metrics if metrics is not None else default_metrics
        faults = PluginFaults(self.events)
        guarded, task_done = guard_metrics(chosen_metrics, faults, own_task_done(chosen_metrics))
        return Plugins(
            cache=cache if cache is not None else self.get_cache(),
            store=store if store is not None else self.get_store(),
            events=RunEvents(self.events, faults),
            faults=faults,
            tracer=None
            if isinstance(chosen_tracer, NullTracer)
            else guard_tracer(chosen_tracer, faults),
            metrics=guarded,
            task_done=task_done,
            middleware=middleware,
        )


DEFAULTS = Defaults()
