"""Plugin boundaries of one run: a tracer, a metrics provider or a subscriber that raises
costs the run nothing but that plugin's own output.

A run's plugins are wrapped when its snapshot is taken (:func:`guard`). Each wrapper calls
the plugin and, when it raises, hands the error to the run's :class:`PluginFaults`.

Invariants:

* a plugin's exception never reaches the engine: the run ends with the results and status
  it would have had without the plugin (a tracer cannot suppress or replace a task's own
  error either);
* each faulty plugin is reported once per run: one warning naming the plugin and the hook,
  with the traceback, and one ``plugin_error`` event; later faults of that plugin in the
  same run are logged at DEBUG;
* a faulty plugin keeps being called for the rest of the run (a metrics backend that was
  unreachable for a moment still gets the later samples);
* the in-memory metrics default is trusted and not wrapped, so the hot path pays nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from auto_workflow._observe._hub import (
    EventBus,
    InMemoryMetrics,
    MetricsProvider,
    Tracer,
    deliver,
)

__all__ = [
    "GuardedMetrics",
    "GuardedTracer",
    "PluginFaults",
    "RunEvents",
    "guard_metrics",
    "guard_tracer",
    "own_task_done",
    "plugin_name",
]

logger = logging.getLogger("auto_workflow.plugins")


def plugin_name(plugin: object) -> str:
    """A readable name: ``module.qualname`` of a function, or of an instance's class."""
    target = plugin if hasattr(plugin, "__qualname__") else type(plugin)
    name = getattr(target, "__qualname__", None)
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if module and name else repr(plugin)


class PluginFaults:
    """The faulty plugins of one run, each reported once (see the module docstring)."""

    __slots__ = ("_lock", "_reported", "events", "flow", "run_id")

    def __init__(self, events: EventBus) -> None:
        self.events = events
        self.flow: str | None = None
        self.run_id: str | None = None
        # By id, holding the plugin so its id cannot be reused while the run lasts.
        self._reported: dict[int, object] = {}
        self._lock = threading.Lock()  # thread-mode tasks may call a plugin off the loop

    def bind(self, flow: str | None, run_id: str) -> None:
        """Name the run the ``plugin_error`` events belong to."""
        self.flow, self.run_id = flow, run_id

    def report(self, kind: str, plugin: object, hook: str, exc: BaseException) -> None:
        """Log ``plugin``'s failure in ``hook`` (the first time in this run: warn and emit)."""
        with self._lock:
            first = id(plugin) not in self._reported
            self._reported[id(plugin)] = plugin
        name = plugin_name(plugin)
        why = f"{type(exc).__name__}: {exc}"
        if not first:
            logger.debug("%s %s failed again in %s (%s)", kind, name, hook, why)
            return
        logger.warning(
            "%s %s failed in %s (%s); the run goes on without its output there "
            "(it is still called; later failures in this run are logged at DEBUG)",
            kind,
            name,
            hook,
            why,
            exc_info=exc,
        )
        if self.events.wants("plugin_error"):
            payload = {"flow": self.flow, "run_id": self.run_id, "plugin": name}
            payload.update(kind=kind, hook=hook, error=repr(exc))
            # Delivered through this run's guard, so a subscriber raising on plugin_error is
            # itself reported once and cannot recurse without end.
            RunEvents(self.events, self).emit("plugin_error", payload)


class RunEvents:
    """One run's view of the event bus: the same subscribers, faults reported per run."""

    __slots__ = ("bus", "faults")

    def __init__(self, bus: EventBus, faults: PluginFaults) -> None:
        self.bus = bus
        self.faults = faults

    def wants(self, name: str) -> bool:
        """True if anyone listens to ``name``."""
        return self.bus.wants(name)

    def __bool__(self) -> bool:
        return bool(self.bus)

    def emit(self, name: str, payload: dict[str, Any]) -> None:
        """Deliver one event; a raising subscriber is reported, never propagated."""
        subs = self.bus.subscriptions(name)
        if subs:
            deliver(subs, name, payload, self._report)

    def _report(self, callback: Callable[..., Any], name: str, exc: Exception) -> None:
        self.faults.report("event subscriber", callback, f"{name!r} event", exc)


def own_task_done(metrics: object) -> Callable[[str, str, float], None] | None:
    """The provider's own ``task_done``, if its class has one that is at least as specific
    as its ``inc`` and ``observe``: a subclass that overrides those two (to forward them,
    say) expects to be called through them, and a mock's made-up attribute is not a method.
    """
    cls = type(metrics)
    if cls is InMemoryMetrics:  # the default, asked once per run: its own, without a look
        return metrics.task_done  # type: ignore[attr-defined, no-any-return]
    owner = _owner(cls, "task_done")
    if owner is None:
        return None
    for name in ("inc", "observe"):
        other = _owner(cls, name)
        if other is not None and not issubclass(owner, other):
            return None
    method: Callable[[str, str, float], None] = getattr(metrics, "task_done")  # noqa: B009
    return method


def _owner(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO that defines ``name``."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


class GuardedMetrics:
    """A metrics provider whose every call is a plugin boundary."""

    __slots__ = ("faults", "inner", "task_done")

    def __init__(
        self,
        inner: MetricsProvider,
        faults: PluginFaults,
        task_done: Callable[[str, str, float], None] | None,
    ) -> None:
        self.inner = inner
        self.faults = faults
        self.task_done: Callable[[str, str, float], None] | None = None
        if task_done is not None:
            self.task_done = self._guarded_task_done(task_done)

    def _guarded_task_done(
        self, method: Callable[[str, str, float], None]
    ) -> Callable[[str, str, float], None]:
        def task_done(task: str, result: str, duration_ms: float) -> None:
            try:
                method(task, result, duration_ms)
            except Exception as exc:  # noqa: BLE001 - a plugin boundary: reported
                self.faults.report("metrics provider", self.inner, "task_done()", exc)

        return task_done

    def inc(self, name: str, value: float = 1, **labels: Any) -> None:
        """The provider's ``inc``; a failure is reported."""
        try:
            self.inner.inc(name, value, **labels)
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: reported
            self.faults.report("metrics provider", self.inner, f"inc({name!r})", exc)

    def observe(self, name: str, value: float, **labels: Any) -> None:
        """The provider's ``observe``; a failure is reported."""
        try:
            self.inner.observe(name, value, **labels)
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: reported
            self.faults.report("metrics provider", self.inner, f"observe({name!r})", exc)

    def wants(self, name: str) -> bool:
        """The provider's ``wants(name)`` (yes if it has none); a failure means no."""
        wants = getattr(self.inner, "wants", None)
        if wants is None:
            return True
        try:
            return bool(wants(name))
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: reported
            self.faults.report("metrics provider", self.inner, f"wants({name!r})", exc)
            return False


def guard_metrics(
    metrics: MetricsProvider,
    faults: PluginFaults,
    task_done: Callable[[str, str, float], None] | None,
) -> tuple[MetricsProvider, Callable[[str, str, float], None] | None]:
    """``metrics`` and its ``task_done`` behind the run's plugin boundary.

    The in-memory default is returned as it is (it does not raise; the hot path stays free).
    """
    if type(metrics) is InMemoryMetrics:
        return metrics, task_done
    guarded = GuardedMetrics(metrics, faults, task_done)
    return guarded, guarded.task_done


class GuardedTracer:
    """A tracer whose spans cannot fail the work they wrap."""

    __slots__ = ("faults", "inner")

    def __init__(self, inner: Tracer, faults: PluginFaults) -> None:
        self.inner = inner
        self.faults = faults

    def span(self, name: str, **attrs: Any) -> _GuardedSpan:
        """A span around the work; entering or leaving it never raises the tracer's errors."""
        return _GuardedSpan(self, name, attrs)


def guard_tracer(tracer: Tracer | None, faults: PluginFaults) -> Tracer | None:
    """``tracer`` behind the run's plugin boundary (``None`` stays ``None``)."""
    if tracer is None or isinstance(tracer, GuardedTracer):
        return tracer
    return GuardedTracer(tracer, faults)


class _GuardedSpan:
    """One span of a guarded tracer: the inner span is made and entered lazily."""

    __slots__ = ("attrs", "inner", "name", "tracer")

    def __init__(self, tracer: GuardedTracer, name: str, attrs: dict[str, Any]) -> None:
        self.tracer = tracer
        self.name = name
        self.attrs = attrs
        self.inner: contextlib.AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> Any:
        tracer = self.tracer
        try:
            inner = tracer.inner.span(self.name, **self.attrs)
            value = await inner.__aenter__()
        except Exception as exc:  # noqa: BLE001 - a plugin boundary: the work runs unspanned
            tracer.faults.report("tracer", tracer.inner, f"entering span {self.name!r}", exc)
            return None
        self.inner = inner
        return value

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        inner, self.inner = self.inner, None
        if inner is None:
            return False
        try:
            await inner.__aexit__(kind, error, tb)
        except Exception as exc:  # noqa: BLE001 - a plugin boundary
            if exc is not error:  # the work's own error passing through is not the tracer's
                self.tracer.faults.report(
                    "tracer", self.tracer.inner, f"leaving span {self.name!r}", exc
                )
        # Never suppress: the work's outcome is the work's, whatever the span says.
        return False
