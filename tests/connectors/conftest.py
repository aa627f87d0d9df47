"""Fixtures for the connector tests: real servers, started once per session."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
from servers import Azurite, Postgres, azurite_server, postgres_server, unavailable

from auto_workflow import connectors
from auto_workflow.secrets import EnvSecrets, set_secrets_provider


def need(module: str) -> ModuleType:
    """Import ``module`` or skip (fail on CI): the connector extras are in [dev]."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(f"{module} is not installed ({exc}): pip install -e '.[dev]'")
        raise


@pytest.fixture(autouse=True)
def fresh_connectors() -> Iterator[None]:
    """Each test starts with no connector or code-made profile, and closes what it made."""
    connectors.reload(environ={})
    yield
    connectors.close_all()
    connectors.reload(environ={})
    set_secrets_provider(EnvSecrets())


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Postgres]:
    need("psycopg")
    need("psycopg_pool")
    with postgres_server() as server:
        yield server


async def _fill_executor(loop: asyncio.AbstractEventLoop) -> None:
    await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.05) for _ in range(64)))


@pytest.fixture(scope="session", autouse=True)
def fsspec_loop() -> None:
    """fsspec's async filesystems share one IO thread, and its loop's executor threads (name
    lookups), for the whole process: start them all before the tests' thread-leak check
    looks, since they are meant to outlive every test."""
    try:
        from fsspec.asyn import get_loop, sync
    except ImportError:
        return
    loop = get_loop()
    sync(loop, _fill_executor, loop)  # the executor at its size: it never starts another


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    need("adlfs")
    with azurite_server() as server:
        yield server
