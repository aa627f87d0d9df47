"""``get_context()``: the run a piece of task code belongs to.

``set_context(ctx)`` / ``reset_context(token)`` and the ``use_context(ctx)`` block set it by
hand (tests, or code that runs task functions itself).
"""

from auto_workflow._core._context import (
    RunContext,
    get_context,
    reset_context,
    set_context,
    use_context,
)

__all__ = ["RunContext", "get_context", "reset_context", "set_context", "use_context"]
