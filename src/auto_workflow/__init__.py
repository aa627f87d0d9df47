"""auto_workflow: workflows as plain Python.

Declare units of work with :func:`task`, wire them into a graph in a :func:`flow` body, and
run it with ``Flow.run()``: an in-process scheduler runs ready tasks concurrently (on the
event loop, in threads or in processes) with retries, timeouts, caching and priorities.
"""

from auto_workflow._core._build import Flow, TaskDefinition, fan_out, flow, task
from auto_workflow._core._context import RunContext, get_context
from auto_workflow._core._model import FailurePolicy
from auto_workflow._history._engine import install as _install_history
from auto_workflow.events import subscribe

# Every flow run records into the run history (docs/history.md). This only registers a
# factory: no file is opened and no thread starts until a run asks for it.
_install_history()

__all__ = [
    "FailurePolicy",
    "Flow",
    "RunContext",
    "TaskDefinition",
    "fan_out",
    "flow",
    "get_context",
    "subscribe",
    "task",
]

__version__ = "0.1.0"
