"""Fixtures for the connector tests: real servers, started once per session."""

from __future__ import annotations

import importlib
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


@pytest.fixture(scope="session")
def fsspec_loop() -> None:
    """fsspec's async filesystems share one IO thread for the whole process: start it before
    the tests' thread-leak check looks, since it is meant to outlive them."""
    asyn = need("fsspec.asyn")
    asyn.get_loop()


@pytest.fixture(scope="session")
def azurite(fsspec_loop: None) -> Iterator[Azurite]:
    need("adlfs")
    with azurite_server() as server:
        yield server
