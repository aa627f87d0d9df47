"""Secrets: ``secret(key)`` through the active provider (environment variables by default)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from auto_workflow._history._values import register_secret

__all__ = [
    "DummyVaultSecrets",
    "EnvSecrets",
    "SecretsProvider",
    "StaticMappingSecrets",
    "secret",
    "set_secrets_provider",
]


class SecretsProvider(Protocol):
    """Anything with ``get(key) -> str | None``."""

    def get(self, key: str) -> str | None: ...


class EnvSecrets:
    """Secrets from environment variables (the default).

    Args:
        prefix: Put before every key: ``EnvSecrets("APP_").get("TOKEN")`` reads ``APP_TOKEN``.
    """

    def __init__(self, prefix: str = "") -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str; got {type(prefix).__name__}")
        self.prefix = prefix

    def get(self, key: str) -> str | None:
        """The environment variable ``prefix + key``, or ``None``."""
        return os.environ.get(self.prefix + key)


DummyVaultSecrets = EnvSecrets
"""The public ``auto-workflow`` package's stand-in for a vault (``DummyVaultSecrets(prefix)``
reads prefixed environment variables): the same class as :class:`EnvSecrets`."""


class StaticMappingSecrets:
    """Secrets from a fixed mapping (tests, local runs)."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = dict(mapping)

    def get(self, key: str) -> str | None:
        """The value for ``key``, or ``None``."""
        return self._mapping.get(key)


_provider: SecretsProvider = EnvSecrets()


def set_secrets_provider(provider: SecretsProvider) -> None:
    """Make ``provider`` the active secrets provider."""
    global _provider
    if not callable(getattr(provider, "get", None)):
        raise TypeError("a secrets provider needs a get(key) method")
    _provider = provider


def secret(key: str) -> str | None:
    """The secret ``key`` from the active provider, or ``None``.

    A value handed out here is remembered as a secret: the run history writes ``***``
    wherever it would appear (parameters, arguments, errors, tracebacks).
    """
    value = _provider.get(key)
    if isinstance(value, str) and value:
        register_secret(value)
    return value
