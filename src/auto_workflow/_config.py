"""Configuration: defaults, overlaid by ``[tool.auto_workflow]`` in pyproject.toml, overlaid
by ``AUTO_WORKFLOW_<KEY>`` environment variables.

Invariants: nothing is read at import; a value is validated once when the config is loaded,
and an invalid one is an error naming the key, where it came from and what is allowed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

__all__ = ["Config", "get_config", "reload_config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The validated configuration."""

    max_dynamic_tasks: int = 100_000
    process_pool_max_workers: int | None = None


_ENV_PREFIX = "AUTO_WORKFLOW_"
_lock = threading.Lock()
_cached: Config | None = None


def _positive_int(key: str, raw: str, source: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"config {key}={raw!r} from {source} must be a positive integer") from None
    if value < 1:
        raise ValueError(f"config {key}={raw!r} from {source} must be a positive integer")
    return value


def load_config() -> Config:
    """Read the configuration now (environment overrides defaults)."""
    values: dict[str, int | None] = {}
    for key in ("max_dynamic_tasks", "process_pool_max_workers"):
        env = _ENV_PREFIX + key.upper()
        raw = os.environ.get(env)
        if raw is not None and raw.strip():
            values[key] = _positive_int(key, raw.strip(), f"environment variable {env}")
    return Config(**values)  # type: ignore[arg-type]


def get_config() -> Config:
    """The configuration, loaded on first use and kept until :func:`reload_config`."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = load_config()
        return _cached


def reload_config() -> Config:
    """Re-read the configuration."""
    global _cached
    with _lock:
        _cached = load_config()
        return _cached
