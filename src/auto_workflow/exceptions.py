"""The public error tree of auto_workflow.

Every error the library raises on purpose derives from :class:`AutoWorkflowError`, and each
also inherits the builtin it resembles, so ``except ValueError`` and friends keep working::

    AutoWorkflowError (Exception)
    ├── TaskExecutionError                      a task failed (task_name, original, attempts)
    │   ├── TimeoutError (+ builtins.TimeoutError)   ... and its last attempt timed out
    │   ├── RetryExhaustedError                 ... after all configured retries were used
    │   └── UpstreamFailedError                 ... never ran: a dependency failed
    ├── AttemptTimeoutError (+ builtins.TimeoutError)  one attempt ran out of time (retried)
    ├── AggregateTaskError                      failure_policy="aggregate": every task failure
    ├── WorkerCrashedError (+ RuntimeError)     a process worker died while running a call
    ├── ClusterUnavailableError (+ ConnectionError)  a Dask scheduler could not be reached
    ├── RemoteTaskError (+ RuntimeError)        stands in for an unpicklable worker exception
    ├── SerializationError (+ TypeError)        a value could not cross a process boundary
    ├── PlaceholderMisuseError (+ TypeError)    a build-time placeholder was used as a value
    ├── FanOutLimitError (+ RuntimeError)       a dynamic fan-out exceeded max_dynamic_tasks
    ├── ContextError (+ LookupError, RuntimeError)  get_context() called outside a run
    ├── GraphChangedError (+ ValueError)        a resumed run's flow builds another graph
    ├── RunNotFoundError (+ LookupError)        no recorded run has that id (or prefix)
    ├── InvalidGraphError (+ ValueError)        a graph the scheduler cannot run
    │   └── CycleDetectedError                  ... because its nodes cannot be ordered
    ├── ArtifactNotFoundError (+ KeyError)      an artifact reference points at nothing
    └── InvalidKeyError (+ ValueError)          a cache key or artifact key is unusable

    AutoWorkflowWarning (UserWarning)
    ├── CacheKeyWarning                         a call runs uncached: an argument has no key
    ├── CorruptEntryWarning                     a stored entry was unreadable and is dropped
    └── EventNameWarning                        subscribe() to a likely typo of a built-in event

``CycleDetectedError`` and ``InvalidGraphError`` are the names the public ``auto-workflow``
package uses.

This module depends on the standard library only.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

__all__ = [
    "AggregateTaskError",
    "ArtifactNotFoundError",
    "AttemptTimeoutError",
    "AutoWorkflowError",
    "AutoWorkflowWarning",
    "CacheKeyWarning",
    "ClusterUnavailableError",
    "ContextError",
    "CorruptEntryWarning",
    "CycleDetectedError",
    "EventNameWarning",
    "FanOutLimitError",
    "GraphChangedError",
    "InvalidGraphError",
    "InvalidKeyError",
    "PlaceholderMisuseError",
    "RemoteTaskError",
    "RetryExhaustedError",
    "RunNotFoundError",
    "SerializationError",
    "TaskExecutionError",
    "TimeoutError",
    "UpstreamFailedError",
    "WorkerCrashedError",
]


class AutoWorkflowError(Exception):
    """Root of every error raised by auto_workflow."""


class TaskExecutionError(AutoWorkflowError):
    """A task failed for good.

    Attributes:
        task_name: The failing task's name.
        original: The last underlying exception (also chained as ``__cause__``), or ``None``.
        attempts: How many attempts ran (0 when the task never ran).
    """

    def __init__(
        self,
        task_name: str,
        original: BaseException | None = None,
        attempts: int = 1,
        message: str | None = None,
    ) -> None:
        self.task_name = task_name
        self.original = original
        self.attempts = attempts
        if message is None:
            detail = f"{type(original).__name__}: {original}" if original is not None else "failed"
            message = f"task {task_name!r} failed after {attempts} attempt(s): {detail}"
        super().__init__(message)
        if original is not None:
            self.__cause__ = original

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task_name, self.original, self.attempts, str(self)))


class TimeoutError(TaskExecutionError, builtins.TimeoutError):
    """A task's last attempt exceeded its ``timeout``."""


class RetryExhaustedError(TaskExecutionError):
    """A task with ``retries`` configured failed on every attempt."""


class UpstreamFailedError(TaskExecutionError):
    """A task was skipped because a task it depends on failed.

    ``original`` is the upstream task's :class:`TaskExecutionError`; ``attempts`` is 0.
    """


class AttemptTimeoutError(AutoWorkflowError, builtins.TimeoutError):
    """One attempt of a task exceeded its ``timeout``.

    Middleware and tracers around the attempt see this; the attempt is then retried, or the
    task fails with :class:`TimeoutError` (whose ``original`` is this error).

    Attributes:
        seconds: The task's timeout.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"attempt exceeded its timeout of {seconds:g}s")
        self.seconds = seconds

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.seconds,))


class AggregateTaskError(AutoWorkflowError):
    """Raised by ``failure_policy="aggregate"`` after the run: every task failure, in order.

    Attributes:
        errors: The :class:`TaskExecutionError` of each task that failed (skips excluded).
    """

    def __init__(self, errors: Sequence[TaskExecutionError]) -> None:
        self.errors: list[TaskExecutionError] = list(errors)
        names = ", ".join(repr(e.task_name) for e in self.errors)
        super().__init__(f"{len(self.errors)} task(s) failed: {names}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errors,))


class WorkerCrashedError(AutoWorkflowError, RuntimeError):
    """A process worker died (exit, signal, segfault) while it ran a task's call."""


class ClusterUnavailableError(AutoWorkflowError, ConnectionError):
    """The cluster a run was sent to (a Dask scheduler's address) could not be reached."""


class RemoteTaskError(AutoWorkflowError, RuntimeError):
    """Stands in for an exception raised in a worker process that could not be sent back.

    Attributes:
        type_name: The original exception's type, qualified by its module.
        remote_message: ``str()`` of the original exception.
        remote_traceback: The traceback formatted in the worker.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[object, ...]:
        args = (self.type_name, self.remote_message, self.remote_traceback)
        return (type(self), args, self.__dict__)


class SerializationError(AutoWorkflowError, TypeError):
    """A task's arguments, result or error could not be serialized for another process."""


class PlaceholderMisuseError(AutoWorkflowError, TypeError):
    """A task's result placeholder was used as a concrete value while a flow was being built."""


class FanOutLimitError(AutoWorkflowError, RuntimeError):
    """A dynamic fan-out would create more tasks than ``max_dynamic_tasks`` allows."""


class ContextError(AutoWorkflowError, LookupError, RuntimeError):
    """``get_context()`` was called outside a flow run or task execution.

    Also a ``RuntimeError``, which is what the public ``auto-workflow`` package raises.
    """


class InvalidGraphError(AutoWorkflowError, ValueError):
    """A graph the scheduler cannot run (its nodes or edges are inconsistent)."""


class CycleDetectedError(InvalidGraphError):
    """The graph's nodes cannot be ordered: some depend on each other in a cycle."""


class ArtifactNotFoundError(AutoWorkflowError, KeyError):
    """An :class:`~auto_workflow.artifacts.ArtifactRef` points at no stored artifact."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class InvalidKeyError(AutoWorkflowError, ValueError):
    """A cache key or artifact key cannot be used (wrong type, or unsafe as a file name)."""


class AutoWorkflowWarning(UserWarning):
    """Root of every warning auto_workflow issues."""


class CacheKeyWarning(AutoWorkflowWarning):
    """A cached task's call ran uncached because an argument cannot be keyed stably."""


class CorruptEntryWarning(AutoWorkflowWarning):
    """A cache entry or artifact on disk was corrupt, truncated or unreadable."""


class GraphChangedError(AutoWorkflowError, ValueError):
    """A durable run cannot be resumed: its flow now builds a graph of another shape."""


class RunNotFoundError(AutoWorkflowError, LookupError):
    """No run in the history has this id (or a unique id starting with this prefix)."""


class EventNameWarning(AutoWorkflowWarning):
    """``subscribe()`` to a name that is not a built-in event but close to one (a typo?)."""
