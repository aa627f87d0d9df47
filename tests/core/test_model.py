"""Task options are validated when the decorator runs, naming the task and the parameter."""

from __future__ import annotations

import pytest

from auto_workflow import FailurePolicy, task
from auto_workflow._core._model import RunIn, TaskOptions


def sample(x: int) -> int:
    return x


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("retries", -1, ValueError),
        ("retries", 1.5, TypeError),
        ("retries", True, TypeError),
        ("retry_backoff", -0.1, ValueError),
        ("retry_backoff", "1", TypeError),
        ("retry_jitter", float("nan"), ValueError),
        ("timeout", 0, ValueError),
        ("timeout", -2, ValueError),
        ("timeout", float("inf"), ValueError),
        ("timeout", "5", TypeError),
        ("cache_ttl", -1, ValueError),
        ("cache_ttl", 1.5, TypeError),
        ("cache_key_fn", "not callable", TypeError),
        ("run_in", "gpu", ValueError),
        ("persist", "yes", TypeError),
        ("priority", 1.0, TypeError),
        ("tags", "etl", TypeError),
        ("tags", {1, 2}, TypeError),
        ("retry_on", "ValueError", TypeError),
        ("retry_on", ValueError("x"), TypeError),
        ("retry_on", (ValueError, 3), TypeError),
        ("retry_on", int, TypeError),
        ("retry_on", KeyboardInterrupt, TypeError),
        ("retry_on", (), ValueError),
        ("retry_on", lambda: True, TypeError),
        ("retry_on", lambda a, b: True, TypeError),
        ("retry_backoff_max", 0, ValueError),
        ("retry_backoff_max", -1.0, ValueError),
        ("retry_backoff_max", float("inf"), ValueError),
        ("retry_backoff_max", "30", TypeError),
    ],
)
def test_bad_option_names_task_and_parameter(option: str, value: object, error: type) -> None:
    with pytest.raises(error) as info:
        task(name="load_rows", **{option: value})(sample)
    message = str(info.value)
    assert "load_rows" in message
    assert option in message


def test_bad_option_is_rejected_before_a_function_is_given() -> None:
    with pytest.raises(ValueError, match=r"^@task\(\.\.\.\): retries must be an int >= 0; got -3$"):
        task(retries=-3)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(TypeError, match="retry_count") as info:
        task(retry_count=3)  # type: ignore[call-overload]
    assert "retries" in str(info.value)


def test_run_in_accepts_plain_strings_and_members() -> None:
    assert task(run_in="thread")(sample).options.run_in is RunIn.THREAD
    assert task(run_in=RunIn.PROCESS)(sample).options.run_in is RunIn.PROCESS
    assert task(sample).options.run_in is RunIn.ASYNC


def test_defaults_follow_the_seed() -> None:
    opts = task(sample).options
    assert (opts.retries, opts.retry_backoff, opts.retry_jitter) == (0, 0.0, 0.0)
    assert opts.timeout is None
    assert opts.cache_ttl is None
    assert opts.persist is False
    assert opts.priority == 0
    assert opts.name == "sample"


def test_options_are_frozen() -> None:
    opts = TaskOptions(name="t")
    with pytest.raises(AttributeError):
        opts.retries = 3  # type: ignore[misc]


def test_with_options_validates_and_leaves_the_original_alone() -> None:
    base = task(retries=1)(sample)
    changed = base.with_options(retries=4, priority=9, tags={"a"})
    assert changed.options.retries == 4
    assert changed.options.tags == frozenset({"a"})
    assert base.options.retries == 1
    with pytest.raises(ValueError, match="timeout"):
        base.with_options(timeout=-1)


@pytest.mark.parametrize("value", ["fail_fast", "continue", "aggregate"])
def test_failure_policy_accepts_strings(value: str) -> None:
    assert FailurePolicy.coerce(value).value == value


def test_failure_policy_rejects_anything_else() -> None:
    with pytest.raises(ValueError, match="fail_fast"):
        FailurePolicy.coerce("stop")


def test_task_keeps_name_doc_and_signature() -> None:
    import inspect

    def documented(a: int, b: str = "x") -> str:
        """Doc here."""
        return b * a

    t = task(documented)
    assert t.__name__ == "documented"
    assert t.__doc__ == "Doc here."
    assert str(inspect.signature(t)) == str(inspect.signature(documented))


def test_generator_functions_are_rejected() -> None:
    def gen() -> object:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        task(gen)


def test_with_options_validates_like_the_decorator() -> None:
    base = task(sample)
    with pytest.raises(TypeError, match="tags"):
        base.with_options(tags="etl")
    with pytest.raises(TypeError, match=r"task 'sample': with_options\(\) got unknown option"):
        base.with_options(retry_count=1)
    assert base.with_options(tags=None).options.tags == frozenset()


def test_an_empty_task_name_is_rejected_not_replaced() -> None:
    with pytest.raises(TypeError, match="task name must be a non-empty string"):
        task(name="")(sample)


def test_retry_on_keeps_a_tuple_of_types_or_the_predicate() -> None:
    def transient(exc: Exception) -> bool:
        return isinstance(exc, ConnectionError)

    assert task(retry_on=ConnectionError)(sample).retry_on == (ConnectionError,)
    assert task(retry_on=[KeyError, OSError])(sample).retry_on == (KeyError, OSError)
    assert task(retry_on=transient)(sample).retry_on is transient
    assert task(sample).retry_on is None
    assert task(retry_backoff_max=30)(sample).retry_backoff_max == 30
    with pytest.raises(TypeError, match=r"^@task\(\.\.\.\): retry_on must be an exception"):
        task(retry_on="OSError")  # type: ignore[call-overload]
