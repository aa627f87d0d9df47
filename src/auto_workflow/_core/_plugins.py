"""The plugins of one run, and the module-level defaults behind the public setters.

A run takes a :class:`Plugins` snapshot when it starts (explicit arguments win over the
module-level defaults), so changing a default never affects a run already under way.

Invariants: no plugin is created or configured at import; the default cache and store are
made from the configuration on first use (under a lock) and remade when it is reloaded;
a failing result cache is only an optimisation lost, a failing artifact store fails the
task, so a persisted result is never silently lost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from auto_workflow._core._config import Config, get_config
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


DEFAULTS = Defaults()
