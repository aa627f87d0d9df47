"""Value fingerprints: a canonical, type-tagged encoding of argument values, digested.

A fingerprint reads a value through a canonical, type-tagged, self-delimiting encoding: ``1``,
``1.0``, ``True``, ``"1"`` and ``b"1"`` differ, a list differs from a tuple, dicts and sets
do not depend on insertion or hash order. Nothing in it comes from ``repr`` (which may hold
memory addresses) or ``hash()`` (salted per process).

Invariants:

* Two values with the same fingerprint are equal values: the encoding is injective on the
  value (up to SHA-256 collisions). The converse is not promised: equal values may get
  different fingerprints (``1`` and ``1.0``, ``Decimal("1.0")`` and ``Decimal("1.00")``,
  ``0.0`` and ``-0.0``); such calls miss the cache, they never share a wrong entry.
* A value that cannot be read this way is never guessed at: :class:`UnkeyableError` names
  the argument and the path inside it, and the engine runs that call uncached with a
  :class:`~auto_workflow.exceptions.CacheKeyWarning`.
* Self-referencing and very deep values raise :class:`UnkeyableError`, never
  ``RecursionError``.

Keyable: ``None``, ``bool``, ``int``, ``float`` (all NaNs alike), ``complex``, ``str``,
``bytes``, ``bytearray``, ``memoryview``, ``tuple``, ``list``, ``dict``, ``set``,
``frozenset``, ``range``, ``OrderedDict`` (order counts), ``defaultdict``, ``deque``,
``Decimal``, ``Fraction``, ``date``/``datetime``/``time`` (aware ones with their offset and
zone), ``timedelta``, ``timezone``, ``ZoneInfo``, ``UUID``, paths, enum members, importable
classes, importable functions (by name and code), builtin functions, bound methods of
keyable objects, ``functools.partial`` of keyable parts, dataclasses with ``eq=True`` (by
their compared fields), named tuples and other plain subclasses of the builtin containers
and scalars (tagged with their class), numpy arrays and scalars without Python objects (only
when numpy is already imported), and any object whose class defines
``__auto_workflow_key__(self)`` returning a keyable value.

Not keyable: open files, locks, sockets, generators, coroutines, modules, lambdas and
functions or classes defined inside functions, objects that compare by identity and
instances of any other class. For those, pass a value instead, define
``__auto_workflow_key__``, or give the task a ``cache_key_fn``.

A script run as ``__main__`` is named by its module spec or file name (see
:func:`module_label`), so ``python etl.py`` and ``auto-workflow run etl.py:flow`` agree.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import functools
import hashlib
import inspect
import io
import pathlib
import reprlib
import sys
import types
import uuid
import weakref
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = [
    "ATOMS",
    "UNKEYABLE_HINT",
    "UnkeyableError",
    "argument_fingerprint",
    "code_fingerprint",
    "fingerprint",
    "module_label",
    "type_label",
]

UNKEYABLE_HINT = (
    "pass a value instead, define __auto_workflow_key__, or give the task a cache_key_fn"
)
"""Plain values whose encoding is at most this long are spelled out in the key's input."""
_MAX_DEPTH = 100
"""Containers nested deeper than this are unkeyable (they would exhaust the C stack)."""
_BIG = 1 << 16
"""Longer str / bytes payloads enter the stream as their own digest (no copy)."""
_FAST = 8
"""Longer homogeneous sequences of int, float or str are encoded in one piece."""
_HEAPTYPE = 1 << 9
_POINTER = 8 if sys.maxsize > 2**32 else 4

_Out = list[bytes]
_Active = set[int]
_Encoder = Callable[[Any, _Out, _Active], None]


class UnkeyableError(TypeError):
    """A value has no stable value-based key (internal: the engine warns and runs uncached).

    Attributes:
        argument: The parameter name, ``"closure variable <name>"``, ``"task function"``,
            or ``""`` for a bare :func:`fingerprint`.
        path: Where the offending value sits, e.g. ``data['rows'][3]``.
        reason: What it is and why it has no key, e.g. ``a _thread.lock, which has no
            stable value (it compares by identity)``.
    """

    def __init__(self, reason: str, *, argument: str = "", path: str = "value") -> None:
        super().__init__(reason)
        self.reason = reason
        self.argument = argument
        self.path = path
        self._inner: list[str] = []  # path segments, innermost first, added while unwinding
        self._tail = ""

    def __str__(self) -> str:
        head = f"{self.path} is {self.reason}; {UNKEYABLE_HINT}"
        if not self.argument:
            return head
        closure = "closure variable "
        if self.argument.startswith(closure):
            return f"{closure}{self.argument[len(closure) :]!r}: {head}"
        if " " in self.argument:  # "task function"
            return f"{self.argument}: {head}"
        return f"argument {self.argument!r}: {head}"

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"argument": self.argument, "path": self.path}
        return (_rebuild_error, (self.reason, state))

    def _locate(self, argument: str, root: str) -> UnkeyableError:
        self.argument = argument
        self.path = root + self._tail
        return self


def _rebuild_error(reason: str, state: dict[str, str]) -> UnkeyableError:
    return UnkeyableError(reason, **state)


def _inside(err: UnkeyableError, segment: str) -> UnkeyableError:
    err._inner.append(segment)
    return err


# -- names ---------------------------------------------------------------------------------


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def type_label(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def _resolves_to(module: str, qualname: str, target: object) -> bool:
    """Whether ``module:qualname`` names ``target`` (directly or through wrappers)."""
    obj: object = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    for _ in range(8):
        if obj is target:
            return True
        obj = getattr(obj, "__wrapped__", None) or getattr(obj, "__func__", None)
        if obj is None:
            return False
    return False


_CLASS_NAMES: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def _class_name(cls: type, role: str = "a class") -> str:
    """``module:qualname`` of a class that any process can import by that name."""
    name = _CLASS_NAMES.get(cls)
    if name is not None:
        return name
    module, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname:
        raise UnkeyableError(
            f"{role} defined inside a function ({module}.{qualname}), "
            "which has no stable identity across processes"
        )
    static = not cls.__flags__ & _HEAPTYPE  # a C type: its name is unique in the process
    if not static and not _resolves_to(module, qualname, cls):
        raise UnkeyableError(
            f"{role} {module}.{qualname} that cannot be imported by that name, "
            "so it has no stable identity across processes"
        )
    name = f"{module_label(module)}:{qualname}"
    _CLASS_NAMES[cls] = name
    return name


def _function_name(fn: types.FunctionType) -> str:
    module, qualname = fn.__module__, fn.__qualname__
    if fn.__name__ == "<lambda>":
        raise UnkeyableError("a lambda, which has no stable identity across processes")
    if "<locals>" in qualname:
        raise UnkeyableError(
            f"a function defined inside another function ({module}.{qualname}), "
            "which has no stable identity across processes"
        )
    if not _resolves_to(module, qualname, fn):
        raise UnkeyableError(
            f"the function {module}.{qualname}, which cannot be imported by that name, "
            "so it has no stable identity across processes"
        )
    return f"{module_label(module)}:{qualname}"


def module_label(module: str) -> str:
    """How a module is named in keys: a script run as ``__main__`` by its file name.

    ``python etl.py`` runs the file as ``__main__``, while ``auto-workflow run etl.py:flow``
    (and ``import etl``) load it as ``etl``: both must give its tasks the same keys. So
    ``__main__`` is named by its module spec (``python -m pkg.etl``) or its file's stem.
    """
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and isinstance(spec.name, str):
        return spec.name  # python -m package.module
    path = getattr(main, "__file__", None)
    return pathlib.Path(path).stem if isinstance(path, str) and path else module


# -- atoms: values encoded in one piece ----------------------------------------------------
#
# Every encoding starts with a one-byte tag that fixes how the rest reads, and every piece
# is length-prefixed or terminated, so the stream parses one way only. Tags in use:
#   N T F . !  None True False Ellipsis NotImplemented    i f j  int float complex
#   s b a m    str bytes bytearray memoryview             r      range
#   D Q U      Decimal Fraction UUID                      y z u w Z Y  date datetime time
#   ( [ { S R  tuple list dict set frozenset                           timedelta timezone zone
#   O X K V    OrderedDict defaultdict deque fast-seq     e t    enum member, class
#   p q B M P  function builtin bound-builtin method partial          c ~  code, empty cell
#   d k h L    dataclass builtin-subclass hook path       A G    numpy array, numpy scalar


def _int(v: int) -> bytes:
    return b"i%x;" % v


def _float(v: float) -> bytes:
    return b"f" + v.hex().encode() + b";"  # exact; every NaN reads "nan", so all NaNs agree


def _complex(v: complex) -> bytes:
    return b"j" + f"{v.real.hex()};{v.imag.hex()};".encode()


def _blob(tag: bytes, data: bytes | bytearray | memoryview) -> bytes:
    size = len(data)
    if size > _BIG:
        return b"%s%d#%s" % (tag, size, hashlib.sha256(data).digest())
    return b"%s%d:%s" % (tag, size, data)


def _str(v: str) -> bytes:
    return _blob(b"s", v.encode("utf-8", "surrogatepass"))


def _bytes(v: bytes) -> bytes:
    return _blob(b"b", v)


def _bytearray(v: bytearray) -> bytes:
    return _blob(b"a", v)


def _memoryview(v: memoryview) -> bytes:
    try:
        head = b"m" + _str(v.format) + _ints(v.shape or ())
        data = v.cast("B") if v.c_contiguous else v.tobytes()
    except ValueError as exc:
        raise UnkeyableError("a released memoryview, which has no value") from exc
    return head + _blob(b"b", data)


def _ints(values: Iterable[int]) -> bytes:
    items = [_int(i) for i in values]
    return b"(%d:%s" % (len(items), b"".join(items))


def _none(v: None) -> bytes:
    return b"N"


def _bool(v: bool) -> bytes:
    return b"T" if v else b"F"


def _ellipsis(v: object) -> bytes:
    return b"."


def _not_implemented(v: object) -> bytes:
    return b"!"


def _range(v: range) -> bytes:
    return b"r%x;%x;%x;" % (v.start, v.stop, v.step)


def _decimal(v: decimal.Decimal) -> bytes:
    return b"D" + _str(str(v))


def _fraction(v: fractions.Fraction) -> bytes:
    return b"Q%x;%x;" % (v.numerator, v.denominator)


def _uuid(v: uuid.UUID) -> bytes:
    return b"U%x;" % v.int


def _date(v: dt.date) -> bytes:
    return b"y%d,%d,%d;" % (v.year, v.month, v.day)


def _timedelta(v: dt.timedelta) -> bytes:
    return b"w%d,%d,%d;" % (v.days, v.seconds, v.microseconds)


def _timezone(v: dt.timezone) -> bytes:
    return b"Z" + _timedelta(v.utcoffset(None)) + _str(v.tzname(None))


def _zone(v: zoneinfo.ZoneInfo) -> bytes:
    if v.key is None:
        raise UnkeyableError("a ZoneInfo loaded from a file, which has no key to name it by")
    return b"Y" + _str(v.key)


def _tz_part(tz: dt.tzinfo | None, offset: dt.timedelta | None, name: str | None) -> bytes:
    """The zone of an aware date or time: its offset (which equality uses) and its identity."""
    if tz is None:
        return b"N"
    head = b"o" + (b"N" if offset is None else _timedelta(offset))
    if type(tz) is dt.timezone:
        return head + _timezone(tz)
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return head + _zone(tz)
    return head + b"x" + _str(type_label(type(tz))) + _str(name or "")


def _datetime(v: dt.datetime) -> bytes:
    fields = (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold)
    return b"z%d,%d,%d,%d,%d,%d,%d,%d;" % fields + _tz_part(v.tzinfo, v.utcoffset(), v.tzname())


def _time(v: dt.time) -> bytes:
    fields = (v.hour, v.minute, v.second, v.microsecond, v.fold)
    return b"u%d,%d,%d,%d,%d;" % fields + _tz_part(v.tzinfo, v.utcoffset(), v.tzname())


ATOMS: dict[type, Callable[[Any], bytes]] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    complex: _complex,
    str: _str,
    bytes: _bytes,
    bytearray: _bytearray,
    memoryview: _memoryview,
    type(Ellipsis): _ellipsis,
    type(NotImplemented): _not_implemented,
    range: _range,
    decimal.Decimal: _decimal,
    fractions.Fraction: _fraction,
    uuid.UUID: _uuid,
    dt.date: _date,
    dt.datetime: _datetime,
    dt.time: _time,
    dt.timedelta: _timedelta,
    dt.timezone: _timezone,
    zoneinfo.ZoneInfo: _zone,
}


# -- the walk ------------------------------------------------------------------------------


def _encode(value: Any, out: _Out, active: _Active) -> None:
    """Append the canonical encoding of ``value`` to ``out``."""
    cls = type(value)
    atom = ATOMS.get(cls)
    if atom is not None:
        out.append(atom(value))
        return
    encoder = _COMPOUND.get(cls) or _handler(cls)
    encoder(value, out, active)


def _enter(value: object, active: _Active) -> None:
    """Mark a container as being walked: refuses cycles and runaway depth."""
    key = id(value)
    if key in active:
        label = type_label(type(value))
        raise UnkeyableError(f"{_article(label)} {label} that contains itself")
    if len(active) >= _MAX_DEPTH:
        raise UnkeyableError(f"a value nested more than {_MAX_DEPTH} levels deep")
    active.add(key)


def _child(value: Any, out: _Out, active: _Active, segment: str) -> None:
    try:
        _encode(value, out, active)
    except UnkeyableError as err:
        raise _inside(err, segment) from None


def _piece(value: Any, active: _Active, segment: str) -> bytes:
    """The encoding of ``value`` on its own (to be sorted among its siblings)."""
    out: _Out = []
    _child(value, out, active, segment)
    return b"".join(out)


def _fast_sequence(tag: bytes, items: Any, out: _Out, *, ordered: bool) -> bool:
    """Encode a long sequence of only ints, only floats or only strs in one piece."""
    kinds = set(map(type, items))
    if len(kinds) != 1:
        return False
    kind = kinds.pop()
    head = b"V%s%d:" % (tag, len(items))
    if kind is int:
        text = ",".join(map(hex, items if ordered else sorted(items)))
        out += (head, b"i", _str(text))
    elif kind is float:
        texts = map(float.hex, items)
        out += (head, b"f", _str(",".join(texts if ordered else sorted(texts))))
    elif kind is str:
        strs = items if ordered else sorted(items)
        out += (head, b"s", _str(",".join(map(str, map(len, strs)))), _str("".join(strs)))
    else:
        return False
    return True


def _sequence(tag: bytes, items: Any, out: _Out, active: _Active) -> None:
    if len(items) > _FAST and _fast_sequence(tag, items, out, ordered=True):
        return
    _enter(items, active)
    out.append(b"%s%d:" % (tag, len(items)))
    for index, item in enumerate(items):
        _child(item, out, active, f"[{index}]")
    active.discard(id(items))


def _tuple(v: tuple[Any, ...], out: _Out, active: _Active) -> None:
    _sequence(b"(", v, out, active)


def _list(v: list[Any], out: _Out, active: _Active) -> None:
    _sequence(b"[", v, out, active)


def _unordered(tag: bytes, items: Any, out: _Out, active: _Active) -> None:
    if len(items) > _FAST and _fast_sequence(tag, items, out, ordered=False):
        return
    _enter(items, active)
    pieces = sorted(_piece(item, active, " (a set element)") for item in items)
    out.append(b"%s%d:" % (tag, len(pieces)))
    out += pieces
    active.discard(id(items))


def _set(v: set[Any], out: _Out, active: _Active) -> None:
    _unordered(b"S", v, out, active)


def _frozenset(v: frozenset[Any], out: _Out, active: _Active) -> None:
    _unordered(b"R", v, out, active)


def _key_segment(key: object) -> str:
    return f"[{reprlib.repr(key)}]"


def _entries(mapping: Mapping[Any, Any], out: _Out, active: _Active, *, ordered: bool) -> None:
    """Key/value pairs in insertion order, or sorted so insertion order does not count."""
    if ordered:
        for key, value in mapping.items():
            _child(key, out, active, " (a key)")
            _child(value, out, active, _key_segment(key))
    elif all(type(key) is str for key in mapping):
        for key in sorted(mapping):
            out.append(_str(key))
            _child(mapping[key], out, active, _key_segment(key))
    else:
        pairs = sorted(
            (_piece(key, active, " (a key)"), _piece(value, active, _key_segment(key)))
            for key, value in mapping.items()
        )
        for pair in pairs:
            out += pair


def _mapping(tag: bytes, v: Mapping[Any, Any], out: _Out, active: _Active, ordered: bool) -> None:
    _enter(v, active)
    out.append(b"%s%d:" % (tag, len(v)))
    _entries(v, out, active, ordered=ordered)
    active.discard(id(v))


def _dict(v: dict[Any, Any], out: _Out, active: _Active) -> None:
    _mapping(b"{", v, out, active, ordered=False)


def _ordered_dict(v: collections.OrderedDict[Any, Any], out: _Out, active: _Active) -> None:
    _mapping(b"O", v, out, active, ordered=True)  # OrderedDict equality counts order


def _defaultdict(v: collections.defaultdict[Any, Any], out: _Out, active: _Active) -> None:
    out.append(b"X")
    _child(v.default_factory, out, active, ".default_factory")
    _mapping(b"{", v, out, active, ordered=False)


def _deque(v: collections.deque[Any], out: _Out, active: _Active) -> None:
    out.append(b"K" + (b"N" if v.maxlen is None else _int(v.maxlen)))
    _sequence(b"[", v, out, active)


def _code(code: types.CodeType, out: _Out, active: _Active) -> None:
    """A code object by what it does (never its repr, which holds addresses)."""
    out.append(b"c")
    counts = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    out.append(_ints(counts))
    out += (_bytes(code.co_code), _bytes(getattr(code, "co_exceptiontable", b"")))
    out.append(_str(code.co_name))
    for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        _encode(names, out, active)
    _child(code.co_consts, out, active, ".co_consts")


_COMPOUND: dict[type, _Encoder] = {
    tuple: _tuple,
    list: _list,
    dict: _dict,
    set: _set,
    frozenset: _frozenset,
    collections.OrderedDict: _ordered_dict,
    collections.defaultdict: _defaultdict,
    collections.deque: _deque,
    types.CodeType: _code,
}


# -- everything else: chosen once per class ------------------------------------------------


def _enum(v: enum.Enum, out: _Out, active: _Active) -> None:
    out += (b"e", _str(_class_name(type(v), "an enum")))
    if isinstance(v, enum.Flag):
        _child(v._value_, out, active, ".value")  # combined flags may have no name
    else:
        out.append(_str(v._name_))


def _class(v: type, out: _Out, active: _Active) -> None:
    out += (b"t", _str(_class_name(v)))


_CODE_FPS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[types.CodeType, str]] = (
    weakref.WeakKeyDictionary()
)


def code_fingerprint(fn: types.FunctionType) -> str:
    """Digest of a function's source text (decorators included), else of its code object.

    Lambdas also add their code object: several lambdas on one line share their source.
    """
    code = fn.__code__
    cached = _CODE_FPS.get(fn)
    if cached is not None and cached[0] is code:
        return cached[1]
    try:
        source: str | None = inspect.getsource(code)
    except (OSError, TypeError):
        source = None
    out: _Out = [] if source is None else [_str(source)]
    if source is None or code.co_name == "<lambda>":
        _code(code, out, set())
    digest = hashlib.sha256(b"".join(out)).hexdigest()
    _CODE_FPS[fn] = (code, digest)
    return digest


def _function(fn: types.FunctionType, out: _Out, active: _Active) -> None:
    out += (b"p", _str(_function_name(fn)), _str(code_fingerprint(fn)))


def _builtin(fn: types.BuiltinFunctionType, out: _Out, active: _Active) -> None:
    owner = fn.__self__
    if owner is None or isinstance(owner, types.ModuleType):
        out += (b"q", _str(f"{fn.__module__}:{fn.__qualname__}"))
        return
    out += (b"B", _str(fn.__name__))
    _child(owner, out, active, ".__self__")


def _descriptor(fn: Any, out: _Out, active: _Active) -> None:
    owner: type = fn.__objclass__
    out += (b"q", _str(f"{_class_name(owner)}.{fn.__name__}"))


def _method(fn: types.MethodType, out: _Out, active: _Active) -> None:
    out.append(b"M")
    _child(fn.__self__, out, active, ".__self__")
    _child(fn.__func__, out, active, ".__func__")


def _method_wrapper(fn: Any, out: _Out, active: _Active) -> None:
    out += (b"B", _str(fn.__name__))
    _child(fn.__self__, out, active, ".__self__")


def _partial(fn: functools.partial[Any], out: _Out, active: _Active) -> None:
    if fn.__dict__:
        raise UnkeyableError("a functools.partial with attributes, which the key cannot see")
    _enter(fn, active)
    out.append(b"P")
    _child(fn.func, out, active, ".func")
    _child(fn.args, out, active, ".args")
    _child(fn.keywords, out, active, ".keywords")
    active.discard(id(fn))


_CALLABLES: dict[type, _Encoder] = {
    types.FunctionType: _function,
    types.BuiltinFunctionType: _builtin,
    types.MethodDescriptorType: _descriptor,
    types.WrapperDescriptorType: _descriptor,
    types.ClassMethodDescriptorType: _descriptor,
    types.MethodWrapperType: _method_wrapper,
    types.MethodType: _method,
    functools.partial: _partial,
}

_FIELDS: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _compared_fields(cls: type) -> tuple[str, ...]:
    """The fields a dataclass's ``__eq__`` compares (they define its value)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
        _FIELDS[cls] = names
    return names


def _dataclass(v: Any, out: _Out, active: _Active) -> None:
    cls = type(v)
    names = _compared_fields(cls)
    _enter(v, active)
    out += (b"d", _str(_class_name(cls, "an instance of a class")), b"%d:" % len(names))
    for name in names:
        out.append(_str(name))
        _child(getattr(v, name), out, active, f".{name}")
    active.discard(id(v))


def _path(v: pathlib.PurePath, out: _Out, active: _Active) -> None:
    out += (b"L", _str(_class_name(type(v), "an instance of a class")), _str(str(v)))


def _hook(v: Any, out: _Out, active: _Active) -> None:
    cls = type(v)
    _enter(v, active)
    out += (b"h", _str(_class_name(cls, "an instance of a class")))
    try:
        value = v.__auto_workflow_key__()
    except Exception as exc:
        label = type_label(cls)
        raise UnkeyableError(
            f"{_article(label)} {label} whose __auto_workflow_key__() raised {exc!r}"
        ) from exc
    _child(value, out, active, ".__auto_workflow_key__()")
    active.discard(id(v))


def _ndarray(v: Any, out: _Out, active: _Active) -> None:
    if v.dtype.hasobject:
        raise UnkeyableError(
            f"a numpy array of dtype {v.dtype}, whose Python objects have no stable bytes"
        )
    out.append(b"A")
    _encode(v.dtype.descr, out, active)
    out += (_ints(v.shape), _blob(b"b", v.tobytes(order="C")))


def _numpy_scalar(v: Any, out: _Out, active: _Active) -> None:
    if v.dtype.hasobject:
        raise UnkeyableError("a numpy object scalar, which has no stable bytes")
    out.append(b"G")
    _encode(v.dtype.descr, out, active)
    out.append(_blob(b"b", v.tobytes()))


def _base_value(base: type, v: Any) -> Any:
    """The plain builtin value inside an instance of a subclass (no overridable methods)."""
    if base in (tuple, list, set, frozenset):
        return base(base.__iter__(v))
    if base is dict:
        return dict(dict.items(v))
    if base is int:
        return int.__int__(v)
    if base is float:
        return float.__float__(v)
    if base is str:
        return str.__str__(v)
    return bytes.__bytes__(v)


def _subclass(base: type, v: Any, out: _Out, active: _Active) -> None:
    state = getattr(v, "__dict__", None)
    if state:
        label = type_label(type(v))
        raise UnkeyableError(
            f"{_article(label)} {label} with instance attributes ({', '.join(sorted(state))}), "
            "which the key cannot see"
        )
    out += (b"k", _str(_class_name(type(v), "an instance of a class")))
    _encode(_base_value(base, v), out, active)


def _reject(reason: str, v: Any, out: _Out, active: _Active) -> None:
    raise UnkeyableError(reason)


def _choose_numpy(cls: type) -> _Encoder | None:
    numpy = sys.modules.get("numpy")  # never imported here: only values it already made
    if numpy is None:
        return None
    if cls is numpy.ndarray:
        return _ndarray
    return _numpy_scalar if issubclass(cls, numpy.generic) else None


_SUBCLASS_BASES = (int, float, str, bytes, tuple, list, dict, set, frozenset)


def _plain_subclass_base(cls: type) -> type | None:
    """The builtin ``cls`` derives from, if every class in between is plain Python.

    Plain means: instance state lives in ``__dict__`` (checked per value), not in slots
    or C fields the key could not see.
    """
    base = next((b for b in cls.__mro__ if b in _SUBCLASS_BASES), None)
    if base is None or cls.__basicsize__ > base.__basicsize__ + _POINTER:
        return None
    for klass in cls.__mro__[: cls.__mro__.index(base)]:
        slots = klass.__dict__.get("__slots__")
        if slots is None and not klass.__dictoffset__:
            return None  # a C class: it may hold state of its own
        if slots is not None and slots != ():
            return None
    return base


def _choose_subclass(cls: type) -> _Encoder | None:
    base = _plain_subclass_base(cls)
    return None if base is None else functools.partial(_subclass, base)


def _choose(cls: type) -> _Encoder | None:
    if callable(getattr(cls, "__auto_workflow_key__", None)):
        return _hook
    if issubclass(cls, enum.Enum):
        return _enum
    if issubclass(cls, type):
        return _class
    encoder = _CALLABLES.get(cls) or _choose_numpy(cls)
    if encoder is not None:
        return encoder
    if dataclasses.is_dataclass(cls):
        params = getattr(cls, "__dataclass_params__", None)
        return _dataclass if getattr(params, "eq", False) else None
    if issubclass(cls, pathlib.PurePath):
        return _path
    return _choose_subclass(cls)


def _why_unkeyable(cls: type) -> str:
    label = type_label(cls)
    if issubclass(cls, io.IOBase):
        detail = "it is an open file or stream"
    elif issubclass(cls, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        detail = "it is used up as it runs"
    elif dataclasses.is_dataclass(cls):
        detail = "it is a dataclass with eq=False, so it compares by identity"
    elif cls.__eq__ is object.__eq__:
        detail = "it compares by identity"
    else:
        detail = "it is not a type the cache key can read"
    return f"{_article(label)} {label}, which has no stable value ({detail})"


_HANDLERS: weakref.WeakKeyDictionary[type, _Encoder] = weakref.WeakKeyDictionary()


def _handler(cls: type) -> _Encoder:
    """How to encode instances of ``cls`` (a class outside the fixed tables), cached."""
    encoder = _HANDLERS.get(cls)
    if encoder is None:
        encoder = _choose(cls) or functools.partial(_reject, _why_unkeyable(cls))
        _HANDLERS[cls] = encoder
    return encoder


# -- public: one value ---------------------------------------------------------------------


def _join_path(segments: list[str]) -> str:
    """The path below the root, its middle elided when it is very deep."""
    if len(segments) > 12:
        hidden = len(segments) - 10
        segments = [*segments[:6], f"...({hidden} levels)...", *segments[-4:]]
    return "".join(segments)


def _fingerprint(value: Any) -> str:
    out: _Out = []
    try:
        _encode(value, out, set())
    except UnkeyableError as err:
        err._tail = _join_path(err._inner[::-1])
        raise err._locate("", "value") from None
    except RecursionError:
        deep = UnkeyableError("a value nested too deeply to key")
        raise deep._locate("", "value") from None
    return hashlib.sha256(b"".join(out)).hexdigest()


def fingerprint(value: object) -> str:
    """A stable hex digest of ``value``: equal only for equal values, in any process.

    Raises:
        UnkeyableError: ``value`` (or something inside it) has no stable value; the error
            says where and why.
    """
    atom = ATOMS.get(type(value))
    if atom is not None:
        return hashlib.sha256(atom(value)).hexdigest()
    return _fingerprint(value)


def argument_fingerprint(value: object, argument: str, root: str) -> str:
    try:
        return fingerprint(value)
    except UnkeyableError as err:
        raise err._locate(argument, root) from None
