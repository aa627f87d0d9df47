"""``fan_out(task, items, return_exceptions=True)``: failed elements are their errors in the
list the consumer gets; every other failure keeps the failure policy's rule."""

from __future__ import annotations

from typing import Any

import pytest

from auto_workflow import fan_out, flow, subscribe, task
from auto_workflow.exceptions import (
    AggregateTaskError,
    TaskExecutionError,
    UpstreamFailedError,
)

POLICIES = ["fail_fast", "continue", "aggregate"]


@task
def parse(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"bad row {x}")
    return x * 10


@task
def rows(n: int) -> list[int]:
    return list(range(n))


@task
def summarise(values: list[Any]) -> list[Any]:
    """What the consumer saw: values, and ``("error", original)`` for failed elements."""
    return [
        ("error", type(v.original).__name__, str(v.original))
        if isinstance(v, TaskExecutionError)
        else v
        for v in values
    ]


EXPECTED = [("error", "ValueError", "bad row 0"), 10, 20, ("error", "ValueError", "bad row 3"), 40]


@flow
def static(n: int) -> list[Any]:
    return summarise(fan_out(parse, range(n), return_exceptions=True))


@flow
def dynamic(n: int) -> list[Any]:
    return summarise(fan_out(parse, rows(n), return_exceptions=True))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("fan", [static, dynamic], ids=["static", "dynamic"])
def test_the_consumer_gets_the_failed_elements_as_their_errors(fan: Any, policy: str) -> None:
    assert fan.run(5, failure_policy=policy) == EXPECTED


def test_each_failed_element_is_its_task_execution_error() -> None:
    @flow
    def raw() -> list[Any]:
        return fan_out(parse, rows(4), return_exceptions=True)

    zero, ten, twenty, three = raw.run()
    assert (ten, twenty) == (10, 20)
    for err, row in ((zero, 0), (three, 3)):
        assert type(err) is TaskExecutionError
        assert err.task_name == "parse"
        assert isinstance(err.original, ValueError)
        assert str(err.original) == f"bad row {row}"


def test_without_return_exceptions_the_consumer_is_skipped_as_before() -> None:
    @flow
    def plain() -> list[Any]:
        return summarise(fan_out(parse, rows(5)))

    assert isinstance(plain.run(failure_policy="continue"), UpstreamFailedError)


def test_a_failed_element_does_not_fail_the_run_but_is_still_reported() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    names = ("task_failed", "task_skipped", "flow_completed")
    for name in names:
        subscribe(name, lambda payload, name=name: seen.append((name, payload)))

    assert dynamic.run(5) == EXPECTED
    failed = sorted(p["node"] for name, p in seen if name == "task_failed")
    assert len(failed) == 2
    assert all(node.startswith("parse:") for node in failed)
    assert [name for name, _ in seen if name == "task_skipped"] == []
    ((_, completed),) = [(n, p) for n, p in seen if n == "flow_completed"]
    assert (completed["status"], completed["failed"]) == ("succeeded", 0)


def test_any_other_failure_keeps_the_failure_policy_rule() -> None:
    @task
    def broken() -> int:
        raise KeyError("elsewhere")

    @task
    def after(x: int) -> int:
        return x

    @flow
    def mixed() -> dict[str, Any]:
        return {
            "summary": summarise(fan_out(parse, rows(5), return_exceptions=True)),
            "other": after(broken()),
        }

    with pytest.raises(TaskExecutionError, match="elsewhere"):
        mixed.run()  # fail_fast: a failure outside the fan-out still ends the run
    with pytest.raises(AggregateTaskError) as info:
        mixed.run(failure_policy="aggregate")
    assert [e.task_name for e in info.value.errors] == ["broken"]
    out = mixed.run(failure_policy="continue")
    assert out["summary"] == EXPECTED
    assert isinstance(out["other"], UpstreamFailedError)  # its dependant is skipped


def test_an_element_skipped_because_its_own_upstream_failed_skips_the_consumer() -> None:
    @task
    def broken() -> int:
        raise KeyError("upstream of one element")

    @flow
    def upstream() -> list[Any]:
        return summarise(fan_out(parse, [1, broken()], return_exceptions=True))

    assert isinstance(upstream.run(failure_policy="continue"), UpstreamFailedError)
    with pytest.raises(TaskExecutionError, match="upstream of one element"):
        upstream.run()


def test_the_consumer_failing_is_an_ordinary_failure() -> None:
    @task
    def strict(values: list[Any]) -> int:
        raise RuntimeError(f"{sum(isinstance(v, Exception) for v in values)} bad rows")

    @flow
    def picky() -> int:
        return strict(fan_out(parse, rows(5), return_exceptions=True))

    with pytest.raises(TaskExecutionError, match="2 bad rows"):
        picky.run()


def test_a_dynamic_fan_out_whose_source_is_not_a_list_still_fails() -> None:
    @task
    def number() -> int:
        return 7

    @flow
    def wrong() -> list[Any]:
        return summarise(fan_out(parse, number(), return_exceptions=True))

    with pytest.raises(TaskExecutionError, match="not iterable"):
        wrong.run()


def test_bounded_fan_outs_and_direct_calls_return_the_errors_too() -> None:
    @flow
    def bounded() -> list[Any]:
        return summarise(fan_out(parse, rows(5), max_concurrency=2, return_exceptions=True))

    assert bounded.run() == EXPECTED
    direct = fan_out(parse, [1, 3, 4], return_exceptions=True)
    assert (direct[0], direct[2]) == (10, 40)
    assert isinstance(direct[1], TaskExecutionError)


def test_return_exceptions_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"fan_out\(parse, \.\.\.\): return_exceptions must be"):
        fan_out(parse, [1], return_exceptions="yes")  # type: ignore[call-overload]
