"""The result cache used by tasks with ``cache_ttl``.

A backend is any object with ``get(key, ttl)`` (``None`` on a miss) and ``set(key, value)``.
"""

from __future__ import annotations

from auto_workflow._plugins import DEFAULTS, MemoryResultCache, ResultCache

__all__ = ["MemoryResultCache", "ResultCache", "get_result_cache", "set_result_cache"]


def get_result_cache() -> ResultCache:
    """The default result cache (in memory unless configured otherwise)."""
    return DEFAULTS.get_cache()


def set_result_cache(cache: ResultCache) -> None:
    """Make ``cache`` the default result cache for new runs."""
    for method in ("get", "set"):
        if not callable(getattr(cache, method, None)):
            raise TypeError(f"a result cache needs a {method}() method")
    DEFAULTS.cache = cache
