"""Opt-in log output for runs: ``enable_structured_logging()`` (one JSON object per line per
task outcome, on the logger ``auto_workflow.tasks``) or ``enable_pretty_logging()``.

Importing auto_workflow configures no logging; these are for scripts that want it without
writing a handler (the CLI: ``auto-workflow run --structured-logs``).
"""

# This module is named ``logging`` inside the package: every import in the package is
# absolute, so ``import logging`` anywhere (this file included) is the standard library's.
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TextIO

from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._observe._logging import TASK_LOGGER, JsonFormatter, PrettyFormatter, enable

__all__ = [
    "TASK_LOGGER",
    "JsonFormatter",
    "PrettyFormatter",
    "enable_pretty_logging",
    "enable_structured_logging",
]


def enable_structured_logging(
    level: int | str = logging.INFO, *, stream: TextIO | None = None
) -> Callable[[], None]:
    """Log every task outcome as one JSON object per line, on ``auto_workflow.tasks``.

    A success is ``{"event": "task_ok", "task", "node", "duration_ms", "attempts", ...}``, a
    failure ``{"event": "task_err", ..., "error"}``; every other ``auto_workflow`` log
    record becomes a JSON object with ``message``. Nothing is logged until this is called;
    calling it again (or :func:`enable_pretty_logging`) replaces the previous setup.

    Args:
        level: The ``auto_workflow`` loggers' level.
        stream: Where the lines go (default: stderr).

    Returns:
        A function that undoes this (removes the handler and the event subscriptions).
    """
    return enable(DEFAULTS.events, JsonFormatter(), level, stream)


def enable_pretty_logging(
    level: int | str = logging.INFO, *, stream: TextIO | None = None
) -> Callable[[], None]:
    """Like :func:`enable_structured_logging`, but readable lines for a terminal:
    ``12:00:01.250 INFO    auto_workflow.tasks: task_ok load (load:0) in 3.1 ms, 1 attempt(s)``.

    Returns:
        A function that undoes this.
    """
    return enable(DEFAULTS.events, PrettyFormatter(), level, stream)
