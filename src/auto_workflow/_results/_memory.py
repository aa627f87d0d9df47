"""The result-cache and artifact-store protocols, their in-memory defaults, and the
backends the configuration chooses (memory, or the filesystem ones of :mod:`._disk` for a
local path and of :mod:`._objects` for an fsspec URL).

Invariants: nothing is created at import; the memory cache hands back the very object a
task returned (results are read-only by convention, as a flow hands one result to all its
consumers); a missing artifact is an :class:`ArtifactNotFoundError` (a ``KeyError``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

from auto_workflow._core._config import Config, get_config
from auto_workflow._core._model import ArtifactRef, require_methods
from auto_workflow._results._disk import (
    FilesystemArtifactStore,
    FilesystemResultCache,
    is_fsspec_url,
)
from auto_workflow._results._objects import FsspecArtifactStore, FsspecResultCache
from auto_workflow.exceptions import ArtifactNotFoundError

__all__ = [
    "ArtifactStore",
    "MemoryArtifactStore",
    "MemoryResultCache",
    "ResultCache",
    "cache_from_config",
    "check_cache",
    "check_store",
    "store_from_config",
]

logger = logging.getLogger(__name__)

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


class _Default(enum.Enum):
    FROM_CONFIG = enum.auto()


class MemoryResultCache:
    """Thread-safe in-process cache with per-read TTL and an optional LRU bound.

    Args:
        max_entries: The LRU bound; ``None`` for none. Left out, the configuration's
            ``result_cache_max_entries`` (read when the cache is made).
        clock: Where time comes from (tests).

    Entries whose writer-given ``ttl`` has passed are swept every ``_SWEEP_EVERY`` writes,
    so a long-lived process does not keep dead entries forever.
    """

    _SWEEP_EVERY = 1024

    def __init__(
        self,
        max_entries: int | Literal[_Default.FROM_CONFIG] | None = _Default.FROM_CONFIG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries is _Default.FROM_CONFIG:
            max_entries = get_config().result_cache_max_entries
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
            other = ref.store not in (None, self.name)
            where = f" (the ref is from a {ref.store} store)" if other else ""
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


def check_cache(cache: object, what: str = "a result cache") -> ResultCache:
    """``cache`` if it has the ResultCache methods, else a TypeError naming ``what``."""
    require_methods(cache, what, {"get": "get(key, ttl)", "set": "set(key, value)"})
    return cache  # type: ignore[return-value]


def check_store(store: object, what: str = "an artifact store") -> ArtifactStore:
    """``store`` if it has the ArtifactStore methods, else a TypeError naming ``what``."""
    require_methods(store, what, {"put": "put(value)", "get": "get(ref)"})
    return store  # type: ignore[return-value]


def cache_from_config(config: Config) -> ResultCache:
    """The result cache the configuration asks for (``result_cache_path`` an fsspec URL:
    an :class:`FsspecResultCache`).

    Raises:
        ValueError, ImportError: the path cannot be used; the message names the key.
    """
    if config.result_cache != "filesystem":
        return MemoryResultCache(config.result_cache_max_entries)
    path = config.result_cache_path
    with _naming("result_cache_path", path):
        if is_fsspec_url(path):
            return FsspecResultCache(path)
        return FilesystemResultCache(path)


def store_from_config(config: Config) -> ArtifactStore:
    """The artifact store the configuration asks for (``artifact_store_path`` an fsspec
    URL: an :class:`FsspecArtifactStore`).

    Raises:
        ValueError, ImportError: the path cannot be used; the message names the key.
    """
    if config.artifact_store != "filesystem":
        return MemoryArtifactStore()
    path, serializer = config.artifact_store_path, config.artifact_serializer
    with _naming("artifact_store_path", path):
        if is_fsspec_url(path):
            return FsspecArtifactStore(path, serializer=serializer)
        return FilesystemArtifactStore(path, serializer=serializer)


@contextlib.contextmanager
def _naming(key: str, value: str) -> Iterator[None]:
    """Errors raised inside say which configuration key holds the value at fault."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"configuration {key} = {value!r}: {exc}") from exc
    except ImportError as exc:
        raise ImportError(f"configuration {key} = {value!r}: {exc}") from exc
