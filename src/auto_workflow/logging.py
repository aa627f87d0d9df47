"""Opt-in log output for runs: ``enable_structured_logging()`` (one JSON object per line per
task outcome, on the logger ``auto_workflow.tasks``) or ``enable_pretty_logging()``.

Importing auto_workflow configures no logging; these are for scripts that want it without
writing a handler (the CLI: ``auto-workflow run --structured-logs``).
"""

# This module is named ``logging`` inside the package: every import in the package is
# absolute, so ``import logging`` anywhere (this file included) is the standard library's.
from auto_workflow._observe._logging import (
    TASK_LOGGER,
    JsonFormatter,
    PrettyFormatter,
    enable_pretty_logging,
    enable_structured_logging,
)

__all__ = [
    "TASK_LOGGER",
    "JsonFormatter",
    "PrettyFormatter",
    "enable_pretty_logging",
    "enable_structured_logging",
]
