"""Opt-in log output: one line per task outcome on the logger ``auto_workflow.tasks``, as
JSON objects (``auto_workflow.logging.enable_structured_logging``) or readable lines
(``enable_pretty_logging``).

Invariants: nothing happens at import (no handler, no subscription); only one of the two is
active at a time (enabling one undoes the other); each returns the function that undoes it;
a run costs nothing more while neither is enabled (the lines come from run events).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from auto_workflow._observe._hub import EventBus

__all__ = ["TASK_LOGGER", "JsonFormatter", "PrettyFormatter", "enable"]

TASK_LOGGER = "auto_workflow.tasks"
"""The logger task outcomes go to (``task_ok`` / ``task_err``)."""

_FIELDS = "auto_workflow_fields"
"""The log record attribute that holds a task line's fields."""

_FORWARDED = (("task_name", "task"), ("run_id", "run_id"), ("node_id", "node"))
"""Attributes a record logged by a ``run_in="process"`` task carries, and their JSON keys."""

_PRETTY_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"

_lock = threading.Lock()
_undo_active: Callable[[], None] | None = None


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object: ``ts``, ``level``, ``logger`` and either a task
    line's fields (``event``, ``flow``, ``run_id``, ``task``, ``node``, ``duration_ms``,
    ``attempts``, ``error``) or the ``message`` (with ``task``, ``run_id`` and ``node``
    when a process task logged it, and ``exc_info`` when it carries an exception)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        data: dict[str, Any] = {
            "ts": stamp.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            data.update(fields)
        else:
            data["message"] = record.getMessage()
            data.update(_forwarded_fields(record))
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:  # a record from a worker process brings its traceback as text
            data["exc_info"] = record.exc_text
        return json.dumps(data, default=repr)


def _forwarded_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = record.__dict__
    return {key: fields[attr] for attr, key in _FORWARDED if attr in fields}


class PrettyFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger: message``: for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__(_PRETTY_FORMAT, "%H:%M:%S")


def _task_ok(payload: dict[str, Any]) -> None:
    fields = _fields("task_ok", payload)
    fields["attempts"] = payload.get("attempt")
    fields["cached"] = payload.get("cached", False)
    how = "reused" if fields["cached"] else f"{fields['attempts']} attempt(s)"
    logging.getLogger(TASK_LOGGER).info(
        "task_ok %s (%s) in %.1f ms, %s",
        fields["task"],
        fields["node"],
        fields["duration_ms"] or 0.0,
        how,
        extra={_FIELDS: fields},
    )


def _task_err(payload: dict[str, Any]) -> None:
    fields = _fields("task_err", payload)
    fields["attempts"] = payload.get("attempt")
    fields["error"] = payload.get("error")
    logging.getLogger(TASK_LOGGER).error(
        "task_err %s (%s) after %s attempt(s): %s",
        fields["task"],
        fields["node"],
        fields["attempts"],
        fields["error"],
        extra={_FIELDS: fields},
    )


def _fields(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": event,
        "flow": payload.get("flow"),
        "run_id": payload.get("run_id"),
        "task": payload.get("task"),
        "node": payload.get("node"),
        "duration_ms": payload.get("duration_ms"),
    }


def enable(
    events: EventBus, formatter: logging.Formatter, level: int | str, stream: TextIO | None
) -> Callable[[], None]:
    """Send ``auto_workflow`` log records through ``formatter`` to ``stream`` (default:
    stderr) and log the task outcomes of ``events``; undoes the previous one. Returns the
    function that undoes this one."""
    global _undo_active
    with _lock:
        if _undo_active is not None:
            _undo_active()
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(formatter)
        library = logging.getLogger("auto_workflow")
        saved = (library.level, library.propagate)
        library.addHandler(handler)
        library.setLevel(level)
        library.propagate = False  # the application's own handlers must not print lines twice
        unsubscribe = [
            events.subscribe("task_succeeded", _task_ok),
            events.subscribe("task_failed", _task_err),
        ]

        def undo() -> None:
            global _undo_active
            for remove in unsubscribe:
                remove()
            library.removeHandler(handler)
            library.setLevel(saved[0])
            library.propagate = saved[1]
            if _undo_active is undo:
                _undo_active = None

        _undo_active = undo
        return undo
