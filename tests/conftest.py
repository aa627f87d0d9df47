"""Shared fixtures: every test is checked for leaked threads and child processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auto_workflow._core import _plugins
from auto_workflow._execution import _process as _executors
from auto_workflow._history._engine import close_all
from auto_workflow.config import reload_config
from procs import children_of


def _pool_pids() -> set[int]:
    """Pids of the shared process pool's workers: reused across tests on purpose."""
    pool = getattr(_executors, "_POOL", None)
    pids = getattr(pool, "worker_pids", None)
    return set(pids()) if callable(pids) else set()


def _wait_for(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(predicate())  # type: ignore[operator]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves threads or child processes behind."""
    threads_before = set(threading.enumerate())
    yield

    def extra_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t not in threads_before and t.is_alive()}

    def extra_children() -> set[int]:
        return children_of() - _pool_pids()

    _wait_for(lambda: not extra_threads(), 3.0)
    _wait_for(lambda: not extra_children(), 3.0)
    leaked_threads = extra_threads()
    leaked_children = extra_children()
    assert not leaked_threads, f"test leaked threads: {sorted(t.name for t in leaked_threads)}"
    assert not leaked_children, f"test leaked child processes: {sorted(leaked_children)}"


@pytest.fixture(autouse=True)
def isolated_history(no_leaks: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test records its runs into a history file of its own, never the user's.

    It asks for ``no_leaks`` so that it is torn down first: its ``close_all()`` stops the
    writer thread before the leak check looks (autouse fixtures are otherwise set up in
    name order, which tore this one down last, and every test that ran a flow waited out
    the writer's 2 s linger).
    """
    data = tmp_path_factory.mktemp("data")
    path = data / "history.sqlite"
    # XDG_DATA_HOME too: subprocesses that drop every AUTO_WORKFLOW_* variable (the CLI
    # and docs tests do) still record under the temp dir, never the user's data directory.
    saved = {name: os.environ.get(name) for name in ("AUTO_WORKFLOW_HISTORY_PATH", "XDG_DATA_HOME")}
    os.environ["AUTO_WORKFLOW_HISTORY_PATH"] = str(path)
    os.environ["XDG_DATA_HOME"] = str(data / "xdg")
    reload_config()
    yield path
    close_all()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reload_config()


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    """Each test starts with default plugins (no subscribers, middleware, tracer)."""
    _plugins.DEFAULTS.__init__()  # type: ignore[misc]
    yield
    _plugins.DEFAULTS.__init__()  # type: ignore[misc]
