"""Default cache keys: stable across processes, equal only for equal values, never guessed."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import functools
import inspect
import math
import os
import pathlib
import struct
import subprocess
import sys
import threading
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auto_workflow import task
from auto_workflow._core._model import ArtifactRef
from auto_workflow._results._functions import bind, fn_info
from auto_workflow._results._keys import (
    CacheKeyReport,
    UnkeyableError,
    default_cache_key,
    explain,
    fingerprint,
)


@task(cache_ttl=60)
def add(a: int, b: int = 2) -> int:
    return a + b


@task(cache_ttl=60)
def gather(*items: Any, scale: int = 1, **options: Any) -> int:
    return len(items) * scale + len(options)


def key(t: Any, *args: Any, **kwargs: Any) -> str:
    return default_cache_key(t, args, kwargs)


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Shade(enum.Enum):
    RED = 1


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    note: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(eq=False)
class Handle:
    x: int


class Pair(NamedTuple):
    left: int
    right: int


class Label(str):
    pass


class Slotted(str):
    __slots__ = ("extra",)


class Plain:
    pass


class Versioned:
    """A class that opts in to keys through the extension hook."""

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self.lock = threading.Lock()  # not part of its value

    def __auto_workflow_key__(self) -> tuple[str, int]:
        return (self.name, self.version)


class Broken:
    def __auto_workflow_key__(self) -> object:
        raise RuntimeError("no key today")


def helper(value: int) -> int:
    return value


def other_helper(value: int) -> int:
    return value


def scaled_task(factor: Any) -> Any:
    @task(name="scaled", cache_ttl=60)
    def scaled(x: int) -> Any:
        return x * factor

    return scaled


def generator() -> Iterator[int]:
    yield 1


# -- sharing a key -------------------------------------------------------------------------


def test_defaults_and_keywords_bind_to_one_key() -> None:
    assert key(add, 1) == key(add, a=1) == key(add, 1, 2) == key(add, b=2, a=1)
    assert key(add, 1, 3) != key(add, 1)


def test_keyword_order_does_not_count() -> None:
    assert key(gather, 1, x=1, y=2) == key(gather, 1, y=2, x=1)
    assert key(gather, 1, x=1, y=2) != key(gather, 1, x=2, y=1)
    assert key(gather, 1, 2) != key(gather, 2, 1)


def test_dict_insertion_order_does_not_count_but_ordered_dict_order_does() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({1: "a", (2, 3): "b"}) == fingerprint({(2, 3): "b", 1: "a"})
    forward = collections.OrderedDict([("a", 1), ("b", 2)])
    backward = collections.OrderedDict([("b", 2), ("a", 1)])
    assert forward != backward
    assert fingerprint(forward) != fingerprint(backward)


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"rows": [[1, 2], [3, 4]], "name": "x"}, {"name": "x", "rows": [[1, 2], [3, 4]]}),
        (frozenset(WORDS), frozenset(reversed(WORDS))),
        ({"a", "b", "c"}, {"c", "b", "a"}),
        (set(range(50)), set(range(49, -1, -1))),
        ({(1, "a"), (2, "b")}, {(2, "b"), (1, "a")}),
        (
            dt.datetime(2024, 3, 1, 12, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
            dt.datetime(2024, 3, 1, 12, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
        ),
        (decimal.Decimal("3.14"), decimal.Decimal(314) / 100),
        (Point(1, 2), Point(1, 2)),
        (Pair(1, 2), Pair(*[1, 2])),
        ([1.5] * 20, [3 / 2] * 20),
        (list(range(100)), [int(str(i)) for i in range(100)]),
        (["text"] * 20, ["te" + "xt" for _ in range(20)]),
        (b"x" * 100_000, bytes(bytearray(b"x" * 100_000))),
    ],
)
def test_equal_values_share_a_fingerprint(first: Any, second: Any) -> None:
    assert first == second
    assert fingerprint(first) == fingerprint(second)


def test_all_nans_share_a_fingerprint() -> None:
    payload_nan = struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0]
    assert fingerprint(payload_nan) == fingerprint(-math.nan) == fingerprint(math.nan)


def test_compare_false_fields_are_not_part_of_a_dataclass_value() -> None:
    assert Point(1, 2, note="a") == Point(1, 2, note="b")
    assert fingerprint(Point(1, 2, note="a")) == fingerprint(Point(1, 2, note="b"))


# -- never a wrong hit ---------------------------------------------------------------------

UTC = dt.UTC
PARIS = zoneinfo.ZoneInfo("Europe/Paris")

DISTINCT_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**100,
    1.0,
    0.5,
    math.inf,
    math.nan,
    1j,
    "1",
    "",
    b"1",
    b"",
    bytearray(b"1"),
    memoryview(b"1"),
    memoryview(b"\x01\x00\x00\x00").cast("i"),
    (1,),
    [1],
    (),
    [],
    {},
    set(),
    frozenset(),
    {1},
    frozenset({1}),
    {1: 2},
    {"1": 2},
    {2: 1},
    ("ab", "c"),
    ("a", "bc"),
    [1, 2],
    [12],
    [[1], 2],
    [1, [2]],
    list(range(9)),
    tuple(range(9)),
    list(range(1, 10)),
    [str(i) for i in range(9)],
    ["0", "12", "3", "4", "5", "6", "7", "8", "9"],
    ["01", "2", "3", "4", "5", "6", "7", "8", "9"],
    [float(i) for i in range(9)],
    [True] * 9,
    range(3),
    range(4),
    decimal.Decimal("1"),
    fractions.Fraction(1, 3),
    fractions.Fraction(1, 2),
    dt.date(2024, 1, 2),
    dt.datetime(2024, 1, 2),
    dt.datetime(2024, 1, 2, tzinfo=UTC),
    dt.datetime(2024, 1, 2, tzinfo=PARIS),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    dt.time(1, 2),
    dt.time(1, 2, tzinfo=UTC),
    dt.timedelta(days=1),
    dt.timedelta(seconds=1),
    UTC,
    PARIS,
    uuid.UUID(int=1),
    pathlib.PurePosixPath("a/b"),
    pathlib.PureWindowsPath("a/b"),
    Color.RED,
    Color.GREEN,
    Shade.RED,
    Perm.R,
    Perm.R | Perm.W,
    Color,
    Shade,
    int,
    helper,
    other_helper,
    len,
    math.sqrt,
    str.upper,
    dict.fromkeys,
    "abc".upper,
    functools.partial(helper, 1),
    functools.partial(helper, 2),
    Point(1, 2),
    Point(2, 1),
    Pair(1, 2),
    Label("1"),
    ArtifactRef("a1"),
    ArtifactRef("a1", store="filesystem"),
    collections.OrderedDict([(1, 2)]),
    collections.defaultdict(list, {1: 2}),
    collections.defaultdict(set, {1: 2}),
    collections.deque([1]),
    collections.deque([1], maxlen=3),
    collections.Counter("ab"),
    Versioned("a", 1),
    Versioned("a", 2),
    ...,
]


def test_distinct_values_get_distinct_fingerprints() -> None:
    prints = [fingerprint(v) for v in DISTINCT_VALUES]
    clashes = [v for v, fp in zip(DISTINCT_VALUES, prints, strict=True) if prints.count(fp) > 1]
    assert not clashes


def test_one_changed_element_in_a_large_list_changes_the_fingerprint() -> None:
    numbers = list(range(200_000))
    before = fingerprint(numbers)
    numbers[123_456] = -1
    assert fingerprint(numbers) != before
    data = bytearray(200_000)
    before = fingerprint(data)
    data[-1] = 1
    assert fingerprint(data) != before


def test_persist_option_is_part_of_the_key() -> None:
    def body(a: int) -> int:
        return a

    assert key(task(name="t")(body), 1) != key(task(name="t", persist=True)(body), 1)


def test_task_name_is_part_of_the_key() -> None:
    def body(a: int) -> int:
        return a

    assert key(task(name="one")(body), 1) != key(task(name="two")(body), 1)


def test_closure_values_are_part_of_the_key() -> None:
    double, triple, double_again = scaled_task(2), scaled_task(3), scaled_task(2)
    assert key(double, 1) != key(triple, 1)
    assert key(double, 1) == key(double_again, 1)


def test_closure_values_are_read_once_so_side_effects_keep_the_key() -> None:
    calls: list[int] = []

    @task(cache_ttl=60)
    def record(x: int) -> int:
        calls.append(x)
        return x

    before = key(record, 1)
    calls.append(1)
    assert key(record, 1) == before


# -- the same key in every process ---------------------------------------------------------

MODULE = """
import dataclasses
import datetime
import enum
import sys

from auto_workflow import task
from auto_workflow._results._keys import default_cache_key, fingerprint


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


def helper(value):
    return value


@task(cache_ttl=60)
def load(name, tags, options, point, color, when, limit=10):
    return BODY


def main():
    numpy_before = "numpy" in sys.modules
    args = (
        "rows",
        frozenset({"alpha", "beta", "gamma", "delta"}),
        {"z": [1, 2.5], "a": {"nested": (True, None)}, 3: b"raw"},
        Point(1, 2.5),
        Color.RED,
        datetime.datetime(2024, 3, 1, 12, 30, 15, 500),
    )
    print(default_cache_key(load, args, {}))
    print(fingerprint(helper), fingerprint(Point), fingerprint({"x", "y", "z"}))
    print(numpy_before == ("numpy" in sys.modules))
"""


def run_module(directory: pathlib.Path, body: str, seed: str) -> list[str]:
    (directory / "keyed_module.py").write_text(MODULE.replace("BODY", body))
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import keyed_module; keyed_module.main()"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_keys_are_equal_in_fresh_interpreters_and_change_with_the_body(
    tmp_path: pathlib.Path,
) -> None:
    first = run_module(tmp_path, "name", "1")
    second = run_module(tmp_path, "name", "2")
    assert first == second
    assert len(first[0]) == 64
    assert first[2] == "True"  # fingerprinting never imports numpy
    edited = run_module(tmp_path, "name.upper()", "1")
    assert edited[0] != first[0]
    assert edited[1] == first[1]  # only the task changed, not the helper


# -- unkeyable values are never guessed at -------------------------------------------------


def make_unkeyable(kind: str, tmp_path: pathlib.Path, stack: contextlib.ExitStack) -> Any:
    if kind == "open file":
        return stack.enter_context((tmp_path / "f.txt").open("w"))
    if kind == "lock":
        return threading.Lock()
    if kind == "lambda":
        return lambda: 1
    if kind == "object":
        return object()
    gen = generator()
    stack.callback(gen.close)
    return gen


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("open file", "open file"),
        ("lock", "a _thread.lock"),
        ("lambda", "a lambda"),
        ("object", "compares by identity"),
        ("generator", "a generator"),
    ],
)
def test_unkeyable_argument_names_argument_and_path(
    tmp_path: pathlib.Path, kind: str, words: str
) -> None:
    with contextlib.ExitStack() as stack:
        value = make_unkeyable(kind, tmp_path, stack)
        with pytest.raises(UnkeyableError) as info:
            key(add, value)
        assert (info.value.argument, info.value.path) == ("a", "a")
        assert words in str(info.value)
        with pytest.raises(UnkeyableError) as nested:
            key(add, 1, {"rows": [0, value]})
        assert (nested.value.argument, nested.value.path) == ("b", "b['rows'][1]")
        assert str(nested.value).startswith("argument 'b': b['rows'][1] is ")
        assert words in str(nested.value)


def test_unkeyable_message_says_what_to_do() -> None:
    with pytest.raises(UnkeyableError) as info:
        key(add, 1, {"rows": [0, 1, 2, threading.Lock()]})
    message = str(info.value)
    assert message.startswith(
        "argument 'b': b['rows'][3] is a _thread.lock, which has no stable value"
    )
    assert "__auto_workflow_key__" in message
    assert "cache_key_fn" in message
    assert isinstance(info.value, TypeError)


def with_attribute() -> Label:
    label = Label("x")
    label.tag = "x"  # type: ignore[attr-defined]  # state the key could not see
    return label


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (Plain, "compares by identity"),
        (lambda: Handle(1), "eq=False"),
        (with_attribute, "instance attributes (tag)"),
        (lambda: Slotted("x"), "Slotted"),
        (lambda: scaled_task(1).fn, "defined inside another function"),
        (lambda: inspect, "a module"),
        (Broken, "no key today"),
    ],
    ids=["plain", "eq-false", "attributes", "slots", "local-function", "module", "broken-hook"],
)
def test_values_without_a_stable_value_are_unkeyable(make: Any, words: str) -> None:
    with pytest.raises(UnkeyableError) as info:
        fingerprint(make())
    assert info.value.argument == ""
    assert words in str(info.value)


def test_local_class_instances_are_unkeyable() -> None:
    @dataclasses.dataclass(frozen=True)
    class Local:
        x: int

    with pytest.raises(UnkeyableError, match="defined inside a function"):
        fingerprint(Local(1))
    with pytest.raises(UnkeyableError, match="defined inside a function"):
        fingerprint(Local)


def test_self_referencing_containers_are_unkeyable() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(UnkeyableError, match="contains itself") as info:
        fingerprint(loop)
    assert info.value.path == "value[1]"
    table: dict[str, Any] = {}
    table["self"] = {"again": table}
    with pytest.raises(UnkeyableError, match="contains itself"):
        fingerprint(table)


def test_very_deep_values_are_unkeyable_not_a_recursion_error() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(UnkeyableError, match="nested"):
        fingerprint(deep)
    nested: Any = {}
    for _ in range(5000):
        nested = {"k": nested}
    with pytest.raises(UnkeyableError, match="nested"):
        key(add, nested)


def test_unkeyable_closure_value_names_the_closure_variable() -> None:
    # Two factory-made tasks closing over different objects must never share entries, and
    # an object has no value to key: such a task's calls run uncached.
    locked = scaled_task(threading.Lock())
    with pytest.raises(UnkeyableError) as info:
        key(locked, 1)
    assert info.value.argument == "closure variable factor"
    assert str(info.value).startswith("closure variable 'factor': factor is a _thread.lock")


def test_arguments_that_do_not_bind_raise_a_plain_type_error() -> None:
    for args, kwargs in [((), {}), ((1, 2, 3), {}), ((1,), {"a": 1}), ((1,), {"c": 1})]:
        with pytest.raises(TypeError) as info:
            default_cache_key(add, args, kwargs)
        assert not isinstance(info.value, UnkeyableError)


# -- the extension hook --------------------------------------------------------------------


def test_hook_gives_a_class_value_semantics() -> None:
    assert fingerprint(Versioned("a", 1)) == fingerprint(Versioned("a", 1))
    assert fingerprint(Versioned("a", 1)) != fingerprint(Versioned("a", 2))
    assert fingerprint(Versioned("a", 1)) != fingerprint(("a", 1))


# -- binding by hand -----------------------------------------------------------------------


def sample(a: int, b: int = 2, c: int = 3) -> None:
    pass


@given(
    args=st.lists(st.integers(), max_size=4),
    kwargs=st.dictionaries(st.sampled_from("abcd"), st.integers(), max_size=4),
)
def test_binding_by_hand_matches_signature_bind(args: list[int], kwargs: dict[str, int]) -> None:
    info = fn_info(sample)
    try:
        bound = inspect.signature(sample).bind(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            bind(info, tuple(args), kwargs)
        return
    bound.apply_defaults()
    names, values = bind(info, tuple(args), kwargs)
    assert list(zip(names, values, strict=True)) == list(bound.arguments.items())


# -- explaining keys -----------------------------------------------------------------------


def test_explain_reports_the_key_and_its_parts() -> None:
    report = explain(add, (1,), {})
    assert isinstance(report, CacheKeyReport)
    assert report.task == "add"
    assert report.key == key(add, 1)
    assert report.identity == f"{__name__}:add"
    assert len(report.code) == 64
    assert list(report.arguments) == ["a", "b"]
    assert report.arguments["a"] == "=i1;"  # short plain values are spelled out
    assert report.arguments["b"] == "=i2;"
    big = "x" * 100
    assert explain(add, (big,), {}).arguments["a"] == fingerprint(big)
    assert dict(report.unkeyable) == {}
    assert report.custom is False


@pytest.mark.parametrize(
    ("t", "args", "kwargs"),
    [
        (add, (1,), {}),
        (gather, (1, "x"), {"scale": 2, "z": [1]}),
        (gather, (), {}),
        (task(name="renamed", persist=True)(helper), (5,), {}),
        (scaled_task(2), (1,), {}),
        (task(lambda q: q), ((1, 2),), {}),
    ],
)
def test_explain_key_equals_the_default_key(t: Any, args: Any, kwargs: Any) -> None:
    assert explain(t, args, kwargs).key == default_cache_key(t, args, kwargs)


def test_identity_names_the_task_when_it_differs_from_the_function() -> None:
    renamed = task(name="renamed")(helper)
    assert explain(renamed, (1,), {}).identity == f"{__name__}:helper (task 'renamed')"


def test_explain_lists_unkeyable_arguments_and_has_no_key() -> None:
    report = explain(add, (threading.Lock(),), {"b": [lambda: 1]})
    assert report.key is None
    assert set(report.unkeyable) == {"a", "b"}
    assert report.unkeyable["b"].startswith("b[0] is a lambda")
    assert "runs uncached" in str(report)


def test_diff_says_why_keys_differ() -> None:
    base = explain(add, (1,), {})
    assert base.diff(explain(add, (), {"a": 1})) == []
    assert base.diff(explain(add, (1, 3), {})) == ["argument 'b' differs"]
    assert base.diff(explain(task(name="add", persist=True)(add.fn), (1,), {})) == [
        "persist option differs"
    ]
    other = explain(task(name="add")(helper), (1,), {})
    reasons = other.diff(base)
    assert "code differs" in reasons
    assert any(r.startswith("task identity differs") for r in reasons)
    assert "argument 'value' is only in this call" in reasons
    assert "argument 'b' is only in the other call" in reasons
    locked = explain(add, (threading.Lock(),), {})
    assert locked.diff(base)[0].startswith("argument 'a' cannot be keyed in this call: a is a")


def test_diff_names_closure_variables() -> None:
    double, triple = explain(scaled_task(2), (1,), {}), explain(scaled_task(3), (1,), {})
    assert double.code == triple.code
    assert double.diff(triple) == ["closure variable 'factor' differs"]


def test_report_str_explains_each_part() -> None:
    text = str(explain(gather, (1,), {"scale": 3}))
    assert text.splitlines()[0] == f"cache key of task 'gather': {key(gather, 1, scale=3)}"
    for part in ("identity:", "code:", "persist:", "argument items:", "argument scale:"):
        assert part in text


def test_cache_key_fn_produces_the_reported_key() -> None:
    calls: list[tuple[Any, ...]] = []

    def by_first(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        calls.append((fn, args, kwargs))
        return f"first-{args[0]}"

    custom = task(name="custom", cache_key_fn=by_first)(helper)
    report = explain(custom, (7,), {})
    assert report.custom is True
    assert report.key == "first-7"
    assert calls == [(helper, (7,), {})]
    assert "from cache_key_fn" in str(report)
    assert report.diff(explain(custom, (8,), {}))[0] == "cache_key_fn returned different keys"


def test_cache_key_fn_errors_propagate_from_explain() -> None:
    def broken(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        raise LookupError("no key")

    with pytest.raises(LookupError, match="no key"):
        explain(task(name="broken", cache_key_fn=broken)(helper), (1,), {})


def test_report_mappings_are_read_only() -> None:
    report = explain(add, (1,), {})
    with pytest.raises(TypeError):
        report.arguments["a"] = "x"  # type: ignore[index]


def test_numpy_arrays_are_keyed_by_dtype_shape_and_bytes() -> None:
    import numpy as np  # a dev dependency; _keys itself never imports it

    grid = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert fingerprint(grid) == fingerprint(np.asfortranarray(grid))
    assert fingerprint(grid) != fingerprint(grid.astype(np.int32))
    assert fingerprint(grid) != fingerprint(grid.reshape(4, 3))
    assert fingerprint(np.float64(1.0)) != fingerprint(1.0)
    with pytest.raises(UnkeyableError, match="dtype object"):
        fingerprint(np.array([object()]))


def test_memoized_keys_equal_computed_ones_and_keep_types_apart() -> None:
    from auto_workflow._results import _keys

    fresh = add.with_options(name="add_memo")  # a new task object: an empty memo
    first = [key(fresh, v) for v in (1, True, "1", 1.0, 2**70, "x" * 100)]
    again = [key(fresh, v) for v in (1, True, "1", 1.0, 2**70, "x" * 100)]
    assert first == again
    assert len(set(first)) == len(first)  # 1, True, "1", 1.0 ... all differ
    head = fresh._aw_key_head  # type: ignore[attr-defined]
    assert set(head.memo) == {(1,), ("1",)}  # only small exact ints and strs are memoized
    assert head.memo[(1,)] == explain(fresh, (1,), {}).key
    for i in range(_keys._MEMO_MAX + 5):
        key(fresh, i)
    assert len(head.memo) <= _keys._MEMO_MAX


def test_editing_the_code_object_in_place_changes_the_key() -> None:
    @task(cache_ttl=60)
    def shifting(x: int) -> int:
        return x + 1

    def other(x: int) -> int:
        return x + 2

    before = key(shifting, 1)
    shifting.fn.__code__ = other.__code__  # what hot-reload tools do
    assert key(shifting, 1) != before


def test_remembered_key_is_the_default_key_or_nothing() -> None:
    from auto_workflow._results._keys import remembered_key

    fresh = add.with_options(name="add_remembered")
    assert remembered_key(fresh, (7,)) is None  # nothing keyed yet
    computed = key(fresh, 7)
    assert remembered_key(fresh, (7,)) == computed
    assert remembered_key(fresh, (True,)) is None  # bools are never memoized (True == 1)
    assert remembered_key(fresh, (7, 2)) is None  # only single-argument calls take this path


def test_a_default_changed_in_place_changes_the_key_for_every_call_form() -> None:
    @task(cache_ttl=60)
    def scale(x: int, opts: dict[str, int] = {"k": 1}) -> int:  # noqa: B006 - the point
        return x * opts["k"]

    before = key(scale, 5)
    key(scale, 5)  # would be remembered, if the memo trusted a mutable default
    scale.fn.__defaults__[0]["k"] = 7  # type: ignore[index]
    assert key(scale, 5) == key(scale, x=5) != before
