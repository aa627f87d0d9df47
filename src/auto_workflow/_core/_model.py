"""Frozen records and closed sets shared by the whole engine.

Invariants: every record here is immutable and validated when it is made, so code that holds
one never re-checks it. Errors name the task and the parameter at fault and say what is valid.
"""

from __future__ import annotations

import enum
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auto_workflow.exceptions import InvalidKeyError

__all__ = [
    "ArtifactRef",
    "FailurePolicy",
    "RetryOn",
    "RetryPredicate",
    "RunIn",
    "TaskOptionAttributes",
    "TaskOptions",
    "require_methods",
]

CacheKeyFn = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], str]

RetryPredicate = Callable[[Exception], bool]
"""``retry_on`` as a function: given a failed attempt's exception, True to retry it."""

RetryOn = type[Exception] | tuple[type[Exception], ...] | RetryPredicate
"""What ``retry_on`` accepts: an exception type, a tuple of them, or a predicate."""

_RETRY_ON_VALID = (
    "an exception type (a subclass of Exception), a tuple of them, or a predicate "
    "(exception) -> bool"
)


class RunIn(enum.StrEnum):
    """Where one call of a task runs."""

    ASYNC = "async"
    THREAD = "thread"
    PROCESS = "process"


class FailurePolicy(enum.StrEnum):
    """What a flow run does when a task fails.

    ``FAIL_FAST`` cancels running tasks, starts nothing new and raises the first error.
    ``CONTINUE`` runs every branch that does not depend on a failure and returns the result
    with each failed or skipped position holding its :class:`TaskExecutionError`.
    ``AGGREGATE`` runs like ``CONTINUE`` and then raises :class:`AggregateTaskError`.
    """

    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"
    AGGREGATE = "aggregate"

    @classmethod
    def coerce(cls, value: object) -> FailurePolicy:
        """Accept a member or its plain string; reject anything else with the valid choices."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"failure_policy must be one of {allowed}; got {value!r}")


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    """True if ``fn(x)`` binds (or ``fn`` has no signature to tell)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(None)
    except TypeError:
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """Everything ``@task(...)`` accepts, validated once at decoration time."""

    name: str
    retries: int = 0
    retry_backoff: float = 0.0
    retry_jitter: float = 0.0
    retry_on: RetryOn | None = None
    retry_backoff_max: float | None = None
    timeout: float | None = None
    cache_ttl: int | None = None
    cache_key_fn: CacheKeyFn | None = None
    run_in: RunIn = RunIn.ASYNC
    persist: bool = False
    priority: int = 0
    tags: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"task name must be a non-empty string; got {self.name!r}")
        self._check_int("retries", self.retries, minimum=0)
        self._check_seconds("retry_backoff", self.retry_backoff, allow_zero=True)
        self._check_seconds("retry_jitter", self.retry_jitter, allow_zero=True)
        self._check_retry_on()
        if self.retry_backoff_max is not None:
            self._check_seconds("retry_backoff_max", self.retry_backoff_max, allow_zero=False)
        if self.timeout is not None:
            self._check_seconds("timeout", self.timeout, allow_zero=False)
        if self.cache_ttl is not None:
            self._check_int("cache_ttl", self.cache_ttl, minimum=0)
        if self.cache_key_fn is not None and not callable(self.cache_key_fn):
            self._fail(TypeError, "cache_key_fn", "a callable (fn, args, kwargs) -> str")
        self._check_run_in()
        if not isinstance(self.persist, bool):
            self._fail(TypeError, "persist", "True or False")
        self._check_int("priority", self.priority, minimum=None)
        self._check_tags()

    # -- helpers -------------------------------------------------------------------------

    def _fail(self, kind: type[Exception], param: str, valid: str) -> None:
        value = getattr(self, param)
        raise kind(f"task {self.name!r}: {param} must be {valid}; got {value!r}")

    def _check_int(self, param: str, value: object, *, minimum: int | None) -> None:
        if not _is_int(value):
            self._fail(TypeError, param, "an int")
        if minimum is not None and value < minimum:  # type: ignore[operator]
            self._fail(ValueError, param, f"an int >= {minimum}")

    def _check_seconds(self, param: str, value: object, *, allow_zero: bool) -> None:
        valid = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"
        if not _is_number(value):
            self._fail(TypeError, param, valid)
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            self._fail(ValueError, param, valid)

    def _check_retry_on(self) -> None:
        """Keep ``retry_on`` as a tuple of exception types or a one-argument predicate."""
        rule: object = self.retry_on
        if rule is None:
            return
        if isinstance(rule, type):
            rule = (rule,)
        elif isinstance(rule, list | set | frozenset):
            rule = tuple(rule)
        if isinstance(rule, tuple):
            if not rule:
                self._fail(ValueError, "retry_on", "at least one exception type")
            if not all(isinstance(kind, type) and issubclass(kind, Exception) for kind in rule):
                self._fail(TypeError, "retry_on", _RETRY_ON_VALID)
            object.__setattr__(self, "retry_on", rule)
        elif isinstance(rule, BaseException) or not callable(rule):
            self._fail(TypeError, "retry_on", _RETRY_ON_VALID)
        elif not _takes_one_argument(rule):
            self._fail(TypeError, "retry_on", "a predicate taking one argument (the exception)")

    def _check_run_in(self) -> None:
        try:
            object.__setattr__(self, "run_in", RunIn(self.run_in))
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in RunIn)
            self._fail(ValueError, "run_in", f"one of {allowed}")

    def _check_tags(self) -> None:
        tags = self.tags
        if isinstance(tags, str) or not isinstance(tags, (set, frozenset, list, tuple)):
            self._fail(TypeError, "tags", "a set of strings")
        if not all(isinstance(t, str) for t in tags):
            self._fail(TypeError, "tags", "a set of strings")
        object.__setattr__(self, "tags", frozenset(tags))

    def describe(self) -> Mapping[str, Any]:
        """JSON-friendly summary used by ``Flow.describe()``."""
        return {
            "retries": self.retries,
            "timeout": self.timeout,
            "cache_ttl": self.cache_ttl,
            "run_in": self.run_in.value,
            "persist": self.persist,
            "priority": self.priority,
            "tags": sorted(self.tags),
        }


class TaskOptionAttributes:
    """A task's options as read-only attributes (``t.retries``, ``t.run_in``, ...), as the
    public ``auto-workflow`` package exposes them. The options themselves stay in
    ``options``; ``with_options(...)`` makes a copy with other values."""

    __slots__ = ()
    options: TaskOptions

    @property
    def name(self) -> str:
        """The task's (node) name."""
        return self.options.name

    @property
    def retries(self) -> int:
        """Retries after the first attempt."""
        return self.options.retries

    @property
    def retry_backoff(self) -> float:
        """Base seconds of the exponential backoff between attempts."""
        return self.options.retry_backoff

    @property
    def retry_jitter(self) -> float:
        """Most random seconds added to each backoff."""
        return self.options.retry_jitter

    @property
    def retry_on(self) -> tuple[type[Exception], ...] | RetryPredicate | None:
        """The exception types (or predicate) worth retrying; ``None``: every error."""
        return self.options.retry_on  # type: ignore[return-value]  # a type became a tuple

    @property
    def retry_backoff_max(self) -> float | None:
        """Most seconds of exponential backoff before one retry (``None``: no cap)."""
        return self.options.retry_backoff_max

    @property
    def timeout(self) -> float | None:
        """Seconds one attempt may take (``None``: no limit)."""
        return self.options.timeout

    @property
    def cache_ttl(self) -> int | None:
        """Seconds a cached result stays valid (``None``: not cached)."""
        return self.options.cache_ttl

    @property
    def cache_key_fn(self) -> CacheKeyFn | None:
        """The function that makes cache keys, if not the default."""
        return self.options.cache_key_fn

    @property
    def persist(self) -> bool:
        """Whether the result goes to the artifact store (the task returns an ArtifactRef)."""
        return self.options.persist

    @property
    def priority(self) -> int:
        """Higher runs first among ready tasks."""
        return self.options.priority

    @property
    def run_in(self) -> RunIn:
        """Where a call runs: ``"async"``, ``"thread"`` or ``"process"`` (a str enum)."""
        return self.options.run_in

    @property
    def tags(self) -> frozenset[str]:
        """The task's tags."""
        return self.options.tags


_ARTIFACT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_STORE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def check_artifact_key(key: object) -> str:
    """``key`` if it is a safe artifact key (usable as a file name), else InvalidKeyError.

    Safe means 1-128 characters from ``A-Z a-z 0-9 _ -``, not starting with ``_`` or ``-``:
    no separators, no dots, so no key can address anything outside a store's directory.
    """
    if not isinstance(key, str) or not _ARTIFACT_KEY.fullmatch(key):
        raise InvalidKeyError(
            f"invalid artifact key {key!r}: use 1-128 characters from A-Z, a-z, 0-9, '_' "
            "and '-', starting with a letter or digit"
        )
    return key


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A small, immutable, hashable, picklable handle to a persisted task result.

    ``ArtifactRef(key)``, rebuilt from a saved key, names no store kind and is read from
    whichever store it is given to (the configured one, for ``get_store().get(ref)``).

    Attributes:
        key: The artifact's key in its store (validated: it can never address a path
            outside the store's directory).
        store: The name of the store kind that holds it (``"memory"``, ``"filesystem"``),
            or ``None`` when not known.
    """

    key: str
    store: str | None = None

    def __post_init__(self) -> None:
        check_artifact_key(self.key)
        store = self.store
        if store is not None and (not isinstance(store, str) or not _STORE_NAME.fullmatch(store)):
            raise InvalidKeyError(f"invalid artifact store name {store!r}")

    def __repr__(self) -> str:
        if self.store is None:
            return f"ArtifactRef({self.key!r})"
        return f"ArtifactRef({self.key!r}, store={self.store!r})"


def require_methods(obj: object, what: str, methods: dict[str, str]) -> None:
    """Raise a TypeError naming ``what`` unless ``obj`` is an instance with ``methods``."""
    if isinstance(obj, type):
        raise TypeError(
            f"{what} must be an instance; got the class {obj.__name__} (call it: "
            f"{obj.__name__}(...))"
        )
    for method, signature in methods.items():
        if not callable(getattr(obj, method, None)):
            wanted = " and ".join(methods.values())
            raise TypeError(
                f"{what} must have {wanted} methods; {type(obj).__name__} has no {signature}"
            )
