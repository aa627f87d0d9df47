"""The frames the process pool and its workers exchange over a ``socketpair``.

A frame is a 17-byte header, big-endian: its kind (1 byte), a call id (8 bytes) and the
size of its body (8 bytes); then the body.

Parent to worker: ``CALL`` (a :class:`Call`, see :func:`encode_call`), ``PATH`` (the parent's
``sys.path``, pickled, sent before the first call and whenever it changed), ``LEVELS`` (the
parent's logger levels, likewise), ``CANCEL`` (no body: do not start that call, or stop
the process if it is running) and ``RECALL`` (no body: do not start that call; if it runs
already, let it finish). Worker to parent: ``REPLY`` (the outcome of a call), ``SKIPPED``
(a cancelled call that never started) and ``LOG`` (a log record written during a call).

Invariant: a worker serves calls one at a time in the order they were sent and answers each
``CALL`` with exactly one ``REPLY`` or ``SKIPPED``; replies come in that order, a
``SKIPPED`` as soon as the worker has it (it never started); the ``LOG`` frames of a call
come before its reply.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._core._context import RunContext
from auto_workflow._execution._protocol import Call

__all__ = [
    "CALL",
    "CANCEL",
    "HEADER",
    "LEVELS",
    "LOG",
    "PATH",
    "RECALL",
    "REPLY",
    "SKIPPED",
    "decode_call",
    "encode_call",
    "header",
]

HEADER = struct.Struct("!BQQ")

CALL = 1
PATH = 2
LEVELS = 3
CANCEL = 4
RECALL = 5
REPLY = 11
SKIPPED = 12
LOG = 13


def header(kind: int, call_id: int, size: int) -> bytes:
    """The header of a frame of ``kind`` for call ``call_id`` with a body of ``size`` bytes."""
    return HEADER.pack(kind, call_id, size)


# -- a call's body ------------------------------------------------------------------------------

_by_reference: weakref.WeakKeyDictionary[Callable[..., Any], bytes] = weakref.WeakKeyDictionary()
"""Functions importable by name, pickled once: their pickle is just that name."""


def _function_bytes(fn: Callable[..., Any]) -> bytes:
    """``fn`` pickled; by name (and remembered) when it is importable by name, else by value
    with ``cloudpickle`` (never remembered: its globals and closure may change)."""
    try:
        return _by_reference[fn]
    except (KeyError, TypeError):  # not seen yet, or cannot be weakly referenced
        pass
    module = getattr(fn, "__module__", None)
    if module == "__main__" or module in _pickled_by_value():
        return bytes(cloudpickle.dumps(fn))
    try:
        data = pickle.dumps(fn)  # succeeds only if fn is what its module has under its name
    except (pickle.PicklingError, AttributeError, TypeError):
        return bytes(cloudpickle.dumps(fn))
    with contextlib.suppress(TypeError):
        _by_reference[fn] = data
    return data


def _pickled_by_value() -> set[str]:
    names: set[str] = cloudpickle.list_registry_pickle_by_value()
    return names


def encode_call(call: Call) -> bytes:
    """The body of a ``CALL`` frame.

    The function goes as :func:`_function_bytes`; arguments, params and the artifact store
    with ``cloudpickle``; a store that cannot travel is left behind (the worker then uses its
    own default, as ``RunContext`` pickling does). Raises whatever pickling raised.
    """
    ctx = call.context
    values = (call.args, call.kwargs, ctx.params)
    try:
        data = cloudpickle.dumps((*values, ctx.artifact_store))
    except Exception:  # noqa: BLE001 - a store holding a client or a lock: try without it
        data = cloudpickle.dumps((*values, None))
    fields = (ctx.run_id, ctx.flow_name, ctx.task_name, ctx.node_id, ctx.attempt)
    return pickle.dumps((_function_bytes(call.fn), data, call.task_name, fields))


def decode_call(body: bytes) -> Call:
    """The :class:`Call` an :func:`encode_call` body describes (runs unpickling code)."""
    fn_bytes, data, task_name, fields = pickle.loads(body)
    run_id, flow_name, ctx_task, node_id, attempt = fields
    fn = cloudpickle.loads(fn_bytes)
    args, kwargs, params, store = cloudpickle.loads(data)
    context = RunContext(
        run_id=run_id,
        flow_name=flow_name,
        params=params,
        task_name=ctx_task,
        node_id=node_id,
        attempt=attempt,
        artifact_store=store,
    )
    return Call(fn, args, kwargs, task_name, context)
