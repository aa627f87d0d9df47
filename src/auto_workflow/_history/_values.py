"""How user values and error texts are recorded: JSON where possible, bounded, redacted.

Invariants: every string this module returns has had each registered secret replaced by
``***``; a recorded value is a JSON-compatible tree (when it serialises and its JSON is at
most :data:`MAX_VALUE_CHARS` long) or else its ``repr`` cut to that length. The secret set is
process-wide, only grows, and is safe to register into from any thread.
"""

from __future__ import annotations

import json
import logging
import re
import reprlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from auto_workflow._history._records import ErrorRecord

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_TRACEBACK_CHARS",
    "MAX_VALUE_CHARS",
    "REDACTED",
    "recorded_args",
    "recorded_mapping",
    "redact",
    "redacted_error",
    "register_secret",
]

logger = logging.getLogger("auto_workflow.history")

REDACTED = "***"
MAX_VALUE_CHARS = 2_000
"""Longest JSON text (or ``repr``) recorded for one parameter or argument."""
MAX_MESSAGE_CHARS = 4_000
MAX_TRACEBACK_CHARS = 16_000
"""Tracebacks keep their end (the raising frame and the message), not their start."""

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
"""Matches any registered secret, longest first; replaced whole under ``_lock``."""

_repr = reprlib.Repr()
_repr.maxstring = MAX_VALUE_CHARS
_repr.maxother = MAX_VALUE_CHARS


def register_secret(value: str) -> None:
    """Redact ``value`` from everything the history records from now on, in this process.

    Empty strings are ignored. Thread-safe.
    """
    global _pattern
    if not value:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(REDACTED, text)


def _redact_tree(value: Any) -> Any:
    """A decoded JSON tree with every string (keys included) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_tree(v) for v in value]
    if isinstance(value, dict):
        return {redact(k): _redact_tree(v) for k, v in value.items()}
    return value


def _bounded_repr(value: Any) -> str:
    try:
        text = _repr.repr(value)
    except Exception:  # a user __repr__ may raise anything; the run must not fail for it
        logger.debug("repr() of a %s failed", type(value).__qualname__, exc_info=True)
        return f"<unrepresentable {type(value).__qualname__}>"
    # Redact before cutting, so a secret straddling the cut cannot leave a visible prefix.
    return redact(text)[:MAX_VALUE_CHARS]


def recorded_value(value: Any) -> Any:
    """``value`` as the history records it: a redacted JSON tree, or its bounded ``repr``."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return _bounded_repr(value)
    if len(text) > MAX_VALUE_CHARS:
        return _bounded_repr(value)
    return _redact_tree(json.loads(text))


def recorded_mapping(values: Mapping[str, Any]) -> str:
    """JSON text of ``{name: recorded_value(v)}`` (names redacted too)."""
    return json.dumps({redact(str(k)): recorded_value(v) for k, v in values.items()})


def recorded_args(values: Iterable[Any]) -> str:
    """JSON text of ``[recorded_value(v), ...]``."""
    return json.dumps([recorded_value(v) for v in values])


def redacted_error(error: ErrorRecord | None) -> tuple[str | None, str | None, str | None]:
    """``(type, message, traceback)`` columns for ``error``: redacted and bounded."""
    if error is None:
        return (None, None, None)
    message = redact(error.message)[:MAX_MESSAGE_CHARS]
    traceback = redact(error.traceback)[-MAX_TRACEBACK_CHARS:]
    return (error.type, message, traceback)
