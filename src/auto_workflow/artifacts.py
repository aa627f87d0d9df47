"""Artifacts: where ``persist=True`` task results go.

``get_store().get(ref)`` returns the value behind an :class:`ArtifactRef`; a missing one
raises :class:`~auto_workflow.exceptions.ArtifactNotFoundError` (a ``KeyError``).
"""

from __future__ import annotations

from auto_workflow._plugins import DEFAULTS, ArtifactRef, ArtifactStore, MemoryArtifactStore

__all__ = ["ArtifactRef", "ArtifactStore", "MemoryArtifactStore", "get_store", "set_store"]


def get_store() -> ArtifactStore:
    """The default artifact store (in memory unless configured otherwise)."""
    return DEFAULTS.get_store()


def set_store(store: ArtifactStore) -> None:
    """Make ``store`` the default artifact store for new runs."""
    for method in ("put", "get"):
        if not callable(getattr(store, method, None)):
            raise TypeError(f"an artifact store needs a {method}() method")
    DEFAULTS.store = store
