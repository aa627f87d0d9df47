"""One task call, with everything the seed promises around it.

:class:`CallRunner` runs one call: cache lookup and in-flight de-duplication, retries with
backoff and jitter, a timeout per attempt, middleware, tracing, events, metrics and
persistence. A flow run and a direct call use it alike, so both raise the same errors.

Invariants: a result cache failure costs only the entry, never the result; a persisted
result that cannot be stored fails the task; the hot path (an async task with no plugins)
runs the function in place with no executor, span or middleware chain.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import functools
import inspect
import logging
import math
import os
import random
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any

from auto_workflow._core._config import get_config
from auto_workflow._core._context import (
    NodeFrame,
    RunContext,
    TaskFrame,
    reset_frame,
    set_frame,
    set_node_frame,
)
from auto_workflow._core._graph import TaskLike
from auto_workflow._core._model import ArtifactRef, RunIn
from auto_workflow._execution._local import AsyncExecutor, ThreadExecutor
from auto_workflow._execution._process import ProcessExecutor, get_process_pool
from auto_workflow._execution._protocol import Call, Executor
from auto_workflow._observe._hub import chain_middleware
from auto_workflow._results._keys import UnkeyableError, default_cache_key, remembered_key
from auto_workflow.exceptions import (
    AttemptTimeoutError,
    CacheKeyWarning,
    InvalidKeyError,
    RetryExhaustedError,
    SerializationError,
    TaskExecutionError,
    TimeoutError,
)

if TYPE_CHECKING:
    from auto_workflow._core._journal import RunJournal
    from auto_workflow._core._model import TaskOptions
    from auto_workflow._core._plugins import Plugins
    from auto_workflow._execution._placement import Placement

__all__ = ["DEFAULT_THREAD_WORKERS", "BareCall", "CallRunner", "call_with_events", "new_run_id"]

logger = logging.getLogger(__name__)

DEFAULT_THREAD_WORKERS = 64
"""Threads a run may use when it has no ``max_concurrency`` (threads start on demand)."""


def new_run_id() -> str:
    """A fresh, unique run id: 16 random hex digits."""
    return os.urandom(8).hex()


class _Flight:
    """A cached call being run by one leader, awaited by identical calls (in one run)."""

    __slots__ = ("error", "finished", "succeeded", "value")

    def __init__(self) -> None:
        self.finished = asyncio.Event()
        self.succeeded = False
        self.value: Any = None
        self.error: TaskExecutionError | None = None


_LEADING: ContextVar[frozenset[tuple[int, int, str]]] = ContextVar(
    "auto_workflow_leading", default=frozenset()
)
"""The in-flight slots the current code runs inside of (as their leader, or nested in it)."""

_InFlight = dict[tuple[int, int, str], _Flight]
"""Cached calls in flight, by (id of the result cache, id of the artifact store, key)."""

_INFLIGHT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _InFlight]
_INFLIGHT = weakref.WeakKeyDictionary()


def _inflight_table() -> _InFlight:
    """The cached calls in flight on this event loop.

    Shared by every run on the loop: a flow's identical calls, flows run concurrently,
    ``asyncio.gather`` of direct ``run_async`` calls. Calls share a flight only when they
    also share the result cache and the artifact store (a persisted result is a ref into
    one store). A flight is removed when it lands, so the table stays
    small. Without a running loop (a runner made for inspection), a private table.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return {}
    table = _INFLIGHT.get(loop)
    if table is None:
        table = _INFLIGHT[loop] = {}
    return table


def _copy_error(err: TaskExecutionError) -> TaskExecutionError:
    """The leader's failure for a follower: same type and fields, a traceback of its own."""
    twin = copy.copy(err).with_traceback(None)
    twin.__cause__ = err.__cause__
    return twin


_TAKES_TTL: dict[type, bool] = {}


def _takes_ttl(cache: object) -> bool:
    """True if ``cache.set`` accepts a ``ttl`` keyword (decided once per backend type)."""
    kind = type(cache)
    known = _TAKES_TTL.get(kind)
    if known is None:
        try:
            params = inspect.signature(cache.set).parameters  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        known = "ttl" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
        _TAKES_TTL[kind] = known
    return known


class CallRunner:
    """Runs task calls for one run: options, plugins and executors around each attempt."""

    def __init__(
        self,
        base: RunContext,
        plugins: Plugins,
        thread_workers: int,
        placement: Placement | None = None,
        *,
        blocking_warning_ms: float = 0.0,
    ) -> None:
        """``blocking_warning_ms``: a plain function run on the loop that holds it this long
        or longer is logged once per task of the run (0: never)."""
        self.base = base
        self.placement = placement
        """Where tasks run when the run has a backend (a Dask cluster); None: run_in alone."""
        self.plugins = plugins
        self._thread_workers = thread_workers
        self._thread: ThreadExecutor | None = None
        self._process: ProcessExecutor | None = None
        self._blocking_limit = blocking_warning_ms / 1000 if blocking_warning_ms > 0 else math.inf
        self._blocked: set[str] = set()
        self._async = AsyncExecutor(self._blocking_limit, self._call_blocked)
        self._observed = bool(plugins.middleware) or plugins.tracer is not None
        self._inflight = _inflight_table()
        self._cache_failed = False
        self._cache_id, self._store_id = id(plugins.cache), id(plugins.store)
        self.journal: RunJournal | None = None
        """The run history's journal of this run, told when attempts start and fail."""
        self.call: Callable[
            [TaskLike, Any, tuple[Any, ...], dict[str, Any]], Awaitable[tuple[Any, int | str]]
        ] = self._call
        """Run one call of a task to its final value (or ArtifactRef).

        ``await call(task, node, args, kwargs)`` returns ``(value, how)``: ``how`` is the
        number of attempts when the task ran, ``"cache"`` for a result cache hit, or
        ``"in_flight"`` when an identical call running at the same time in this run
        produced the value. A final failure raises TaskExecutionError (or a subclass).
        The method is chosen once per run, so metrics cost nothing when there are none.
        """
        plugins.faults.bind(base.flow_name, base.run_id)
        self._task_done: Callable[[str, str, float], None] = _unmetered
        metrics = plugins.metrics
        gauged = False
        if metrics is not None:
            # One call per finished task: the provider's own task_done if it has one (the
            # in-memory default does: no keyword dicts per task), else inc + observe.
            self._task_done = plugins.task_done or self._report_task
            wants = getattr(metrics, "wants", None)
            gauged = wants is None or wants("tasks_running")  # a guarded wants never raises
            self.call = self._call_gauged if gauged else self._call_metered
        self._bare_run = placement is None and not self._observed and not gauged
        """Nothing in this run wraps a call: no cluster, middleware, tracer or gauge."""
        self._bare: dict[TaskLike, BareCall | None] = {}
        self._memo_hits: dict[TaskLike, bool] = {}

    def close(self) -> None:
        """Shut down the thread pool this run started (process workers are shared), and let
        go of the run's journal and per-task calls: the runner refers to itself through the
        methods it picked, so it is freed by the collector, not at once, and must not keep a
        finished run's graph alive until then."""
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
        self.journal = None
        self._bare.clear()
        self._memo_hits.clear()

    def executor(self, run_in: RunIn) -> Executor:
        """The executor for ``run_in``; pools start on first use."""
        if run_in is RunIn.ASYNC:
            return self._async
        if run_in is RunIn.THREAD:
            if self._thread is None:
                self._thread = ThreadExecutor(self._thread_workers)
            return self._thread
        if self._process is None:
            workers = get_config().process_pool_max_workers
            self._process = ProcessExecutor(get_process_pool(workers))
        return self._process

    # -- one call --------------------------------------------------------------------------

    def bare(self, task: TaskLike) -> BareCall | None:
        """How a call of ``task`` in this run is made when it is the function and nothing
        else: an async-mode task with one attempt, no timeout, no cache and no persistence,
        in a run with no cluster, middleware, tracer or running-tasks gauge (and a caller
        that emits no events around it). ``None`` for any other task. Decided once per task
        and run."""
        try:
            return self._bare[task]
        except KeyError:
            opts = task.options
            plain = not (opts.retries or opts.timeout is not None or opts.cache_ttl)
            bare = self._bare_run and plain and opts.run_in is RunIn.ASYNC and not opts.persist
            known = self._bare[task] = BareCall(self, task) if bare else None
            return known

    def lookup(
        self, task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, tuple[Any] | None] | None:
        """A cached call's entry, looked up without a coroutine: ``(key, (value,))`` on a
        hit (counted and timed for the metrics as :meth:`call` counts it), ``(key, None)``
        on a miss (finish the call with :meth:`call_missed`). ``None`` when this is not
        such a call (not cached, a run something wraps, keyword arguments, a key function,
        a key the memo does not know yet): make it with :meth:`call`."""
        cached = self._memo_hits.get(task)
        if cached is None:
            opts = task.options
            cached = bool(self._bare_run and opts.cache_ttl and opts.cache_key_fn is None)
            self._memo_hits[task] = cached
        if not cached or kwargs:
            return None
        start = perf_counter()
        key = remembered_key(task, args)
        if key is None:
            return None
        hit = self._lookup(task, key)
        if hit is not None:
            self._task_done(task.name, "cached", (perf_counter() - start) * 1000)
        return key, hit

    async def call_missed(
        self, task: TaskLike, node: Any, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The rest of :meth:`call` after :meth:`lookup` missed ``key``: join an identical
        call in flight or lead it; the value (or its TaskExecutionError), metered."""
        start = perf_counter()
        try:
            value, how = await self._join_or_lead(task, node, key, args, kwargs)
        except TaskExecutionError:
            self._task_done(task.name, "failure", (perf_counter() - start) * 1000)
            raise
        result = "success" if how.__class__ is int else "cached"
        self._task_done(task.name, result, (perf_counter() - start) * 1000)
        return value

    async def _call_metered(
        self, task: TaskLike, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int | str]:
        done = self._task_done
        start = time.perf_counter()
        try:
            outcome = await self._call(task, node, args, kwargs)
        except TaskExecutionError:
            done(task.name, "failure", (time.perf_counter() - start) * 1000)
            raise
        result = "success" if outcome[1].__class__ is int else "cached"
        done(task.name, result, (time.perf_counter() - start) * 1000)
        return outcome

    def _report_task(self, task_name: str, result: str, duration_ms: float) -> None:
        """``task_done`` for providers without one: the same facts as inc + observe."""
        metrics = self.plugins.metrics
        assert metrics is not None
        if result == "failure":
            metrics.inc("tasks_failed", task=task_name)
        else:
            metrics.inc("tasks_succeeded", task=task_name, result=result)
        metrics.observe("task_duration_ms", duration_ms, task=task_name, result=result)

    async def _call_gauged(
        self, task: TaskLike, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int | str]:
        """:meth:`_call_metered` inside the ``tasks_running`` gauge (+1 now, -1 after)."""
        metrics = self.plugins.metrics
        assert metrics is not None
        metrics.inc("tasks_running", 1, task=task.name)
        try:
            return await self._call_metered(task, node, args, kwargs)
        finally:
            metrics.inc("tasks_running", -1, task=task.name)

    async def _call(
        self, task: TaskLike, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int | str]:
        opts = task.options
        if self.placement is not None:  # a cluster run: fetch or fingerprint remote arguments
            args, kwargs = await self.placement.prepare(task, args, kwargs)
        if not opts.cache_ttl:  # None: not cached; 0: never hits (inlined _fresh: hot path)
            outcome = await self._attempts(task, node, args, kwargs)
            if opts.persist:
                return self._persist(task, outcome[0], outcome[1]), outcome[1]
            return outcome
        key = None if kwargs or opts.cache_key_fn else remembered_key(task, args)
        if key is None:
            key = self._cache_key(task, args, kwargs)
            if key is None:
                return await self._fresh(task, node, args, kwargs)
        hit = self._lookup(task, key)
        if hit is not None:
            return hit[0], "cache"
        return await self._join_or_lead(task, node, key, args, kwargs)

    async def _join_or_lead(
        self, task: TaskLike, node: Any, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int | str]:
        """After a miss: wait for an identical call in flight, or run this one as leader."""
        slot = (self._cache_id, self._store_id, key)
        while (flight := self._inflight.get(slot)) is not None:
            if slot in _LEADING.get():
                # This call runs inside the very call it would wait for (a nested call whose
                # cache_key_fn gives its caller's key): waiting would never end. Run it.
                value, attempts = await self._fresh(task, node, args, kwargs)
                self._store(task, key, value)
                return value, attempts
            self._count("dedup_joins", task)
            await flight.finished.wait()
            if flight.error is not None:
                raise _copy_error(flight.error)
            if flight.succeeded:
                return flight.value, "in_flight"
            # The leader was cancelled before it finished: look again, maybe lead.
            hit = self._lookup(task, key)
            if hit is not None:
                return hit[0], "cache"
        return await self._lead(task, node, slot, args, kwargs)

    async def _lead(
        self,
        task: TaskLike,
        node: Any,
        slot: tuple[int, int, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, int]:
        """Run a cached call that nobody else is running; identical calls wait for it."""
        key = slot[2]
        flight = self._inflight[slot] = _Flight()
        token = _LEADING.set(_LEADING.get() | {slot})
        try:
            value, attempts = await self._fresh(task, node, args, kwargs)
            self._store(task, key, value)
            flight.value, flight.succeeded = value, True
            return value, attempts
        except TaskExecutionError as err:
            flight.error = err
            raise
        finally:
            _LEADING.reset(token)
            del self._inflight[slot]
            flight.finished.set()

    async def _fresh(
        self, task: TaskLike, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int]:
        value, attempts = await self._attempts(task, node, args, kwargs)
        return (self._persist(task, value, attempts) if task.options.persist else value), attempts

    def _lookup(self, task: TaskLike, key: str) -> tuple[Any] | None:
        """The cached 1-tuple for ``key`` if there is a valid one; a failing backend misses."""
        try:
            hit = self.plugins.cache.get(key, task.options.cache_ttl)
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: logged, then a miss
            self._cache_trouble("get", task, exc)
            return None
        if hit.__class__ is not tuple or len(hit) != 1:
            if hit is not None:
                logger.warning("task %r: the result cache returned %r; a miss", task.name, hit)
            return None
        if hit[0].__class__ is ArtifactRef and not self._artifact_exists(hit[0]):
            return None
        metrics = self.plugins.metrics
        if metrics is not None:
            metrics.inc("cache_hits", task=task.name)
        return hit

    def _store(self, task: TaskLike, key: str, value: Any) -> None:
        """Cache a success; a backend failure costs the entry, never the result."""
        cache = self.plugins.cache
        try:
            if _takes_ttl(cache):
                cache.set(key, (value,), ttl=task.options.cache_ttl)  # type: ignore[call-arg]
            else:
                cache.set(key, (value,))
        except SerializationError as exc:  # the value, not the backend, is at fault
            kind = type(value)
            why = exc.__cause__ if exc.__cause__ is not None else exc
            logger.warning(
                "task %r: result not cached: a %s.%s value cannot be stored (%s: %s)",
                task.name,
                kind.__module__,
                kind.__qualname__,
                type(why).__name__,
                why,
            )
            return
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: logged, not cached
            self._cache_trouble("set", task, exc)
            return
        self._count("cache_sets", task)

    def _cache_trouble(self, method: str, task: TaskLike, exc: Exception) -> None:
        """Log a failing cache backend: with its traceback once per run, then briefly.

        A broken cache (a read-only directory, say) fails every call the same way; the run
        goes on uncached, and its log should not drown in identical tracebacks.
        """
        message = "task %r: the result cache failed on %s() (%s: %s); going on uncached"
        args = (task.name, method, type(exc).__name__, exc)
        if self._cache_failed:
            logger.debug(message, *args)
        else:
            self._cache_failed = True
            logger.warning(
                message + "; later failures in this run are logged at DEBUG", *args, exc_info=exc
            )

    def _artifact_exists(self, value: ArtifactRef) -> bool:
        """A cached ArtifactRef is only a hit while its artifact still exists."""
        exists = getattr(self.plugins.store, "exists", None)
        try:
            return exists is None or bool(exists(value))
        except Exception:
            logger.exception("artifact store failed on exists(%r); treated as missing", value)
            return False

    def _cache_key(
        self, task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str | None:
        """The cache key of this call, or ``None`` when its arguments cannot be keyed."""
        key_fn = task.options.cache_key_fn
        if key_fn is None:
            try:
                return default_cache_key(task, args, kwargs)
            except UnkeyableError as exc:
                warnings.warn(
                    f"task {task.name!r} runs uncached: {exc}", CacheKeyWarning, stacklevel=2
                )
                return None
            except TypeError:
                return None  # the arguments do not fit the signature: the call will say so
        try:
            key = key_fn(task.fn, args, kwargs)
        except Exception as exc:
            msg = f"task {task.name!r}: cache_key_fn raised {exc!r}"
            raise TaskExecutionError(task.name, exc, 0, message=msg) from exc
        if not isinstance(key, str):
            err = InvalidKeyError(
                f"task {task.name!r}: cache_key_fn must return a str; got {type(key).__name__}"
            )
            raise TaskExecutionError(task.name, err, 0)
        return key

    def _persist(self, task: TaskLike, value: Any, attempts: int) -> Any:
        try:
            return self.plugins.store.put(value)
        except Exception as exc:
            raise TaskExecutionError(
                task.name,
                exc,
                attempts,
                message=f"task {task.name!r}: its result could not be persisted: {exc}",
            ) from exc

    def _count(self, name: str, task: TaskLike) -> None:
        metrics = self.plugins.metrics
        if metrics is not None:
            metrics.inc(name, task=task.name)

    async def _attempts(
        self, task: TaskLike, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int]:
        opts = task.options
        total = opts.retries + 1
        # Only a task that may retry has attempts worth journaling one by one: a single
        # attempt's times and error are its task row's.
        journal = self.journal if opts.retries else None
        attempt = 1
        while True:
            started = _attempt_began(journal, node, attempt)
            try:
                return await self._attempt(task, node, attempt, args, kwargs), attempt
            except Exception as exc:
                if journal is not None:
                    journal.attempt_failed(node, attempt, started, time.time(), exc)
                if attempt >= total:
                    raise self._final_error(task, exc, attempt, exhausted=True) from exc
                if isinstance(exc, SerializationError) or not _worth_retrying(task, exc):
                    raise self._final_error(task, exc, attempt, exhausted=False) from exc
                self._on_retry(task, node, attempt, exc)
                await asyncio.sleep(_backoff(opts, attempt))
                attempt += 1

    def _final_error(
        self, task: TaskLike, exc: BaseException, attempts: int, *, exhausted: bool
    ) -> TaskExecutionError:
        """The task's error: ``exhausted`` when every configured retry was used."""
        if isinstance(exc, AttemptTimeoutError):
            return TimeoutError(task.name, exc, attempts)
        if exhausted and task.options.retries > 0:
            return RetryExhaustedError(task.name, exc, attempts)
        return TaskExecutionError(task.name, exc, attempts)

    def _on_retry(self, task: TaskLike, node: Any, attempt: int, exc: BaseException) -> None:
        logger.debug("task %r attempt %d failed (%r); retrying", task.name, attempt, exc)
        self._count("task_retries", task)
        events = self.plugins.events
        if events.wants("task_retry"):
            payload = self.payload(task, _node_id(node), attempt=attempt, error=repr(exc))
            events.emit("task_retry", payload)

    def payload(self, task: TaskLike, node_id: str, **extra: Any) -> dict[str, Any]:
        """An event payload for one call of ``task`` in this run."""
        return {
            "flow": self.base.flow_name,
            "run_id": self.base.run_id,
            "task": task.name,
            "node": node_id,
            **extra,
        }

    async def _attempt(
        self,
        task: TaskLike,
        node: Any,
        attempt: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        opts = task.options
        placed = None if self.placement is None else self.placement.pick(task)
        if placed is None and opts.run_in is RunIn.ASYNC and not self._observed:
            return await self._inline_attempt(task, node, attempt, args, kwargs)
        ctx = self.base.for_attempt(task.name, _node_id(node), attempt)
        call = Call(task.fn, args, kwargs, task.name, ctx)
        executor = self.executor(opts.run_in) if placed is None else placed
        if not self._observed:
            return await _bounded_call(executor, call, opts.timeout)
        return await self._observed_attempt(task, _node_id(node), attempt, executor, call)

    async def _inline_attempt(
        self,
        task: TaskLike,
        node: Any,
        attempt: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The hot path: an async-mode attempt with no middleware or tracer, run in place."""
        token = set_frame(TaskFrame(self.base, task.name, node, attempt))
        try:
            timeout = task.options.timeout
            if task.is_async:
                value = task.fn(*args, **kwargs)
                return await (value if timeout is None else _bounded(value, timeout))
            start = time.perf_counter()
            try:
                value = task.fn(*args, **kwargs)
            finally:
                held = time.perf_counter() - start
                if held >= self._blocking_limit:
                    self.loop_blocked(task.name, _node_id(node), held)
            if inspect.isawaitable(value):
                return await (value if timeout is None else _bounded(value, timeout))
            # A plain function held the loop until it returned, so nothing could interrupt
            # it; an attempt that ran past its limit still fails, as soon as it is back.
            if timeout is not None and held > timeout:
                raise AttemptTimeoutError(timeout)
            return value
        finally:
            reset_frame(token)

    def _call_blocked(self, call: Call, seconds: float) -> None:
        self.loop_blocked(call.task_name, call.context.node_id or "", seconds)

    def loop_blocked(self, task_name: str, node_id: str, seconds: float) -> None:
        """Log that a call of ``task_name`` held the event loop ``seconds``: once per task
        per run, since a task that blocks once will block on every call."""
        if task_name in self._blocked:
            return
        self._blocked.add(task_name)
        logger.warning(
            "task %r (%s) blocked the event loop for %.0f ms: a plain function with "
            'run_in="async" (the default) runs on the loop thread, and no other task can '
            'run meanwhile; use run_in="thread" (or "process" for CPU-bound work), or make '
            "it async (flow %r, run %s; logged once per task per run; the config key "
            "blocking_warning_ms=%g sets the threshold, 0 turns this off)",
            task_name,
            node_id,
            seconds * 1000,
            self.base.flow_name,
            self.base.run_id,
            self._blocking_limit * 1000,
        )

    async def _observed_attempt(
        self, task: TaskLike, node_id: str, attempt: int, executor: Executor, call: Call
    ) -> Any:
        async def innermost() -> Any:
            return await _bounded_call(executor, call, task.options.timeout)

        payload = functools.partial(self.payload, task, node_id, attempt=attempt)
        run = chain_middleware(
            self.plugins.middleware,
            innermost,
            task,
            call.args,
            call.kwargs,
            self.plugins.events,
            payload,
            self.plugins.faults,
        )
        tracer = self.plugins.tracer
        if tracer is None:
            return await run()
        async with tracer.span(f"task:{task.name}", node=node_id, attempt=attempt):
            return await run()


async def _bounded(work: Awaitable[Any], seconds: float | None) -> Any:
    """Await ``work``, turning an elapsed limit of ``seconds`` into :class:`AttemptTimeoutError`."""
    if seconds is None:
        return await work
    return await _timed(lambda started: work, seconds, start_now=True)


async def _bounded_call(executor: Executor, call: Call, seconds: float | None) -> Any:
    """Run ``call`` on ``executor`` within ``seconds``, counted from when the call really
    starts: waiting for a thread or a worker process does not use up its time."""
    if seconds is None:
        return await executor.run(call)
    return await _timed(lambda started: executor.run(call, started), seconds, start_now=False)


async def _timed(
    begin: Callable[[Callable[[], None]], Awaitable[Any]], seconds: float, *, start_now: bool
) -> Any:
    """Await ``begin(started)`` within ``seconds``: from now, or (``start_now=False``) from
    when the work calls ``started()``. An elapsed limit is :class:`AttemptTimeoutError`."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds if start_now else None) as scope:

            def started() -> None:
                with contextlib.suppress(RuntimeError):  # the attempt already ended
                    scope.reschedule(loop.time() + seconds)

            value = await begin(started)
    except builtins.TimeoutError:
        if scope.expired():
            raise AttemptTimeoutError(seconds) from None
        raise
    deadline = scope.when()
    if deadline is not None and loop.time() > deadline:
        # The work finished late without yielding to the loop (a plain function on the
        # loop thread), so the timer could not fire: the attempt still ran too long.
        raise AttemptTimeoutError(seconds)
    return value


class BareCall:
    """The calls of one task in one run that nothing wraps (see :meth:`CallRunner.bare`).

    A caller makes one in a straight line: with the node as the current frame
    (``_context.set_node_frame``, in a run whose base is bound), it calls ``fn`` with the
    resolved arguments and awaits the result if ``awaits`` (or it is awaitable), then says
    :meth:`succeeded` or hands the exception to :meth:`failed`, which gives the
    TaskExecutionError that :meth:`CallRunner.call` would have raised. :meth:`run` does all
    of that in a coroutine of its own.
    """

    __slots__ = ("_calls", "awaits", "blocking", "fn", "name", "task", "task_done")

    def __init__(self, calls: CallRunner, task: TaskLike) -> None:
        self._calls = calls
        self.task_done = calls._task_done
        """The metrics' ``task_done(name, result, duration_ms)``: a caller that makes the
        call inline reports a success itself, as :meth:`succeeded` does."""
        self.task = task
        self.fn = task.fn
        self.name = task.name
        self.awaits = task.is_async
        self.blocking = math.inf if task.is_async else calls._blocking_limit
        """Seconds a plain function may hold the loop before :meth:`blocked` is to be told
        (``inf``: never, for an async function or with the warning off)."""

    def blocked(self, node: NodeFrame, seconds: float) -> None:
        """The plain function held the loop ``seconds`` (at least :attr:`blocking`)."""
        self._calls.loop_blocked(self.name, _node_id(node), seconds)

    def succeeded(self, start: float) -> None:
        """The call that began at ``perf_counter()`` ``start`` returned."""
        self.task_done(self.name, "success", (perf_counter() - start) * 1000)

    def failed(
        self, exc: Exception, start: float, node: NodeFrame, returned: bool
    ) -> TaskExecutionError:
        """The call that began at ``start`` raised ``exc``: its TaskExecutionError (caused
        by ``exc``, as if raised from it). ``returned``: the function itself returned (an
        awaitable, which raised), so how long it held the loop has been looked at."""
        took = perf_counter() - start
        if not returned and took >= self.blocking:
            self.blocked(node, took)
        self.task_done(self.name, "failure", took * 1000)
        try:
            raise self._calls._final_error(self.task, exc, 1, exhausted=True) from exc
        except TaskExecutionError as err:
            return err

    async def run(self, node: NodeFrame, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call of the task for ``node``: its value, or its TaskExecutionError raised."""
        token = set_node_frame(node)
        start = perf_counter()
        returned = False
        try:
            value = self.fn(*args, **kwargs)
            returned = True
            if not self.awaits:
                held = perf_counter() - start
                if held >= self.blocking:
                    self.blocked(node, held)
            if self.awaits or inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            raise self.failed(exc, start, node, returned) from exc
        finally:
            reset_frame(token)
        self.succeeded(start)
        return value


def _unmetered(task_name: str, result: str, duration_ms: float) -> None:
    """``task_done`` of a run without a metrics provider."""


def _node_id(node: Any) -> str:
    return node if isinstance(node, str) else str(node.id)


def _attempt_began(journal: RunJournal | None, node: Any, attempt: int) -> float:
    """When an attempt began, told to the journal for a retry (0.0 with no journal)."""
    if journal is None:
        return 0.0
    started = time.time()
    if attempt > 1:
        journal.attempt_started(node, attempt, started)
    return started


def _backoff(opts: TaskOptions, attempt: int) -> float:
    """Seconds to sleep before retry ``attempt`` (1-based): ``retry_backoff * 2**(k-1)``,
    at most ``retry_backoff_max``, plus a uniform ``0..retry_jitter``."""
    delay = 0.0
    if opts.retry_backoff:
        try:
            delay = opts.retry_backoff * 2.0 ** (attempt - 1)
        except OverflowError:  # a thousand retries and more: the doubling left the floats
            delay = math.inf
    cap = opts.retry_backoff_max
    if cap is not None and delay > cap:
        delay = cap
    if opts.retry_jitter:
        delay += random.uniform(0, opts.retry_jitter)
    return delay if math.isfinite(delay) else 0.0


def _worth_retrying(task: TaskLike, exc: Exception) -> bool:
    """Whether ``task``'s ``retry_on`` accepts ``exc`` (every error when it has none).

    A timed-out attempt raises :class:`AttemptTimeoutError` (a builtin TimeoutError);
    naming the task-level :class:`TimeoutError` in ``retry_on`` retries it too. A predicate
    that raises is a bug of its own: logged, and the error is not retried.
    """
    rule = task.options.retry_on
    if rule is None:
        return True
    if isinstance(rule, tuple):
        if isinstance(exc, rule):
            return True
        return isinstance(exc, AttemptTimeoutError) and TimeoutError in rule
    try:
        return bool(rule(exc))
    except Exception as bug:
        logger.warning(
            "task %r: its retry_on predicate raised %s: %s; %r is not retried",
            task.name,
            type(bug).__name__,
            bug,
            exc,
            exc_info=bug,
        )
        return False


async def call_with_events(
    calls: CallRunner,
    events: Any,
    task: TaskLike,
    node: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Any, int | str]:
    """``calls.call`` bracketed by task_started and task_succeeded / task_failed events.

    A result reused from the cache or from an identical call in flight also emits
    ``task_cached`` (``attempt`` 0), and ``task_succeeded`` says whether it was ``cached``.
    """
    base = calls.payload(task, _node_id(node))
    events.emit("task_started", {**base, "attempt": 1})
    start = time.perf_counter()
    try:
        value, how = await calls.call(task, node, args, kwargs)
    except TaskExecutionError as err:
        ms = (time.perf_counter() - start) * 1000
        failed = {"attempt": err.attempts, "duration_ms": ms, "error": repr(err)}
        events.emit("task_failed", {**base, **failed})
        raise
    ms = (time.perf_counter() - start) * 1000
    cached = how.__class__ is str
    if cached:
        events.emit("task_cached", {**base, "attempt": 0, "source": how})
    done = {"attempt": 0 if cached else how, "duration_ms": ms, "cached": cached}
    events.emit("task_succeeded", {**base, **done})
    return value, how
