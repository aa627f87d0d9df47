"""Where a run's tasks run: the local executors, or a cluster behind the same protocol.

A run with no backend uses the local executors (``run_in``), exactly as before. A run given a
:class:`Backend` (the Dask executor is one) asks it for a :class:`Placement` when the run
starts; the :class:`~auto_workflow._core._calls.CallRunner` then asks that placement, per
task, for the executor of its attempts (``None``: run it locally, as without a backend) and
lets it prepare each call's arguments. A run that allows it lets the placement look ahead in
its state, to submit tasks before their inputs are done (``_ahead``). The placement is closed
when the run ends.

A result that stays where it was produced is a :class:`Remote`: a small handle the graph
state holds in place of the value. :func:`localize` replaces the handles in a value by their
values, fetching all of them at once; the engine calls it only where a value is needed here
(the flow's output, a fan-out source, the arguments of a task that runs locally).

Invariants: nothing here imports a cluster library; the Dask backend is imported by name,
only when a run asks for it; a run without a backend never walks its values.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from auto_workflow._core._config import get_config

if TYPE_CHECKING:
    from auto_workflow._core._context import RunContext
    from auto_workflow._core._graph import TaskLike
    from auto_workflow._core._state import RunState
    from auto_workflow._execution._protocol import Executor

__all__ = [
    "Backend",
    "ExecutorSpec",
    "Placement",
    "Remote",
    "RemoteStore",
    "backend_for",
    "find_remotes",
    "localize",
]

Digest = Callable[[Any], str]
"""How the engine fingerprints a value for a cache key (run where the value is)."""


class RemoteStore(Protocol):
    """Where :class:`Remote` handles live: it fetches values and fingerprints them there."""

    async def gather(self, handles: list[Remote]) -> list[Any]:
        """The values of ``handles``, in order, fetched together."""
        ...

    async def digest(self, handles: list[Remote]) -> None:
        """Set ``handle.digest`` on each handle without one, computing it where it lives."""
        ...


class Remote:
    """A task result that stays where it was produced (a Dask future, say).

    Attributes:
        store: What can fetch it (and fingerprint it in place).
        ref: The store's own handle (a ``distributed.Future``).
        digest: The value's fingerprint once computed (for cache keys), else ``None``.
    """

    __slots__ = ("digest", "ref", "store")

    def __init__(self, store: RemoteStore, ref: Any) -> None:
        self.store = store
        self.ref = ref
        self.digest: str | None = None

    def __repr__(self) -> str:
        return f"<Remote {self.ref!r}>"

    def __auto_workflow_key__(self) -> tuple[str, str]:
        """Keyed by its value's fingerprint, computed where the value is (never fetched)."""
        if self.digest is None:
            raise TypeError("a remote result whose fingerprint was not computed")
        return ("auto_workflow remote value", self.digest)


class Placement(Protocol):
    """One run's choice of executor per task, and what goes with it."""

    def pick(self, task: TaskLike) -> Executor | None:
        """The executor for ``task``'s attempts, or ``None``: run it locally (``run_in``)."""
        ...

    async def prepare(
        self, task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments ``task`` gets: fetched if it runs locally, keyable if it is cached."""
        ...

    def look_ahead(self, state: RunState) -> None:
        """The run allows submitting a task before its inputs are done (see ``_ahead``):
        no ``max_concurrency``, no middleware, no checkpoints. ``state`` is its state."""
        ...

    async def aclose(self) -> None:
        """The run ended (however): cancel what is left of it, release what it opened."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What ``Flow.run(executor=...)`` accepts besides ``"local"`` and ``"dask"``."""

    async def open(self, context: RunContext, digest: Digest) -> Placement:
        """Start one run: connect (or start a cluster) and return its placement."""
        ...


ExecutorSpec = str | Backend | None
"""``None`` (the configured ``executor``), ``"local"``, ``"dask"`` or a :class:`Backend`."""


def backend_for(spec: object) -> Backend | None:
    """The backend a run asked for; ``None`` means the local executors.

    Raises:
        ValueError: an unknown executor name.
        TypeError: neither a name nor a backend.
    """
    if spec is None:
        spec = get_config().executor
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name == "local":
            return None
        if name == "dask":
            # Imported by name, only now: the core never imports the Dask backend (nor
            # distributed, which that module imports only when a run starts).
            module = importlib.import_module("auto_workflow._execution._dask")
            backend: Backend = module.DaskExecutor(address=get_config().dask_address)
            return backend
        raise ValueError(f"executor must be 'local', 'dask' or a DaskExecutor; got {spec!r}")
    if isinstance(spec, Backend):
        return spec
    raise TypeError(
        f"executor must be 'local', 'dask' or a DaskExecutor; got {type(spec).__name__}"
    )


# -- finding and fetching remote values --------------------------------------------------------

_CONTAINERS = (list, tuple, dict, set, frozenset)


def find_remotes(value: Any, found: list[Remote]) -> None:
    """Append every :class:`Remote` in ``value`` (inside builtin containers) to ``found``."""
    if isinstance(value, Remote):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            find_remotes(item, found)
    elif isinstance(value, _CONTAINERS):
        for item in value:
            find_remotes(item, found)


def _replace(value: Any, values: dict[int, Any]) -> Any:
    """``value`` with each Remote replaced by ``values[id(remote)]`` (containers rebuilt)."""
    if isinstance(value, Remote):
        return values[id(value)]
    if not isinstance(value, _CONTAINERS):
        return value
    kind = type(value)
    if isinstance(value, dict):
        return kind({k: _replace(v, values) for k, v in value.items()})
    items = [_replace(v, values) for v in value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return kind(*items)
    return kind(items)


async def localize(value: Any) -> Any:
    """``value`` with every :class:`Remote` in it replaced by its value, fetched at once."""
    found: list[Remote] = []
    find_remotes(value, found)
    if not found:
        return value
    by_store: dict[int, list[Remote]] = {}
    for handle in found:
        by_store.setdefault(id(handle.store), []).append(handle)
    values: dict[int, Any] = {}
    for group in by_store.values():
        fetched = await group[0].store.gather(group)
        values.update(zip(map(id, group), fetched, strict=True))
    return _replace(value, values)
