"""The result cache used by tasks with ``cache_ttl``.

A backend is any object with ``get(key, ttl)`` (``None`` on a miss) and ``set(key, value)``;
if its ``set`` also takes a ``ttl`` keyword it learns how long each entry is wanted. The
built-in backends are :class:`MemoryResultCache` (the default),
:class:`FilesystemResultCache` (a directory any number of processes can share) and
:class:`FsspecResultCache` (an fsspec URL such as ``abfs://container/cache``, shared by
every machine that reaches it; the ``[storage]`` extra). Pick one with the ``result_cache``
configuration key (``result_cache_path`` takes a path or a URL), with
:func:`set_result_cache`, or per run with ``Flow.run(result_cache=...)``.
``FileSystemResultCache`` and ``InMemoryResultCache`` are the same two classes under the
names the public ``auto-workflow`` package uses.

The filesystem and fsspec backends store results with pickle: point them only at storage you
trust.
"""

from __future__ import annotations

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._results._disk import FilesystemResultCache
from auto_workflow._results._keys import CacheKeyReport
from auto_workflow._results._memory import MemoryResultCache, ResultCache, check_cache
from auto_workflow._results._objects import FsspecResultCache

__all__ = [
    "CacheKeyReport",
    "FileSystemResultCache",
    "FilesystemResultCache",
    "FsspecResultCache",
    "InMemoryResultCache",
    "MemoryResultCache",
    "ResultCache",
    "get_result_cache",
    "set_result_cache",
]

# The names the public auto-workflow package uses: the very same classes.
FileSystemResultCache = FilesystemResultCache
InMemoryResultCache = MemoryResultCache


def get_result_cache() -> ResultCache:
    """The default result cache: the one set with :func:`set_result_cache`, else the
    configured one (``result_cache``: ``"memory"`` or ``"filesystem"``)."""
    return DEFAULTS.get_cache()


def set_result_cache(cache: ResultCache | None) -> None:
    """Make ``cache`` the default result cache for new runs (``None``: the configured one).

    Raises:
        TypeError: ``cache`` lacks a callable ``get`` or ``set``.
    """
    if cache is not None:
        check_cache(cache)
    DEFAULTS.set_cache(cache)
