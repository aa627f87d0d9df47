"""The run history: every flow run, recorded; durable runs, resumable. See docs/history.md.

Reading: :func:`list_runs` (newest first), :func:`get_run` (a frozen :class:`RunRecord`
with its :class:`TaskRecord` s); housekeeping: :func:`delete_runs`; looking:
:func:`write_report` (one self-contained HTML file per run).
"""

from auto_workflow._history._api import delete_runs, get_run, list_runs, write_report
from auto_workflow._history._records import (
    AttemptRecord,
    ErrorRecord,
    RunRecord,
    RunStatus,
    RunSummary,
    TaskRecord,
    TaskStatus,
)
from auto_workflow._history._values import register_secret

__all__ = [
    "AttemptRecord",
    "ErrorRecord",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "TaskRecord",
    "TaskStatus",
    "delete_runs",
    "get_run",
    "list_runs",
    "register_secret",
    "write_report",
]
