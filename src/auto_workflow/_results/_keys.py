"""Stable cache keys: one digest per task call, the same in every process and on every machine.

The default key of a call is a SHA-256 digest over

* the task's identity (``module:qualname`` of its function, plus the task name if it differs),
* the task's code fingerprint and closure values (see :mod:`._functions`),
* the task's ``persist`` option,
* the name and :func:`~._values.fingerprint` of each bound argument, defaults applied, in
  signature order (so ``f(1)``, ``f(a=1)`` and ``f(1, 2)`` share a key when ``b`` defaults
  to 2).

This module assembles keys (with a memo for small positional arguments, the hot path of a
cache hit) and explains them (:class:`CacheKeyReport`, ``a.diff(b)``).

What the key does NOT cover: module globals the task reads, helper functions and classes it
calls (only their names are keyed when they are passed as arguments), files and services it
touches, and anything its code reaches other than through its arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auto_workflow._core._graph import TaskLike
from auto_workflow._results._functions import FnInfo, bind, fn_info
from auto_workflow._results._values import ATOMS, UnkeyableError, argument_fingerprint, fingerprint

__all__ = [
    "CacheKeyReport",
    "UnkeyableError",
    "default_cache_key",
    "explain",
    "fingerprint",
    "remembered_key",
]

_KEY_VERSION = "auto_workflow cache key v1"
_INLINE_TOKEN = 48
_MEMO_MAX = 16_384
"""Keys remembered per task (then the memo starts afresh): at most a few MB."""
_MEMO_INT = 2**63
_MEMO_STR = 64


class _Head:
    """The part of the key shared by every call of one task, and a memo of recent keys.

    ``hasher`` has been fed the version, identity, code and persist flag. ``memo`` maps
    positional-only argument tuples of small ints and strs to their keys: for those exact
    types, tuples compare equal exactly when the calls' values are equal, so a memo hit is
    the key the digest would give, for a fraction of its cost.
    """

    __slots__ = ("hasher", "info", "memo", "memo_ok")

    def __init__(self, info: FnInfo, hasher: Any) -> None:
        self.info = info
        self.hasher = hasher
        self.memo: dict[tuple[Any, ...], str] = {}
        # A default that can change in place (a dict, a list) would leave a memoized key
        # behind its value: such a task computes every key.
        self.memo_ok = all(map(_frozen, info.default_values()))

    def remember(self, args: tuple[Any, ...], key: str) -> None:
        if not self.memo_ok:
            return
        if len(self.memo) >= _MEMO_MAX:
            self.memo.clear()  # bounded memory; it refills with what is called now
        self.memo[args] = key


def _memoizable(args: tuple[Any, ...]) -> bool:
    """True if ``args`` holds only small plain ints and strs (see :class:`_Head`)."""
    return all(map(_small, args))


def _frozen(value: object) -> bool:
    """A value that cannot change in place (tuples and frozensets of such included)."""
    if type(value) in _FROZEN_ATOMS:
        return True
    if type(value) in (tuple, frozenset):
        return all(map(_frozen, value))  # type: ignore[call-overload]
    return False


_FROZEN_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})


def _small(value: object) -> bool:
    """A plain ``int`` or ``str`` small enough to keep in a memo."""
    kind = type(value)
    if kind is int:
        return -_MEMO_INT < value < _MEMO_INT  # type: ignore[operator]
    return kind is str and len(value) <= _MEMO_STR  # type: ignore[arg-type]


def _head(info: FnInfo, task: TaskLike) -> _Head:
    """The :class:`_Head` of ``task`` (made on first use)."""
    persist = task.options.persist
    head = info.heads.get((task.name, persist))
    if head is None:
        identity = info.task_identity(task)
        text = (
            f"{_KEY_VERSION}\nidentity={identity!r}\ncode={info.code_part}\npersist={persist:d}\n"
        )
        head = info.heads[task.name, persist] = _Head(info, hashlib.sha256(text.encode()))
    return head


def _digest(head: _Head, names: Iterable[str], tokens: Iterable[str]) -> str:
    hasher = head.hasher.copy()
    hasher.update("".join([f"{n}={t}\n" for n, t in zip(names, tokens, strict=True)]).encode())
    return str(hasher.hexdigest())


def _token(value: object, argument: str) -> str:
    """What one argument contributes to the key: a short plain value spelled out (readable
    in reports, and cheaper than hashing it), anything else its :func:`fingerprint`.

    The two cannot be confused: a spelled-out value starts with ``=``, a fingerprint is hex.
    """
    atom = ATOMS.get(type(value))
    if atom is not None:
        try:
            encoded = atom(value)
        except UnkeyableError as err:
            raise err._locate(argument, argument) from None
        if len(encoded) <= _INLINE_TOKEN and encoded.isascii() and b"\n" not in encoded:
            return "=" + encoded.decode("ascii")
        return hashlib.sha256(encoded).hexdigest()
    return argument_fingerprint(value, argument, argument)


def _info_for(task: TaskLike) -> FnInfo:
    """The :class:`FnInfo` of the task's function."""
    return _head_for(task).info


def _head_for(task: TaskLike) -> _Head:
    """The task's :class:`_Head`, kept on the task object when it allows attributes."""
    head: _Head | None = getattr(task, "_aw_key_head", None)
    if head is None or not head.info.current(task.fn):
        info = fn_info(task.fn)
        head = _head(info, task)
        with contextlib.suppress(AttributeError, TypeError):
            task._aw_key_head = head  # type: ignore[attr-defined]
    return head


def remembered_key(task: TaskLike, args: tuple[Any, ...]) -> str | None:
    """The memoized default key of a one-argument call ``task(arg)``, or ``None``: then
    ask :func:`default_cache_key`. The hot path of a cache hit, so it does little."""
    head: _Head | None = getattr(task, "_aw_key_head", None)
    if head is None or len(args) != 1 or not _small(args[0]):
        return None
    key = head.memo.get(args)
    if key is None or not head.info.current(task.fn):
        return None
    return key


def default_cache_key(task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The default cache key of calling ``task`` with ``args`` and ``kwargs``.

    Returns:
        A hex SHA-256 digest (see the module docstring for what it covers).

    Raises:
        UnkeyableError: an argument has no stable key (names which).
        TypeError: the arguments do not fit the task's signature.
    """
    head = _head_for(task)
    memoizable = not kwargs and _memoizable(args)
    if memoizable:
        key = head.memo.get(args)
        if key is not None:
            return key
    info = head.info
    names, values = bind(info, args, kwargs)
    if info.bad:
        raise info.unkeyable()
    tokens = [_token(value, name) for name, value in zip(names, values, strict=True)]
    key = _digest(head, names, tokens)
    if memoizable:
        head.remember(args, key)
    return key


# -- explaining keys -----------------------------------------------------------------------


def _differences(
    what: str, mine: Mapping[str, str], theirs: Mapping[str, str], bad: tuple[Any, Any]
) -> list[str]:
    """Why two name -> fingerprint maps differ, name by name (``bad``: unkeyable maps)."""
    reasons: list[str] = []
    for name in dict.fromkeys([*mine, *bad[0], *theirs, *bad[1]]):
        label = name if what == "other" else f"{what} {name!r}"  # "other": "task function"
        if name in bad[0]:
            reasons.append(f"{label} cannot be keyed in this call: {bad[0][name]}")
        elif name in bad[1]:
            reasons.append(f"{label} cannot be keyed in the other call: {bad[1][name]}")
        elif name not in theirs:
            reasons.append(f"{what} {name!r} is only in this call")
        elif name not in mine:
            reasons.append(f"{what} {name!r} is only in the other call")
        elif mine[name] != theirs[name]:
            reasons.append(f"{what} {name!r} differs")
    return reasons


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CacheKeyReport:
    """Why a call gets the cache key it gets (from :func:`explain`).

    Attributes:
        task: The task's name.
        key: The key the engine would use; ``None`` when the call would run uncached.
        identity: ``module:qualname`` of the task function (and the task name if it differs).
        code: Fingerprint of the task function's source (or code object).
        arguments: Bound parameter name -> fingerprint, defaults applied, in signature order
            (parameters that cannot be keyed are in ``unkeyable`` instead).
        unkeyable: Parameter (or ``closure variable <name>``) -> why it cannot be keyed.
        custom: ``True`` when the task's ``cache_key_fn`` produced ``key``.
        persist: The task's ``persist`` option (part of the default key).
        closure: Closure variable name -> fingerprint of its value when the task was first
            keyed in this process (part of the code component of the default key).
    """

    task: str
    key: str | None
    identity: str
    code: str
    arguments: Mapping[str, str]
    unkeyable: Mapping[str, str]
    custom: bool
    persist: bool = False
    closure: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def diff(self, other: CacheKeyReport) -> list[str]:
        """Human-readable reasons why ``self`` and ``other`` do not share a key.

        Returns:
            ``[]`` when both have the same (non-``None``) key.
        """
        if self.key is not None and self.key == other.key:
            return []
        reasons: list[str] = []
        if self.custom and other.custom:
            reasons.append("cache_key_fn returned different keys")
        elif self.custom or other.custom:
            which = "this call's" if self.custom else "the other call's"
            reasons.append(f"only {which} key comes from cache_key_fn")
        if self.identity != other.identity:
            reasons.append(f"task identity differs ({self.identity} vs {other.identity})")
        if self.code != other.code:
            reasons.append("code differs")
        if self.persist != other.persist:
            reasons.append("persist option differs")
        for what, mine, theirs in [
            ("other", {}, {}),
            ("closure", self.closure, other.closure),
            ("argument", self.arguments, other.arguments),
        ]:
            bad = (_unkeyable_part(self.unkeyable, what), _unkeyable_part(other.unkeyable, what))
            label = "closure variable" if what == "closure" else what
            reasons += _differences(label, mine, theirs, bad)
        return reasons or ["keys differ"]

    def __str__(self) -> str:
        if self.key is None:
            head = (
                f"task {self.task!r} runs uncached: {len(self.unkeyable)} value(s) cannot be keyed"
            )
        else:
            source = " (from cache_key_fn)" if self.custom else ""
            head = f"cache key of task {self.task!r}{source}: {self.key}"
        lines = [
            head,
            f"  identity: {self.identity}",
            f"  code:     {self.code[:16]}",
            f"  persist:  {self.persist}",
        ]
        lines += [f"  closure variable {n}: {fp[:16]}" for n, fp in self.closure.items()]
        lines += [f"  argument {n}: {fp[:16]}" for n, fp in self.arguments.items()]
        for name, why in self.unkeyable.items():
            label = name if " " in name else f"argument {name}"
            lines.append(f"  {label}: cannot be keyed: {why}")
        return "\n".join(lines)


_CLOSURE = "closure variable "


def _unkeyable_part(bad: Mapping[str, str], what: str) -> dict[str, str]:
    """The ``closure``, ``argument`` or ``other`` entries of an ``unkeyable`` map."""
    if what == "closure":
        return {k[len(_CLOSURE) :]: v for k, v in bad.items() if k.startswith(_CLOSURE)}
    if what == "argument":
        return {k: v for k, v in bad.items() if " " not in k}
    return {k: v for k, v in bad.items() if " " in k and not k.startswith(_CLOSURE)}


def _explain_arguments(
    names: Iterable[str], values: Iterable[Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """Fingerprints of the keyable arguments, reasons for the others."""
    prints: dict[str, str] = {}
    bad: dict[str, str] = {}
    for name, value in zip(names, values, strict=True):
        try:
            prints[name] = _token(value, name)
        except UnkeyableError as err:
            bad[name] = f"{err.path} is {err.reason}"
    return prints, bad


def explain(task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheKeyReport:
    """Why calling ``task`` with ``args`` and ``kwargs`` gets the cache key it gets.

    With a ``cache_key_fn`` the key is whatever it returns (its errors propagate); the
    report still shows the parts of the default key, for comparison.

    Raises:
        TypeError: the arguments do not fit the task's signature.
    """
    fn = task.fn
    key_fn = task.options.cache_key_fn
    custom_key = key_fn(fn, args, kwargs) if key_fn is not None else None
    info = _info_for(task)
    names, values = bind(info, args, kwargs)
    bad = {label: f"{path} is {reason}" for label, (path, reason) in info.bad.items()}
    arguments, bad_args = _explain_arguments(names, values)
    bad.update(bad_args)
    key: str | None = None
    if key_fn is not None:
        key = custom_key
    elif not bad:
        key = _digest(_head(info, task), arguments, arguments.values())
    return CacheKeyReport(
        task=task.name,
        key=key,
        identity=info.task_identity(task),
        code=info.code_fp,
        arguments=types.MappingProxyType(arguments),
        unkeyable=types.MappingProxyType(bad),
        custom=key_fn is not None,
        persist=task.options.persist,
        closure=types.MappingProxyType(info.closure),
    )
