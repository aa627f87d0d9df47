"""The per-process connector registry: one connector per profile, created on first use.

Invariants: nothing happens at import (no file read, no hook registered); profiles are read
from pyproject.toml and the environment on the first :func:`get`, kept until :func:`reload`;
at most one connector exists per profile name in a process, made under a lock, so threads
racing on ``get`` share it; connectors made in this process are closed at interpreter exit
(``atexit``); a forked child forgets its parent's connectors without closing them (closing
would end the parent's sessions on the shared sockets) and makes its own. A connector
pickles as its :class:`Profile` only, and unpickles as this process's connector for it, so
one sent to a process worker is re-created there, never copied.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from auto_workflow._connectors._errors import MissingExtraError, ProfileError
from auto_workflow._connectors._profiles import (
    FieldValue,
    Kind,
    Profile,
    extra_for,
    load_profiles,
    make_profile,
)

__all__ = ["Connector", "close_all", "get", "profiles", "register_profile", "reload", "revive"]

logger = logging.getLogger(__name__)

_MODULES = {
    Kind.POSTGRES: "auto_workflow._connectors._postgres",
    Kind.FSSPEC: "auto_workflow._connectors._storage",
}
_DRIVERS = {Kind.POSTGRES: "psycopg and psycopg_pool", Kind.FSSPEC: "fsspec"}


class Connector(Protocol):
    """What every connector has: its profile, and ``close()``."""

    @property
    def profile(self) -> Profile: ...

    def close(self) -> None: ...


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pid = os.getpid()
        self.loaded: dict[str, Profile] | None = None
        self.defined: dict[str, Profile] = {}
        self.live: dict[str, Connector] = {}
        self.hooked = False

    def check_pid(self) -> None:
        """After a fork: forget the parent's connectors, unclosed (their sockets are shared)."""
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.live = {}


_REGISTRY = _Registry()


def _hook() -> None:
    """On first creation: close at exit; forget inherited connectors in a forked child."""
    if not _REGISTRY.hooked:
        _REGISTRY.hooked = True
        atexit.register(close_all)
        os.register_at_fork(after_in_child=_REGISTRY.check_pid)


def profiles() -> dict[str, Profile]:
    """Every known profile: pyproject.toml and the environment, then those made in code."""
    with _REGISTRY.lock:
        if _REGISTRY.loaded is None:
            _REGISTRY.loaded = load_profiles()
        return {**_REGISTRY.loaded, **_REGISTRY.defined}


def register_profile(name: str, /, **fields: FieldValue) -> Profile:
    """Define (or redefine) the profile ``name`` in code; it wins over the configuration.

    A connector already made for ``name`` is closed; the next :func:`get` makes a new one.

    Raises:
        ProfileError: a bad name, kind or field.
    """
    profile = make_profile(name, fields, source="register_profile()")
    _install(profile)
    return profile


def _install(profile: Profile) -> None:
    with _REGISTRY.lock:
        _REGISTRY.check_pid()
        _REGISTRY.defined[profile.name] = profile
        old = _REGISTRY.live.pop(profile.name, None)
    if old is not None:
        _close(old)


def get(name: str) -> Any:
    """The connector of profile ``name`` in this process, made on first use.

    Raises:
        ProfileError: no profile is called ``name`` (the message lists those there are), or
            its secrets cannot be resolved.
        MissingExtraError: the profile's kind needs an extra that is not installed.
    """
    with _REGISTRY.lock:
        _REGISTRY.check_pid()
        live = _REGISTRY.live.get(name)
        if live is not None:
            return live
        known = profiles()
        if name not in known:
            listed = ", ".join(repr(n) for n in sorted(known)) or "none"
            raise ProfileError(
                f"no connector profile {name!r}; known profiles: {listed}. Define one in "
                f"[tool.auto_workflow.connectors.{name}] in pyproject.toml, or with "
                f"AUTO_WORKFLOW_CONNECTORS__{name.upper()}__KIND=..."
            )
        connector = _create(known[name])
        _REGISTRY.live[name] = connector
        _hook()
        return connector


def _create(profile: Profile) -> Connector:
    try:
        # The kind's module imports its optional extra at the top: import it only now.
        module = importlib.import_module(_MODULES[profile.kind])
    except ImportError as exc:
        extra = extra_for(profile.kind)
        raise MissingExtraError(
            f"connector profile {profile.name!r} is of kind {profile.kind.value!r}, which "
            f"needs {_DRIVERS[profile.kind]} ({exc}); "
            f"run: pip install 'auto-workflow[{extra}]'"
        ) from exc
    connector: Connector = module.connect(profile)
    return connector


def revive(profile: Profile) -> Any:
    """This process's connector for ``profile`` (how a pickled connector unpickles)."""
    with _REGISTRY.lock:
        if profiles().get(profile.name) != profile:
            _install(profile)
        return get(profile.name)


def _close(connector: Connector) -> None:
    try:
        connector.close()
    except Exception:  # a plugin boundary: one failing close must not stop the others
        logger.warning("closing connector %r failed", connector, exc_info=True)


def close_all() -> None:
    """Close every connector made in this process; the next :func:`get` makes new ones."""
    with _REGISTRY.lock:
        _REGISTRY.check_pid()
        live, _REGISTRY.live = _REGISTRY.live, {}
    for connector in live.values():
        _close(connector)


def reload(environ: Mapping[str, str] | None = None) -> dict[str, Profile]:
    """Close every connector and re-read the profiles (pyproject.toml and the environment).

    Profiles made with :func:`register_profile` are forgotten too.
    """
    close_all()
    with _REGISTRY.lock:
        _REGISTRY.defined = {}
        _REGISTRY.loaded = load_profiles(environ=environ)
        return dict(_REGISTRY.loaded)
