"""Log records of ``run_in="process"`` tasks reach the parent's logging.

In a worker, one handler on the root logger packs every record (message merged with its
arguments, exception and stack as text) and sends it to the parent, tagged with the call it
belongs to. The parent rebuilds the record, puts the task's ``task_name``, ``run_id`` and
``node_id`` on it and hands it to the logger of the same name, with the task's run context
current: the parent's own handlers, filters and formatters treat it as they treat a record
written by a thread or async task.

Invariant: the worker's loggers have the parent's levels (the parent sends a snapshot of
the levels it set whenever they changed), so a record below the parent's effective level
is never even created in the worker, let alone sent.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from auto_workflow._core._context import RunContext, use_context
from auto_workflow._execution._protocol import safe_str

__all__ = ["LevelSnapshot", "apply_levels", "emit_forwarded", "level_snapshot", "pack_record"]

logger = logging.getLogger(__name__)

LevelSnapshot = tuple[int, int, dict[str, int]]
"""``(root level, logging.disable level, {logger name: level})`` of the loggers that have
a level of their own."""

_PLAIN = (str, int, float, bool, type(None))

_applied: set[str] = set()
"""In a worker: the loggers whose level the last snapshot set."""


# -- parent side ------------------------------------------------------------------------------


def level_snapshot() -> LevelSnapshot:
    """The levels of this process's loggers, as a worker needs them to mirror them."""
    manager = logging.root.manager
    levels = {
        name: item.level
        for name, item in list(manager.loggerDict.items())
        if isinstance(item, logging.Logger) and item.level != logging.NOTSET
    }
    return logging.root.level, manager.disable, levels


def emit_forwarded(body: bytes, context: RunContext | None) -> None:
    """Rebuild a record sent by a worker and log it here, as if the task ran here.

    ``context`` is the run context of the call that wrote it (``None`` when the record was
    written between calls). Never raises: a broken record or handler is logged and dropped.
    """
    try:
        fields = pickle.loads(body)
        record = logging.makeLogRecord(fields)
    except Exception:  # noqa: BLE001 - unpickling runs arbitrary code
        logger.warning("dropped a log record from a worker process: it could not be rebuilt")
        return
    if context is not None:
        _tag(record, context)
    target = logging.getLogger(record.name) if record.name != "root" else logging.root
    if not target.isEnabledFor(record.levelno):
        return  # the level changed here after the worker was told
    try:
        if context is None:
            target.handle(record)
        else:
            with use_context(context):
                target.handle(record)
    except Exception:  # a user's filter or handler must not break the run
        logger.warning(
            "a log filter or handler raised on a record from a worker process", exc_info=True
        )


def _tag(record: logging.LogRecord, context: RunContext) -> None:
    fields = record.__dict__
    fields.setdefault("task_name", context.task_name)
    fields.setdefault("run_id", context.run_id)
    fields.setdefault("node_id", context.node_id)


# -- worker side ------------------------------------------------------------------------------


def apply_levels(snapshot: LevelSnapshot) -> None:
    """Give this process's loggers the levels of the parent's ``snapshot``."""
    root_level, disabled, levels = snapshot
    for name in _applied - levels.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    _applied.clear()
    _applied.update(levels)
    logging.root.setLevel(root_level)
    logging.disable(disabled)


def pack_record(record: logging.LogRecord, formatter: logging.Formatter) -> bytes:
    """``record`` as bytes that unpickle anywhere: message, exception and stack as text."""
    fields = dict(record.__dict__)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    fields.pop("message", None)
    if record.exc_info:
        fields["exc_text"] = record.exc_text or formatter.formatException(record.exc_info)
    fields["exc_info"] = None
    try:
        return pickle.dumps(fields)
    except Exception:  # noqa: BLE001 - an `extra` value that does not pickle goes as text
        plain = {k: v if isinstance(v, _PLAIN) else _text(v) for k, v in fields.items()}
        return pickle.dumps(plain)


def _text(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the record
        return safe_str(value)
