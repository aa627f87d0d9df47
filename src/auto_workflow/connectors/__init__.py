"""Connectors: Postgres and object storage as named profiles. See docs/connectors.md.

``get(name)`` returns the connector of the profile ``name`` (from
``[tool.auto_workflow.connectors.<name>]`` in pyproject.toml, overlaid by
``AUTO_WORKFLOW_CONNECTORS__<NAME>__<FIELD>`` variables, or :func:`register_profile`): one
per process, made on first use, closed at exit. The connector classes need their extras
(``auto-workflow[postgres]``, ``auto-workflow[storage]``) and are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from auto_workflow._connectors._errors import (
    ConnectorError,
    DatabaseError,
    MissingExtraError,
    ProfileError,
    QueryTimeoutError,
    TransientError,
)
from auto_workflow._connectors._profiles import Kind, Profile, load_profiles
from auto_workflow._connectors._registry import (
    close_all,
    get,
    profiles,
    register_profile,
    reload,
)

if TYPE_CHECKING:
    from auto_workflow._connectors._postgres import PostgresConnector
    from auto_workflow._connectors._storage import StorageConnector

__all__ = [
    "ConnectorError",
    "DatabaseError",
    "Kind",
    "MissingExtraError",
    "PostgresConnector",
    "Profile",
    "ProfileError",
    "QueryTimeoutError",
    "StorageConnector",
    "TransientError",
    "close_all",
    "get",
    "load_profiles",
    "profiles",
    "register_profile",
    "reload",
]

_LAZY = {
    "PostgresConnector": ("auto_workflow._connectors._postgres", "postgres"),
    "StorageConnector": ("auto_workflow._connectors._storage", "storage"),
}


def __getattr__(name: str) -> Any:
    # The classes import their optional extras (psycopg, fsspec) at the top of their
    # modules: load one only when it is asked for.
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = _LAZY[name]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise MissingExtraError(
            f"{name} needs an optional extra ({exc}); run: pip install 'auto-workflow[{extra}]'"
        ) from exc
