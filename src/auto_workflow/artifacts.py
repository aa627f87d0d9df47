"""Artifacts: where ``persist=True`` task results go.

``get_store().get(ref)`` returns the value behind an :class:`ArtifactRef`; a missing one
raises :class:`~auto_workflow.exceptions.ArtifactNotFoundError` (a ``KeyError``). The stores
are :class:`MemoryArtifactStore` (the default; this process only),
:class:`FilesystemArtifactStore` (a directory shared by processes, and the one to use when
``run_in="process"`` tasks read refs) and :class:`FsspecArtifactStore` (an fsspec URL such as
``abfs://container/artifacts``, which Dask workers on other machines read too; the
``[storage]`` extra). Pick one with the ``artifact_store`` configuration key
(``artifact_store_path`` takes a path or a URL), with :func:`set_store`, or per run with
``Flow.run(artifact_store=...)``.
``FileSystemArtifactStore`` and ``InMemoryArtifactStore`` are the same two classes under
the names the public ``auto-workflow`` package uses.

The ``pickle`` serializer (the default) can run arbitrary code when it loads a file: only
use it with a store you trust. ``serializer="json"`` (configuration key
``artifact_serializer``) stores plain JSON and refuses values JSON cannot hold exactly.
"""

from __future__ import annotations

from auto_workflow._core._context import current_context
from auto_workflow._core._model import ArtifactRef
from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._results._disk import FilesystemArtifactStore
from auto_workflow._results._memory import ArtifactStore, MemoryArtifactStore, check_store
from auto_workflow._results._objects import FsspecArtifactStore

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "FileSystemArtifactStore",
    "FilesystemArtifactStore",
    "FsspecArtifactStore",
    "InMemoryArtifactStore",
    "MemoryArtifactStore",
    "get_store",
    "set_store",
]

# The names the public auto-workflow package uses: the very same classes.
FileSystemArtifactStore = FilesystemArtifactStore
InMemoryArtifactStore = MemoryArtifactStore


def get_store() -> ArtifactStore:
    """The artifact store to read refs from.

    Inside a task (in any ``run_in`` mode, worker processes included) or a flow body, this
    is the store of the run it belongs to; elsewhere, the default store: the one set with
    :func:`set_store`, else the configured one.
    """
    ctx = current_context()
    store = ctx.artifact_store if ctx is not None else None
    return store if store is not None else DEFAULTS.get_store()


def set_store(store: ArtifactStore | None) -> None:
    """Make ``store`` the default artifact store for new runs (``None``: the configured one).

    Raises:
        TypeError: ``store`` lacks a callable ``put`` or ``get``.
    """
    if store is not None:
        check_store(store)
    DEFAULTS.set_store(store)
