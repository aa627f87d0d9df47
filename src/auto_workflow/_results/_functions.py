"""What a task function contributes to every key of its calls, read once per function.

Its code fingerprint (source text, else the code object; see :func:`._values.code_fingerprint`),
the fingerprints of the values in its closure cells, its signature, and a plan for binding
calls to that signature without ``inspect`` in the common case.

Invariants: the snapshot is taken the first time the task is keyed and remade when the
function's code or defaults change; a closure value that cannot be fingerprinted makes the
task's calls run uncached (``bad`` names it), never a guess.
"""

from __future__ import annotations

import hashlib
import inspect
import types
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from auto_workflow._results._values import (
    UnkeyableError,
    argument_fingerprint,
    code_fingerprint,
    module_label,
    type_label,
)

if TYPE_CHECKING:
    from auto_workflow._core._graph import TaskLike
    from auto_workflow._results._keys import _Head

__all__ = ["FnInfo", "bind", "fn_info"]

_EMPTY_CELL = hashlib.sha256(b"~").hexdigest()


class FnInfo:
    """What a task function contributes to every key, read the first time it is keyed.

    That first time is a snapshot: like module globals, closure values that change later
    are not seen (a task that appends to a list it closes over keeps its key), while a
    factory that builds each task with its own closure values gives each its own keys.
    """

    __slots__ = (
        "bad",
        "closure",
        "code",
        "code_fp",
        "code_part",
        "defaults",
        "heads",
        "identity",
        "kwdefaults",
        "name",
        "names",
        "optional",
        "required",
        "signature",
    )

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.code: types.CodeType | None = getattr(fn, "__code__", None)
        self.defaults: object = getattr(fn, "__defaults__", None)
        self.kwdefaults: object = getattr(fn, "__kwdefaults__", None)
        self.signature = _signature(fn)
        self.name: str = getattr(fn, "__name__", "")
        module = module_label(getattr(fn, "__module__", None) or "?")
        qualname = getattr(fn, "__qualname__", None) or type_label(type(fn))
        self.identity = f"{module}:{qualname}"
        self.closure: dict[str, str] = {}
        self.bad: dict[str, tuple[str, str]] = {}  # label -> (path, reason)
        if isinstance(fn, types.FunctionType):
            self.code_fp = code_fingerprint(fn)
            self._read_closure(fn)
            self.code_part = _with_closure(self.code_fp, self.closure)
        else:  # any other callable is keyed as a value
            self.code_fp = self.code_part = self._read("task function", "task.fn", fn)
        self.heads: dict[tuple[str, bool], _Head] = {}
        self._plan_binding()

    def _read(self, label: str, root: str, value: Any) -> str:
        """Fingerprint of ``value``, or ``""`` with the reason noted in ``bad``."""
        try:
            return argument_fingerprint(value, label, root)
        except UnkeyableError as err:
            self.bad[label] = (err.path, err.reason)
            return ""

    def _read_closure(self, fn: types.FunctionType) -> None:
        cells = fn.__closure__ or ()
        for name, cell in zip(fn.__code__.co_freevars, cells, strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not assigned yet
                self.closure[name] = _EMPTY_CELL
                continue
            # A value that cannot be keyed (a client, a lock, an object) may be what sets two
            # factory-made tasks apart: never guessed at, it makes the task's calls uncached.
            fp = self._read(f"closure variable {name}", name, value)
            if fp:
                self.closure[name] = fp

    def _plan_binding(self) -> None:
        """Binding by hand is exact when every parameter is positional-or-keyword."""
        self.names: tuple[str, ...] | None = None
        self.required = 0
        self.optional: tuple[Any, ...] = ()
        params = self.signature.parameters.values()
        if all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params):
            self.names = tuple(p.name for p in params)
            self.optional = tuple(p.default for p in params if p.default is not p.empty)
            self.required = len(self.names) - len(self.optional)

    def current(self, fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` still has the code and defaults this was worked out from."""
        return (
            self.code is getattr(fn, "__code__", None)
            and self.defaults is getattr(fn, "__defaults__", None)
            and self.kwdefaults is getattr(fn, "__kwdefaults__", None)
        )

    def default_values(self) -> list[object]:
        """The function's default argument values, positional and keyword-only."""
        values = list(self.defaults) if isinstance(self.defaults, tuple) else []
        if isinstance(self.kwdefaults, dict):
            values.extend(self.kwdefaults.values())
        return values

    def task_identity(self, task: TaskLike) -> str:
        name = task.name
        return self.identity if name == self.name else f"{self.identity} (task {name!r})"

    def unkeyable(self) -> UnkeyableError:
        """A fresh error for the first closure value (or callable) that has no key."""
        label, (path, reason) = next(iter(self.bad.items()))
        return UnkeyableError(reason, argument=label, path=path)


def _with_closure(code_fp: str, closure: Mapping[str, str]) -> str:
    """The code component of the key: the code fingerprint and the closure values."""
    if not closure:
        return code_fp
    lines = [code_fp, *(f"{name}={fp}" for name, fp in closure.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    # The signature of what is called: a functools.wraps decorator may add or inject
    # arguments, so the wrapped function's signature would not bind the call.
    try:
        return inspect.signature(fn, follow_wrapped=False)
    except ValueError as exc:  # some builtins have no readable signature
        err = UnkeyableError(f"{fn!r}, whose signature cannot be read")
        raise err._locate("task function", "task.fn") from exc


_INFOS: weakref.WeakKeyDictionary[Callable[..., Any], FnInfo] = weakref.WeakKeyDictionary()


def fn_info(fn: Callable[..., Any]) -> FnInfo:
    try:
        info = _INFOS.get(fn)
    except TypeError:  # an unhashable or non-weakrefable callable: work it out every time
        return FnInfo(fn)
    if info is None or not info.current(fn):
        info = FnInfo(fn)
        _INFOS[fn] = info
    return info


def bind(
    info: FnInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Parameter names and values, defaults applied: ``Signature.bind`` + ``apply_defaults``.

    Raises:
        TypeError: the arguments do not fit the signature.
    """
    names = info.names
    if names is not None:
        values = _bind_simple(info, names, args, kwargs)
        if values is not None:
            return names, values
    bound = info.signature.bind(*args, **kwargs)  # slow path; also the one that explains
    bound.apply_defaults()
    return tuple(bound.arguments), tuple(bound.arguments.values())


def _bind_simple(
    info: FnInfo, names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...] | None:
    """Bind to positional-or-keyword parameters by hand; ``None`` if they do not fit."""
    given, required = len(args), info.required
    if given > len(names):
        return None
    if not kwargs:
        return args + info.optional[given - required :] if given >= required else None
    values = list(args)
    used = 0
    for index in range(given, len(names)):
        name = names[index]
        if name in kwargs:
            values.append(kwargs[name])
            used += 1
        elif index >= required:
            values.append(info.optional[index - required])
        else:
            return None
    return tuple(values) if used == len(kwargs) else None
