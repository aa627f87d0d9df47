"""Attempts on a Dask cluster, behind the executor protocol.

:class:`DaskExecutor` is a backend: for each run it connects to a scheduler (an address, the
caller's client, or an embedded ``LocalCluster`` started for the run) and returns a
:class:`_DaskRun`, the run's placement. The engine keeps everything else (the graph state,
retries, timeouts, cache, persistence, events, middleware): one attempt of one call is what
goes to Dask, as one task with a fresh key, Dask's own retries off and our priority.

Invariants:

* ``distributed`` is imported only when a run starts (it is an optional extra); importing
  this module imports nothing of it.
* A plain-function task runs on the cluster and its result stays there: the attempt returns
  a :class:`~._placement.Remote` holding the future, and downstream cluster tasks get the
  future as an argument (worker to worker). A result is fetched only for a cache store or a
  persisted artifact (such tasks use the fetching executor), and by the engine where it needs
  the value (:func:`~._placement.localize`).
* ``async def`` tasks and tasks tagged ``"local"`` run here, on the event loop as usual,
  with their arguments fetched.
* When the run allows it (:meth:`_DaskRun.look_ahead`), a cluster task whose inputs are all
  done or submitted is submitted at once, their futures as arguments (``_ahead`` keeps the
  books); its first attempt takes that future up only if it got the very inputs the attempt
  has. An input's failed or abandoned attempt releases what went ahead on it first.
* Every future a run submits is cancelled or released when its attempt is abandoned and,
  at the latest, when the run ends; what the run started (a client, a cluster) it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import site
import sys
import sysconfig
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._core._context import RunContext
from auto_workflow._core._graph import resolve
from auto_workflow._execution._ahead import Lookahead
from auto_workflow._execution._placement import Digest, Remote, find_remotes
from auto_workflow._execution._protocol import Call, OnStart, call_to_completion, safe_str
from auto_workflow.exceptions import (
    ClusterUnavailableError,
    SerializationError,
    WorkerCrashedError,
)

if TYPE_CHECKING:
    from auto_workflow._core._graph import Node, TaskLike
    from auto_workflow._core._state import RunState

__all__ = ["DaskExecutor"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 30.0
"""Bound on closing what a run started (a client, an embedded cluster)."""

_FIX_MODULE = (
    "install the package that provides it in the workers' environment (the usual answer "
    "for a real cluster: a worker image or environment with your package installed), or "
    "make it importable there (client.upload_file for a single module)"
)


class DaskExecutor:
    """Run a flow's tasks on a Dask cluster: ``flow.run(executor=DaskExecutor(...))``.

    With no arguments, each run starts an embedded ``LocalCluster`` (worker processes, one
    per core, one thread each, dashboard off, bound to 127.0.0.1) and closes it after the
    run. With ``address``, each run connects to that scheduler. With ``client``, runs use
    the caller's client and leave it open.

    Args:
        address: A running scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.
        client: A ``distributed.Client`` of yours. An asynchronous client on the loop the
            run uses is used as it is; otherwise each run opens its own asynchronous client
            to the same scheduler.
        connect_timeout: Seconds to reach the scheduler before
            :class:`~auto_workflow.exceptions.ClusterUnavailableError`.
        local_tags: Tasks with any of these tags run here, not on the cluster.
        ship_code: Send task functions whose module is not installed (your flow's own
            modules) by value, so workers need not have them (see ``docs/dask.md``).
        **cluster_kwargs: Passed to the embedded ``LocalCluster`` (``n_workers=4``...).

    Attributes:
        abandoned: Attempts of this executor's runs that timed out or were cancelled while
            they ran on a worker (their futures were cancelled; a running function cannot
            be stopped, so its worker thread finishes it and the result is dropped).

    Raises:
        TypeError: ``address``, ``client`` and ``cluster_kwargs`` mixed.
        ValueError: a non-positive ``connect_timeout``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Any = None,
        connect_timeout: float = 10.0,
        local_tags: Iterable[str] = ("local",),
        ship_code: bool = True,
        **cluster_kwargs: Any,
    ) -> None:
        if sum((address is not None, client is not None, bool(cluster_kwargs))) > 1:
            raise TypeError("DaskExecutor takes one of address=, client= or LocalCluster keywords")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int | float):
            raise TypeError(f"connect_timeout must be a number; got {connect_timeout!r}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0; got {connect_timeout!r}")
        self.address = address
        self.client = client
        self.connect_timeout = float(connect_timeout)
        self.local_tags = frozenset(local_tags)
        self.ship_code = ship_code
        self.cluster_kwargs = cluster_kwargs
        self.abandoned = 0

    def __repr__(self) -> str:
        where = self.address or ("a client" if self.client is not None else "an embedded cluster")
        return f"<DaskExecutor on {where}>"

    async def open(self, context: RunContext, digest: Digest) -> _DaskRun:
        """Connect (or start the embedded cluster) for one run; return its placement."""
        client, owned = await self._connect()
        return _DaskRun(self, client, owned, context, digest)

    async def _connect(self) -> tuple[Any, list[Any]]:
        """The run's asynchronous client, and what the run must close (last first)."""
        import distributed  # the optional extra: imported only when a run starts

        given = self.client
        if given is not None and given.asynchronous:
            return given, []  # the caller's, on this loop: used as it is and left open
        address = given.scheduler.address if given is not None else self.address
        if address is not None:
            client = await _client_for(str(address), self.connect_timeout)
            return client, [client]
        cluster = await _start_cluster(distributed, self.cluster_kwargs)
        try:
            client = await _client_for(cluster.scheduler_address, self.connect_timeout)
        except BaseException:
            await cluster.close()
            raise
        return client, [client, cluster]


async def _start_cluster(distributed: Any, kwargs: dict[str, Any]) -> Any:
    """An embedded LocalCluster: worker processes, one per core, on 127.0.0.1."""
    import dask  # the optional extra (comes with distributed)

    options: dict[str, Any] = {
        "n_workers": os.cpu_count() or 1,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        **kwargs,
    }
    if options["processes"]:
        options.setdefault("host", "127.0.0.1")  # in-process clusters talk over inproc://
    if options["dashboard_address"] is None:
        # The scheduler serves its HTTP routes (health, metrics) even with the dashboard off,
        # on Dask's default 8787, and warns when that port is taken (by another cluster, say):
        # a free port on 127.0.0.1 instead.
        no_dashboard = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
        options["scheduler_kwargs"] = {**no_dashboard, **options.get("scheduler_kwargs", {})}
    # Our retries own failures: a task whose worker dies fails at once (KilledWorker)
    # instead of being re-run by the scheduler behind the engine's back.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return await distributed.LocalCluster(asynchronous=True, **options)


async def _client_for(address: str, seconds: float) -> Any:
    """An asynchronous client of ``address``, or ClusterUnavailableError within ``seconds``."""
    import distributed  # the optional extra

    make: Any = distributed.Client
    client: Any = None
    try:
        async with asyncio.timeout(seconds + 1.0):  # a guard: Client's own timeout fires first
            client = make(address, asynchronous=True, timeout=seconds, set_as_default=False)
            await client
    except (OSError, TimeoutError, ValueError) as exc:  # TimeoutError: the builtin
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        raise ClusterUnavailableError(
            f"could not reach the Dask scheduler at {address!r} within {seconds:g}s "
            f"({type(exc).__name__}: {safe_str(exc)}); is it running, and is the address "
            "right (e.g. 'tcp://10.0.0.5:8786')?"
        ) from exc
    return client


# -- one run ----------------------------------------------------------------------------------


class _DaskRun:
    """The placement of one run: which executor each task gets, and the run's futures."""

    def __init__(
        self,
        owner: DaskExecutor,
        client: Any,
        owned: list[Any],
        context: RunContext,
        digest: Digest,
    ) -> None:
        self.owner = owner
        self.client = client
        self._owned = owned
        self._digest = digest
        self._context = context
        self.store = _shippable_store(context.artifact_store)
        self._base = replace(context, artifact_store=self.store)
        self._base_blob: bytes | None = None
        self.inflight: set[Any] = set()  # futures of attempts still running
        self.ahead: Lookahead | None = None  # set by look_ahead(): submitting ahead allowed
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()  # every future of the run
        self._picked: dict[int, tuple[TaskLike, _DaskAttempts | None]] = {}
        self._functions: dict[int, tuple[Callable[..., Any], bytes]] = {}

    def pick(self, task: TaskLike) -> _DaskAttempts | None:
        """The cluster executor for ``task``, or ``None`` for an async or local-tagged one."""
        known = self._picked.get(id(task))
        if known is not None and known[0] is task:
            return known[1]
        opts = task.options
        executor = None
        if not task.is_async and not (opts.tags & self.owner.local_tags):
            fetch = opts.persist or bool(opts.cache_ttl)  # the value is stored here
            executor = _DaskAttempts(self, fetch=fetch, priority=opts.priority)
        self._picked[id(task)] = (task, executor)
        return executor

    def look_ahead(self, state: RunState) -> None:
        """Submit tasks of ``state``'s run as soon as their inputs are submitted (pipelining)."""
        self.ahead = Lookahead(state, self._goes_ahead)

    def _goes_ahead(self, node: Node) -> bool:
        """A node can be submitted ahead if it runs here and its result stays here."""
        if node.group is not None:
            return False  # a fan-out's max_concurrency is the client's to keep
        executor = self.pick(node.task)
        return executor is not None and not executor.fetch

    # -- attempts and their futures ----------------------------------------------------------

    def submitted(self, node: Node | None, handle: Remote) -> None:
        """An attempt of ``node`` went to the cluster: send what it unblocks ahead of it."""
        self._made.add(handle.ref)
        ahead = self.ahead
        if ahead is None or node is None:
            return
        stack = ahead.promise(node, handle)
        while stack:
            dependant, inputs = stack.pop()
            future = self._submit_ahead(dependant, inputs)
            if future is not None:
                self._made.add(future)
                self.inflight.add(future)
                stack.extend(ahead.went_ahead(dependant, Remote(self, future), inputs))

    def _submit_ahead(self, node: Node, inputs: dict[int, Any]) -> Any:
        """Submit ``node``'s first attempt now, its inputs' futures as arguments (or None)."""
        executor = self.pick(node.task)
        assert executor is not None
        task = node.task
        args, kwargs = node.args, node.kwargs
        if node.needs_resolve:
            args, kwargs = resolve(args, inputs), resolve(kwargs, inputs)
        context = self._context.for_attempt(task.name, node.id, 1)
        call = Call(task.fn, args, kwargs, task.name, context)
        try:
            return executor.submit_now(call)
        except SerializationError:
            return None  # its attempt, submitted as usual, reports the error

    def adopt(self, call: Call) -> tuple[Node | None, Remote | None]:
        """``call``'s node (if the run looks ahead), and the handle it was submitted ahead
        as if that submission got the very inputs ``call`` has."""
        ahead = self.ahead
        if ahead is None:
            return None, None
        node = ahead.node(call.context.node_id or "")
        if node is None or call.context.attempt != 1:
            return node, None
        taken = ahead.take(node)
        if taken is None:
            return node, None
        handle, inputs = taken
        if _same_remotes(inputs, (call.args, call.kwargs)):
            return node, handle
        # Built on an attempt of an input that then failed after all (a timeout that fired
        # as it finished, say): withdraw it, and what went ahead on it, and submit anew.
        self.revoke(node)
        self.inflight.discard(handle.ref)
        handle.ref.release()
        return node, None

    def kept(self, node: Node | None) -> None:
        """``node``'s attempt succeeded: its handle is the run's result now."""
        if self.ahead is not None and node is not None:
            self.ahead.kept(node)

    def revoke(self, node: Node | None) -> None:
        """``node``'s attempt failed or was abandoned: release what went ahead on it."""
        if self.ahead is None or node is None:
            return
        for handle in self.ahead.revoke(node):
            self.inflight.discard(handle.ref)
            handle.ref.release()  # the scheduler forgets it: it never runs

    # -- arguments ---------------------------------------------------------------------------

    async def prepare(
        self, task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Fetch the arguments of a local task; fingerprint remote ones of a cached task."""
        remote = self.pick(task) is not None
        opts = task.options
        if remote and not opts.cache_ttl:
            return args, kwargs  # the hot path: futures go to the cluster as they are
        found: list[Remote] = []
        find_remotes((args, kwargs), found)
        if not found:
            return args, kwargs
        if not remote or opts.cache_key_fn is not None:
            from auto_workflow._execution._placement import localize

            fetched: tuple[tuple[Any, ...], dict[str, Any]] = await localize((args, kwargs))
            return fetched
        await self.digest(found)
        return args, kwargs

    async def gather(self, handles: list[Remote]) -> list[Any]:
        """The values of ``handles``, fetched in one request."""
        values: list[Any] = await self.client.gather([h.ref for h in handles])
        return values

    async def digest(self, handles: list[Remote]) -> None:
        """Fingerprint remote values on the workers that hold them (only digests travel)."""
        todo = [h for h in handles if h.digest is None]
        if not todo:
            return
        futures = [
            self.client.submit(_fingerprint, self._digest, h.ref, pure=False, retries=0)
            for h in todo
        ]
        digests = await self.client.gather(futures)
        for handle, value in zip(todo, digests, strict=True):
            handle.digest = value

    def context_for(self, context: RunContext) -> Any:
        """What an attempt's context travels as: the run's share of it (params, store)
        pickled once per run, plus the node and attempt; a context of another run whole.

        Every task's arguments are pickled by the client, unpickled and pickled again by the
        scheduler: a whole context per task costs each of them its params and store again.

        Raises:
            SerializationError: the run's context (its params) cannot be pickled.
        """
        base = self._base
        same_run = context.run_id == base.run_id and context.params is base.params
        if not same_run or context.flow_name != base.flow_name:
            if context.artifact_store is self.store:
                return context
            return replace(context, artifact_store=self.store)
        if self._base_blob is None:
            try:
                self._base_blob = cloudpickle.dumps(base)
            except Exception as exc:  # user params: any pickling failure
                raise SerializationError(
                    f"the run context of flow {base.flow_name!r} (its params) cannot be "
                    f"sent to the Dask workers ({type(exc).__name__}: {safe_str(exc)})"
                ) from exc
        return (self._base_blob, context.node_id, context.attempt)

    def function_blob(self, fn: Callable[..., Any], task_name: str) -> bytes:
        """``fn`` pickled once per run (by value when its module is not installed)."""
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        try:
            blob = _dumps_function(fn, by_value=self.owner.ship_code)
        except Exception as exc:
            raise SerializationError(
                f"task {task_name!r}: its function cannot be sent to the Dask workers "
                f"({type(exc).__name__}: {safe_str(exc)})"
            ) from exc
        self._functions[id(fn)] = (fn, blob)
        return blob

    async def aclose(self) -> None:
        """Cancel the run's futures still in flight, release the rest; close what it started.

        The run's output was fetched before this: no future of the run is needed any more.
        """
        leftover, self.inflight = list(self.inflight), set()
        made, self._made = list(self._made), weakref.WeakSet()
        self.ahead = None
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                if leftover and self.client.status == "running":
                    await self.client.cancel(leftover, force=True)
                for future in made:  # held by nothing the run still needs (cycles, errors)
                    future.release()
                for resource in self._owned:
                    await resource.close()
        except Exception:
            logger.exception("closing the Dask resources of this run failed")


def _same_remotes(inputs: tuple[Any, ...], arguments: Any) -> bool:
    """True if the remote results among ``inputs`` are the ones in ``arguments``."""
    now: list[Remote] = []
    find_remotes(arguments, now)
    then = [value for value in inputs if isinstance(value, Remote)]
    return {id(h) for h in now} == {id(h) for h in then}


def _shippable_store(store: Any) -> Any:
    """The run's artifact store if workers can use it (a memory store is this process's)."""
    if store is None or getattr(store, "name", None) == "memory":
        return None
    try:
        cloudpickle.dumps(store)
    except Exception:  # noqa: BLE001 - a user's object: any failure means "cannot travel"
        logger.debug("artifact store %r cannot travel; workers use their own default", store)
        return None
    return store


def _fingerprint(digest: Digest, value: Any) -> str:
    """Run on a worker: the value's fingerprint, so only the digest crosses the network."""
    return digest(value)


# -- one attempt ------------------------------------------------------------------------------


class _DaskAttempts:
    """Runs one attempt as one Dask task: the run's executor for one kind of task."""

    __slots__ = ("_run", "fetch", "priority")

    def __init__(self, run: _DaskRun, *, fetch: bool, priority: int) -> None:
        self._run = run
        self.fetch = fetch
        self.priority = priority

    async def run(self, call: Call, on_start: OnStart = None) -> Any:
        """Submit ``call`` and wait for it; its result stays on the cluster unless fetched.

        ``on_start`` is called once the task is submitted: Dask does not tell a client when
        a task starts, so a timeout counts the wait for a worker and for the inputs too.

        Raises:
            WorkerCrashedError: the worker running it died (or its future was lost).
            SerializationError: the function could not be sent or loaded on the worker.
            asyncio.CancelledError: cancelled (a timeout, or the run): the future is
                cancelled; a function already running cannot be stopped, and is abandoned.
        """
        run = self._run
        node, handle = run.adopt(call)
        if handle is None:
            handle = Remote(run, await self._submit(call))
            run.inflight.add(handle.ref)
            run.submitted(None if self.fetch else node, handle)
        future = handle.ref
        if on_start is not None:
            on_start()
        try:
            await future._state.wait()  # done, without fetching (there is no public way)
        except asyncio.CancelledError:
            run.revoke(node)  # first: what went ahead on it would keep it alive
            self._abandon(future, call)
            raise
        finally:
            run.inflight.discard(future)
        if future.status != "finished":
            run.revoke(node)
            await _raise_outcome(future, call.task_name)
        if not self.fetch:
            run.kept(node)
            return handle
        value = await run.client.gather([future])
        return value[0]

    async def _submit(self, call: Call) -> Any:
        """Submit ``call``, big local arguments scattered to the cluster first."""
        args, kwargs = call.args, call.kwargs
        if any(a.__class__ is not int and a.__class__ is not str for a in args) or kwargs:
            args, kwargs = _to_futures(args), _to_futures(kwargs)
            args, kwargs = await _scatter_large(self._run.client, args, kwargs)
        return self._send(call, args, kwargs)

    def submit_now(self, call: Call) -> Any:
        """Submit ``call`` without awaiting anything; ``None`` if an argument must be
        scattered first (a big local value): its attempt then submits it as usual."""
        args, kwargs = _to_futures(call.args), _to_futures(call.kwargs)
        names, keys = _large_arguments(args, kwargs)
        if names or keys:
            return None
        return self._send(call, args, kwargs)

    def _send(self, call: Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = self._run
        blob = run.function_blob(call.fn, call.task_name)
        return run.client.submit(
            _run_attempt,
            blob,
            call.task_name,
            run.context_for(call.context),
            args,
            kwargs,
            key=f"{call.task_name}-{uuid.uuid4().hex}",
            pure=False,
            retries=0,
            priority=self.priority,
        )

    def _abandon(self, future: Any, call: Call) -> None:
        """The attempt was cancelled: cancel its future (nothing to await on the way out)."""
        done = future.done()
        future.release()  # the scheduler forgets a task nobody wants: queued ones never run
        if done:
            return
        self._run.owner.abandoned += 1
        logger.warning(
            "task %r was stopped (it timed out or its run was cancelled) while it was queued "
            "or running on the Dask cluster; its future is cancelled, but a function that "
            "already runs cannot be stopped: its worker thread finishes it and the result is "
            "dropped",
            call.task_name,
        )


def _to_futures(value: Any) -> Any:
    """``value`` with every Remote replaced by its future (Dask resolves those on workers)."""
    if isinstance(value, Remote):
        return value.ref
    kind = type(value)
    if kind is tuple or kind is list or kind is set or kind is frozenset:
        return kind(_to_futures(v) for v in value)
    if kind is dict:
        return {k: _to_futures(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return kind(*(_to_futures(v) for v in value))
    return value


_SCATTER_BYTES = 1 << 20
"""A local value bigger than this goes to the cluster as data, not inside the task."""


def _large_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[int], list[str]]:
    """The positions and names of the arguments too big to travel inside a task."""
    from dask.sizeof import sizeof  # the optional extra (comes with distributed)

    names = [i for i, a in enumerate(args) if sizeof(a) > _SCATTER_BYTES]
    keys = [k for k, v in kwargs.items() if sizeof(v) > _SCATTER_BYTES]
    return names, keys


async def _scatter_large(
    client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Big local arguments (a local task's result, say) scattered first, as futures."""
    names, keys = _large_arguments(args, kwargs)
    if not names and not keys:
        return args, kwargs
    values = [args[i] for i in names] + [kwargs[k] for k in keys]
    futures = await client.scatter(values, hash=False)
    new_args = list(args)
    for i, future in zip(names, futures, strict=False):
        new_args[i] = future
    new_kwargs = {**kwargs, **dict(zip(keys, futures[len(names) :], strict=True))}
    return tuple(new_args), new_kwargs


async def _raise_outcome(future: Any, task_name: str) -> None:
    """Raise what a finished-but-not-successful future stands for."""
    from distributed.scheduler import KilledWorker  # the optional extra

    if future.status == "error":
        try:
            await future._result()  # raises the task's exception, with its traceback
        except KilledWorker as exc:
            raise WorkerCrashedError(
                f"task {task_name!r}: the Dask worker running it died ({safe_str(exc)})"
            ) from exc
    raise WorkerCrashedError(
        f"task {task_name!r}: its Dask future was {future.status} (a worker holding it was "
        "lost, or the cluster cancelled it)"
    )


# -- on the worker ----------------------------------------------------------------------------

_LOADED: dict[bytes, Callable[..., Any]] = {}
"""Task functions loaded in this worker process, by their pickle (bounded)."""
_LOADED_MAX = 512
_BASES: dict[bytes, RunContext] = {}
"""Runs' shares of their contexts, loaded in this worker process, by their pickle (bounded)."""


def _run_attempt(blob: bytes, task_name: str, context: Any, args: Any, kwargs: Any) -> Any:
    """Run on a worker: load the task's function (once) and call it in its run context."""
    fn = _LOADED.get(blob)
    if fn is None:
        fn = _load_function(blob, task_name)
    ctx = _attempt_context(context, task_name)
    return call_to_completion(Call(fn, tuple(args), dict(kwargs), task_name, ctx))


def _attempt_context(context: Any, task_name: str) -> RunContext:
    """The attempt's context from what :meth:`_DaskRun.context_for` sent."""
    if isinstance(context, RunContext):
        return context
    base_blob, node_id, attempt = context
    base = _BASES.get(base_blob)
    if base is None:
        if len(_BASES) >= _LOADED_MAX:
            _BASES.clear()
        base = _BASES[base_blob] = cloudpickle.loads(base_blob)
    return base.for_attempt(task_name, node_id, attempt)


def _load_function(blob: bytes, task_name: str) -> Callable[..., Any]:
    try:
        fn: Callable[..., Any] = cloudpickle.loads(blob)
    except ModuleNotFoundError as exc:
        # Not retried (a SerializationError never is): every attempt would fail the same way.
        raise SerializationError(
            f"task {task_name!r} cannot run on Dask worker process {os.getpid()}: module "
            f"{exc.name!r} is not importable there; {_FIX_MODULE}"
        ) from None
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[blob] = fn
    return fn


# -- code shipping ----------------------------------------------------------------------------

_pickle_lock = threading.Lock()


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    """Folders of installed code (stdlib, site-packages): modules there are not shipped."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages())
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots)


def _ships_by_value(module_name: str) -> bool:
    """True for a module of the user's own code: loaded from a file outside installed code."""
    if module_name == "__main__":
        return False  # cloudpickle pickles __main__'s functions by value already
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or not path:
        return False
    return not os.path.realpath(path).startswith(_installed_roots())


def _dumps_function(fn: Callable[..., Any], *, by_value: bool) -> bytes:
    """Pickle ``fn``; by value when asked and its module is the user's own code."""
    name = getattr(fn, "__module__", None)
    if not by_value or not isinstance(name, str) or not _ships_by_value(name):
        data: bytes = cloudpickle.dumps(fn)
        return data
    module = sys.modules[name]
    with _pickle_lock:
        registered = name in cloudpickle.list_registry_pickle_by_value()
        if not registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            data = cloudpickle.dumps(fn)
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)
    return data
