"""How one attempt of one task call runs: on the loop, in a thread, or in a process.

(Interface fixed; implementation being written.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from auto_workflow._context import RunContext

__all__ = ["Call", "Executor"]


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt of one task call: the unit every executor runs."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    task_name: str
    context: RunContext


class Executor(Protocol):
    """Runs one attempt. Raises the user's exception unchanged; on cancellation cleans up
    (a process worker is killed, a thread is abandoned) and re-raises ``CancelledError``."""

    async def run(self, call: Call) -> Any: ...
