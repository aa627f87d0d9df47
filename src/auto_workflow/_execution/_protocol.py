"""The executor protocol: how one attempt of one task call is handed to where it runs.

An :class:`Executor` runs a :class:`Call` (function, arguments, task name, run context) and
returns its value or raises the user's exception unchanged. The local executors (on the
loop, in a thread: :mod:`._local`; in a process: :mod:`._process`) and the Dask executor
implement it; the runner only ever awaits ``executor.run(call, on_start)``.

Invariant: every call runs with ``call.context`` as the current run context, set with a
token and reset afterwards, so ``get_context()`` works wherever the call runs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from auto_workflow._core._context import RunContext, use_context

__all__ = [
    "Call",
    "Executor",
    "OnStart",
    "call_to_completion",
    "check_max_workers",
    "safe_str",
    "type_name",
]


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt of one task call: the unit every executor runs."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    task_name: str
    context: RunContext


OnStart = Callable[[], None] | None
"""Called on the loop once the call really starts (it may first wait for a pool slot)."""


class Executor(Protocol):
    """Runs one attempt. Raises the user's exception unchanged; on cancellation cleans up
    (a process worker is killed, a thread is abandoned) and re-raises ``CancelledError``.
    ``on_start`` is called on the loop when the call gets its thread or worker."""

    async def run(self, call: Call, on_start: OnStart = None) -> Any: ...


# -- shared helpers ---------------------------------------------------------------------------


def type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error it describes
        return f"<{type_name(value)} object; str() failed>"


def check_max_workers(max_workers: int) -> int:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers must be a positive integer; got {max_workers!r}")
    return max_workers


async def _await_it(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def call_to_completion(call: Call) -> Any:
    """Call ``call.fn`` off the loop thread; an awaitable result runs on a fresh loop."""
    with use_context(call.context):
        result = call.fn(*call.args, **call.kwargs)
        if inspect.isawaitable(result):
            coro = result if inspect.iscoroutine(result) else _await_it(result)
            result = asyncio.run(coro)
    return result
