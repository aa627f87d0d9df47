"""``@task``, ``@flow`` and ``fan_out``: building graphs and running them.

Inside a flow body (while its graph is being built) a task call records a node and returns a
:class:`~auto_workflow._core._graph.Placeholder`; everywhere else it runs now. Which of the two
happens is decided by one context variable, set with a token for the duration of the build.

Async is the implementation: ``Flow.run`` and a direct task call are thin synchronous shells
over ``run_async``; when the calling thread already runs an event loop (Jupyter, async apps)
the shell runs the coroutine on a fresh loop in a helper thread and waits for it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import numbers
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, ParamSpec, TypeVar, cast, overload

from auto_workflow._core._calls import (
    DEFAULT_THREAD_WORKERS,
    CallRunner,
    call_with_events,
    new_run_id,
)
from auto_workflow._core._config import get_config
from auto_workflow._core._context import RunContext, reset_context, set_context
from auto_workflow._core._durable import Session, check_run_id, flow_target
from auto_workflow._core._graph import Graph, Group, Placeholder, iter_placeholders
from auto_workflow._core._journal import RunSpec, installed_history
from auto_workflow._core._model import (
    ArtifactRef,
    FailurePolicy,
    RetryOn,
    RunIn,
    TaskOptionAttributes,
    TaskOptions,
)
from auto_workflow._core._plugins import DEFAULTS, Plugins
from auto_workflow._core._runner import FlowRunner, text_fan_out_hint
from auto_workflow._execution._placement import (
    Backend,
    ExecutorSpec,
    Placement,
    backend_for,
    localize,
)
from auto_workflow._results._keys import CacheKeyReport, explain
from auto_workflow._results._memory import ArtifactStore, ResultCache, check_cache, check_store
from auto_workflow._results._values import fingerprint
from auto_workflow.exceptions import (
    AggregateTaskError,
    PlaceholderMisuseError,
    RunNotFoundError,
    TaskExecutionError,
)

__all__ = ["Flow", "TaskDefinition", "fan_out", "flow", "task"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_building: ContextVar[Graph | None] = ContextVar("auto_workflow_building", default=None)

_NOT_YET = object()
"""A run's output before it exists (``None`` is a valid output)."""


# While a flow body builds its graph the cyclic garbage collector is paused: the graph only
# grows (nothing in it is garbage yet), and each collection the growth triggers walks it
# all again: a third of the time it took to build a million calls. Collection resumes
# when the body returns, however it returns, and then runs as it would have. Builds in
# several threads at once share one pause (the last to finish resumes); a collector that
# was off before is left off.
_PAUSE_LOCK = threading.Lock()
_pause_holders = 0


def _pause_collector() -> bool:
    """Pause the cyclic collector for a build; True if this build holds a pause."""
    global _pause_holders
    with _PAUSE_LOCK:
        if not _pause_holders:
            if not gc.isenabled():
                return False
            gc.disable()
        _pause_holders += 1
        return True


def _resume_collector(paused: bool) -> None:
    """End a build's pause (see :func:`_pause_collector`)."""
    global _pause_holders
    if not paused:
        return
    with _PAUSE_LOCK:
        _pause_holders -= 1
        if not _pause_holders:
            gc.enable()


def _run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, loop or no loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False  # the usual case; run outside the handler so no error is chained
    else:
        running = True
    return _run_in_helper_thread(work) if running else asyncio.run(work)


def _run_in_helper_thread(work: Coroutine[Any, Any, T]) -> T:
    """A loop is running in this thread: run ``work`` on a new loop in another thread."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(work)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="auto_workflow-sync-call", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return cast(T, value)
    raise value


def _check_no_placeholders(where: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if next(iter_placeholders((args, kwargs)), None) is not None:
        raise PlaceholderMisuseError(
            f"{where} was called outside its flow with a placeholder argument: placeholders "
            "only mean something inside the flow body that created them"
        )


def _check_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``params``, which must be a mapping (or None)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping (dict); got {type(params).__name__}")
    return dict(params)


class TaskDefinition(TaskOptionAttributes, Generic[P, R]):
    """A function decorated with ``@task``: call it in a flow to add a node, elsewhere to run.

    Keeps the wrapped function's name, docstring and signature. Outside a flow, calling it
    runs the task now (with retries, timeout, cache, persistence, middleware, events and
    tracing) and returns its value, or an ``ArtifactRef`` when ``persist=True``.
    """

    def __init__(self, fn: Callable[..., Any], options: TaskOptions) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature, self._arity = _call_shape(fn)
        self._misfits: dict[object, str | None] = {}
        """Per call shape (positional count, keyword names): why it does not bind, or None."""

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError now, naming the task, if ``args`` and ``kwargs`` do not bind to
        its signature (wrong arity, an unknown keyword, a missing argument).

        Called for every task call, in a flow body (so a wrong call fails the build, not
        the run) and outside one (so it is never attempted, nor retried). Whether a call
        binds depends only on how many positional arguments it has and which keywords, so
        ``Signature.bind`` runs once per such shape; plain positional calls do not bind.
        """
        arity = self._arity
        if arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]:
            return  # the common case, without binding
        if self._signature is None:
            return  # no signature to check against; the call itself will tell
        shape = (len(args), *kwargs) if kwargs else len(args)
        misfits = self._misfits
        if shape in misfits:
            why = misfits[shape]
        else:
            why = _bind_error(self._signature, args, kwargs)
            if len(misfits) < _MAX_CALL_SHAPES:
                misfits[shape] = why
        if why is not None:
            raise TypeError(f"task {self.name!r} called with arguments that do not fit: {why}")

    def __repr__(self) -> str:
        return f"<TaskDefinition {self.name!r} run_in={self.options.run_in.value!r}>"

    def __auto_workflow_key__(self) -> tuple[str, Callable[..., Any]]:
        """What identifies this task when it is passed to a cached task: name and function."""
        return (self.name, self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        graph = _building.get()
        if graph is not None:
            arity = self._arity  # the common case inline: it runs once per node built
            if kwargs or arity is None or not arity[0] <= len(args) <= arity[1]:
                self.check_call(args, kwargs)
            # No cast(): it would be one more function call per node built.
            return graph.add(self, args, kwargs)  # type: ignore[return-value]
        _check_no_placeholders(f"task {self.name!r}", args, kwargs)
        self.check_call(args, kwargs)
        # On a loop of its own, where nothing else runs: holding it harms no one.
        return _run_sync(self._run_now(args, kwargs, blocking_warning_ms=0.0))

    async def run_async(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task now and return its value; for async callers (``await t.run_async()``).

        Raises:
            TypeError: the arguments do not bind to the task's signature (nothing runs).
            TaskExecutionError: (or a subclass) when the task finally fails.
        """
        _check_no_placeholders(f"task {self.name!r}", args, kwargs)
        self.check_call(args, kwargs)
        blocking = get_config().blocking_warning_ms  # on the caller's loop: it may matter
        return await self._run_now(args, kwargs, blocking_warning_ms=blocking)

    async def _run_now(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, blocking_warning_ms: float
    ) -> R:
        """One direct call, as a run of its own."""
        plugins = DEFAULTS.snapshot()
        base = RunContext(
            run_id=new_run_id(), flow_name=None, params={}, artifact_store=plugins.store
        )
        calls = CallRunner(
            base, plugins, DEFAULT_THREAD_WORKERS, blocking_warning_ms=blocking_warning_ms
        )
        try:
            events = calls.plugins.events
            node_id = f"{self.name}:direct"
            if events:
                return cast(
                    R, (await call_with_events(calls, events, self, node_id, args, kwargs))[0]
                )
            return cast(R, (await calls.call(self, node_id, args, kwargs))[0])
        finally:
            calls.close()

    def explain_cache_key(self, *args: P.args, **kwargs: P.kwargs) -> CacheKeyReport:
        """Why a call with these arguments gets the cache key it gets; runs nothing.

        The report holds the key (``None`` when the call would run uncached), the task's
        identity and code fingerprints, a fingerprint per bound argument (defaults applied)
        and the reason for each argument that cannot be keyed. ``a.diff(b)`` lists why two
        calls do not share a key.
        """
        try:
            return explain(self, args, kwargs)
        except TypeError as exc:
            if type(exc) is not TypeError:  # a cache_key_fn's own TypeError subclass
                raise
            raise TypeError(f"task {self.name!r}: {exc}") from None

    def after(self, *upstream: Any) -> Callable[P, R]:
        """Order this call after ``upstream`` task results without passing their data.

        ``load.after(create_table)(rows)`` runs ``load(rows)`` only once ``create_table``
        has succeeded. Only meaningful inside a flow body.
        """
        graph = _building.get()
        if graph is None:
            raise PlaceholderMisuseError(
                f"{self.name}.after(...) orders calls inside a flow body; outside a flow "
                "tasks run immediately, in the order you call them"
            )
        for p in upstream:
            if not isinstance(p, Placeholder):
                raise TypeError(
                    f"{self.name}.after() takes task results from this flow; got {type(p).__name__}"
                )

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            self.check_call(args, kwargs)
            return cast(R, graph.add(self, args, kwargs, after=upstream))

        return call

    def with_options(self, **changes: Any) -> TaskDefinition[P, R]:
        """A copy of this task with some options changed (validated like ``@task``).

        Raises:
            TypeError, ValueError: an unknown option, or a wrong type or value.
        """
        unknown = set(changes) - _TASK_OPTIONS
        if unknown:
            allowed = ", ".join(sorted(_TASK_OPTIONS))
            raise TypeError(
                f"task {self.name!r}: with_options() got unknown option(s) {sorted(unknown)}; "
                f"valid: {allowed}"
            )
        if changes.get("tags", ()) is None:
            changes["tags"] = frozenset()
        return TaskDefinition(self.fn, replace(self.options, **changes))


_MAX_CALL_SHAPES = 256
"""Call shapes remembered per task (a bound on callers that build keyword sets on the fly)."""


def _bind_error(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """Why a call with these arguments does not bind to ``signature``; None if it does."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return None


def _call_shape(fn: Callable[..., Any]) -> tuple[inspect.Signature | None, tuple[int, int] | None]:
    """``fn``'s signature, and (fewest, most) positional arguments when that says it all."""
    try:
        # What is called, not what a functools.wraps decorator wraps: a decorator may add
        # or inject arguments.
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return None, None
    params = signature.parameters.values()
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not all(p.kind in plain for p in params):
        return signature, None
    required = sum(p.default is inspect.Parameter.empty for p in params)
    return signature, (required, len(signature.parameters))


class _TaskDecorator:
    """What ``@task(...)`` returns: applies fixed options to a function."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> TaskDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> TaskDefinition[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> TaskDefinition[Any, Any]:
        return _make_task(fn, self._options)


class _PersistingTaskDecorator(_TaskDecorator):
    """What ``@task(persist=True, ...)`` returns: its tasks return an ``ArtifactRef``."""

    @overload  # type: ignore[override]
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, Any]]
    ) -> TaskDefinition[P, ArtifactRef]: ...

    @overload
    def __call__(self, fn: Callable[P, Any]) -> TaskDefinition[P, ArtifactRef]: ...

    def __call__(self, fn: Callable[..., Any]) -> TaskDefinition[Any, Any]:
        return _make_task(fn, self._options)


def _make_task(fn: Callable[..., Any], options: dict[str, Any]) -> TaskDefinition[Any, Any]:
    if isinstance(fn, TaskDefinition):
        raise TypeError(f"@task applied twice to {fn.name!r}")
    if not callable(fn):
        raise TypeError(f"@task must decorate a function; got {type(fn).__name__}")
    name = options.get("name")
    if name is None:
        name = getattr(fn, "__name__", None) or type(fn).__name__
    tags = options.get("tags")
    opts = {**options, "name": name, "tags": frozenset() if tags is None else tags}
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(f"task {name!r}: generator functions cannot be tasks; return a list")
    return TaskDefinition(fn, TaskOptions(**opts))


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> TaskDefinition[P, R]: ...


@overload
def task(fn: Callable[P, R], /) -> TaskDefinition[P, R]: ...


@overload
def task(
    *,
    persist: Literal[True],
    name: str | None = None,
    retries: int = 0,
    retry_backoff: float = 0.0,
    retry_jitter: float = 0.0,
    retry_on: RetryOn | None = None,
    retry_backoff_max: float | None = None,
    timeout: float | None = None,
    cache_ttl: int | None = None,
    cache_key_fn: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], str]
    | None = None,
    run_in: str | RunIn = RunIn.ASYNC,
    priority: int = 0,
    tags: Iterable[str] | None = None,
) -> _PersistingTaskDecorator: ...


@overload
def task(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_backoff: float = 0.0,
    retry_jitter: float = 0.0,
    retry_on: RetryOn | None = None,
    retry_backoff_max: float | None = None,
    timeout: float | None = None,
    cache_ttl: int | None = None,
    cache_key_fn: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], str]
    | None = None,
    run_in: str | RunIn = RunIn.ASYNC,
    persist: bool = False,
    priority: int = 0,
    tags: Iterable[str] | None = None,
) -> _TaskDecorator: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a task. Use as ``@task`` or ``@task(retries=3, run_in="thread", ...)``.

    Args:
        name: Display / node name (default: the function's name).
        retries: Extra attempts after a failure (default 0).
        retry_backoff: Base seconds of exponential backoff: retry k sleeps
            ``retry_backoff * 2**(k-1)``.
        retry_jitter: Up to this many random seconds added to each backoff.
        retry_on: Which failures are worth retrying: an exception type, a tuple of them,
            or a predicate ``(exception) -> bool``; other errors fail at once (default:
            every error is retried).
        retry_backoff_max: Most seconds the exponential backoff may reach (jitter is added
            after the cap; default: no cap).
        timeout: Seconds each attempt may take.
        cache_ttl: Seconds a successful result is reused from the result cache.
        cache_key_fn: ``(fn, args, kwargs) -> str`` replacing the default cache key.
        run_in: ``"async"`` (default: on the event loop), ``"thread"`` or ``"process"``.
        persist: Store the result in the artifact store and return an ``ArtifactRef``.
        priority: Higher runs earlier among tasks that are ready at the same time.
        tags: Free-form labels.

    Returns:
        A :class:`TaskDefinition` (or a decorator making one).

    Raises:
        TypeError, ValueError: an option has a wrong type or value (names task and option).
    """
    unknown = set(options) - _TASK_OPTIONS
    if unknown:
        allowed = ", ".join(sorted(_TASK_OPTIONS))
        raise TypeError(f"@task got unknown option(s) {sorted(unknown)}; valid: {allowed}")
    if fn is None:
        _check_options_early(options)
        if options.get("persist") is True:
            return _PersistingTaskDecorator(options)
        return _TaskDecorator(options)
    return _make_task(fn, options)


def _check_options_early(options: dict[str, Any]) -> None:
    """Validate ``@task(...)`` options before the function (and so its name) is known."""
    name = options.get("name")
    probe = name if isinstance(name, str) and name else "<task>"
    try:
        TaskOptions(**{**options, "name": probe, "tags": options.get("tags") or frozenset()})
    except (TypeError, ValueError) as exc:
        if probe != "<task>":
            raise
        message = str(exc).replace("task '<task>'", "@task(...)", 1)
        raise type(exc)(message) from None


_TASK_OPTIONS = frozenset(
    {
        "name",
        "retries",
        "retry_backoff",
        "retry_jitter",
        "retry_on",
        "retry_backoff_max",
        "timeout",
        "cache_ttl",
        "cache_key_fn",
        "run_in",
        "persist",
        "priority",
        "tags",
    }
)


def _check_max_concurrency(value: object, what: str = "max_concurrency") -> int | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive int or None; got {value!r}")
    return int(value)


class Flow(Generic[R]):
    """A function decorated with ``@flow``: its body wires tasks into a graph.

    Call :meth:`run` (or ``await`` :meth:`run_async`) to build and execute the graph; calling
    the flow inside another flow's body inlines its graph there. ``Flow[R]`` returns what the
    body is annotated to return, with every task result filled in.
    """

    def __init__(self, fn: Callable[..., R], name: str, durable: bool | None = None) -> None:
        self.fn = fn
        self.name = name
        self.durable = durable
        """``@flow(durable=True)``: this flow's runs checkpoint by default (``None``: config)."""
        self.target = flow_target(fn)
        """Where the flow can be loaded from again (``module:name`` or ``file.py:name``);
        recorded with each run so ``auto-workflow resume`` can rebuild it."""
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        if _building.get() is not None:
            return self.fn(*args, **kwargs)
        return self.run(*args, **kwargs)

    def build(
        self, *args: Any, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> tuple[Graph, Any, RunContext]:
        """Run the flow body to record its graph; returns (graph, output structure, context)."""
        return self._build(args, kwargs, params, None, new_run_id())

    def _build(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        params: Mapping[str, Any] | None,
        store: ArtifactStore | None,
        run_id: str,
    ) -> tuple[Graph, Any, RunContext]:
        base = RunContext(
            run_id=run_id,
            flow_name=self.name,
            params=_check_params(params),
            artifact_store=store,
        )
        graph = Graph(self.name)
        token = _building.set(graph)
        context = set_context(base)  # not use_context(): no generator per run
        paused = _pause_collector()
        try:
            out = self.fn(*args, **kwargs)
        finally:
            _resume_collector(paused)
            reset_context(context)
            _building.reset(token)
        if inspect.iscoroutine(out):
            out.close()
            raise TypeError(
                f"flow {self.name!r}: the flow body must be a plain (non-async) function; "
                "it only wires tasks together, the tasks themselves may be async"
            )
        return graph, out, base

    def run(
        self,
        *args: Any,
        params: Mapping[str, Any] | None = None,
        failure_policy: FailurePolicy | str = FailurePolicy.FAIL_FAST,
        max_concurrency: int | None = None,
        result_cache: ResultCache | None = None,
        artifact_store: ArtifactStore | None = None,
        run_id: str | None = None,
        durable: bool | None = None,
        history: bool | None = None,
        executor: ExecutorSpec = None,
        report: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> R:
        """Build and execute the flow; return its body's return value with results filled in.

        Args:
            *args, **kwargs: Passed to the flow function.
            params: Run parameters, visible as ``get_context().params``.
            failure_policy: ``"fail_fast"`` (default), ``"continue"`` or ``"aggregate"``.
            max_concurrency: How many tasks may run at once (default: unbounded).
            result_cache: The result cache for this run (default: the default cache).
            artifact_store: The artifact store for this run (default: the default store).
            run_id: Name this run (a date, a job id; default: a fresh id). Unique per flow,
                except to resume a durable run.
            durable: Checkpoint every task result so the run can be resumed (default: the
                flow's ``@flow(durable=...)``, else the ``durable`` config key).
            history: Record this run in the run history (default: the ``history`` config).
            executor: ``"local"``, ``"dask"`` or a ``DaskExecutor`` (default: the config
                key ``executor``); see docs/dask.md.
            report: Once the run has ended (succeeded or failed), write its self-contained
                HTML report to this path (docs/history.md). A report that cannot be written
                is one warning: the run keeps its result or its error.

        Raises:
            TaskExecutionError: the first failure, under ``fail_fast``.
            AggregateTaskError: every failure, under ``aggregate``.
            GraphChangedError: resuming a run whose flow now builds another graph.
            ValueError: ``run_id`` is taken by another flow or by a non-durable run.
        """
        request = self._request(
            args,
            kwargs,
            params,
            failure_policy,
            max_concurrency,
            run_id,
            durable,
            history,
            executor,
            report,
        )
        plugins = _snapshot(result_cache, artifact_store)
        return cast(R, _run_sync(self._run(request, plugins)))

    async def run_async(
        self,
        *args: Any,
        params: Mapping[str, Any] | None = None,
        failure_policy: FailurePolicy | str = FailurePolicy.FAIL_FAST,
        max_concurrency: int | None = None,
        result_cache: ResultCache | None = None,
        artifact_store: ArtifactStore | None = None,
        run_id: str | None = None,
        durable: bool | None = None,
        history: bool | None = None,
        executor: ExecutorSpec = None,
        report: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> R:
        """Awaitable :meth:`run`, for async callers. Cancelling it cancels the run."""
        request = self._request(
            args,
            kwargs,
            params,
            failure_policy,
            max_concurrency,
            run_id,
            durable,
            history,
            executor,
            report,
        )
        plugins = _snapshot(result_cache, artifact_store)
        return cast(R, await self._run(request, plugins))

    def resume(self, run_id: str, **overrides: Any) -> R:
        """Resume durable run ``run_id`` with the arguments it was started with.

        Nodes whose checkpoint exists are not run again; the rest run. A run that had
        succeeded returns its result without running anything. ``overrides`` are passed
        to :meth:`run` (e.g. ``max_concurrency``).

        Raises:
            RunNotFoundError: no durable run of this flow has that id.
        """
        request = self._resume_request(run_id, overrides)
        plugins = _snapshot(overrides.get("result_cache"), overrides.get("artifact_store"))
        return cast(R, _run_sync(self._run(request, plugins)))

    def _resume_request(self, run_id: str, overrides: dict[str, Any]) -> _Request:
        check_run_id(run_id)
        history = installed_history()
        prior = history.lookup(run_id) if history is not None else None
        spec = prior.call() if prior is not None and prior.call is not None else None
        if prior is None or spec is None or prior.flow != self.name:
            where = "the run history is off" if history is None else "no durable run"
            raise RunNotFoundError(
                f"cannot resume {run_id!r} of flow {self.name!r}: {where} of this flow has "
                "that id (list runs with `auto-workflow runs`)"
            )
        options = {**spec.options, **overrides}
        return self._request(
            spec.args,
            spec.kwargs,
            spec.params,
            options.get("failure_policy", FailurePolicy.FAIL_FAST),
            options.get("max_concurrency"),
            run_id,
            True,
            True,
            overrides.get("executor"),
            overrides.get("report"),
        )

    def _request(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        params: Mapping[str, Any] | None,
        failure_policy: FailurePolicy | str,
        max_concurrency: int | None,
        run_id: str | None,
        durable: bool | None,
        history: bool | None,
        executor: object = None,
        report: object = None,
    ) -> _Request:
        """Validate one run's options, before anything is built or recorded."""
        if durable is not None and not isinstance(durable, bool):
            raise TypeError(f"flow {self.name!r}: durable must be True or False; got {durable!r}")
        if history is not None and not isinstance(history, bool):
            raise TypeError(f"flow {self.name!r}: history must be True or False; got {history!r}")
        if report is not None and not isinstance(report, str | os.PathLike):
            raise TypeError(f"flow {self.name!r}: report must be a path; got {report!r}")
        return _Request(
            args=args,
            kwargs=kwargs,
            params=params,
            policy=FailurePolicy.coerce(failure_policy),
            limit=_check_max_concurrency(max_concurrency),
            run_id=check_run_id(run_id),
            durable=durable,
            history=history,
            backend=backend_for(executor),
            report=report,
        )

    def _session(self, request: _Request) -> Session:
        config = get_config()
        durable = request.durable
        if durable is None:
            durable = self.durable if self.durable is not None else config.durable
        spec = RunSpec(
            run_id=request.run_id or new_run_id(),
            flow=self.name,
            target=self.target,
            args=request.args,
            kwargs=request.kwargs,
            params=dict(request.params or {}),
            durable=durable,
            options={"failure_policy": request.policy.value, "max_concurrency": request.limit},
        )
        return Session.open(spec, config, request.history, named=request.run_id is not None)

    async def _run(self, request: _Request, plugins: Plugins) -> Any:
        session = self._session(request)
        try:
            return await self._traced(request, plugins, session)
        finally:
            if request.report is not None:  # on the loop: a cancelled run may await no more
                session.write_report(request.report)

    async def _traced(self, request: _Request, plugins: Plugins, session: Session) -> Any:
        run_id = session.spec.run_id
        plugins.faults.bind(self.name, run_id)  # before the flow span: it may report a fault
        run = self._build_and_run(request, plugins, session)
        if plugins.tracer is None:
            return (await run)[0]
        # The flow span encloses the whole run: building the graph, running it, the result.
        outcome: Any = _NOT_YET
        try:
            async with plugins.tracer.span(f"flow:{self.name}", run_id=run_id):
                outcome, failures = await run
                if failures:  # "continue" returned, but tasks failed: the span must say so
                    raise AggregateTaskError(failures)
        except AggregateTaskError:
            if outcome is _NOT_YET:  # the run's own error ("aggregate"), not ours
                raise
        return outcome

    async def _build_and_run(
        self, request: _Request, plugins: Plugins, session: Session
    ) -> tuple[Any, list[TaskExecutionError]]:
        """Build and run the graph; the flow's output, and the task failures it holds."""
        run_id = session.spec.run_id
        graph, out, base = self._build(
            request.args, request.kwargs, request.params, plugins.store, run_id
        )
        session.begin(graph)
        backend = request.backend
        try:
            placement = None if backend is None else await backend.open(base, fingerprint)
        except BaseException as exc:  # a cluster that cannot be reached: the run failed
            session.finish(_ended_status(exc), exc)
            raise
        try:
            return await _run_graph(request, plugins, session, graph, out, base, placement)
        finally:
            if placement is not None:
                await placement.aclose()

    def describe(
        self, *args: Any, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The graph as a JSON-serialisable dict (``flow``, ``nodes``, ``count``); runs nothing."""
        return self.build(*args, params=params, **kwargs)[0].describe()

    def export_dot(self, *args: Any, params: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """The graph in Graphviz DOT; runs nothing."""
        return self.build(*args, params=params, **kwargs)[0].to_dot()

    def export_mermaid(
        self, *args: Any, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """The graph as a Mermaid flowchart; runs nothing."""
        return self.build(*args, params=params, **kwargs)[0].to_mermaid()

    def export_graph(
        self, *args: Any, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, list[str]]:
        """The graph as a JSON adjacency mapping ``{node: [downstream nodes]}``; runs nothing."""
        return self.build(*args, params=params, **kwargs)[0].adjacency()


async def _run_graph(
    request: _Request,
    plugins: Plugins,
    session: Session,
    graph: Graph,
    out: Any,
    base: RunContext,
    placement: Placement | None,
) -> tuple[Any, list[TaskExecutionError]]:
    """Run a built graph (on ``placement``'s cluster, if any) and record how it ended."""
    limit = request.limit
    checkpoints = session.checkpoints
    fetch = localize if placement is not None and checkpoints is not None else None
    config = get_config()
    threads = limit or DEFAULT_THREAD_WORKERS
    blocking = config.blocking_warning_ms
    calls = CallRunner(base, plugins, threads, placement, blocking_warning_ms=blocking)
    runner = FlowRunner(
        graph,
        calls,
        policy=request.policy,
        max_concurrency=limit,
        max_dynamic_tasks=config.max_dynamic_tasks,
        journal=session.journal,
        checkpoints=checkpoints,
        fetch=fetch,
        output=out,
    )
    if placement is not None and limit is None and checkpoints is None and not plugins.middleware:
        # Nothing of the client's would be bypassed by submitting a task before its inputs
        # are done: no concurrency bound, no middleware around attempts, no checkpoint that
        # could stand in for a task's run.
        placement.look_ahead(runner.state)
    try:
        await _observe_flow(calls, runner)
        output = runner.output(out)
        if placement is not None:
            output = await localize(output)
    except BaseException as exc:
        calls.close()  # first: queued thread calls must not start while the end is recorded
        session.finish(_ended_status(exc), exc)
        raise
    finally:
        calls.close()
    failures = list(runner.failures)
    session.finish("failed" if failures else "succeeded", None)
    return output, failures


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    """One run's validated options."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    params: Mapping[str, Any] | None
    policy: FailurePolicy
    limit: int | None
    run_id: str | None
    durable: bool | None
    history: bool | None
    backend: Backend | None = None
    report: str | os.PathLike[str] | None = None


def _ended_status(exc: BaseException) -> str:
    """The run status an exception out of a run stands for."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return "failed"


def _snapshot(cache: ResultCache | None, store: ArtifactStore | None) -> Plugins:
    """The plugins of a new run, checking the per-run choices first."""
    if cache is not None:
        check_cache(cache, "result_cache")
    if store is not None:
        check_store(store, "artifact_store")
    return DEFAULTS.snapshot(cache=cache, store=store)


async def _observe_flow(calls: CallRunner, runner: FlowRunner) -> None:
    """Run the graph between flow_started and flow_completed events."""
    plugins, base = calls.plugins, calls.base
    events = plugins.events
    payload = {"flow": base.flow_name, "run_id": base.run_id}
    if events.wants("flow_started"):
        nodes = [(n.id, n.display_name) for n in runner.state.graph.nodes if not n.is_barrier]
        events.emit("flow_started", {**payload, "tasks": len(nodes), "nodes": nodes})
    start = time.perf_counter()
    token = _building.set(None)  # tasks started by this run must never add to an outer build
    try:
        await runner.run()
    except BaseException as exc:
        if events:
            ms = (time.perf_counter() - start) * 1000
            ended = {"status": "failed", "duration_ms": ms, "error": repr(exc)}
            ended["tasks"] = runner.state.graph.task_count()
            events.emit("flow_completed", {**payload, **ended, "failed": len(runner.failures)})
        raise
    finally:
        _building.reset(token)
    if events:
        ms = (time.perf_counter() - start) * 1000
        count = len(runner.failures)  # failure_policy="continue" returns despite failures
        done: dict[str, Any] = {"status": "failed" if count else "succeeded", "failed": count}
        done["tasks"] = runner.state.graph.task_count()
        if count:
            done["error"] = f"{count} task(s) failed"
        events.emit("flow_completed", {**payload, **done, "duration_ms": ms})


@overload
def flow(fn: Callable[..., R], /) -> Flow[R]: ...


@overload
def flow(
    *, name: str | None = None, durable: bool | None = None
) -> Callable[[Callable[..., R]], Flow[R]]: ...


def flow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    durable: bool | None = None,
) -> Any:
    """Declare a flow. Use as ``@flow``, ``@flow(name="etl")`` or ``@flow(durable=True)``.

    The body calls tasks; each call records a node and returns a placeholder that can be
    passed to other tasks. Run it with ``.run()`` or ``await .run_async()``. A durable
    flow checkpoints every task result, so a run that crashed can be resumed.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"@flow name must be a non-empty string; got {name!r}")
    if durable is not None and not isinstance(durable, bool):
        raise TypeError(f"@flow durable must be True or False; got {durable!r}")

    def wrap(f: Callable[..., Any]) -> Flow[Any]:
        if not callable(f):
            raise TypeError(f"@flow must decorate a function; got {type(f).__name__}")
        if inspect.iscoroutinefunction(f):
            raise TypeError(
                f"flow {getattr(f, '__name__', f)!r}: the flow body must be a plain function; "
                "it only wires tasks together (the tasks themselves may be async)"
            )
        _check_run_keywords(f, name or f.__name__)
        return Flow(f, name or f.__name__, durable)

    return wrap(fn) if fn is not None else wrap


RUN_KEYWORDS = frozenset(
    {
        "params",
        "failure_policy",
        "max_concurrency",
        "result_cache",
        "artifact_store",
        "run_id",
        "durable",
        "history",
        "executor",
    }
)
"""The keywords of ``Flow.run``: a flow parameter of one of these names could never be
passed by keyword (``run`` would take it), so ``@flow`` refuses it."""


def _check_run_keywords(fn: Callable[..., Any], name: str) -> None:
    """Raise TypeError if a parameter of the flow body is named like a ``run()`` keyword."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    clash = [p.name for p in parameters if p.kind in named and p.name in RUN_KEYWORDS]
    if clash:
        raise TypeError(
            f"flow {name!r}: parameter(s) {', '.join(map(repr, clash))} have the name of a "
            f"keyword of flow.run() ({', '.join(sorted(RUN_KEYWORDS))}), so they could "
            "never be passed by keyword; rename them (run parameters go in params=...)"
        )


@overload
def fan_out(
    task_def: TaskDefinition[[T], R],
    iterable: Iterable[T],
    max_concurrency: int | None = None,
    *,
    return_exceptions: Literal[False] = False,
) -> list[R]: ...


@overload
def fan_out(
    task_def: TaskDefinition[[T], R],
    iterable: Iterable[T],
    max_concurrency: int | None = None,
    *,
    return_exceptions: Literal[True],
) -> list[R | TaskExecutionError]: ...


@overload
def fan_out(
    task_def: TaskDefinition[[T], R],
    iterable: Iterable[T],
    max_concurrency: int | None = None,
    *,
    return_exceptions: bool,
) -> list[R] | list[R | TaskExecutionError]: ...


def fan_out(
    task_def: TaskDefinition[[T], R],
    iterable: Iterable[T],
    max_concurrency: int | None = None,
    *,
    return_exceptions: bool = False,
) -> list[R] | list[R | TaskExecutionError]:
    """Map ``task_def`` over ``iterable``.

    In a flow body: over a concrete iterable, one call per element (a list of placeholders);
    over a task result (placeholder), one call per element once that result exists, and the
    returned placeholder stands for the list of results. Outside a flow: runs the calls now
    (concurrently) and returns their results.

    Args:
        task_def: The task to call once per element.
        iterable: The elements, or a task result that will be a list of them.
        max_concurrency: How many of these calls may run at once (default: unbounded).
        return_exceptions: A failed element's result is its :class:`TaskExecutionError`:
            the tasks given the list (or an element) run with the error in its place, and
            the failure does not fail the run. Default: a failure follows the run's
            failure policy, and the list's consumers are skipped.

    Raises:
        TypeError: not a task, a task that cannot take one element, not an iterable.
    """
    if not isinstance(task_def, TaskDefinition):
        raise TypeError(f"fan_out needs a @task as its first argument; got {task_def!r}")
    limit = _check_max_concurrency(max_concurrency, f"fan_out({task_def.name}) max_concurrency")
    if not isinstance(return_exceptions, bool):
        raise TypeError(
            f"fan_out({task_def.name}, ...): return_exceptions must be True or False; "
            f"got {return_exceptions!r}"
        )
    graph = _building.get()
    if graph is None:
        return _fan_out_now(task_def, iterable, limit, return_exceptions)
    task_def.check_call((None,), {})  # each call gets one element
    if isinstance(iterable, Placeholder):
        barrier = graph.add_barrier(task_def, iterable, limit, caught=return_exceptions)
        return cast(list[R], barrier)
    _require_iterable(task_def, iterable)
    group = Group(limit) if limit is not None else None
    return graph.add_each(task_def, iterable, group, return_exceptions)


def _require_iterable(task_def: TaskDefinition[Any, Any], iterable: object) -> None:
    if isinstance(iterable, str | bytes | bytearray):
        raise TypeError(f"fan_out({task_def.name}, ...): {text_fan_out_hint(iterable)}")
    try:
        iter(iterable)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"fan_out({task_def.name}, ...) needs an iterable or a task result; "
            f"got {type(iterable).__name__}"
        ) from None


def _fan_out_now(
    task_def: TaskDefinition[[T], R], iterable: Iterable[T], limit: int | None, caught: bool
) -> list[R]:
    """Outside a flow: run one call per element now, concurrently, and return the list."""
    _require_iterable(task_def, iterable)
    items = list(iterable)

    def body() -> list[R]:
        return cast(
            list[R], fan_out(task_def, items, max_concurrency=limit, return_exceptions=caught)
        )

    anonymous = Flow(body, f"fan_out({task_def.name})")
    return anonymous.run(max_concurrency=limit)
