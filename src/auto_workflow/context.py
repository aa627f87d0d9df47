"""``get_context()``: the run a piece of task code belongs to."""

from auto_workflow._core._context import RunContext, get_context

__all__ = ["RunContext", "get_context"]
